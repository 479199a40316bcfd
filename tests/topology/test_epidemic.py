"""Epidemic Learning's peer samplers: degrees, reproducibility, rows, membership (no Ray)."""

from __future__ import annotations

import dataclasses
import json
from itertools import combinations

import networkx as nx
import numpy as np
import pytest

from dfml.errors import ConfigError
from dfml.topology import TopologyConfig, TopologyService, build_topology, mixing_matrix
from dfml.topology.epidemic import epidemic_graph, push_targets

ORACLE = TopologyConfig(topology="epidemic", peers=3, epidemic="oracle")
LOCAL = TopologyConfig(topology="epidemic", peers=3, epidemic="local")


def _edges(graph: nx.Graph) -> set:
    """Edge set; direction kept for a directed graph."""
    if graph.is_directed():
        return set(graph.edges())
    return {frozenset(e) for e in graph.edges()}


def _sizes(ids: list[int]) -> dict[int, float]:
    rng = np.random.default_rng(len(ids))
    return {cid: float(rng.integers(10, 500)) for cid in ids}


def _received(graph: nx.Graph, cid: int) -> list[int]:
    """Who sends to ``cid``, read off the edge list: j → cid, or j - cid both ways."""
    into = {u for u, v in graph.edges() if v == cid}
    if graph.is_directed():
        return sorted(into)
    return sorted(into | {v for u, v in graph.edges() if u == cid})


# ---- degrees -----------------------------------------------------------------------------


@pytest.mark.parametrize(("n", "s"), [(2, 1), (10, 1), (20, 3), (21, 4), (50, 7)])
def test_oracle_gives_every_client_exactly_s_peers_each_round(n: int, s: int) -> None:
    cfg = dataclasses.replace(ORACLE, peers=s)
    for r in range(5):
        graph = epidemic_graph(cfg, range(n), seed=1, round_index=r)
        assert not graph.is_directed()
        assert sorted(graph) == list(range(n))
        assert nx.number_of_selfloops(graph) == 0
        assert {d for _, d in graph.degree()} == {s}


@pytest.mark.parametrize(("n", "s"), [(2, 1), (7, 3), (40, 3), (40, 10)])
def test_local_pushes_to_s_distinct_peers_and_in_degrees_average_s(n: int, s: int) -> None:
    cfg = dataclasses.replace(LOCAL, peers=s)
    in_degrees: list[int] = []
    for r in range(20):
        graph = epidemic_graph(cfg, range(n), seed=3, round_index=r)
        assert graph.is_directed() and sorted(graph) == list(range(n))
        assert nx.number_of_selfloops(graph) == 0
        assert {d for _, d in graph.out_degree()} == {s}  # a DiGraph: distinct targets
        ins = [d for _, d in graph.in_degree()]
        assert sum(ins) == n * s  # every round: mean in-degree exactly s
        in_degrees += ins
    if n > s + 1:  # with n = s + 1 everyone pushes to everyone
        assert len(set(in_degrees)) > 1  # uncoordinated: in-degrees vary
    # An in-degree is Binomial(n - 1, s / (n - 1)): its variance is s (1 - s / (n - 1)).
    var = s * (1 - s / (n - 1))
    assert abs(np.var(in_degrees) - var) < 0.35 * var + 1e-9


def test_push_targets_are_uniform_s_subsets_of_the_others() -> None:
    """Brute force: every 2-subset of the other 4 clients equally often (6,000 draws each)."""
    rng = np.random.default_rng(0)
    draws = 6000
    rows = np.stack([push_targets(5, 2, rng) for _ in range(draws)])  # [draws, 5, 2]
    own = np.arange(5)[None, :, None]
    assert not (rows == own).any() and (rows[..., 0] != rows[..., 1]).all()
    masks = (1 << rows).sum(axis=2)  # the subset as a bit mask
    for p in range(5):
        others = [q for q in range(5) if q != p]
        subsets = [(1 << a) | (1 << b) for a, b in combinations(others, 2)]
        counts = np.array([(masks[:, p] == m).sum() for m in subsets])
        assert counts.sum() == draws  # nothing outside the 2-subsets of the others
        freq = counts / draws
        # 1/6 each; the standard error of one frequency is 0.0048.
        np.testing.assert_allclose(freq, 1 / 6, atol=0.025)


# ---- seeds and rounds ------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [ORACLE, LOCAL], ids=["oracle", "local"])
def test_same_seed_same_graphs_and_each_round_its_own(cfg: TopologyConfig) -> None:
    ids = list(range(20))
    first = [_edges(epidemic_graph(cfg, ids, 7, r)) for r in range(10)]
    again = [_edges(epidemic_graph(cfg, ids, 7, r)) for r in range(10)]
    assert first == again
    assert len({frozenset(e) for e in first}) == 10  # every round a different graph
    other_seed = [_edges(epidemic_graph(cfg, ids, 8, r)) for r in range(10)]
    assert all(a != b for a, b in zip(first, other_seed, strict=True))


@pytest.mark.parametrize("cfg", [ORACLE, LOCAL], ids=["oracle", "local"])
def test_round_graph_does_not_depend_on_the_rounds_before(cfg: TopologyConfig) -> None:
    """A service that ran rounds 0..6 and one that jumps to round 6 (a resume) agree."""
    sizes = _sizes(list(range(12)))
    walked = TopologyService(cfg, sizes, seed=5)
    for r in range(7):
        walked.begin_round(r)
    jumped = TopologyService(cfg, sizes, seed=5)
    jumped.begin_round(6)
    assert _edges(walked.graph) == _edges(jumped.graph)
    assert _edges(walked.graph) == _edges(epidemic_graph(cfg, range(12), 5, 6))
    resumed = TopologyService.from_state(cfg, json.loads(json.dumps(walked.state_dict())))
    assert resumed.round == 6 and _edges(resumed.graph) == _edges(walked.graph)
    assert all(resumed.mixing_row(c) == walked.mixing_row(c) for c in walked.ids())


def test_round_zero_is_build_topology_and_static_kinds_ignore_rounds() -> None:
    assert _edges(build_topology(LOCAL, 9, 4)) == _edges(epidemic_graph(LOCAL, range(9), 4, 0))
    ring = TopologyService(TopologyConfig(topology="ring"), _sizes(list(range(6))), 0)
    before = _edges(ring.graph)
    ring.begin_round(3)
    assert ring.round == 3 and _edges(ring.graph) == before


# ---- mixing rows ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cfg", "mixing"),
    [
        (ORACLE, "uniform"),
        (ORACLE, "data-size"),
        (ORACLE, "metropolis-hastings"),
        (LOCAL, "uniform"),
        (LOCAL, "data-size"),
    ],
)
def test_rows_sum_to_one_over_the_models_a_client_receives(cfg, mixing: str) -> None:
    cfg = dataclasses.replace(cfg, mixing=mixing)
    ids = [2, 5, 6, 9, 11, 14, 20, 21, 30, 33]
    sizes = _sizes(ids)
    service = TopologyService(cfg, sizes, seed=11)
    for r in range(4):
        service.begin_round(r)
        graph = service.graph
        pos = {cid: k for k, cid in enumerate(ids)}
        dense = mixing_matrix(nx.relabel_nodes(graph, pos), mixing, [sizes[c] for c in ids])
        for cid in ids:
            received = _received(graph, cid)
            self_weight, row = service.mixing_row(cid)
            assert sorted(row) == received == service.neighbors(cid)
            assert abs(self_weight + sum(row.values()) - 1.0) <= 1e-12
            assert min([self_weight, *row.values()]) > 0
            p = pos[cid]
            assert self_weight == dense[p, p]
            assert row == {ids[q]: float(dense[p, q]) for q in np.flatnonzero(dense[p]) if q != p}
            if mixing == "uniform":  # EL's own rule: the plain average of what arrived
                assert self_weight == 1.0 / (len(received) + 1)


def test_uniform_oracle_rows_are_one_over_s_plus_one() -> None:
    service = TopologyService(
        dataclasses.replace(ORACLE, mixing="uniform"), _sizes(list(range(8))), 0
    )
    for r in range(3):
        service.begin_round(r)
        for cid in service.ids():
            self_weight, row = service.mixing_row(cid)
            assert self_weight == 0.25 and set(row.values()) == {0.25} and len(row) == 3


# ---- membership --------------------------------------------------------------------------------


@pytest.mark.parametrize("cfg", [ORACLE, LOCAL], ids=["oracle", "local"])
def test_joins_and_leaves_redraw_the_round_graph_over_the_live_clients(cfg) -> None:
    service = TopologyService(cfg, _sizes(list(range(10))), seed=2)
    service.begin_round(4)
    service.apply(joined={10: 30.0, 11: 40.0}, left=[0, 3])
    live = [1, 2, 4, 5, 6, 7, 8, 9, 10, 11]
    assert service.ids() == live and service.epoch == 1
    assert _edges(service.graph) == _edges(epidemic_graph(cfg, live, 2, 4))
    service.begin_round(5)
    assert _edges(service.graph) == _edges(epidemic_graph(cfg, live, 2, 5))


def test_a_change_the_sampler_cannot_serve_is_refused_and_changes_nothing() -> None:
    service = TopologyService(ORACLE, _sizes(list(range(6))), seed=0)
    state = service.state_dict()
    with pytest.raises(ConfigError, match=r"epoch 1 \(joining \[6\]\): .*3 \* 7"):
        service.join({6: 1.0})
    with pytest.raises(ConfigError, match=r"peers must be < number of live clients \(3\), got 3"):
        service.leave([0, 1, 2])
    assert service.state_dict() == state
    local = TopologyService(LOCAL, _sizes(list(range(6))), seed=0)
    local.join({6: 1.0})  # local needs no even s * N
    assert local.ids() == list(range(7))


@pytest.mark.parametrize(
    ("cfg", "n", "match"),
    [
        (ORACLE, 3, r"peers must be < number of live clients \(3\), got 3"),
        (LOCAL, 2, r"peers must be < number of live clients \(2\), got 3"),
        (ORACLE, 5, r"needs peers \* live clients even, got 3 \* 5"),
    ],
)
def test_build_errors_name_the_value_and_what_is_allowed(cfg, n: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        build_topology(cfg, n, seed=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"peers": 0}, "peers must be >= 1, got 0"),
        ({"peers": 2.5}, "peers must be an int, got 2.5"),
        ({"epidemic": "gossip"}, "unknown epidemic sampler 'gossip'; allowed: oracle, local"),
        (
            {"epidemic": "local", "mixing": "metropolis-hastings"},
            "metropolis-hastings' needs symmetric links",
        ),
    ],
)
def test_config_errors(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TopologyConfig(topology="epidemic", **kwargs)
