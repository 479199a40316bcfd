"""Phase 2 of CL-FML: label-aware clustering of the P_i along an MST.

The leader n_l builds a minimum spanning tree over the link graph and the
label vectors P_i travel up it (a convergecast): one step per tree level,
deepest level first; in the step of level d every node of that level sends
its parent its own P_i (tagged with its depth) together with those received
from its subtree. The leader folds the P_i into the K cluster label
distributions w_k in :func:`arrival_order` — level by level from the
deepest, by client id within a level, its own P_l last — updating the w_k as
each one is folded in (:class:`OnlineKMeans`). Fixing this order makes the
result a function of the tree, not of message timing. Cluster ids go back
down the same tree.

Online k-means rule (one pass, MacQueen-style; each rule is tested):

* **Seeding.** While fewer than K centres exist, a P_i whose profile (the
  exact vector) has not arrived before opens a new centre w_k = P_i, k
  numbered in arrival order. A repeated profile joins the nearest centre.
* **Joining.** Once K centres exist, P_i joins the nearest centre by
  Hellinger distance ℋ(w_k, P_i), ties (within ``TIE_TOL``) → the lower k.
* **Update.** w_k is the running mean of its members' P_i (kept as sum and
  count, so the leader and a centralized recomputation agree bit for bit on
  multi-hot vectors); ℋ normalises it, so w_k is compared as the label
  distribution of the cluster.
* **Final cluster.** A client's cluster is the one it joined on arrival; it
  is not revisited when centres move later (the leader decides each P_i as
  it folds it in, as the slides' incremental update implies). So each centre is
  exactly the mean of its members, every cluster is non-empty and no second
  pass over the tree is needed.
* **Errors.** K < 1, K > N, or K > the number of distinct profiles (a
  cluster would stay empty) → :class:`~dfml.errors.ConfigError`.

``--clusters auto`` uses :func:`single_linkage` instead: clients within a
Hellinger threshold of each other are linked, clusters are the connected
components.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np

from dfml.algorithms.clfml.labels import TIE_TOL, as_distribution, nearest, pairwise_hellinger
from dfml.errors import ConfigError


def _check_tree(tree: nx.Graph, leader: int) -> None:
    if tree.number_of_nodes() == 0 or not nx.is_tree(tree):
        raise ConfigError("convergecast needs a spanning tree (connected, no cycles)")
    if leader not in tree:
        raise ConfigError(f"leader {leader} is not a node of the tree")


def tree_parents(tree: nx.Graph, leader: int) -> dict[int, int]:
    """Each non-leader client's parent on its path to the leader (where it sends P_i)."""
    _check_tree(tree, leader)
    return {child: parent for parent, child in nx.bfs_edges(tree, leader)}


def convergecast_levels(tree: nx.Graph, leader: int) -> list[list[int]]:
    """The tree's levels by depth from the leader, deepest first, each sorted by id.

    One convergecast step per level, in this order; the last level is ``[leader]``.
    """
    _check_tree(tree, leader)
    depth = nx.single_source_shortest_path_length(tree, leader)
    levels: dict[int, list[int]] = {}
    for node, d in depth.items():
        levels.setdefault(d, []).append(node)
    return [sorted(levels[d]) for d in sorted(levels, reverse=True)]


def arrival_order(tree: nx.Graph, leader: int) -> list[int]:
    """The order in which the leader folds the P_i into the w_k (the levels, flattened)."""
    return [node for level in convergecast_levels(tree, leader) for node in level]


@dataclass(frozen=True)
class Clustering:
    """Cluster of each client (0..K−1) and the cluster label distributions w_k (K×M)."""

    assignment: dict[int, int]
    centres: np.ndarray

    @property
    def clusters(self) -> int:
        return int(self.centres.shape[0])


def _check_clusters(clusters: int) -> None:
    if isinstance(clusters, bool) or not isinstance(clusters, int) or clusters < 1:
        raise ConfigError(f"clusters must be an integer >= 1, got {clusters!r}")


def _check_enough(clusters: int, n: int, distinct: int) -> None:
    if clusters > n:
        raise ConfigError(f"clusters {clusters} > {n} clients")
    if clusters > distinct:
        raise ConfigError(
            f"clusters {clusters} > {distinct} distinct label profiles among {n} clients"
        )


class OnlineKMeans:
    """The leader's incremental clustering of the P_i (rules in the module docstring).

    Feed P_i one at a time with :meth:`observe` as they arrive, then
    :meth:`finish`; or call :meth:`fit` on the whole arrival sequence.
    """

    def __init__(self, clusters: int) -> None:
        _check_clusters(clusters)
        self.clusters = clusters
        self.reset()

    def reset(self) -> None:
        self._sums: list[np.ndarray] = []
        self._counts: list[int] = []
        self._profiles: set[bytes] = set()
        self._assignment: dict[int, int] = {}
        self._dim: int | None = None

    def centres(self) -> np.ndarray:
        """The current w_k (running means), one row per opened centre."""
        if not self._sums:
            return np.zeros((0, self._dim or 0))
        return np.stack([s / c for s, c in zip(self._sums, self._counts, strict=True)])

    def observe(self, client: int, p: np.ndarray | Sequence[float]) -> int:
        """Fold P_i of ``client`` into the w_k; return the cluster it joins (final)."""
        vec = np.asarray(p, dtype=np.float64) + 0.0  # -0.0 → 0.0: one profile, one byte string
        if vec.ndim != 1 or (self._dim is not None and vec.size != self._dim):
            raise ConfigError(
                f"label vector of client {client} has shape {vec.shape}, expected ({self._dim},)"
            )
        if client in self._assignment:
            raise ConfigError(f"label vector of client {client} arrived twice")
        as_distribution(vec, f"label vector of client {client}")
        self._dim = vec.size
        profile = vec.tobytes()
        if len(self._sums) < self.clusters and profile not in self._profiles:
            k = len(self._sums)
            self._sums.append(vec.copy())
            self._counts.append(1)
        else:
            k = nearest(vec, self.centres())
            self._sums[k] = self._sums[k] + vec
            self._counts[k] += 1
        self._profiles.add(profile)
        self._assignment[client] = k
        return k

    def finish(self) -> Clustering:
        """The clustering of everything observed; checks K ≤ N and K ≤ distinct profiles."""
        _check_enough(self.clusters, len(self._assignment), len(self._profiles))
        return Clustering(dict(self._assignment), self.centres())

    def fit(self, arrivals: Iterable[tuple[int, np.ndarray | Sequence[float]]]) -> Clustering:
        """Cluster ``(client, P_i)`` pairs given in arrival order, from a fresh state."""
        self.reset()
        for client, p in arrivals:
            self.observe(client, p)
        return self.finish()


def centralized_online_kmeans(
    vectors: Mapping[int, np.ndarray | Sequence[float]], order: Sequence[int], clusters: int
) -> Clustering:
    """Reference: the same rule computed with all P_i in one place, by whole-array ops.

    Written independently of :class:`OnlineKMeans` (member lists, centres
    recomputed as sums over members, vectorised distances) so that tests can
    check that the MST convergecast loses or reorders nothing.
    """
    _check_clusters(clusters)
    if sorted(order) != sorted(vectors) or len(set(order)) != len(order):
        raise ConfigError("arrival order must list every client with a label vector once")
    x = np.stack([np.asarray(vectors[c], dtype=np.float64) for c in order])
    distinct = len(np.unique(x, axis=0))
    _check_enough(clusters, len(order), distinct)
    members: list[list[int]] = []
    labels = np.empty(len(order), dtype=int)
    for i in range(len(order)):
        new_profile = not np.any(np.all(x[:i] == x[i], axis=1))
        if len(members) < clusters and new_profile:
            members.append([i])
            labels[i] = len(members) - 1
            continue
        centres = np.stack([np.sum(x[m], axis=0) / len(m) for m in members])
        dists = pairwise_hellinger(x[i : i + 1], centres)[0]
        k = int(np.flatnonzero(dists <= dists.min() + TIE_TOL)[0])
        members[k].append(i)
        labels[i] = k
    centres = np.stack([np.sum(x[m], axis=0) / len(m) for m in members])
    return Clustering({c: int(labels[i]) for i, c in enumerate(order)}, centres)


def single_linkage(
    vectors: Mapping[int, np.ndarray | Sequence[float]], threshold: float
) -> dict[int, int]:
    """``--clusters auto``: link clients with ℋ(P_i, P_j) ≤ threshold; clusters = components.

    Equivalent to cutting a single-linkage dendrogram at ``threshold``.
    Clusters are numbered 0, 1, ... in the order of their lowest client id.
    """
    if not 0.0 <= threshold <= 1.0:
        raise ConfigError(
            f"cluster threshold must be in [0, 1] (a Hellinger distance), got {threshold}"
        )
    if not vectors:
        raise ConfigError("single linkage needs at least one client")
    ids = sorted(vectors)
    dist = pairwise_hellinger(np.stack([np.asarray(vectors[c], np.float64) for c in ids]))
    graph = nx.Graph()
    graph.add_nodes_from(ids)
    rows, cols = np.nonzero(np.triu(dist <= threshold + TIE_TOL, k=1))
    graph.add_edges_from((ids[a], ids[b]) for a, b in zip(rows, cols, strict=True))
    components = sorted((sorted(c) for c in nx.connected_components(graph)), key=lambda c: c[0])
    return {client: k for k, comp in enumerate(components) for client in comp}


def _cluster_ids(assignment: Mapping[int, int]) -> list[int]:
    ks = sorted(set(assignment.values()))
    if ks != list(range(len(ks))):
        raise ConfigError(f"cluster ids must be 0..K-1, got {ks}")
    return ks


def cluster_labels(
    assignment: Mapping[int, int], label_sets: Mapping[int, Iterable[int]]
) -> dict[int, tuple[int, ...]]:
    """ℒ_k: the sorted union of the initial label sets ℒ_i of cluster k's clients."""
    out: dict[int, set[int]] = {k: set() for k in _cluster_ids(assignment)}
    for client, k in assignment.items():
        if client not in label_sets:
            raise ConfigError(f"client {client} has a cluster but no label set")
        out[k].update(label_sets[client])
    return {k: tuple(sorted(labels)) for k, labels in out.items()}


def cluster_distribution(
    assignment: Mapping[int, int], vectors: Mapping[int, np.ndarray | Sequence[float]]
) -> np.ndarray:
    """w_k as the mean of cluster k's P_i (K×M); what single linkage uses as centres."""
    ks = _cluster_ids(assignment)
    sums: dict[int, np.ndarray] = {}
    counts = dict.fromkeys(ks, 0)
    for client in sorted(assignment):
        if client not in vectors:
            raise ConfigError(f"client {client} has a cluster but no label vector")
        k = assignment[client]
        vec = np.asarray(vectors[client], dtype=np.float64)
        sums[k] = sums[k] + vec if k in sums else vec.copy()
        counts[k] += 1
    return np.stack([sums[k] / counts[k] for k in ks])
