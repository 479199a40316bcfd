"""CL-FML through the actors: label dissemination, MST clustering, cluster meta-models.

Round 0 starts with the label-aware phases, each a sequence of steps
between client actors (the driver only starts steps and reads a few
numbers):

1. ``disseminate`` — hop h: client i receives its ring predecessor's label
   set (the ``labels`` channel it published after hop h − 1) and merges,
   ℒ_i ← ℒ_i ∪ ℒ_l (:func:`~dfml.algorithms.clfml.labels.merge_labels`).
   The phase ends after the first hop in which no set grew, so at most
   N − 1 hops change something; ``dissemination_hops`` counts those and
   ``dissemination_bytes`` the label sets sent (8 bytes a label, every hop).
   The ring is the live ids in sorted order, whatever the training topology.
2. ``convergecast`` — a minimum spanning tree over the seeded link costs
   (:func:`~dfml.topology.graphs.link_cost_graph`) rooted at the leader (the
   lowest id); one step per tree level, deepest first: each client builds
   its label vector P_i over the now-global ℒ (``--label-vector``) and
   publishes a ``bundle`` of its own P_i with its depth plus its children's
   bundles. Then ``cluster``: the leader folds every P_i in arrival order
   (deepest level first, by id; its own last) into K cluster label
   distributions w_k with :class:`~dfml.algorithms.clfml.clustering.OnlineKMeans`
   (``--clusters auto``: single linkage on Hellinger distance with
   ``--cluster-threshold``). Then ``broadcast``: one step per level from the
   top, each client reading its parent's ``clusters`` channel, so cluster
   ids travel back down the tree. The result equals the centralized
   computation on the same arrival order (tested).
3. ``train`` (every round) — decentralized meta-training within each cluster
   C_k over the cluster's sub-graph of the topology: client i aggregates
   θ̃_i = Σ_{j ∈ N_k(i) ∪ {i}} w_ij θ_j with w_ij = |D^M_j| / Σ |D^M| over
   its cluster neighbourhood, then takes E_M epochs of meta-updates on D^M
   with ``--meta-learner`` (:func:`~dfml.algorithms.gfml.meta_update`): FOMAML by default, MAML,
   Reptile, or the slides' plain step θ_i ← θ̃_i − η ∇ℛ_i(θ̃_i) (``sgd``,
   G-FML's client code). A cluster whose sub-graph is disconnected is
   reconnected by linking its components in the order of their lowest ids,
   lowest id to lowest id.

The cluster meta-model θ̃_k stays on every client of cluster k (its
``params``). A meta-learned θ̃_k is an initialisation: it is scored as the
meta-learning family scores (``accuracy`` after K = ``inner_steps`` steps
of α on D^M, ``init_accuracy`` its own) and Pers.k adapts it the same way;
with ``sgd`` it is scored as it is and Pers.k fine-tunes it on D^Q as G-FML
does. The on-demand task
service (Case I/II, augmentation, fine-tuning) runs after training:
:mod:`~dfml.algorithms.clfml.service`.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import networkx as nx
import numpy as np
import ray
import torch

from dfml.actors.state import ClientContext, ClientState
from dfml.algorithms.base import Algorithm, Message, Metrics, RunEnv, check_train_split
from dfml.algorithms.clfml.clustering import (
    OnlineKMeans,
    cluster_distribution,
    cluster_labels,
    convergecast_levels,
    single_linkage,
    tree_parents,
)
from dfml.algorithms.clfml.labels import LABEL_BYTES, label_vector, merge_labels
from dfml.algorithms.clfml.phases import (
    CLUSTER_AT_LEADER,
    CONVERGECAST,
    DISSEMINATE_LABELS,
    RECEIVE_CLUSTERS,
    Phase,
)
from dfml.algorithms.clfml.state import SLOT, ClusterState
from dfml.algorithms.gfml import GFML, GFMLConfig
from dfml.algorithms.server import FederatedSGDConfig
from dfml.errors import ConfigError
from dfml.programs import Program, register
from dfml.steps import DriverState, Step, StepResult
from dfml.topology.graphs import link_cost_graph, minimum_spanning_tree

KNOWN = "known_labels"
LABEL_VECTORS = ("multi-hot", "histogram")


@dataclass(frozen=True)
class ClusterConfig(FederatedSGDConfig):
    """The label-aware clustering knobs CL-FML and C-DFedAvg share.

    Attributes:
        clusters: K, the number of clusters (an integer), or ``auto`` for
            single linkage on Hellinger distance with ``cluster_threshold``.
        cluster_threshold: ``clusters auto``: clients whose label vectors are
            within this Hellinger distance are linked, in (0, 1].
        label_vector: P_i as ``multi-hot`` (the slides) or the normalised
            label ``histogram``.
        train_split: what local training reads: ``all`` (D^M ∪ D^Q;
            C-DFedAvg's default) or ``meta`` (D^M only; CL-FML's default,
            and every method's with ``--tasks``).
    """

    aggregation: str = "gossip"
    clusters: str = "3"
    cluster_threshold: float = 0.3
    label_vector: str = "multi-hot"
    train_split: str = "all"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_train_split(self.train_split)
        if self.aggregation != "gossip":
            raise ConfigError(
                "clfml and cdfedavg are decentralized: aggregation must be gossip, "
                f"got {self.aggregation!r}"
            )
        if self.clusters != "auto":
            try:
                k = int(self.clusters)
            except ValueError:
                raise ConfigError(
                    f"clusters must be a positive integer or 'auto', got {self.clusters!r}"
                ) from None
            if k < 1:
                raise ConfigError(f"clusters must be >= 1 (or 'auto'), got {k}")
        if not 0.0 < self.cluster_threshold <= 1.0:
            raise ConfigError(f"cluster_threshold must be in (0, 1], got {self.cluster_threshold}")
        if self.label_vector not in LABEL_VECTORS:
            raise ConfigError(
                f"label_vector must be one of {', '.join(LABEL_VECTORS)}, got {self.label_vector!r}"
            )


@dataclass(frozen=True)
class CLFMLConfig(ClusterConfig, GFMLConfig):
    """CL-FML's knobs: clustering plus G-FML's meta-learner inside each cluster
    (``meta_learner``, ``inner_lr``, ``inner_steps``; see
    :class:`~dfml.algorithms.gfml.GFMLConfig`).

    Attributes:
        train_split: ``meta`` (D^M only, the default: D^Q is the task
            service's fine-tuning data) or ``all``.
    """

    train_split: str = "meta"


def reconnect(graph: nx.Graph) -> nx.Graph:
    """Link the components of ``graph`` in order of their lowest ids (lowest to lowest)."""
    out = graph.copy()
    parts = sorted(min(c) for c in nx.connected_components(graph))
    out.add_edges_from(itertools.pairwise(parts))
    return out


def cluster_graph(topology: nx.Graph, assignment: Mapping[int, int]) -> nx.Graph:
    """The union of every cluster's (reconnected) sub-graph of the topology."""
    out = nx.Graph()
    for k in sorted(set(assignment.values())):
        members = [c for c in sorted(assignment) if assignment[c] == k]
        out = nx.union(out, reconnect(topology.subgraph(members)))
    return out


class CLFML(GFML):
    """Cluster-based label-aware federated meta-learning (phases 1–3)."""

    name = "clfml"
    Config = CLFMLConfig
    #: Clusters are formed once, in round 0; a client joining later has none.
    elastic = False

    # ----- driver half -------------------------------------------------
    def check_setup(self, client_labels: Mapping[int, Sequence[int]]) -> None:
        """K ≤ N and K ≤ the number of distinct label profiles, before actors start."""
        if self.config.clusters == "auto":
            return
        k, n = int(self.config.clusters), len(client_labels)
        profiles = len({tuple(v) for v in client_labels.values()})
        if k > n:
            raise ConfigError(f"clusters {k} > {n} clients")
        if self.config.label_vector == "multi-hot" and k > profiles:
            raise ConfigError(
                f"clusters {k} > {profiles} distinct label profiles among {n} clients; "
                "use fewer clusters or --clusters auto"
            )

    def next_step(self, state: DriverState, env: RunEnv) -> Step | None:
        info = state.sources.setdefault(SLOT, ClusterState())
        phase = info.phase
        if phase == Phase.DISSEMINATE:
            return self._disseminate_step(state, env)
        if phase == Phase.CONVERGECAST:
            return self._convergecast_step(state, env, info)
        if phase == Phase.CLUSTER:
            leader = info.leader
            msg = Message(
                state.round,
                tuple(state.channels["bundle"][c] for c in info.children[leader]),
                extra={"depth": 0, "universe": info.universe},
            )
            return Step(Phase.CLUSTER, CLUSTER_AT_LEADER, state.round, {leader: msg})
        if phase == Phase.BROADCAST:
            level = info.down[info.level]
            msgs = {
                c: Message(state.round, (state.channels["clusters"][info.parents[c]],))
                for c in level
            }
            return Step(Phase.BROADCAST, RECEIVE_CLUSTERS, state.round, msgs)
        return super().next_step(state, env)

    def _disseminate_step(self, state: DriverState, env: RunEnv) -> Step:
        ring = env.live()
        prev = {c: ring[i - 1] for i, c in enumerate(ring)}
        msgs = {c: Message(state.round, (state.channels[KNOWN][prev[c]],)) for c in ring}
        return Step(Phase.DISSEMINATE, DISSEMINATE_LABELS, state.round, msgs)

    def _convergecast_step(self, state: DriverState, env: RunEnv, info: ClusterState) -> Step:
        level = info.up[info.level]
        msgs = {
            c: Message(
                state.round,
                tuple(state.channels["bundle"][ch] for ch in info.children[c]),
                extra={"depth": info.depth[c], "universe": info.universe},
            )
            for c in level
        }
        return Step(Phase.CONVERGECAST, CONVERGECAST, state.round, msgs)

    def absorb(
        self, state: DriverState, step: Step, results: Mapping[int, StepResult], env: RunEnv
    ) -> None:
        super().absorb(state, step, results, env)
        info = state.sources[SLOT]
        if step.phase == Phase.DISSEMINATE:
            sizes = info.meta_sizes
            sizes.update({c: int(r.metrics["meta_size"]) for c, r in results.items()})
            grew = sum(int(r.metrics["grew"]) for r in results.values())
            info.bytes += int(sum(r.metrics["sent_labels"] for r in results.values()) * LABEL_BYTES)
            if grew:
                info.hops += 1
                return
            self._plan_tree(state, env, info, results)
        elif step.phase == Phase.CONVERGECAST:
            info.level += 1
            if info.level == len(info.up):
                info.phase, info.level = Phase.CLUSTER, 0
        elif step.phase == Phase.CLUSTER:
            info.phase, info.level = Phase.BROADCAST, 0
            self._read_clustering(state, env, info)
            if not info.down:
                info.phase = Phase.TRAIN
        elif step.phase == Phase.BROADCAST:
            info.level += 1
            if info.level == len(info.down):
                info.phase = Phase.TRAIN
        for metrics in state.metrics.values():  # phase bookkeeping is not a client metric
            for key in ("grew", "sent_labels", "meta_size"):
                metrics.pop(key, None)

    def _plan_tree(
        self, state: DriverState, env: RunEnv, info: ClusterState, results: Mapping
    ) -> None:
        ids = env.live()
        universe = sorted(int(v) for v in ray_get(state.channels[KNOWN][ids[0]]))
        tree = minimum_spanning_tree(link_cost_graph(ids, env.seed))
        leader = ids[0]
        levels = convergecast_levels(tree, leader)  # deepest first, the leader last
        parents = tree_parents(tree, leader)
        depth = {c: len(levels) - 1 - d for d, level in enumerate(levels) for c in level}
        children: dict[int, list[int]] = {c: [] for c in ids}
        for c, p in parents.items():
            children[p].append(c)
        info.phase, info.level = Phase.CONVERGECAST, 0
        info.universe, info.leader = universe, leader
        info.up = [lv for lv in levels[:-1]]
        info.down = [lv for lv in reversed(levels[:-1])]
        info.parents = parents
        info.children = {c: sorted(v) for c, v in children.items()}
        info.depth = depth
        info.tree_edges = sorted(tree.edges())
        if not info.up:
            info.phase = Phase.CLUSTER

    def _read_clustering(self, state: DriverState, env: RunEnv, info: ClusterState) -> None:
        """The leader's result (a few numbers per client) for the cluster sub-graphs."""
        table = np.asarray(ray_get(state.channels["clusters"][info.leader]))
        assignment = {int(c): int(k) for c, k in table[:, :2]}
        vectors = {int(row[0]): row[2:] for row in table}
        labels = {
            c: sorted(int(v) for v in ray_get(state.channels["own_labels"][c])) for c in assignment
        }
        info.assignment = assignment
        info.cluster_labels = cluster_labels(assignment, labels)
        info.w = cluster_distribution(assignment, vectors).tolist()
        graph = cluster_graph(env.topology.graph, assignment)
        info.cluster_edges = sorted(graph.edges())

    def round_messages(self, state: DriverState, env: RunEnv) -> dict[int, Message]:
        """Gossip within each cluster: |D^M|-weighted rows over the cluster sub-graph."""
        info = state.sources[SLOT]
        graph = nx.Graph(info.cluster_edges)
        graph.add_nodes_from(info.assignment)
        sizes = info.meta_sizes
        messages = {}
        for i in env.sampled:
            hood = sorted([i, *graph.neighbors(i)])
            total = float(sum(sizes[j] for j in hood))
            nbrs = [j for j in hood if j != i]
            messages[i] = Message(
                round=state.round,
                neighbors=tuple(state.refs[j] for j in nbrs),
                weights=tuple(sizes[j] / total for j in nbrs),
                self_weight=sizes[i] / total,
            )
        return messages

    def gossip_bytes(self, state: DriverState, env: RunEnv, messages: Mapping[int, Any]) -> int:
        info = state.sources.get(SLOT)
        if info is None or info.cluster_edges is None:
            return super().gossip_bytes(state, env, messages)
        graph = nx.Graph(info.cluster_edges)
        return sum(state.nbytes.get(j, 0) for i in messages for j in graph.neighbors(i))

    def summary(self, state: DriverState) -> dict[str, Any]:
        info = state.sources.get(SLOT)
        if info is None or info.assignment is None:
            return {}
        return {
            "clusters": len(info.w),
            "client_cluster": {str(c): k for c, k in sorted(info.assignment.items())},
            "cluster_labels": {str(k): list(v) for k, v in sorted(info.cluster_labels.items())},
            "cluster_distributions": {str(k): w for k, w in enumerate(info.w)},
            "dissemination_hops": info.hops,
            "dissemination_bytes": info.bytes,
            "label_universe": info.universe,
            "mst_edges": [list(e) for e in info.tree_edges],
        }

    # ----- client half -------------------------------------------------
    def init_state(self, ctx: ClientContext, init_params: torch.Tensor) -> ClientState:
        state = super().init_state(ctx, init_params)
        known = torch.tensor(sorted(state.labels), dtype=torch.int64)
        return state.evolve(extras={**state.extras, KNOWN: known})

    def publish(self, ctx: ClientContext, state: ClientState) -> dict[str, np.ndarray]:
        out = super().publish(ctx, state)  # params, and the task service's models
        out[KNOWN] = state.extras[KNOWN].cpu().numpy()
        out["own_labels"] = np.asarray(state.labels, dtype=np.int64)
        for name in ("bundle", "clusters"):
            if name in state.extras:
                out[name] = state.extras[name].cpu().numpy()
        return out

    def disseminate_labels(
        self, ctx: ClientContext, state: ClientState, neighbors: Sequence[np.ndarray], msg: Message
    ) -> tuple[ClientState, Metrics]:
        """ℒ_i ← ℒ_i ∪ ℒ_l with ℒ_l the predecessor's set; reports whether it grew."""
        own = [int(v) for v in state.extras[KNOWN].tolist()]
        received = [int(v) for v in np.asarray(neighbors[0]).tolist()]
        merged, grew = merge_labels(own, received)
        known = torch.tensor(sorted(merged), dtype=torch.int64)
        state = state.evolve(extras={**state.extras, KNOWN: known})
        metrics = {
            "grew": float(grew),
            "sent_labels": float(len(received)),
            "meta_size": float(len(ctx.data.y_meta)),
        }
        return state, metrics

    def own_row(self, ctx: ClientContext, msg: Message) -> np.ndarray:
        """[id, depth, P_i] over the global label universe ℒ."""
        universe = msg.extra["universe"]
        counts = np.bincount(ctx.data.y_train.cpu().numpy(), minlength=max(universe) + 1)
        p = label_vector(
            {u: float(counts[u]) for u in universe}, universe, self.config.label_vector
        )
        return np.concatenate([[ctx.client_id, msg.extra["depth"]], p])[None, :]

    def convergecast_labels(
        self, ctx: ClientContext, state: ClientState, neighbors: Sequence[np.ndarray], msg: Message
    ) -> tuple[ClientState, Metrics]:
        """Publish [id, depth, P_i] plus the children's bundles (one row per client)."""
        own = self.own_row(ctx, msg)
        bundle = np.concatenate([own, *[np.asarray(b) for b in neighbors]])
        return state.evolve(extras={**state.extras, "bundle": torch.from_numpy(bundle)}), {}

    def cluster_at_leader(
        self, ctx: ClientContext, state: ClientState, neighbors: Sequence[np.ndarray], msg: Message
    ) -> tuple[ClientState, Metrics]:
        """Fold every P_i in arrival order (deepest first, by id; the leader last)."""
        rows = [r for b in neighbors for r in np.asarray(b)]
        arrivals = sorted((tuple(r) for r in rows), key=lambda r: (-r[1], r[0]))
        arrivals.append(tuple(self.own_row(ctx, msg)[0]))
        vectors = {int(r[0]): np.asarray(r[2:]) for r in arrivals}
        if self.config.clusters == "auto":
            assignment = single_linkage(vectors, self.config.cluster_threshold)
        else:
            result = OnlineKMeans(int(self.config.clusters)).fit(
                (int(r[0]), np.asarray(r[2:])) for r in arrivals
            )
            assignment = result.assignment
        table = np.array(
            [[c, assignment[c], *vectors[c]] for c in sorted(assignment)], dtype=np.float64
        )
        clusters = torch.from_numpy(table)
        own = torch.tensor(assignment[ctx.client_id])
        state = state.evolve(extras={**state.extras, "clusters": clusters, "cluster_id": own})
        return state, {}

    def receive_clusters(
        self, ctx: ClientContext, state: ClientState, neighbors: Sequence[np.ndarray], msg: Message
    ) -> tuple[ClientState, Metrics]:
        """Take the cluster table from the parent, keep the own cluster id, pass it on."""
        table = np.asarray(neighbors[0])
        k = int(table[table[:, 0] == ctx.client_id][0, 1])
        clusters = torch.from_numpy(np.array(table, copy=True))
        extras = {**state.extras, "clusters": clusters, "cluster_id": torch.tensor(k)}
        return state.evolve(extras=extras), {}


class CDFedAvg(CLFML):
    """C-DFedAvg: CL-FML's clusters, DFedAvg inside each (all local data, no meta-learning)."""

    name = "cdfedavg"
    Config = ClusterConfig  # no meta-learner: plain SGD (:attr:`GFML.learner`)

    def adapt(
        self, ctx: ClientContext, state: ClientState, params: torch.Tensor, steps: int, seed: int
    ) -> torch.Tensor:
        """Plain SGD steps on D^M (the base protocol), no meta-learned fine-tuning."""
        return Algorithm.adapt(self, ctx, state, params, steps, seed)


def ray_get(ref: Any) -> Any:
    """An object from the store (or the array itself, in-process)."""
    return ref if isinstance(ref, np.ndarray) else ray.get(ref)


register(
    Program(
        DISSEMINATE_LABELS,
        lambda algorithm, ctx, state, neighbors, msg: algorithm.disseminate_labels(
            ctx, state, neighbors, msg
        ),
    )
)
register(
    Program(
        CONVERGECAST,
        lambda algorithm, ctx, state, neighbors, msg: algorithm.convergecast_labels(
            ctx, state, neighbors, msg
        ),
    )
)
register(
    Program(
        CLUSTER_AT_LEADER,
        lambda algorithm, ctx, state, neighbors, msg: algorithm.cluster_at_leader(
            ctx, state, neighbors, msg
        ),
    )
)
register(
    Program(
        RECEIVE_CLUSTERS,
        lambda algorithm, ctx, state, neighbors, msg: algorithm.receive_clusters(
            ctx, state, neighbors, msg
        ),
    )
)
