"""Mixing matrices: stochasticity, locality, the CL-FML data-size rule, consensus."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from dfml.errors import ConfigError
from dfml.topology import (
    MIXINGS,
    TopologyConfig,
    build_topology,
    data_size_weights,
    metropolis_hastings_weights,
    mixing_matrix,
    senders,
    spectral_gap,
    uniform_weights,
)
from dfml.topology.mixing import _SCHEMES

GRAPHS = [
    ("ring", TopologyConfig(topology="ring"), 9),
    ("star", TopologyConfig(topology="star"), 7),
    ("complete", TopologyConfig(topology="complete"), 5),
    ("k-regular", TopologyConfig(topology="k-regular", degree=3), 10),
    ("erdos-renyi", TopologyConfig(topology="erdos-renyi", edge_probability=0.3), 15),
    ("small-world", TopologyConfig(topology="small-world", degree=4), 12),
    ("mst", TopologyConfig(topology="mst"), 11),
]


def _sizes(n: int) -> np.ndarray:
    return np.random.default_rng(n).integers(10, 500, size=n).astype(float)


def test_every_mixing_has_a_scheme() -> None:
    assert set(_SCHEMES) == set(MIXINGS)


@pytest.mark.parametrize("scheme", MIXINGS)
@pytest.mark.parametrize(("name", "cfg", "n"), GRAPHS, ids=[g[0] for g in GRAPHS])
def test_row_stochastic_and_local(name: str, cfg: TopologyConfig, n: int, scheme: str) -> None:
    g = build_topology(cfg, n, seed=1)
    w = mixing_matrix(g, scheme, _sizes(n))
    assert w.shape == (n, n)
    assert np.all(w >= 0)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    allowed = nx.to_numpy_array(g, nodelist=range(n), weight=None) + np.eye(n)
    assert np.all(w[allowed == 0] == 0)
    assert np.all(w[allowed > 0] > 0)


@pytest.mark.parametrize(("name", "cfg", "n"), GRAPHS, ids=[g[0] for g in GRAPHS])
def test_metropolis_hastings_symmetric_doubly_stochastic(
    name: str, cfg: TopologyConfig, n: int
) -> None:
    g = build_topology(cfg, n, seed=2)
    w = metropolis_hastings_weights(g)
    np.testing.assert_array_equal(w, w.T)
    np.testing.assert_allclose(w.sum(axis=0), 1.0, atol=1e-12)
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    deg = dict(g.degree())
    for i, j in g.edges():
        assert w[i, j] == 1.0 / (1 + max(deg[i], deg[j]))


def test_data_size_weights_hand_computed() -> None:
    # path 0 - 1 - 2 - 3 with |D| = 1, 2, 3, 4
    g = nx.path_graph(4)
    w = data_size_weights(g, [1, 2, 3, 4])
    expected = np.array(
        [
            [1 / 3, 2 / 3, 0, 0],
            [1 / 6, 2 / 6, 3 / 6, 0],
            [0, 2 / 9, 3 / 9, 4 / 9],
            [0, 0, 3 / 7, 4 / 7],
        ]
    )
    np.testing.assert_array_equal(w, expected)
    np.testing.assert_array_equal(mixing_matrix(g, "data-size", [1, 2, 3, 4]), expected)


def test_data_size_with_equal_sizes_is_uniform() -> None:
    g = build_topology(TopologyConfig(topology="k-regular", degree=3), 8, seed=0)
    np.testing.assert_allclose(data_size_weights(g, [5.0] * 8), uniform_weights(g))


def test_uniform_weights_values() -> None:
    g = build_topology(TopologyConfig(topology="star"), 5, seed=0)
    w = uniform_weights(g)
    np.testing.assert_array_equal(w[0], np.full(5, 1 / 5))
    np.testing.assert_array_equal(w[3], [1 / 2, 0, 0, 1 / 2, 0])


def test_metropolis_hastings_reaches_consensus_on_ring() -> None:
    n = 10
    g = build_topology(TopologyConfig(topology="ring"), n, seed=0)
    w = metropolis_hastings_weights(g)
    x = np.random.default_rng(0).normal(size=(n, 3))
    target = x.mean(axis=0)
    for _ in range(400):
        x = w @ x
        np.testing.assert_allclose(x.mean(axis=0), target, atol=1e-12)  # average preserved
    np.testing.assert_allclose(x, np.broadcast_to(target, x.shape), atol=1e-8)


def test_spectral_gap() -> None:
    g = build_topology(TopologyConfig(topology="complete"), 6, seed=0)
    assert spectral_gap(uniform_weights(g)) == pytest.approx(1.0)
    ring = metropolis_hastings_weights(build_topology(TopologyConfig(topology="ring"), 10, seed=0))
    # MH on a ring: eigenvalues 1/3 + 2/3 cos(2πk/N); |λ_2| = 1/3 + 2/3 cos(2π/N)
    assert spectral_gap(ring) == pytest.approx(2 / 3 * (1 - np.cos(2 * np.pi / 10)))
    complete_gap = spectral_gap(metropolis_hastings_weights(g))
    ring6 = metropolis_hastings_weights(build_topology(TopologyConfig(topology="ring"), 6, seed=0))
    assert complete_gap > spectral_gap(ring6) > 0
    # non-symmetric (data-size) matrices still have |λ_1| = 1 and a gap in (0, 1]
    d = data_size_weights(nx.path_graph(4), [1, 2, 3, 4])
    assert 0 < spectral_gap(d) <= 1


def test_spectral_gap_rejects_non_square() -> None:
    with pytest.raises(ValueError):
        spectral_gap(np.ones((2, 3)))


@pytest.mark.parametrize(
    ("scheme", "sizes", "match"),
    [
        ("gossip", None, r"unknown mixing 'gossip'; allowed: data-size"),
        ("data-size", None, "needs the clients' data sizes"),
        ("data-size", [1, 2, 3], r"one data size per client \(4\), got shape \(3,\)"),
        ("data-size", [1, 2, 0, 4], "data sizes must be positive, client 2 has 0"),
        ("data-size", [1, -2, 3, 4], "client 1 has -2"),
        ("data-size", [1, 2, float("nan"), 4], "client 2 has nan"),
        ("uniform", [1, 2, 3, 4, 5], "one data size per client"),
        ("metropolis-hastings", [0, 1, 1, 1], "must be positive"),
    ],
)
def test_mixing_errors(scheme: str, sizes: list | None, match: str) -> None:
    g = nx.cycle_graph(4)
    with pytest.raises(ConfigError, match=match):
        mixing_matrix(g, scheme, sizes)


def test_data_size_weights_validates_sizes_directly() -> None:
    with pytest.raises(ConfigError, match="must be positive"):
        data_size_weights(nx.cycle_graph(3), [1, 0, 1])


def test_directed_graph_rows_mix_what_a_client_receives() -> None:
    """Hand example: 0 → 1, 2 → 1, 1 → 0 (j → i: i receives j's model)."""
    graph = nx.DiGraph([(0, 1), (2, 1), (1, 0)])
    assert [senders(graph, i) for i in range(3)] == [[1], [0, 2], []]
    np.testing.assert_array_equal(
        uniform_weights(graph),
        [[1 / 2, 1 / 2, 0], [1 / 3, 1 / 3, 1 / 3], [0, 0, 1]],
    )
    sizes = [1.0, 2.0, 5.0]
    np.testing.assert_allclose(
        data_size_weights(graph, sizes),
        [[1 / 3, 2 / 3, 0], [1 / 8, 2 / 8, 5 / 8], [0, 0, 1]],
        rtol=0,
        atol=1e-15,
    )
    with pytest.raises(ConfigError, match="metropolis-hastings' needs symmetric links"):
        mixing_matrix(graph, "metropolis-hastings")
