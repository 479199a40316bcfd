"""TopologyService: epoch 0 equals the static graphs, and every join/leave keeps each rule."""

from __future__ import annotations

import dataclasses
import json
from itertools import pairwise
from pathlib import Path

import networkx as nx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dfml.errors import ConfigError
from dfml.topology import (
    MIXINGS,
    TOPOLOGIES,
    FixedTopology,
    TopologyConfig,
    TopologyService,
    build_topology,
    link_cost_graph,
    minimum_spanning_tree,
    mixing_matrix,
    read_edge_list,
    validate_changes,
)
from dfml.topology.epidemic import epidemic_graph
from dfml.topology.service import _dense_row_sum

EDGE_FILE_IDS = 60  # the shared edge-list file wires ids 0..59, offsets 1, 2 and 3


@pytest.fixture(scope="module")
def edge_file(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("edges") / "circulant.txt"
    lines = [
        f"{i} {i + d}" for i in range(EDGE_FILE_IDS) for d in (1, 2, 3) if i + d < EDGE_FILE_IDS
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return str(path)


def _configs(edge_file: str) -> dict[str, TopologyConfig]:
    return {
        "ring": TopologyConfig(topology="ring"),
        "star": TopologyConfig(topology="star"),
        "complete": TopologyConfig(topology="complete"),
        "k-regular-3": TopologyConfig(topology="k-regular", degree=3),
        "k-regular-2": TopologyConfig(topology="k-regular", degree=2),
        "erdos-renyi": TopologyConfig(topology="erdos-renyi", edge_probability=0.4),
        "small-world": TopologyConfig(topology="small-world", degree=2, rewire_probability=0.3),
        "mst": TopologyConfig(topology="mst"),
        "edge-list": TopologyConfig(topology="edge-list", edge_list=edge_file),
        "epidemic-oracle": TopologyConfig(topology="epidemic", peers=2),
        "epidemic-local": TopologyConfig(topology="epidemic", peers=2, epidemic="local"),
    }


def _with_mixing(cfg: TopologyConfig, mixing: str) -> TopologyConfig:
    """``cfg`` with ``mixing``; a directed graph has no Metropolis–Hastings rows, so it
    keeps its own mixing there (the refusal is tested in test_epidemic.py)."""
    if cfg.directed and mixing == "metropolis-hastings":
        return cfg
    return dataclasses.replace(cfg, mixing=mixing)


CONFIG_NAMES = list(_configs("unused"))


def _edges(graph: nx.Graph) -> set[frozenset[int]]:
    return {frozenset(e) for e in graph.edges()}


def _sizes(ids: list[int]) -> dict[int, float]:
    rng = np.random.default_rng(len(ids))
    return {cid: float(rng.integers(10, 500)) for cid in ids}


def _positional(graph: nx.Graph, ids: list[int]) -> nx.Graph:
    """The graph relabelled to positions 0..N-1 of the sorted ids, as mixing_matrix needs."""
    return nx.relabel_nodes(graph, {cid: k for k, cid in enumerate(ids)})


def _assert_rows_are_dense_rows(service: TopologyService, sizes: dict[int, float]) -> None:
    """Every sparse row is bitwise the row of mixing_matrix over the current graph."""
    ids = service.ids()
    dense = mixing_matrix(
        _positional(service.graph, ids), service.cfg.mixing, [sizes[c] for c in ids]
    )
    for p, cid in enumerate(ids):
        self_weight, row = service.mixing_row(cid)
        assert list(row) == service.neighbors(cid)
        assert self_weight == dense[p, p]
        assert {ids[q]: float(dense[p, q]) for q in np.flatnonzero(dense[p]) if q != p} == row


def _assert_rows_stochastic(service: TopologyService) -> None:
    rows = {cid: service.mixing_row(cid) for cid in service.ids()}
    graph = service.graph
    directed = graph.is_directed()
    regular = len({d for _, d in graph.degree()}) == 1
    for cid, (self_weight, row) in rows.items():
        senders = graph.predecessors(cid) if directed else graph.neighbors(cid)
        assert set(row) <= set(senders)
        assert self_weight >= 0 and all(w >= 0 for w in row.values())
        assert abs(self_weight + sum(row.values()) - 1.0) <= 1e-12
        symmetric = not directed and (
            service.cfg.mixing == "metropolis-hastings"
            or (service.cfg.mixing == "uniform" and regular)
        )
        if symmetric:
            assert all(rows[j][1][cid] == w for j, w in row.items())


# ---- epoch 0 is today's static topology ---------------------------------------------------


@pytest.mark.parametrize("mixing", MIXINGS)
@pytest.mark.parametrize(
    ("name", "n"),
    [
        ("ring", 9),
        ("star", 300),  # the hub's 299-term row exercises numpy's pairwise recursion
        ("complete", 150),
        ("k-regular-3", 10),
        ("k-regular-2", 7),
        ("erdos-renyi", 15),
        ("small-world", 12),
        ("mst", 11),
        ("edge-list", EDGE_FILE_IDS),
        ("epidemic-oracle", 10),
        ("epidemic-local", 9),
    ],
)
def test_epoch0_is_build_topology_with_dense_rows(
    edge_file: str, name: str, n: int, mixing: str
) -> None:
    cfg = _with_mixing(_configs(edge_file)[name], mixing)
    ids = list(range(n))
    sizes = _sizes(ids)
    service = TopologyService(cfg, sizes, seed=5)
    static = build_topology(cfg, n, seed=5)
    assert service.epoch == 0
    assert service.ids() == ids
    assert _edges(service.graph) == _edges(static)
    dense = mixing_matrix(static, cfg.mixing, [sizes[c] for c in ids])
    for i in ids:
        self_weight, row = service.mixing_row(i)
        assert self_weight == dense[i, i]
        expected = {j: float(dense[i, j]) for j in np.flatnonzero(dense[i]) if j != i}
        assert row == expected


def test_every_topology_is_covered() -> None:
    assert {cfg.topology for cfg in _configs("unused").values()} == set(TOPOLOGIES)


@pytest.mark.parametrize(
    "name",
    [
        "ring",
        "star",
        "complete",
        "k-regular-3",
        "erdos-renyi",
        "small-world",
        "epidemic-oracle",
        "epidemic-local",
    ],
)
def test_noncontiguous_ids_get_the_static_graph_relabelled(name: str) -> None:
    cfg = _configs("unused")[name]
    ids = [3, 10, 11, 40, 41, 57, 90, 1000]
    service = TopologyService(cfg, _sizes(ids), seed=2)
    static = build_topology(cfg, len(ids), seed=2)
    assert _edges(_positional(service.graph, ids)) == _edges(static)
    _assert_rows_are_dense_rows(service, _sizes(ids))


def test_mst_spans_the_ids_own_link_costs() -> None:
    ids = [4, 9, 17, 23, 42, 77]
    service = TopologyService(TopologyConfig(topology="mst"), _sizes(ids), seed=8)
    assert _edges(service.graph) == _edges(minimum_spanning_tree(link_cost_graph(ids, 8)))


def test_dense_row_sum_replays_numpy_summation_order() -> None:
    rng = np.random.default_rng(0)
    naive_differs = 0
    for _ in range(400):
        n = int(rng.choice([2, 5, 8, 9, 64, 129, 300, 1000, 20_000]))
        positions = np.sort(
            rng.choice(n, size=int(rng.integers(1, min(n, 200) + 1)), replace=False)
        )
        values = 1.0 / (1.0 + rng.integers(1, 60, size=positions.size))
        row = np.zeros(n)
        row[positions] = values
        got = _dense_row_sum(n, positions.tolist(), values.tolist())
        assert got == row.sum()
        naive_differs += got != sum(values.tolist())
    assert naive_differs > 0  # the order does matter, so the replay is not vacuous


# ---- random join/leave schedules ---------------------------------------------------------


def _predicted_error(
    cfg: TopologyConfig, live: list[int], joined: dict[int, float], file_graph: nx.Graph
) -> bool:
    """Whether membership ``live`` (with newcomers ``joined``) breaks the topology's rule."""
    n = len(live)
    if n < 2:
        return True
    if cfg.topology == "k-regular":
        k = cfg.degree
        return k >= n or (n * k) % 2 == 1 or (k == 1 and n > 2)
    if cfg.topology == "small-world":
        return cfg.degree >= n
    if cfg.topology == "epidemic":
        return cfg.peers >= n or (cfg.epidemic == "oracle" and (n * cfg.peers) % 2 == 1)
    if cfg.topology == "edge-list":
        return any(c not in file_graph for c in joined) or not nx.is_connected(
            file_graph.subgraph(live)
        )
    return False


def _assert_kind_rule(
    service: TopologyService, before: nx.Graph, left: list[int], file_graph: nx.Graph
) -> None:
    graph, ids, cfg = service.graph, service.ids(), service.cfg
    kind = cfg.topology
    if kind == "ring":
        expected = {frozenset(p) for p in pairwise([*ids, ids[0]])}
        assert _edges(graph) == expected
    elif kind == "star":
        assert _edges(graph) == {frozenset((ids[0], c)) for c in ids[1:]}
    elif kind == "complete":
        assert graph.number_of_edges() == len(ids) * (len(ids) - 1) // 2
    elif kind == "k-regular":
        assert all(d == cfg.degree for _, d in graph.degree())
    elif kind == "small-world":
        assert graph.number_of_edges() == len(ids) * cfg.degree // 2
    elif kind == "mst":
        assert _edges(graph) == _edges(minimum_spanning_tree(link_cost_graph(ids, service.seed)))
    elif kind == "edge-list":
        assert _edges(graph) == _edges(file_graph.subgraph(ids))
    elif kind == "epidemic":  # the sampler's graph of this round over the live ids
        fresh = epidemic_graph(cfg, ids, service.seed, service.round)
        assert set(graph.edges()) == set(fresh.edges())
        assert graph.is_directed() == (cfg.epidemic == "local")
    elif kind == "erdos-renyi":
        survivors = before.subgraph(set(before) - set(left))
        kept = _edges(survivors)
        added = _edges(graph.subgraph(survivors.nodes)) - kept
        lowest = sorted(min(c) for c in nx.connected_components(survivors))
        assert kept <= _edges(graph)
        assert added == {frozenset(p) for p in pairwise(lowest)}


@st.composite
def _initial_ids(draw: st.DrawFn) -> list[int]:
    n = draw(st.integers(2, 8))
    if draw(st.booleans()):
        return list(range(n))
    return sorted(draw(st.sets(st.integers(0, 40), min_size=n, max_size=n)))


@pytest.mark.parametrize("name", CONFIG_NAMES)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ids=_initial_ids(), mixing=st.sampled_from(MIXINGS), data=st.data())
def test_random_schedules_keep_every_rule(
    edge_file: str, name: str, ids: list[int], mixing: str, data: st.DataObject
) -> None:
    cfg = _with_mixing(_configs(edge_file)[name], mixing)
    file_graph = read_edge_list(edge_file)
    sizes = _sizes(ids)
    seed = data.draw(st.integers(0, 2**16), label="seed")
    if _predicted_error(cfg, ids, sizes, file_graph):
        with pytest.raises(ConfigError):
            TopologyService(cfg, sizes, seed)
        return
    service = TopologyService(cfg, sizes, seed)
    retired: set[int] = set()
    next_id = max(ids) + 1
    for _ in range(data.draw(st.integers(1, 6), label="steps")):
        if cfg.dynamic:  # a new round between changes: a new graph, same rules
            service.begin_round(service.round + data.draw(st.integers(0, 3), label="rounds"))
            _assert_kind_rule(service, service.graph, [], file_graph)
        before, state = service.graph.copy(), service.state_dict()
        live = service.ids()
        action = data.draw(st.sampled_from(["change", "change", "change", "reuse", "ghost"]))
        if action == "reuse":  # an id that is live or left before must never join again
            cid = data.draw(st.sampled_from(sorted(retired | set(live))))
            with pytest.raises(ConfigError, match=f"cannot join client {cid}: it"):
                service.join({cid: 1.0})
            assert service.state_dict() == state
            continue
        if action == "ghost":
            with pytest.raises(ConfigError, match="cannot remove client"):
                service.leave([next_id + 1000])
            continue
        left = data.draw(st.lists(st.sampled_from(live), max_size=3, unique=True), label="left")
        joined = {}
        for _ in range(data.draw(st.integers(0, 3), label="joins")):
            next_id += data.draw(st.integers(0, 2))
            joined[next_id] = float(data.draw(st.integers(1, 500)))
            next_id += 1
        after = sorted((set(live) - set(left)) | set(joined))
        if not joined and not left:
            service.apply(joined, left)
            assert service.state_dict() == state  # naming nobody is a no-op
            continue
        if _predicted_error(cfg, after, joined, file_graph):
            with pytest.raises(ConfigError) as info:
                service.apply(joined, left)
            assert "\n" not in str(info.value)
            assert service.state_dict() == state  # a refused change changes nothing
            continue
        service.apply(joined, left)
        retired |= set(left)
        sizes = {c: s for c, s in sizes.items() if c not in left} | joined
        assert service.epoch == state["epoch"] + 1
        assert service.ids() == after == sorted(service.graph)
        assert cfg.dynamic or nx.is_connected(service.graph)  # a round's graph need not be
        assert nx.number_of_selfloops(service.graph) == 0
        _assert_kind_rule(service, before, left, file_graph)
        _assert_rows_stochastic(service)
        _assert_rows_are_dense_rows(service, sizes)


# ---- targeted rules ----------------------------------------------------------------------


def test_ring_inserts_joiners_in_id_order_and_bridges_leavers() -> None:
    service = TopologyService(TopologyConfig(topology="ring"), _sizes([2, 5, 9]), seed=0)
    service.join({12: 1.0})
    assert service.neighbors(12) == [2, 9]
    service.join({7: 1.0})  # ids are opaque: a never-seen smaller id goes to its id slot
    assert service.neighbors(7) == [5, 9]
    service.leave([9])
    assert service.neighbors(7) == [5, 12]
    assert service.epoch == 3


def test_star_hub_is_lowest_live_id() -> None:
    service = TopologyService(TopologyConfig(topology="star"), _sizes([4, 6, 8]), seed=0)
    service.leave([4])
    assert service.neighbors(6) == [8]
    service.join({3: 1.0, 10: 1.0})
    assert service.neighbors(3) == [6, 8, 10]
    assert service.neighbors(10) == [3]


def test_erdos_renyi_repair_chains_components_through_lowest_ids() -> None:
    cfg = TopologyConfig(topology="erdos-renyi", edge_probability=0.25)
    for seed in range(100):
        service = TopologyService(cfg, _sizes(list(range(12))), seed)
        cuts = sorted(nx.articulation_points(service.graph))
        if cuts:
            break
    else:
        pytest.fail("no erdos-renyi graph with a cut vertex in 100 seeds")
    survivors = service.graph.subgraph(set(service.graph) - {cuts[0]}).copy()
    lowest = sorted(min(c) for c in nx.connected_components(survivors))
    service.leave([cuts[0]])
    assert _edges(service.graph) == _edges(survivors) | {frozenset(p) for p in pairwise(lowest)}


def test_erdos_renyi_joiner_always_gets_a_link() -> None:
    cfg = TopologyConfig(topology="erdos-renyi", edge_probability=0.01)
    service = TopologyService(cfg, _sizes([0, 1]), seed=0)
    for cid in range(2, 30):
        service.join({cid: 1.0})
        assert service.neighbors(cid)
    assert nx.is_connected(service.graph)


def test_k_regular_swap_in_one_change_keeps_parity() -> None:
    cfg = TopologyConfig(topology="k-regular", degree=3)
    service = TopologyService(cfg, _sizes(list(range(6))), seed=1)
    with pytest.raises(ConfigError, match=r"epoch 1 \(joining \[6\]\): .*got 3 \* 7") as info:
        service.join({6: 1.0})
    assert "\n" not in str(info.value)
    service.apply(joined={6: 1.0}, left=[0])
    assert service.ids() == [1, 2, 3, 4, 5, 6]
    assert all(d == 3 for _, d in service.graph.degree())
    with pytest.raises(ConfigError, match=r"degree must be < number of clients \(2\), got 3"):
        service.leave([1, 2, 3, 4])


def test_ring_of_100k_clients_is_sparse() -> None:
    ids = list(range(0, 200_000, 2))  # non-contiguous: exercises the relabelling too
    cfg = TopologyConfig(topology="ring", mixing="metropolis-hastings")
    service = TopologyService(cfg, dict.fromkeys(ids, 10.0), seed=0)
    assert service.mixing_row(500) == (1.0 - (1 / 3 + 1 / 3), {498: 1 / 3, 502: 1 / 3})
    service.join({200_001: 5.0})
    service.leave([0])
    assert service.neighbors(200_001) == [2, 199_998]  # an N×N matrix would need 80 GB


# ---- edge-list files ---------------------------------------------------------------------


def test_edge_list_names_future_ids_and_rejects_unknown_ones(tmp_path: Path) -> None:
    path = tmp_path / "edges.txt"
    path.write_text("0 1\n1 2\n2 0\n2 7\n7 0\n2 9\n", encoding="utf-8")
    cfg = TopologyConfig(topology="edge-list", edge_list=str(path))
    service = TopologyService(cfg, _sizes([0, 1, 2]), seed=0)
    service.join({7: 3.0})
    assert service.neighbors(7) == [0, 2]
    with pytest.raises(ConfigError, match=r"client 8 has no edge in edge list .*edges\.txt"):
        service.join({8: 3.0})
    with pytest.raises(ConfigError, match=r"client 5 has no edge in edge list .*edges\.txt"):
        TopologyService(cfg, _sizes([0, 1, 5]), seed=0)
    with pytest.raises(ConfigError, match=r"leaving \[2\]\): edge list .* disconnected"):
        service.apply(joined={9: 1.0}, left=[2])  # 9 links only to 2
    assert service.ids() == [0, 1, 2, 7]


# ---- checkpoints and schedules -----------------------------------------------------------


@pytest.mark.parametrize("name", CONFIG_NAMES)
def test_state_dict_round_trip_resumes_exactly(edge_file: str, name: str) -> None:
    cfg = _with_mixing(_configs(edge_file)[name], "metropolis-hastings")
    service = TopologyService(cfg, _sizes(list(range(8))), seed=4)
    service.apply(joined={8: 7.0, 9: 70.0}, left=[3, 5])
    resumed = TopologyService.from_state(cfg, json.loads(json.dumps(service.state_dict())))
    for step in [({10: 1.0, 11: 2.0}, [0, 8]), ({}, [9, 11]), ({12: 3.0, 14: 9.0}, [])]:
        assert resumed.epoch == service.epoch
        assert resumed.ids() == service.ids()
        assert _edges(resumed.graph) == _edges(service.graph)
        assert all(resumed.mixing_row(c) == service.mixing_row(c) for c in service.ids())
        assert resumed.state_dict() == service.state_dict()
        service.apply(*step)
        resumed.apply(*step)
    assert _edges(resumed.graph) == _edges(service.graph)


def test_from_state_rejects_another_topology() -> None:
    state = TopologyService(TopologyConfig(topology="ring"), _sizes([0, 1, 2]), 0).state_dict()
    with pytest.raises(ConfigError, match="saved for 'ring', but the config says 'star'"):
        TopologyService.from_state(TopologyConfig(topology="star"), state)


def test_copy_is_independent() -> None:
    service = TopologyService(TopologyConfig(topology="complete"), _sizes([0, 1, 2]), 0)
    trial = service.copy()
    trial.join({3: 1.0})
    assert service.ids() == [0, 1, 2] and service.epoch == 0
    assert trial.ids() == [0, 1, 2, 3] and trial.epoch == 1


def test_validate_changes_names_the_failing_change() -> None:
    cfg = TopologyConfig(topology="k-regular", degree=3)
    sizes = _sizes(list(range(6)))
    validate_changes(cfg, sizes, 0, [({6: 1.0, 7: 1.0}, []), ({8: 1.0}, [0])])
    with pytest.raises(ConfigError, match=r"membership change 1: epoch 2 \(leaving \[0\]\)"):
        validate_changes(cfg, sizes, 0, [({6: 1.0}, [1]), ({}, [0])])
    with pytest.raises(ConfigError, match=r"membership change 1: cannot join client 5: it left"):
        validate_changes(cfg, sizes, 0, [({}, [4, 5]), ({5: 1.0, 6: 1.0}, [])])


# ---- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sizes", "seed", "match"),
    [
        ({0: 1.0}, 0, "at least 2 clients, got 1"),
        ({0: 1.0, -3: 1.0}, 0, "client ids must be non-negative ints, got -3"),
        ({0: 1.0, True: 1.0}, 0, "client ids must be non-negative ints, got True"),
        ({0: 1.0, 1: 0.0}, 0, "data sizes must be positive, client 1 has 0"),
        ({0: 1.0, 1: float("nan")}, 0, "client 1 has nan"),
        ({0: 1.0, 1: "many"}, 0, "data size of client 1 must be a number, got 'many'"),
        ({0: 1.0, 1: 1.0}, -1, "seed must be a non-negative int"),
    ],
)
def test_construction_errors(sizes: dict, seed: int, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        TopologyService(TopologyConfig(), sizes, seed)


def test_change_errors_leave_the_service_unchanged() -> None:
    service = TopologyService(TopologyConfig(), _sizes([0, 1, 2]), seed=0)
    service.leave([2])
    state = service.state_dict()
    for change, match in [
        (lambda: service.join({1: 1.0}), "cannot join client 1: it is already live"),
        (lambda: service.join({2: 1.0}), "cannot join client 2: it left before"),
        (lambda: service.leave([2]), "cannot remove client 2: it already left"),
        (lambda: service.leave([9]), "cannot remove client 9: it is not live"),
        (lambda: service.leave([0]), r"leaving \[0\] would leave 1 live client"),
        (lambda: service.join({5: -1.0}), "client 5 has -1"),
    ]:
        with pytest.raises(ConfigError, match=match):
            change()
        assert service.state_dict() == state
    with pytest.raises(ValueError, match="client 2 is not live at epoch 1"):
        service.mixing_row(2)


# ---- fixed sub-graphs: groups of clients gossiping apart ------------------------------------


@pytest.mark.parametrize("mixing", MIXINGS)
def test_fixed_topology_rows_are_the_dense_rows_of_each_reconnected_group(mixing: str) -> None:
    """Rows over groups of a topology: the dense matrix's rows of the union of
    each group's sub-graph, a split group chained lowest id to lowest id."""
    cfg = TopologyConfig(topology="small-world", degree=2)
    ids = list(range(12))
    service = TopologyService(cfg, _sizes(ids), seed=3)
    groups = [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]]
    sizes = {c: 5 + (c * 7) % 11 for c in ids}  # e.g. |D^M|, not the topology's |D|
    fixed = FixedTopology.of_groups(service.graph, groups, mixing, sizes)
    expected = nx.Graph()
    for group in groups:
        sub = nx.Graph(service.graph.subgraph(group).edges())
        sub.add_nodes_from(group)
        lowest = sorted(min(part) for part in nx.connected_components(sub))
        sub.add_edges_from(pairwise(lowest))
        expected.update(sub)
    assert _edges(fixed.graph) == _edges(expected)
    assert any(not nx.is_connected(service.graph.subgraph(g)) for g in groups)
    dense = mixing_matrix(expected, mixing, [sizes[c] for c in ids])
    for i in ids:
        self_weight, row = fixed.mixing_row(i)
        assert self_weight == dense[i, i]
        assert row == {j: float(dense[i, j]) for j in np.flatnonzero(dense[i]) if j != i}
        group = next(g for g in groups if i in g)
        assert set(fixed.neighbors(i)) <= set(group)


def test_fixed_topology_needs_sizes_for_data_size_and_a_known_scheme() -> None:
    with pytest.raises(ConfigError, match="unknown mixing 'equal'"):
        FixedTopology(nx.path_graph(3), "equal")
    with pytest.raises(ValueError, match="needs the clients' sizes"):
        FixedTopology(nx.path_graph(3), "data-size")
    with pytest.raises(ValueError, match="client 7 is not in"):
        FixedTopology(nx.path_graph(3), "uniform").neighbors(7)


def test_an_edge_list_naming_a_client_the_run_never_has_is_refused(edge_file):
    """The file wires ids 0..59; a run whose ids stop below that cannot use it (was
    accepted silently, wiring clients that never exist)."""
    cfg = TopologyConfig(topology="edge-list", edge_list=edge_file)
    sizes = {c: 10.0 for c in range(8)}
    TopologyService(cfg, sizes, seed=0, id_limit=EDGE_FILE_IDS)  # 8 clients + 52 reserve
    with pytest.raises(ConfigError) as err:
        TopologyService(cfg, sizes, seed=0, id_limit=EDGE_FILE_IDS - 1)
    assert str(err.value) == (
        f"edge list {edge_file} names client {EDGE_FILE_IDS - 1}, but this run's clients "
        f"are 0..{EDGE_FILE_IDS - 2} (initial and reserve)"
    )
