"""Label clustering as a step source that composes with any gossip learner.

:class:`LabelClustering` puts CL-FML's label-aware phases in front of a
learner's rounds. Round 0 starts with them, each a sequence of steps
between client actors (the driver only starts steps and reads a few
numbers):

1. ``disseminate`` — hop h: client i receives its ring predecessor's label
   set (the ``known_labels`` channel it published after hop h − 1) and
   merges, ℒ_i ← ℒ_i ∪ ℒ_l (:func:`~dfml.algorithms.clfml.labels.merge_labels`).
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
3. ``train`` (every round) — the learner's own round, planned over the
   cluster sub-graph instead of the topology: the learner's driver half is
   handed a :class:`~dfml.algorithms.base.RunEnv` whose topology is a
   :class:`~dfml.topology.service.FixedTopology` over every cluster's
   sub-graph of the topology (a disconnected one reconnected by linking its
   components' lowest ids in order, :func:`~dfml.topology.graphs.grouped_subgraph`),
   built once when the leader has clustered, with data-size rows w_ij = |D^M_j| / Σ_{k ∈ N_k(i) ∪ {i}} |D^M_k|. So
   its gossip mixes within the client's cluster only, and no mixing row is
   written here.

:func:`clustered` builds the clustered form of any algorithm whose clients
gossip (``--cluster-by labels``); CL-FML and C-DFedAvg are two such forms
(:mod:`~dfml.algorithms.clfml.algorithm`). An algorithm that aggregates at
a server cannot train within clusters and is refused.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from dfml.actors.state import ClientContext, ClientState
from dfml.algorithms.base import Algorithm, Message, Metrics, RunEnv, composed, gossips
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
from dfml.channels import get_value
from dfml.errors import ConfigError
from dfml.programs import Program, register
from dfml.steps import DriverState, Step, StepResult
from dfml.topology.graphs import link_cost_graph, minimum_spanning_tree
from dfml.topology.service import FixedTopology

#: The channel (and state extra) of a client's known label set ℒ_i.
KNOWN = "known_labels"
LABEL_VECTORS = ("multi-hot", "histogram")
#: How clients mix within a cluster: CL-FML's w_ij ∝ |D^M_j|.
CLUSTER_MIXING = "data-size"


@dataclass(frozen=True)
class ClusteringConfig:
    """The label clustering's knobs (``--cluster-by labels``; clfml and
    cdfedavg always cluster).

    Mixed into the learner's config by :func:`clustered_config`; an
    ``aggregation`` the learner has must be ``gossip`` (each cluster trains
    by gossip over its sub-graph).

    Attributes:
        clusters: K, the number of clusters (an integer), or ``auto`` for
            single linkage on Hellinger distance with ``cluster_threshold``.
        cluster_threshold: ``clusters auto``: clients whose label vectors are
            within this Hellinger distance are linked, in (0, 1].
        label_vector: P_i as ``multi-hot`` (the slides) or the normalised
            label ``histogram``.
    """

    clusters: str = "3"
    cluster_threshold: float = 0.3
    label_vector: str = "multi-hot"

    def __post_init__(self) -> None:
        learner_checks = getattr(super(), "__post_init__", None)
        if learner_checks is not None:  # the learner's config, mixed in after this one
            learner_checks()
        aggregation = getattr(self, "aggregation", "gossip")
        if aggregation != "gossip":
            raise ConfigError(
                "label clustering trains each cluster by gossip over its sub-graph: "
                f"aggregation must be gossip, got {aggregation!r}"
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


class LabelClustering(Algorithm):
    """Label dissemination, MST clustering and broadcast, then the learner's
    rounds within each cluster.

    A mixin: a class lists it before its learner (``class CLFML(LabelClustering,
    GFML)``), so its driver half plans the label phases and hands the
    learner's the cluster sub-graph (:meth:`within_clusters`), and its
    client half adds the label programs and channels to the learner's.
    """

    #: Clusters are formed once, in round 0; a client joining later has none.
    elastic: ClassVar[bool] = False
    #: Its label phases and per-cluster rounds need every client at once.
    event_driven: ClassVar[bool] = False

    # ----- driver half -------------------------------------------------
    def check_setup(self, client_labels: Mapping[int, Sequence[int]]) -> None:
        """K ≤ N and K ≤ the number of distinct label profiles, before actors start."""
        super().check_setup(client_labels)
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

    def within_clusters(self, info: ClusterState, env: RunEnv) -> RunEnv:
        """``env`` with the cluster sub-graph and its |D^M| rows as the topology."""
        assert info.topology is not None, "the clusters train only once the leader clustered"
        return dataclasses.replace(env, topology=info.topology)

    def next_step(self, state: DriverState, env: RunEnv) -> Step | None:
        info = state.sources.setdefault(SLOT, ClusterState())
        phase = info.phase
        if phase == Phase.DISSEMINATE:
            return self._disseminate_step(state, env)
        if phase == Phase.CONVERGECAST:
            return self._convergecast_step(state, info)
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
        return super().next_step(state, self.within_clusters(info, env))

    def _disseminate_step(self, state: DriverState, env: RunEnv) -> Step:
        ring = env.live()
        prev = {c: ring[i - 1] for i, c in enumerate(ring)}
        msgs = {c: Message(state.round, (state.channels[KNOWN][prev[c]],)) for c in ring}
        return Step(Phase.DISSEMINATE, DISSEMINATE_LABELS, state.round, msgs)

    def _convergecast_step(self, state: DriverState, info: ClusterState) -> Step:
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
        info = state.sources[SLOT]
        learner_env = self.within_clusters(info, env) if info.phase == Phase.TRAIN else env
        super().absorb(state, step, results, learner_env)
        if step.phase == Phase.DISSEMINATE:
            sizes = info.meta_sizes
            sizes.update({c: int(r.metrics["meta_size"]) for c, r in results.items()})
            grew = sum(int(r.metrics["grew"]) for r in results.values())
            info.bytes += int(sum(r.metrics["sent_labels"] for r in results.values()) * LABEL_BYTES)
            if grew:
                info.hops += 1
                return
            self._plan_tree(state, env, info)
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

    def _plan_tree(self, state: DriverState, env: RunEnv, info: ClusterState) -> None:
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
        info.up = list(levels[:-1])
        info.down = list(reversed(levels[:-1]))
        info.parents = parents
        info.children = {c: sorted(v) for c, v in children.items()}
        info.depth = depth
        info.tree_edges = sorted(tree.edges())
        if not info.up:
            info.phase = Phase.CLUSTER

    def _read_clustering(self, state: DriverState, env: RunEnv, info: ClusterState) -> None:
        """The leader's result (a few numbers per client) and the cluster sub-graphs."""
        table = np.asarray(ray_get(state.channels["clusters"][info.leader]))
        assignment = {int(c): int(k) for c, k in table[:, :2]}
        vectors = {int(row[0]): row[2:] for row in table}
        labels = {
            c: sorted(int(v) for v in ray_get(state.channels["own_labels"][c])) for c in assignment
        }
        info.assignment = assignment
        info.cluster_labels = cluster_labels(assignment, labels)
        info.w = cluster_distribution(assignment, vectors).tolist()
        members = [
            [c for c in sorted(assignment) if assignment[c] == k]
            for k in sorted(set(assignment.values()))
        ]
        info.topology = FixedTopology.of_groups(
            env.topology.graph, members, CLUSTER_MIXING, info.meta_sizes
        )

    def summary(self, state: DriverState) -> dict[str, Any]:
        out = super().summary(state)
        info = state.sources.get(SLOT)
        if info is None or info.assignment is None:
            return out
        return {
            **out,
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
        out = super().publish(ctx, state)  # the learner's channels
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


@functools.cache
def clustered_config(learner_config: type) -> type:
    """The config of a clustered learner: ``learner_config``'s knobs plus
    :class:`ClusteringConfig`'s, ``aggregation`` (if it has one) defaulting
    to ``gossip``. One class per learner config (cached), pickled by
    rebuilding it, so it crosses to actors and survives a checkpoint."""
    name = f"Clustered{learner_config.__name__}"
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": f"{learner_config.__name__}'s knobs plus the label clustering's.",
        "__reduce__": _reduce_config,
        "learner_config": learner_config,
    }
    if "aggregation" in {f.name for f in dataclasses.fields(learner_config)}:
        namespace["__annotations__"] = {"aggregation": "str"}
        namespace["aggregation"] = "gossip"
    return dataclass(frozen=True)(type(name, (ClusteringConfig, learner_config), namespace))


def _reduce_config(config: Any) -> tuple[Any, tuple[Any, ...]]:
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    return _rebuild_config, (type(config).learner_config, values)


def _rebuild_config(learner_config: type, values: dict[str, Any]) -> Any:
    return clustered_config(learner_config)(**values)


@functools.cache
def clustered(learner: type[Algorithm]) -> type[Algorithm]:
    """The clustered form of ``learner``: :class:`LabelClustering` in front of
    it, its config :func:`clustered_config`'s (``--cluster-by labels``).

    A learner that clusters already is returned as it is. One that
    aggregates at a server (:func:`gossips`) cannot train on a cluster
    sub-graph: one :class:`ConfigError` line. The class is made once per
    learner (cached); its instances pickle by rebuilding it.
    """
    if issubclass(learner, LabelClustering):
        return learner
    if not gossips(learner):
        raise ConfigError(
            f"algorithm {learner.name!r} aggregates at a server, so it cannot train within "
            "clusters; label clustering needs an algorithm whose clients gossip"
        )
    return composed(
        LabelClustering,
        learner,
        clustered,
        f"Clustered{learner.__name__}",
        f"Label clustering, then {learner.__name__}'s rounds within each cluster.",
        clustered_config(learner.Config),
    )


def ray_get(ref: Any) -> Any:
    """A published object (a ref, a row of a packed object, or in-process the array)."""
    return get_value(ref)


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
