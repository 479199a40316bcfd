"""Topology builders: shapes, determinism, and every user-error path."""

from __future__ import annotations

from itertools import pairwise

import networkx as nx
import numpy as np
import pytest

from dfml.errors import ConfigError
from dfml.topology import (
    TOPOLOGIES,
    TopologyConfig,
    build_topology,
    link_cost,
    link_cost_graph,
    minimum_spanning_tree,
    neighbors,
    read_edge_list,
    ring_successor,
)
from dfml.topology.graphs import _BUILDERS


def _edges(graph: nx.Graph) -> set[frozenset[int]]:
    return {frozenset(e) for e in graph.edges()}


def _tree_weight(graph: nx.Graph) -> float:
    return sum(w for _, _, w in graph.edges(data="weight"))


def _assert_valid(graph: nx.Graph, n: int) -> None:
    assert sorted(graph.nodes) == list(range(n))
    assert nx.is_connected(graph)
    assert nx.number_of_selfloops(graph) == 0


def test_every_kind_has_a_builder() -> None:
    assert set(_BUILDERS) == set(TOPOLOGIES)


@pytest.mark.parametrize("n", [3, 8, 13])
def test_ring(n: int) -> None:
    g = build_topology(TopologyConfig(topology="ring"), n, seed=0)
    _assert_valid(g, n)
    assert g.number_of_edges() == n
    assert all(d == 2 for _, d in g.degree())
    assert neighbors(g, 0) == [1, n - 1]


def test_ring_of_two_is_one_edge() -> None:
    g = build_topology(TopologyConfig(topology="ring"), 2, seed=0)
    _assert_valid(g, 2)
    assert _edges(g) == {frozenset((0, 1))}


@pytest.mark.parametrize("n", [2, 5, 10])
def test_star(n: int) -> None:
    g = build_topology(TopologyConfig(topology="star"), n, seed=0)
    _assert_valid(g, n)
    assert g.degree(0) == n - 1
    assert all(g.degree(i) == 1 for i in range(1, n))
    assert g.number_of_edges() == n - 1


@pytest.mark.parametrize("n", [2, 6])
def test_complete(n: int) -> None:
    g = build_topology(TopologyConfig(topology="complete"), n, seed=0)
    _assert_valid(g, n)
    assert g.number_of_edges() == n * (n - 1) // 2


@pytest.mark.parametrize(("n", "k"), [(10, 3), (10, 4), (7, 2), (2, 1), (30, 2), (12, 11)])
def test_k_regular(n: int, k: int) -> None:
    for seed in range(5):
        g = build_topology(TopologyConfig(topology="k-regular", degree=k), n, seed=seed)
        _assert_valid(g, n)
        assert all(d == k for _, d in g.degree())
        assert g.number_of_edges() == n * k // 2


@pytest.mark.parametrize("p", [0.2, 0.5, 1.0])
def test_erdos_renyi(p: float) -> None:
    n = 20
    for seed in range(5):
        g = build_topology(TopologyConfig(topology="erdos-renyi", edge_probability=p), n, seed)
        _assert_valid(g, n)
    if p == 1.0:
        assert g.number_of_edges() == n * (n - 1) // 2


@pytest.mark.parametrize(("n", "k", "p"), [(12, 4, 0.1), (20, 2, 0.0), (10, 6, 0.5)])
def test_small_world(n: int, k: int, p: float) -> None:
    cfg = TopologyConfig(topology="small-world", degree=k, rewire_probability=p)
    for seed in range(3):
        g = build_topology(cfg, n, seed)
        _assert_valid(g, n)
        assert g.number_of_edges() == n * k // 2  # rewiring moves edges, never adds
    if p == 0.0:
        assert all(d == k for _, d in g.degree())


@pytest.mark.parametrize("n", [2, 5, 16])
def test_mst_is_minimum(n: int) -> None:
    seed = 7
    g = build_topology(TopologyConfig(topology="mst"), n, seed)
    _assert_valid(g, n)
    assert g.number_of_edges() == n - 1
    assert nx.is_tree(g)
    costs = link_cost_graph(n, seed)
    assert all("weight" in data for _, _, data in g.edges(data=True))
    for u, v, w in g.edges(data="weight"):
        assert w == costs[u][v]["weight"]
    expected = _tree_weight(nx.minimum_spanning_tree(costs))
    assert _tree_weight(g) == pytest.approx(expected)
    rng = np.random.default_rng(0)
    for _ in range(50):
        order = rng.permutation(n)
        path_weight = sum(costs[int(a)][int(b)]["weight"] for a, b in pairwise(order))
        assert _tree_weight(g) <= path_weight + 1e-12
        if n >= 3:  # a uniformly random labelled tree via its Prüfer sequence
            other = nx.from_prufer_sequence(rng.integers(0, n, size=n - 2).tolist())
            assert _tree_weight(g) <= _tree_weight(costs.edge_subgraph(other.edges())) + 1e-12


def test_link_costs_are_a_stable_function_of_the_pair() -> None:
    full = link_cost_graph(10, seed=3)
    part = link_cost_graph([2, 5, 9], seed=3)  # other clients joining or leaving change nothing
    for u, v, w in part.edges(data="weight"):
        assert w == full[u][v]["weight"] == link_cost(3, v, u)
    costs = [w for _, _, w in full.edges(data="weight")]
    assert all(0.0 <= w < 1.0 for w in costs)
    assert len(set(costs)) == len(costs)
    assert link_cost(4, 2, 5) != link_cost(3, 2, 5)


def test_minimum_spanning_tree_on_hand_graph() -> None:
    g = nx.Graph()
    g.add_weighted_edges_from([(0, 1, 4.0), (1, 2, 1.0), (0, 2, 2.0), (2, 3, 5.0), (1, 3, 3.0)])
    t = minimum_spanning_tree(g)
    assert _edges(t) == {frozenset((1, 2)), frozenset((0, 2)), frozenset((1, 3))}
    assert _tree_weight(t) == 6.0


def test_minimum_spanning_tree_rejects_disconnected() -> None:
    g = nx.Graph([(0, 1), (2, 3)])
    with pytest.raises(ConfigError, match="2 components"):
        minimum_spanning_tree(g)


@pytest.mark.parametrize(
    "cfg",
    [
        TopologyConfig(topology="k-regular", degree=3),
        TopologyConfig(topology="erdos-renyi", edge_probability=0.3),
        TopologyConfig(topology="small-world", degree=4, rewire_probability=0.3),
        TopologyConfig(topology="mst"),
    ],
    ids=lambda c: c.topology,
)
def test_random_kinds_are_deterministic_per_seed(cfg: TopologyConfig) -> None:
    n = 16
    first = build_topology(cfg, n, seed=3)
    again = build_topology(cfg, n, seed=3)
    assert _edges(first) == _edges(again)
    others = {frozenset(_edges(build_topology(cfg, n, seed=s))) for s in range(4, 9)}
    assert len(others | {frozenset(_edges(first))}) > 1


# ---- edge-list files -------------------------------------------------------------------


def _edge_file(tmp_path, text: str) -> str:
    path = tmp_path / "edges.txt"
    path.write_text(text, encoding="utf-8")
    return str(path)


def test_edge_list_reads_comments_blanks_and_weights(tmp_path) -> None:
    path = _edge_file(
        tmp_path,
        "# a weighted path\n\n0 1 0.5\n1 2   # trailing comment\n2 3 2\n3 2 2\n",
    )
    g = build_topology(TopologyConfig(topology="edge-list", edge_list=path), 4, seed=0)
    _assert_valid(g, 4)
    assert _edges(g) == {frozenset((0, 1)), frozenset((1, 2)), frozenset((2, 3))}
    assert g[0][1]["weight"] == 0.5
    assert "weight" not in g[1][2]
    assert g[2][3]["weight"] == 2.0


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("0 1\n1 2 x\n", r"edges\.txt:2: weight must be a number"),
        ("0 1\n\n1\n", r"edges\.txt:3: expected 'u v' or 'u v weight'"),
        ("0 1\n1 2 3 4\n", r"edges\.txt:2: expected"),
        ("0 a\n", r"edges\.txt:1: node ids must be ints"),
        ("0 1\n1 2 inf\n", r"edges\.txt:2: weight must be finite"),
        ("0 1\n1 2\n2 4\n", r"edges\.txt:3: node 4 out of range; clients are 0\.\.3"),
        ("0 1\n-1 2\n", r"edges\.txt:2: node -1 out of range"),
        ("0 1\n1 1\n1 2\n2 3\n", r"edges\.txt:2: self loop on node 1"),
        ("0 1 1\n1 2\n1 0 2\n2 3\n", r"edges\.txt:3: edge 1-0 repeats line 1"),
        ("0 1\n2 3\n", r"disconnected: 2 components"),
        ("0 1\n1 2\n", r"disconnected: 2 components \(e\.g\. nodes \[3\]"),
        ("", r"disconnected: 4 components"),
    ],
)
def test_edge_list_errors(tmp_path, text: str, match: str) -> None:
    cfg = TopologyConfig(topology="edge-list", edge_list=_edge_file(tmp_path, text))
    with pytest.raises(ConfigError, match=match) as info:
        build_topology(cfg, 4, seed=0)
    assert "\n" not in str(info.value)


def test_edge_list_missing_file(tmp_path) -> None:
    cfg = TopologyConfig(topology="edge-list", edge_list=str(tmp_path / "nope.txt"))
    with pytest.raises(ConfigError, match=r"edge list .*nope\.txt does not exist"):
        build_topology(cfg, 4, seed=0)


def test_edge_list_without_client_count_allows_any_non_negative_id(tmp_path) -> None:
    g = read_edge_list(_edge_file(tmp_path, "0 1\n1 70 0.5\n"))
    assert sorted(g.nodes) == [0, 1, 70]
    assert g[1][70]["weight"] == 0.5
    with pytest.raises(
        ConfigError, match=r"edges\.txt:2: node -4 out of range; client ids are >= 0"
    ):
        read_edge_list(_edge_file(tmp_path, "0 1\n-4 1\n"))


def test_edge_list_directory_is_config_error(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"edge list .* cannot be read"):
        read_edge_list(tmp_path, 4)


# ---- errors that need N -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("cfg", "n", "match"),
    [
        (TopologyConfig(topology="ring"), 1, "at least 2 clients, got 1"),
        (TopologyConfig(topology="complete"), 0, "at least 2 clients, got 0"),
        (
            TopologyConfig(topology="k-regular", degree=5),
            5,
            r"degree must be < number of clients \(5\)",
        ),
        (TopologyConfig(topology="k-regular", degree=7), 5, "degree must be < number"),
        (TopologyConfig(topology="k-regular", degree=3), 7, r"degree \* clients even, got 3 \* 7"),
        (TopologyConfig(topology="k-regular", degree=1), 6, "perfect matching"),
        (TopologyConfig(topology="small-world", degree=3), 10, r"must be even and >= 2 .*got 3"),
        (TopologyConfig(topology="small-world", degree=1), 10, "must be even and >= 2"),
        (TopologyConfig(topology="small-world", degree=4), 4, r"< number of clients \(4\)"),
        (
            TopologyConfig(topology="erdos-renyi", edge_probability=0.01),
            40,
            "use a higher edge_probability",
        ),
    ],
)
def test_build_errors(cfg: TopologyConfig, n: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match) as info:
        build_topology(cfg, n, seed=0)
    assert "\n" not in str(info.value)


def test_small_world_that_never_connects_is_config_error(monkeypatch) -> None:
    def never_connected(*args, **kwargs):
        raise nx.NetworkXError("Maximum number of tries exceeded")

    monkeypatch.setattr(nx, "connected_watts_strogatz_graph", never_connected)
    cfg = TopologyConfig(topology="small-world", degree=2, rewire_probability=1.0)
    with pytest.raises(ConfigError, match="use a larger degree or lower rewire_probability"):
        build_topology(cfg, 60, seed=0)


def test_negative_seed_is_config_error() -> None:
    with pytest.raises(ConfigError, match="seed must be a non-negative int"):
        build_topology(TopologyConfig(), 4, seed=-1)


# ---- config validation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"topology": "torus"}, r"unknown topology 'torus'; allowed: ring, star, complete"),
        ({"mixing": "max"}, r"unknown mixing 'max'; allowed: data-size, metropolis-hastings"),
        ({"degree": 0}, "degree must be >= 1, got 0"),
        ({"degree": 2.5}, "degree must be an int, got 2.5"),
        ({"edge_probability": 0.0}, r"edge_probability must be in \(0, 1\], got 0.0"),
        ({"edge_probability": 1.5}, r"edge_probability must be in \(0, 1\], got 1.5"),
        ({"edge_probability": float("nan")}, "edge_probability must be in"),
        ({"rewire_probability": -0.1}, r"rewire_probability must be in \[0, 1\], got -0.1"),
        ({"rewire_probability": 1.1}, r"rewire_probability must be in \[0, 1\]"),
        ({"topology": "edge-list"}, "topology 'edge-list' needs edge_list"),
        (
            {"topology": "ring", "edge_list": "g.txt"},
            "edge_list is only read with topology 'edge-list'",
        ),
    ],
)
def test_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TopologyConfig(**kwargs)


def test_config_defaults_and_frozen() -> None:
    cfg = TopologyConfig()
    assert (cfg.topology, cfg.degree, cfg.mixing) == ("ring", 4, "data-size")
    with pytest.raises(AttributeError):
        cfg.topology = "star"  # type: ignore[misc]


def test_ring_successor_and_neighbors() -> None:
    assert [ring_successor(i, 4) for i in range(4)] == [1, 2, 3, 0]
    with pytest.raises(ValueError):
        ring_successor(4, 4)
    g = build_topology(TopologyConfig(topology="star"), 5, seed=0)
    assert neighbors(g, 0) == [1, 2, 3, 4]
    assert neighbors(g, 3) == [0]
