"""Mixing (gossip) matrices W over a communication graph.

Client i's aggregate after a round is θ_i ← Σ_j W_ij θ_j. Every scheme here
returns an N×N row-stochastic W whose row i is nonzero only on N(i) ∪ {i}, so
a client mixes only models it can actually receive. Over a directed graph
(an edge j → i: j sends to i) N(i) is i's senders, :func:`senders`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import networkx as nx
import numpy as np

from dfml.errors import ConfigError

Sizes = Sequence[float] | np.ndarray


def _num_nodes(graph: nx.Graph) -> int:
    n = graph.number_of_nodes()
    if set(graph.nodes) != set(range(n)):
        raise ValueError(f"mixing needs graph nodes 0..{n - 1}, got {sorted(graph.nodes)}")
    return n


def senders(graph: nx.Graph, i: int) -> list[int]:
    """The clients whose models ``i`` receives, sorted: its neighbours, or over a
    directed graph its predecessors (an epidemic ``local`` client does not
    receive from the peers it pushes to)."""
    links = graph.pred if graph.is_directed() else graph.adj
    return sorted(links[i])


def _closed_neighbourhood(graph: nx.Graph, i: int) -> list[int]:
    return sorted({i, *senders(graph, i)})


def _check_sizes(sizes: Sizes | None, n: int) -> np.ndarray:
    if sizes is None:
        raise ConfigError("mixing 'data-size' needs the clients' data sizes |D_i|")
    arr = np.asarray(sizes, dtype=np.float64)
    if arr.shape != (n,):
        raise ConfigError(f"need one data size per client ({n}), got shape {arr.shape}")
    bad = np.flatnonzero(~(np.isfinite(arr) & (arr > 0)))
    if bad.size:
        raise ConfigError(f"data sizes must be positive, client {int(bad[0])} has {arr[bad[0]]:g}")
    return arr


def data_size_weights(graph: nx.Graph, sizes: Sizes) -> np.ndarray:
    """CL-FML's w_ij = |D_j| / Σ_{k ∈ N(i) ∪ {i}} |D_k| for j ∈ N(i) ∪ {i}.

    Clients with more data pull their neighbours' aggregates harder, as FedAvg
    does globally. Row-stochastic but, unlike Metropolis–Hastings, not symmetric,
    so plain gossip converges to a size-biased (not the exact) average.
    """
    n = _num_nodes(graph)
    d = _check_sizes(sizes, n)
    w = np.zeros((n, n))
    for i in range(n):
        hood = _closed_neighbourhood(graph, i)
        w[i, hood] = d[hood] / d[hood].sum()
    return w


def metropolis_hastings_weights(graph: nx.Graph) -> np.ndarray:
    """W_ij = 1 / (1 + max(deg_i, deg_j)) on edges, W_ii = 1 - Σ_{j≠i} W_ij.

    Symmetric and doubly stochastic on any connected graph, so repeated mixing
    converges to the exact average (1/N) Σ_j θ_j using only local degrees.
    Refused over a directed graph, whose links are not symmetric.
    """
    if graph.is_directed():
        raise ConfigError(
            "mixing 'metropolis-hastings' needs symmetric links; this graph is directed"
        )
    n = _num_nodes(graph)
    deg = dict(graph.degree())
    w = np.zeros((n, n))
    for i, j in graph.edges():
        w[i, j] = w[j, i] = 1.0 / (1.0 + max(deg[i], deg[j]))
    w[np.diag_indices(n)] = 1.0 - w.sum(axis=1)
    return w


def uniform_weights(graph: nx.Graph) -> np.ndarray:
    """W_ij = 1 / (deg_i + 1) for j ∈ N(i) ∪ {i}: equal trust in every received model."""
    n = _num_nodes(graph)
    w = np.zeros((n, n))
    for i in range(n):
        hood = _closed_neighbourhood(graph, i)
        w[i, hood] = 1.0 / len(hood)
    return w


_SCHEMES: dict[str, Callable[[nx.Graph, Sizes | None], np.ndarray]] = {
    "data-size": lambda graph, sizes: data_size_weights(graph, _check_sizes(sizes, len(graph))),
    "metropolis-hastings": lambda graph, sizes: metropolis_hastings_weights(graph),
    "uniform": lambda graph, sizes: uniform_weights(graph),
}


def mixing_matrix(graph: nx.Graph, scheme: str, sizes: Sizes | None = None) -> np.ndarray:
    """N×N mixing matrix W of ``scheme`` (one of :data:`dfml.topology.MIXINGS`).

    ``sizes`` (|D_i| per client) is required by ``data-size``; when given to any
    scheme it is still validated, so a bad value fails early whichever is used.
    """
    build = _SCHEMES.get(scheme)
    if build is None:
        raise ConfigError(f"unknown mixing {scheme!r}; allowed: {', '.join(_SCHEMES)}")
    if sizes is not None:
        _check_sizes(sizes, graph.number_of_nodes())
    return build(graph, sizes)


def spectral_gap(w: np.ndarray) -> float:
    """1 - |λ_2(W)|, the second largest eigenvalue modulus; larger mixes faster.

    Gossip error shrinks roughly like |λ_2|^t, so this ranks topologies by how
    quickly consensus is reached (complete graph with uniform weights: gap 1).
    Symmetric W (Metropolis–Hastings, uniform on regular graphs) uses the exact
    symmetric solver; other W use the general eigenvalue moduli.
    """
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] != w.shape[1] or w.shape[0] < 2:
        raise ValueError(f"spectral_gap needs a square matrix of size >= 2, got {w.shape}")
    eigenvalues = np.linalg.eigvalsh(w) if np.allclose(w, w.T) else np.linalg.eigvals(w)
    moduli = np.sort(np.abs(eigenvalues))[::-1]
    return float(1.0 - moduli[1])
