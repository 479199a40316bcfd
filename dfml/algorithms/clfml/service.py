"""The on-demand task service: Case I/II, missing-label augmentation, fine-tuning.

After the last round's own steps, every task 𝒯 (``--tasks N`` random tasks
of 2–5 labels drawn with the seed, or ``--tasks-file``) is served in turn,
without retraining the cluster meta-models:

1. k* = argmin_k ℋ(w_k, q); Case I (𝒯 ⊆ ℒ_k*) engages cluster k* alone;
   Case II the fewest further clusters that cover 𝒯
   (:func:`~dfml.algorithms.clfml.tasks.select_clusters`). The engaged
   clients are every client of an engaged cluster.
2. ``task-before``: each engaged client scores its cluster meta-model on its
   held-out test samples of 𝒯's labels (prediction restricted to 𝒯).
3. Case II with ``--augment``: for every engaged cluster k missing labels
   𝒯 ∖ ℒ_k, the cluster ℓ (engaged, first in engagement order) holding each
   missing label trains a label-conditional VAE g_ℓ for ``generator_rounds``
   gossip rounds among its clients (uniform weights over the cluster's
   reconnected sub-graph), each client on its own samples of the labels g_ℓ
   serves. Only g_ℓ's flat parameter vector travels (channel ``generator``);
   the driver averages the members' vectors (a Ray task) and cluster k's
   clients generate ``generated_per_label`` samples per missing label,
   mixed up within each label (:func:`~dfml.algorithms.clfml.augment.generate_missing`).
   Raw samples never leave a client.
4. ``task-finetune``: ``finetune_rounds`` T′ rounds of decentralized SGD among
   the engaged clients (uniform weights over the reconnected sub-graph of
   the topology of each engaged cluster, or of all engaged clients with
   ``--finetune-mixing engaged``), starting from each client's cluster meta-model, on its
   label-balanced query set D^Q restricted to 𝒯 plus the generated samples;
   the task model is its own channel (``task``), the meta-model is untouched.
5. ``task-after``: the task model's accuracy on the same test samples;
   Case II repeats 4–5 without augmentation (``accuracy_no_augmentation``).

Accuracy is Σ correct / Σ test samples of 𝒯's labels over the engaged
clients. Algorithms that do not cluster (dfedavg, gfml) engage the clients
of the same clustering computed centrally (same MST arrival order, K =
``task_clusters``), so the same task engages the same clients.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import ray
import torch

from dfml.actors.state import ClientContext, ClientState
from dfml.algorithms.base import Message, Metrics, RunEnv
from dfml.algorithms.clfml.augment import ConditionalVAE, generate_missing
from dfml.algorithms.clfml.clustering import (
    arrival_order,
    centralized_online_kmeans,
    cluster_labels,
)
from dfml.algorithms.clfml.labels import label_vector
from dfml.algorithms.clfml.phases import (
    TASK_EVALUATE,
    TASK_FINETUNE,
    TASK_HEAD_ROWS,
    TRAIN_GENERATOR,
    Phase,
)
from dfml.algorithms.clfml.scoring import TaskRequester, score_task
from dfml.algorithms.clfml.state import SLOT
from dfml.algorithms.clfml.tasks import (
    MAX_TASKS,
    Task,
    load_tasks,
    missing_labels,
    primary_cluster,
    random_tasks,
    select_clusters,
)
from dfml.algorithms.meta.episodes import restricted_loss
from dfml.algorithms.meta.prototypes import prototype_head, prototype_rows
from dfml.algorithms.sgd import sgd_epochs
from dfml.channels import fetch, is_handle
from dfml.errors import ConfigError
from dfml.models.flat import FlatModel
from dfml.models.head import head_layout
from dfml.programs import Program, register
from dfml.records import Callback
from dfml.steps import PARAMS, DriverState, Step, StepResult, StepSource
from dfml.topology.graphs import link_cost_graph, minimum_spanning_tree
from dfml.topology.service import FixedTopology

TASK_SALT = 0x7A5C
FINETUNE_MIXING = ("cluster", "engaged")
#: The most samples a client generates per missing label (far beyond any D^Q).
MAX_GENERATED_PER_LABEL = 100_000

#: What a task's model starts from: the trained models, or the run's initial model.
TASK_STARTS = ("trained", "scratch")
#: How a task's head starts: the model's own rows, or the support prototypes.
TASK_HEADS = ("linear", "prototype")
#: What the holders of a missing label send for its head row (:class:`TaskConfig`).
HEAD_SHARING = ("none", "rows", "prototypes")


@dataclass(frozen=True)
class TaskConfig:
    """On-demand tasks served after training (CL-FML and its baselines).

    Attributes:
        tasks: number of random tasks of 2–5 labels drawn with the seed (0: none;
            at most :data:`MAX_TASKS`).
        tasks_file: a YAML/JSON list of tasks (label lists, or ``{labels, q}``).
        finetune_rounds: T′, decentralized fine-tuning rounds per task.
        finetune_lr: SGD step size of task fine-tuning.
        augment: generate the missing labels of Case II tasks with a VAE.
        generator_rounds: gossip rounds that train each generator g_ℓ.
        generated_per_label: samples a client generates per missing label;
            0: as many as it holds real support samples per present label
            (at least 1), so the generated labels do not outnumber the real
            ones and pull the task model towards them. At most
            :data:`MAX_GENERATED_PER_LABEL`.
        task_clusters: K of the central clustering that picks the engaged
            clients for algorithms that do not cluster (dfedavg, gfml).
        finetune_mixing: who averages models while fine-tuning: ``engaged``
            (all engaged clients, across clusters: a cluster missing labels
            of 𝒯 receives the models of the clusters that hold them, as
            the slides share meta-models among clusters for
            out-of-distribution tasks) or ``cluster`` (engaged clients of
            the same cluster only; missing labels arrive only through the
            generated samples).
        shots: support samples per label of 𝒯 a client fine-tunes on (from
            its D^Q; 0: all of them).
        task_start: what a task's model starts from: ``trained`` (each
            engaged client's model after training: its meta-model, cluster
            model or global model) or ``scratch`` (the run's initial model:
            the classifier is trained on the engaged clients from nothing,
            which measures what pretraining is worth; for an equal round
            budget give ``finetune_rounds`` = ``rounds`` + T′).
        task_head: how a task's |𝒯|-way head starts, on every engaged
            client, before its adaptation (T′ = 0) and its first
            fine-tuning round: ``linear`` (the model's own head rows) or
            ``prototype`` (Proto-MAML: W_c = 2μ_c, b_c = −‖μ_c‖², μ_c the
            mean penultimate-layer embedding of label c's support samples,
            real and generated; labels without one keep their rows). It
            also sets the meta-learners' ``episode_head`` unless that is
            given, so meta-training takes the step a task takes.
        head_sharing: what the clusters that hold a missing label send a
            cluster that lacks it, for its head row of that label (a few
            numbers per label, never a sample): ``none``; ``rows`` (the
            holders' own trained head rows, in their own embedding space);
            ``prototypes`` (the holders embed their support samples of the
            label with the receiving cluster's averaged model, which it
            sends them, and return the sum and count, so the row is
            W_c = 2μ_c, b_c = −‖μ_c‖² in the receiver's own space). The
            shared row replaces the receiver's before its adaptation
            (T′ = 0), on its own meta-model, the model whose embedding the
            row belongs to; the first fine-tuning round starts from mixed
            models, another embedding, and does not take it (measured: it
            pulled predictions towards the missing labels). Measured
            (docs/clfml.md): a shared row must be of the receiver's
            head's kind: ``prototypes`` with ``task_head prototype`` (the
            best pair), ``rows`` with ``linear``.
    """

    tasks: int = 0
    tasks_file: str | None = None
    finetune_rounds: int = 5
    finetune_lr: float = 0.05
    augment: bool = True
    generator_rounds: int = 10
    generated_per_label: int = 0
    task_clusters: int = 3
    finetune_mixing: str = "engaged"
    shots: int = 0
    task_start: str = "trained"
    task_head: str = "linear"
    head_sharing: str = "none"

    def __post_init__(self) -> None:
        for name, allowed in (("task_head", TASK_HEADS), ("head_sharing", HEAD_SHARING)):
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}"
                )
        if self.task_start not in TASK_STARTS:
            raise ConfigError(
                f"task_start must be one of {', '.join(TASK_STARTS)}, got {self.task_start!r}"
            )
        if self.task_start == "scratch" and self.head_sharing != "none":
            raise ConfigError(
                f"head_sharing {self.head_sharing} shares rows of trained models: it needs "
                "task_start trained, not scratch"
            )
        if self.finetune_mixing not in FINETUNE_MIXING:
            raise ConfigError(
                f"finetune_mixing must be one of {', '.join(FINETUNE_MIXING)}, "
                f"got {self.finetune_mixing!r}"
            )
        if not 0 <= self.tasks <= MAX_TASKS:
            raise ConfigError(f"tasks must be in 0..{MAX_TASKS}, got {self.tasks}")
        if self.shots < 0:
            raise ConfigError(f"shots must be >= 0 (0: all support samples), got {self.shots}")
        if self.tasks and self.tasks_file:
            raise ConfigError("give tasks or tasks_file, not both")
        if not 0 <= self.generated_per_label <= MAX_GENERATED_PER_LABEL:
            raise ConfigError(
                f"generated_per_label must be in 0..{MAX_GENERATED_PER_LABEL} (0: as many as "
                f"the real support samples per label), got {self.generated_per_label}"
            )
        for name in ("finetune_rounds", "generator_rounds", "task_clusters"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not (self.finetune_lr > 0 and math.isfinite(self.finetune_lr)):
            raise ConfigError(
                f"finetune_lr must be a positive finite number, got {self.finetune_lr}"
            )

    @property
    def active(self) -> bool:
        return bool(self.tasks or self.tasks_file)


@dataclass(frozen=True)
class TaskResult:
    """What serving one task produced (one row of ``tasks.parquet``).

    Every accuracy but ``accuracy_own`` is the requester's: each engaged
    client's task model scored on held-out samples of **every** label of 𝒯
    (:mod:`~dfml.algorithms.clfml.scoring`), averaged over the clients.

    Attributes:
        labels: 𝒯, the task's labels.
        case: 1 (the primary cluster holds 𝒯) or 2 (further clusters engaged).
        primary_cluster: k* = argmin_k ℋ(w_k, q).
        clusters: the engaged clusters, primary first.
        clients: the engaged clients (every client of an engaged cluster).
        missing: labels of 𝒯 that some engaged client's cluster lacks.
        accuracy_before: T′ = 0: each client's meta-model after the method's
            own adaptation on the task's support data, no communication.
        accuracy_before_missing: the T′ = 0 models on each client's missing
            labels (``None``: none missing): where rows shared for missing
            labels (``head_sharing``) act.
        accuracy: after T′ rounds of decentralized fine-tuning, all labels of 𝒯.
        accuracy_present: the same models on each client's present labels.
        accuracy_missing: on each client's missing labels (``None``: none missing).
        accuracy_own: the old protocol, each client's own test samples of 𝒯
            (labels it holds only).
        accuracy_no_augmentation: Case II with augmentation: the same
            fine-tuning without the generated samples (``None`` otherwise).
        curve: fine-tuning round T′ → all-label accuracy (0 is ``accuracy_before``).
        generator_recognition: with augmentation, the share of generated
            samples a classifier trained on real data recognises as the label
            they were generated for (``None`` without generators).
        seconds: wall time of serving the task.
    """

    labels: list[int]
    case: int
    primary_cluster: int
    clusters: list[int]
    clients: list[int]
    missing: list[int]
    accuracy_before: float | None
    accuracy_before_missing: float | None
    accuracy: float | None
    accuracy_present: float | None
    accuracy_missing: float | None
    accuracy_own: float | None
    accuracy_no_augmentation: float | None
    curve: dict[int, float]
    generator_recognition: float | None
    seconds: float


#: Fine-tuning rounds after which the task models are scored (plus the last).
CURVE_ROUNDS = (0, 1, 2, 5, 10)


#: How clients mix while they serve a task (fine-tuning, generators): equal weights.
TASK_MIXING = "uniform"


class TaskService(Callback, StepSource):
    """Plans the task steps of the last round (a step source) and reports them.

    A task's steps: (augmentation's generator rounds,) ``adapt`` — each
    engaged client adapts its meta-model on the task's support data as its
    method does, T′ = 0 —, then T′ fine-tuning rounds; after T′ = 0 and the
    rounds in :data:`CURVE_ROUNDS` (and the last) the requester scores every
    engaged client's task model on held-out samples of all labels of 𝒯.
    """

    #: The files it writes into the results folder: one row per task, and one
    #: per scored test sample of the final task models.
    OUTPUTS = ("tasks.parquet", "task_predictions.parquet")

    def __init__(
        self,
        cfg: TaskConfig,
        rounds: int,
        seed: int,
        client_labels: Mapping[int, Sequence[int]],
        algorithm_cfg: Any,
        requester: TaskRequester,
        out: Path | None = None,
    ) -> None:
        self.cfg, self.rounds, self.seed, self.out = cfg, rounds, seed, out
        self.requester = requester
        self.client_labels = {c: tuple(v) for c, v in client_labels.items()}
        self.universe = sorted(set().union(*map(set, self.client_labels.values())))
        self.batch_size = int(getattr(algorithm_cfg, "batch_size", 32))
        self.adaptation = adaptation(algorithm_cfg, cfg)
        self.head_dim = None
        if cfg.task_head != "linear" or cfg.head_sharing != "none":
            self.head_dim = head_layout(requester.model).dim  # one line for a model without one
        if cfg.tasks_file:
            self.tasks = load_tasks(cfg.tasks_file, self.universe)
        else:
            self.tasks = random_tasks(self.universe, cfg.tasks, seed)
        for task in self.tasks:
            task.check(self.universe)
            requester.test.check(task.labels)
        self.records: list[dict[str, Any]] = []
        self.predictions: list[dict[str, Any]] = []
        self._stage: dict[str, Any] | None = None
        self._queue = list(range(len(self.tasks)))
        self._runtime: Any = None
        self._live = False
        #: The last finished task's final task models (engaged client → its model
        #: vector), as scored for ``accuracy``: what a server hands out, since the
        #: ``task`` channel then holds the no-augmentation ablation's models.
        self.final_models: dict[int, np.ndarray] = {}

    # ----- the Python API on a trained system -------------------------------
    def bind(self, runtime: Any) -> TaskService:
        """Serve :meth:`submit`'s tasks on ``runtime``'s live clients."""
        self._runtime = runtime
        return self

    def submit(self, labels: Sequence[int], q: Sequence[float] | None = None) -> TaskResult:
        """Serve one task now on the trained system; the meta-models stay as they are.

        ``labels`` is 𝒯; ``q`` optional weights over it (uniform otherwise).
        A bad task (empty, a duplicate, a label no client holds) raises a
        one-line :class:`~dfml.errors.ConfigError` before any step runs.
        """
        if self._runtime is None:
            raise ConfigError("submit needs a trained system: TaskService.bind(runtime) first")
        if self._stage is not None or self._queue:
            raise ConfigError("submit: the service is still serving the run's own tasks")
        task = Task(tuple(labels), None if q is None else tuple(q))
        task.check(self.universe)
        self.requester.test.check(task.labels)
        self.tasks.append(task)
        self._queue.append(len(self.tasks) - 1)
        self._live = True
        try:
            self._runtime.serve(self)
        finally:
            self._live = False
        return TaskResult(**self.records[-1])

    # ----- clustering ---------------------------------------------------
    def clustering(self, state: DriverState, env: RunEnv) -> tuple[dict, dict, np.ndarray]:
        """(client → k, k → ℒ_k, w): CL-FML's own, or the same rule computed centrally."""
        info = state.sources.get(SLOT)
        if info is not None and info.assignment is not None:
            return info.assignment, info.cluster_labels, np.asarray(info.w)
        ids = env.live()
        tree = minimum_spanning_tree(link_cost_graph(ids, self.seed))
        vectors = {c: label_vector(self.client_labels[c], self.universe) for c in ids}
        k = min(self.cfg.task_clusters, len({tuple(self.client_labels[c]) for c in ids}))
        result = centralized_online_kmeans(vectors, arrival_order(tree, ids[0]), k)
        labels = cluster_labels(result.assignment, self.client_labels)
        return result.assignment, labels, result.centres

    # ----- planning -----------------------------------------------------
    def next_step(self, state: DriverState, env: RunEnv) -> Step | None:
        if state.round != self.rounds - 1 and not self._live:
            return None
        while True:
            if self._stage is None:
                if not self._queue:
                    return None
                self._stage = self._begin(self._queue.pop(0), state, env)
                self._stage["t0"] = time.perf_counter()
            step = self._advance(state, env)
            if step is not None:
                return step
            self._finish()

    def _begin(self, index: int, state: DriverState, env: RunEnv) -> dict[str, Any]:
        task = self.tasks[index]
        assignment, labels, w = self.clustering(state, env)
        q = task.distribution(self.universe)
        k_star = primary_cluster(q, w)
        case, engaged = select_clusters(task.labels, k_star, labels, w, q)
        clients = sorted(c for c in env.live() if assignment[c] in engaged)
        sources: dict[int, list[int]] = {}  # source cluster ℓ → the labels g_ℓ serves
        needs: dict[int, list[tuple[int, int]]] = {}  # client → [(missing label, ℓ)]
        missing: set[int] = set()
        for k in engaged:
            for label in missing_labels(task.labels, labels[k]):
                missing.add(label)
                src = next(j for j in engaged if label in labels[j])
                sources.setdefault(src, [])
                if label not in sources[src]:
                    sources[src].append(label)
                for c in clients:
                    if assignment[c] == k:
                        needs.setdefault(c, []).append((label, src))
        requests: dict[int, dict[int, list[int]]] = {}  # holder ℓ → receiving k → labels
        for c, wanted in needs.items():
            for label, src in wanted:
                got = requests.setdefault(src, {}).setdefault(assignment[c], [])
                if label not in got:
                    got.append(label)
        augment = case == 2 and self.cfg.augment and bool(sources)
        plan = ["generator"] * self.cfg.generator_rounds + ["ship"] if augment else []
        if self.cfg.head_sharing != "none" and requests:
            plan += ["receivers", "head", "rows"]
        plan += [*self._tuning_plan(""), "own"]
        if augment:  # the ablation: the same adaptation without the generated samples
            plan += self._tuning_plan("plain", curve=False)
        return {
            "index": index,
            "task": task,
            "case": case,
            "primary": k_star,
            "engaged": engaged,
            "clients": clients,
            "missing": sorted(missing),
            "held": {c: labels[assignment[c]] for c in clients},
            "assignment": assignment,
            "sources": sources,
            "needs": needs,
            "requests": {src: sorted(by_k.items()) for src, by_k in requests.items()},
            "receivers": {},
            "rows": {},
            "plan": plan,
            "pos": 0,
            "topology": self._finetune_topology(env, clients, assignment),
            "scores": {},
            "generators": {},
            "first": True,
        }

    def _tuning_plan(self, tag: str, curve: bool = True) -> list[str]:
        """adapt (T′ = 0), T′ fine-tuning rounds, and the requester's scorings."""
        last = self.cfg.finetune_rounds
        plan = [f"adapt:{tag}", f"score:{tag}:0"] if curve else [f"adapt:{tag}"]
        for r in range(1, last + 1):
            plan.append(f"finetune:{tag}")
            if r == last or (curve and r in CURVE_ROUNDS):
                plan.append(f"score:{tag}:{r}")
        return plan

    def _finetune_topology(
        self, env: RunEnv, clients: Sequence[int], assignment: Mapping[int, int]
    ) -> FixedTopology:
        """Who mixes with whom while fine-tuning (``finetune_mixing``), with
        uniform rows over the reconnected sub-graph of the topology.

        ``engaged``: one sub-graph over every engaged client. ``cluster``:
        one per engaged cluster, so models trained apart (on other label
        sets) are never averaged; knowledge of missing labels reaches a
        cluster only through the generated samples.
        """
        if self.cfg.finetune_mixing == "engaged":
            groups = [clients]
        else:
            groups = [
                [c for c in clients if assignment[c] == k]
                for k in sorted({assignment[c] for c in clients})
            ]
        return FixedTopology.of_groups(env.topology.graph, groups, TASK_MIXING)

    def _advance(self, state: DriverState, env: RunEnv) -> Step | None:
        st = self._stage
        assert st is not None
        while st["pos"] < len(st["plan"]):
            stage, _, tag = st["plan"][st["pos"]].partition(":")
            if stage == "own":
                extra = {"labels": list(st["task"].labels), "which": "task"}
                msgs = {c: Message(state.round, (), extra=extra) for c in st["clients"]}
                return Step(
                    Phase.TASK,
                    TASK_EVALUATE,
                    state.round,
                    msgs,
                    publish=False,
                    read_only=True,
                )
            if stage == "generator":
                return self._generator_step(st, state, env)
            if stage in ("adapt", "finetune"):
                augment = tag == "" and bool(st["generators"])
                return self._finetune_step(st, state, stage == "adapt", augment)
            if stage == "head":
                return self._head_step(st, state)
            if stage == "ship":
                self._ship(st, state)
            elif stage == "receivers":
                self._receivers(st, state)
            elif stage == "rows":
                self._rows(st, state)
            elif stage == "score":
                self._score(st, state, tag)
            st["pos"] += 1
        return None

    def _generator_step(self, st: dict, state: DriverState, env: RunEnv) -> Step:
        """One gossip round of every source cluster's generator g_ℓ, within the cluster."""
        assignment = st["assignment"]
        groups = {src: [c for c in env.live() if assignment[c] == src] for src in st["sources"]}
        topology = FixedTopology.of_groups(env.topology.graph, groups.values(), TASK_MIXING)
        msgs = {}
        for src, labels in st["sources"].items():
            extra = {"labels": labels, "universe": self.universe, "first": st["first"]}
            for c in groups[src]:
                msgs[c] = self._mixing_message(
                    topology, c, state, "generator", extra, mix=not st["first"]
                )
        st["first"] = False
        return Step(Phase.TASK, TRAIN_GENERATOR, state.round, msgs)

    @staticmethod
    def _mixing_message(
        topology: FixedTopology,
        client: int,
        state: DriverState,
        channel: str,
        extra: dict[str, Any],
        *,
        mix: bool,
        extra_refs: Sequence[Any] = (),
    ) -> Message:
        """Client ``client``'s message: its neighbours' latest ``channel`` objects
        with its mixing row from ``topology`` (or none, ``mix`` false), then
        ``extra_refs`` (objects it reads without mixing)."""
        if not mix:
            return Message(state.round, tuple(extra_refs), extra=extra)
        self_weight, row = topology.mixing_row(client)
        nbrs = sorted(row)
        refs = tuple(state.channels[channel][j] for j in nbrs)
        weights = tuple(row[j] for j in nbrs)
        return Message(state.round, (*refs, *extra_refs), weights, self_weight, extra)

    def _receivers(self, st: dict, state: DriverState) -> None:
        """``head_sharing: prototypes``: each receiving cluster's averaged model
        (a Ray task next to the data), the embedding its holders will use."""
        from dfml.algorithms.server import average

        if self.cfg.head_sharing != "prototypes":
            return
        assignment = st["assignment"]
        wanted = {k for req in st["requests"].values() for k, _ in req}
        for k in sorted(wanted):
            members = [c for c in st["clients"] if assignment[c] == k]
            refs = [state.channels[PARAMS][c] for c in members]
            st["receivers"][k] = average([1.0 / len(refs)] * len(refs), refs)

    def _head_step(self, st: dict, state: DriverState) -> Step:
        """Every engaged client of a holder cluster computes what it sends for
        the labels other clusters lack (:func:`task_head_rows`)."""
        assignment = st["assignment"]
        prototypes = self.cfg.head_sharing == "prototypes"
        msgs = {}
        for c in st["clients"]:
            req = st["requests"].get(assignment[c])
            if req is None:
                continue
            refs = tuple(st["receivers"][k] for k, _ in req) if prototypes else ()
            extra = {
                "mode": self.cfg.head_sharing,
                "requests": [labels for _, labels in req],
                "labels": list(st["task"].labels),
                "shots": self.cfg.shots,
                "task": st["index"],
            }
            msgs[c] = Message(state.round, refs, extra=extra)
        return Step(Phase.TASK, TASK_HEAD_ROWS, state.round, msgs)

    def _rows(self, st: dict, state: DriverState) -> None:
        """Sum each holder cluster's published (sum, count) pieces into one head
        row per (receiving cluster, missing label) (:func:`shared_rows`)."""
        assignment = st["assignment"]
        for src, req in st["requests"].items():
            members = [c for c in st["clients"] if assignment[c] == src]
            handles = [state.channels["head"][c] for c in members]
            getter = ray.get if any(is_handle(h) for h in handles) else list
            total = np.sum([np.asarray(v, dtype=np.float64) for v in fetch(getter, handles)], 0)
            assert self.head_dim is not None
            rows = shared_rows(total, req, self.head_dim, self.cfg.head_sharing)
            for k, by_label in rows.items():
                st["rows"].setdefault(k, {}).update(by_label)

    def _ship(self, st: dict, state: DriverState) -> None:
        """g_ℓ = the average of cluster ℓ's generator vectors (a Ray task next to the data)."""
        from dfml.algorithms.server import average

        assignment = st["assignment"]
        for src in st["sources"]:
            members = sorted(c for c in state.channels["generator"] if assignment.get(c) == src)
            refs = [state.channels["generator"][c] for c in members]
            st["generators"][src] = average([1.0 / len(refs)] * len(refs), refs)
        if self.requester.reference is not None:
            st["recognition"] = self._recognition(st)

    def _recognition(self, st: dict) -> float:
        """How often the reference classifier recognises what the shipped g_ℓ
        generate as the labels they were asked for (as the clients generate them)."""
        handles = [st["generators"][src] for src in st["sources"]]
        getter = ray.get if any(is_handle(h) for h in handles) else list
        hits, total = 0.0, 0
        dim = int(np.prod(self.requester.test.x.shape[1:]))
        vae = _vae_for(dim, self.universe, torch.device("cpu"))
        for (src, labels), vector in zip(
            st["sources"].items(), fetch(getter, handles), strict=True
        ):
            index = [self.universe.index(label) for label in labels]
            g = torch.Generator().manual_seed(self.seed + src)
            rng = np.random.default_rng([self.seed, src])
            params = torch.tensor(np.asarray(vector), dtype=torch.float32)
            with torch.no_grad():
                x, y = generate_missing(
                    vae, index, self.cfg.generated_per_label or 4, 0.4, g, rng, params
                )
            intended = np.asarray([self.universe[i] for i in y.tolist()])
            hits += self.requester.reference.recognition(x, intended) * len(intended)
            total += len(intended)
        return hits / total

    def _score(self, st: dict, state: DriverState, tag: str) -> None:
        """The requester scores every engaged client's task model on all labels of 𝒯."""
        name, _, rnd = tag.partition(":")
        clients = st["clients"]
        handles = [state.channels["task"][c] for c in clients]
        getter = ray.get if any(is_handle(h) for h in handles) else list
        vectors = {
            c: torch.tensor(np.asarray(v), dtype=torch.float32)
            for c, v in zip(clients, fetch(getter, handles), strict=True)
        }
        score = score_task(
            self.requester.model, vectors, self.requester.test, st["task"].labels, st["held"]
        )
        st["scores"][(name, int(rnd))] = score
        if not name and int(rnd) == self.cfg.finetune_rounds:
            st["final"] = vectors

    def _finetune_step(self, st: dict, state: DriverState, adapt: bool, augment: bool) -> Step:
        labels = list(st["task"].labels)
        first = adapt or st["first"]
        channel = PARAMS if first else "task"
        topology = st["topology"]
        msgs = {}
        for c in st["clients"]:
            gens, gen_labels = [], []
            if augment:
                by_src: dict[int, list[int]] = {}
                for label, src in st["needs"].get(c, []):
                    by_src.setdefault(src, []).append(label)
                for src, missing in sorted(by_src.items()):
                    gens.append(st["generators"][src])
                    gen_labels.append(missing)
            extra = {
                "labels": labels,
                "first": first,
                "adapt": self.adaptation if adapt else None,
                "neighbors": 0 if adapt else len(topology.neighbors(c)),
                "generated": gen_labels,
                "universe": self.universe,
                "per_label": self.cfg.generated_per_label,
                "lr": self.cfg.finetune_lr,
                "batch_size": self.batch_size,
                "shots": self.cfg.shots,
                "task": st["index"],
                "scratch": self.cfg.task_start == "scratch",
                "head": self.cfg.task_head,
                "rows": self._client_rows(st, c) if adapt else {},
            }
            msgs[c] = self._mixing_message(
                topology, c, state, channel, extra, mix=not adapt, extra_refs=gens
            )
        st["first"] = adapt  # the first fine-tuning round starts from the meta-models
        return Step(Phase.TASK, TASK_FINETUNE, state.round, msgs)

    @staticmethod
    def _client_rows(st: dict, client: int) -> dict[int, list[float]]:
        """The shared head rows of client ``client``'s missing labels (label → [W_c ‖ b_c])."""
        mine = st["rows"].get(st["assignment"][client], {})
        return {label: mine[label] for label, _ in st["needs"].get(client, []) if label in mine}

    def absorb(
        self, state: DriverState, step: Step, results: Mapping[int, StepResult], env: RunEnv
    ) -> None:
        st = self._stage
        assert st is not None
        if step.publish:
            state.publish(results)
        if step.program == TASK_EVALUATE:
            correct = sum(r.metrics["task_correct"] for r in results.values())
            total = sum(r.metrics["task_total"] for r in results.values())
            st["own"] = correct / total if total else float("nan")
        st["pos"] += 1

    def _finish(self) -> None:
        st = self._stage
        assert st is not None
        self._stage = None
        self.final_models = {c: v.numpy() for c, v in st["final"].items()}
        scores = st["scores"]
        last = self.cfg.finetune_rounds
        final = scores[("", last)]
        plain = scores.get(("plain", last))
        test = self.requester.test
        position = len(self.records)
        for client, pos, predicted, present in final.rows:
            self.predictions.append(
                {
                    "task": position,
                    "client": client,
                    "index": int(test.index[pos]),
                    "label": int(test.y[pos]),
                    "predicted": predicted,
                    "present": present,
                }
            )
        self.records.append(
            {
                "labels": list(st["task"].labels),
                "case": st["case"],
                "primary_cluster": st["primary"],
                "clusters": st["engaged"],
                "clients": st["clients"],
                "missing": st["missing"],
                "accuracy_before": scores[("", 0)].accuracy,
                "accuracy_before_missing": scores[("", 0)].missing,
                "accuracy": final.accuracy,
                "accuracy_present": final.present,
                "accuracy_missing": final.missing,
                "accuracy_own": st.get("own"),
                "accuracy_no_augmentation": None if plain is None else plain.accuracy,
                "generator_recognition": st.get("recognition"),
                "curve": {r: s.accuracy for (name, r), s in sorted(scores.items()) if not name},
                "seconds": time.perf_counter() - st["t0"],
            }
        )

    # ----- results ------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        if not self.records:
            return {}

        def mean(rows: list[dict], key: str = "accuracy") -> float | None:
            vals = [r[key] for r in rows if r[key] is not None and not math.isnan(r[key])]
            return float(np.mean(vals)) if vals else None

        case2 = [r for r in self.records if r["case"] == 2]
        augmented = [r for r in case2 if r["accuracy_no_augmentation"] is not None]
        rounds = sorted({r for rec in self.records for r in rec["curve"]})
        out = {
            "task_accuracy": mean(self.records),
            "task_accuracy_before": mean(self.records, "accuracy_before"),
            "task_accuracy_before_missing": mean(self.records, "accuracy_before_missing"),
            "task_accuracy_case1": mean([r for r in self.records if r["case"] == 1]),
            "task_accuracy_case2": mean(case2),
            "task_accuracy_present": mean(self.records, "accuracy_present"),
            "task_accuracy_missing": mean(self.records, "accuracy_missing"),
            "task_accuracy_own": mean(self.records, "accuracy_own"),
            "task_accuracy_case2_augmented": mean(augmented),
            "task_accuracy_case2_no_augmentation": mean(augmented, "accuracy_no_augmentation"),
            "task_generator_recognition": mean(self.records, "generator_recognition"),
            "task_accuracy_curve": {
                str(r): float(
                    np.mean([rec["curve"][r] for rec in self.records if r in rec["curve"]])
                )
                for r in rounds
            },
            "tasks_case2": len(case2),
            "tasks": [
                {**r, "curve": {str(k): v for k, v in r["curve"].items()}} for r in self.records
            ],
        }
        if self.out is not None:
            rows = [
                {
                    **r,
                    "clients": list(r["clients"]),
                    "clusters": list(r["clusters"]),
                    "curve": [[int(k), float(v)] for k, v in sorted(r["curve"].items())],
                }
                for r in self.records
            ]
            tasks_file, predictions_file = self.OUTPUTS
            pq.write_table(pa.Table.from_pylist(rows), Path(self.out) / tasks_file)
            pq.write_table(
                pa.Table.from_pylist(self.predictions, schema=PREDICTIONS_SCHEMA),
                Path(self.out) / predictions_file,
            )
        return out


#: One row per scored test sample of the final task models (``task_predictions.parquet``).
PREDICTIONS_SCHEMA = pa.schema(
    [
        ("task", pa.int64()),
        ("client", pa.int64()),
        ("index", pa.int64()),
        ("label", pa.int64()),
        ("predicted", pa.int64()),
        ("present", pa.bool_()),
    ]
)


def adaptation(algorithm_cfg: Any, cfg: TaskConfig) -> tuple[int, float]:
    """(steps, lr) of a method's own adaptation to a task's support data (T′ = 0).

    A meta-learner adapts as its inner loop does (K = ``inner_steps`` steps
    of α = ``inner_lr``); a plain learner takes one step of ``finetune_lr``.
    """
    if getattr(algorithm_cfg, "meta_learner", "sgd") != "sgd":
        return int(algorithm_cfg.inner_steps), float(algorithm_cfg.inner_lr)
    return 1, float(cfg.finetune_lr)


# ----- client half (the service's programs, registered below) ---------------
def _task_mask(y: torch.Tensor, labels: Sequence[int]) -> torch.Tensor:
    return torch.isin(y, torch.as_tensor(list(labels), device=y.device))


def task_evaluate(
    algorithm: Any, ctx: ClientContext, state: ClientState, msg: Message
) -> tuple[ClientState, Metrics]:
    """Correct / total on the client's own test samples of 𝒯, prediction restricted to 𝒯.

    The secondary, own-label score (``accuracy_own``): it sees only the
    labels this client holds; the requester's score covers all of 𝒯.
    """
    labels = msg.extra["labels"]
    vector = state.extras.get("task") if msg.extra["which"] == "task" else None
    params = algorithm.model_vector(ctx, state.params) if vector is None else vector
    d = ctx.data
    mask = _task_mask(d.y_test, labels)
    x, y = d.x_test[mask], d.y_test[mask]
    if len(y) == 0:
        return state, {"task_correct": 0.0, "task_total": 0.0}
    with torch.no_grad():
        logits = ctx.model(params, x)
        allowed = torch.full_like(logits, float("-inf"))
        allowed[:, list(labels)] = 0.0
        pred = (logits + allowed).argmax(1)
    return state, {"task_correct": float((pred == y).sum()), "task_total": float(len(y))}


def _vae(ctx: ClientContext, universe: Sequence[int]) -> ConditionalVAE:
    return _vae_for(int(np.prod(ctx.data.x_test.shape[1:])), universe, ctx.device)


def _vae_for(dim: int, universe: Sequence[int], device: torch.device) -> ConditionalVAE:
    with torch.random.fork_rng(devices=[]):  # the same init everywhere; global RNG untouched
        torch.manual_seed(TASK_SALT)
        return ConditionalVAE(dim, len(universe)).to(device)


def train_generator(
    algorithm: Any,
    ctx: ClientContext,
    state: ClientState,
    neighbors: Sequence[np.ndarray],
    msg: Message,
) -> tuple[ClientState, Metrics]:
    """Mix the neighbours' g_ℓ, then one epoch of Adam on own samples of g_ℓ's labels.

    A client of cluster ℓ may hold none of the labels g_ℓ serves (ℒ_ℓ is
    the union over its clients): it only mixes, and reports no loss.
    """
    universe = msg.extra["universe"]
    vae = _vae(ctx, universe)
    if msg.extra["first"] or "generator" not in state.extras:
        vec = vae.flat().to(ctx.device)
    else:
        own = state.extras["generator"]
        vecs = [own.cpu().numpy(), *[np.asarray(v) for v in neighbors]]
        weights = [msg.self_weight, *msg.weights]
        vec = torch.from_numpy(sum(w * v for w, v in zip(weights, vecs, strict=True))).to(
            ctx.device
        )
    index = {label: i for i, label in enumerate(universe)}
    d = ctx.data
    mask = _task_mask(d.y_train, msg.extra["labels"])
    loss_value = float("nan")
    if bool(mask.any()):
        x = d.x_train[mask].flatten(1).clamp(0.0, 1.0)
        y = torch.as_tensor([index[int(v)] for v in d.y_train[mask].tolist()], dtype=torch.long)
        param = vec.clone().requires_grad_(True)
        opt = torch.optim.Adam([param], lr=1e-2)
        gen = torch.Generator().manual_seed(ctx.round_seed(state.round, TASK_SALT))
        rng = np.random.default_rng(ctx.round_seed(state.round, TASK_SALT + 1))
        order = rng.permutation(len(y))
        for start in range(0, len(y), 32):
            b = torch.from_numpy(order[start : start + 32])
            opt.zero_grad()
            loss = vae.loss(x[b], y[b], gen, params=param)
            loss.backward()
            opt.step()
            loss_value = float(loss.detach())
        vec = param.detach()
    extras = {**state.extras, "generator": vec.float()}
    return state.evolve(extras=extras), {"generator_loss": loss_value}


def support_set(
    ctx: ClientContext, labels: Sequence[int], shots: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The client's support data for 𝒯: D^Q ∩ 𝒯, at most ``shots`` per label (0: all).

    Which samples are kept is fixed by ``seed`` (per task and client), so
    every stage of a task fine-tunes on the same support set.
    """
    d = ctx.data
    mask = _task_mask(d.y_query, labels)
    x, y = d.x_query[mask], d.y_query[mask]
    if shots == 0 or len(y) == 0:
        return x, y
    rng = np.random.default_rng(seed)
    keep = []
    ys = y.cpu().numpy()
    for label in sorted(set(ys.tolist())):
        where = np.flatnonzero(ys == label)
        keep.extend(rng.permutation(where)[:shots].tolist())
    idx = torch.as_tensor(sorted(keep), dtype=torch.long, device=y.device)
    return x[idx], y[idx]


def shared_rows(
    total: np.ndarray, requests: Sequence[tuple[int, Sequence[int]]], dim: int, mode: str
) -> dict[int, dict[int, list[float]]]:
    """Receiving cluster → label → its head row [W_c ‖ b_c], from the sum over a
    holder cluster's clients of what :func:`task_head_rows` published.

    ``total`` holds, per (receiver, label) in ``requests`` order, d + 2 numbers:
    ``rows``: Σ [W_c ‖ b_c] and the number of contributing clients (the row
    is their mean); ``prototypes``: Σ f(x) over the holders' support samples
    of c under the receiver's model, a 0, and the count (μ_c = Σ / count,
    the row 2μ_c ‖ −‖μ_c‖²). A label no holder had a sample of gets no row.
    """
    out: dict[int, dict[int, list[float]]] = {}
    pos = 0
    for k, labels in requests:
        for label in labels:
            piece, pos = total[pos : pos + dim + 2], pos + dim + 2
            count = float(piece[-1])
            if count <= 0:
                continue
            if mode == "rows":
                row = piece[: dim + 1] / count
            else:
                mu = torch.as_tensor(piece[:dim] / count, dtype=torch.float64).unsqueeze(0)
                row = prototype_rows(mu)[0].numpy()
            out.setdefault(k, {})[int(label)] = [float(v) for v in row]
    if pos != len(total):
        raise ValueError(f"head rows: expected {pos} numbers, got {len(total)}")
    return out


def task_head_rows(
    algorithm: Any,
    ctx: ClientContext,
    state: ClientState,
    neighbors: Sequence[np.ndarray],
    msg: Message,
) -> tuple[ClientState, Metrics]:
    """A holder's share of the head rows other clusters lack, published on ``head``.

    For each request (the labels one receiving cluster lacks) and label c,
    d + 2 numbers (:func:`shared_rows` reads them): ``rows``: this client's
    own head row [W_c ‖ b_c] and 1 if its support set holds c (else
    zeros); ``prototypes``: Σ f(x) over its support samples of c, embedded
    with the receiver's model (``neighbors``, one per request), a 0, and
    their count. Only these sums travel, never a sample. The support set is
    the one this client fine-tunes the task on (same seed, all of 𝒯).
    """
    extra = msg.extra
    layout = head_layout(ctx.model)
    d = layout.dim
    seed = ctx.round_seed(extra["task"], TASK_SALT + 4)
    x, y = support_set(ctx, extra["labels"], extra["shots"], seed)
    if extra["mode"] == "prototypes":
        models = [
            algorithm.model_vector(
                ctx, torch.from_numpy(np.array(v, dtype=np.float32)).to(ctx.device)
            )
            for v in neighbors
        ]
    else:
        models = [algorithm.model_vector(ctx, state.params)] * len(extra["requests"])
    pieces, used = [], 0.0
    with torch.no_grad():
        for theta, labels in zip(models, extra["requests"], strict=True):
            emb = layout.embed(theta, x) if extra["mode"] == "prototypes" and len(y) else None
            for label in labels:
                mask = y == label
                n = float(mask.sum())
                piece = torch.zeros(d + 2, dtype=torch.float32)
                if n and emb is not None:
                    piece[:d] = emb[mask].sum(dim=0).cpu()
                    piece[d + 1] = n
                elif n:
                    piece[: d + 1] = layout.rows(theta, [int(label)])[0].cpu()
                    piece[d + 1] = 1.0
                used += n
                pieces.append(piece)
    vector = torch.cat(pieces) if pieces else torch.zeros(0)
    extras = {**state.extras, "head": vector}
    return state.evolve(extras=extras), {"head_samples": used}


def balanced_count(y: torch.Tensor) -> int:
    """Real support samples per present label (rounded mean over the labels
    ``y`` holds), at least 1: how many samples to generate per missing label."""
    if len(y) == 0:
        return 1
    counts = torch.unique(y, return_counts=True)[1].double()
    return max(1, round(float(counts.mean())))


def task_head(
    model: FlatModel,
    theta: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    labels: Sequence[int],
    head: str,
    rows: Mapping[int, Sequence[float]],
) -> torch.Tensor:
    """θ with the task's head as it starts: ``prototype``: the rows of 𝒯's
    labels with support samples (real and generated) at their prototypes;
    then the rows shared for missing labels (``rows``, label → [W_c ‖ b_c])
    in place of the client's own (holders' real samples outrank generated ones)."""
    if head == "linear" and not rows:
        return theta
    layout = head_layout(model)
    with torch.no_grad():
        if head == "prototype":
            theta = prototype_head(layout, theta, x, y, labels)
        if rows:
            shared = sorted(rows)
            values = torch.as_tensor([rows[c] for c in shared], dtype=theta.dtype)
            theta = layout.with_rows(theta, shared, values.to(theta.device))
    return theta


def task_finetune(
    algorithm: Any,
    ctx: ClientContext,
    state: ClientState,
    neighbors: Sequence[np.ndarray],
    msg: Message,
) -> tuple[ClientState, Metrics]:
    """One step of a task: adapt (T′ = 0) or one fine-tuning round.

    Adapt (``extra["adapt"]`` = (K, α)): from the client's own meta-model, K
    full-batch gradient steps of α on the support set (+ generated samples),
    no communication — the method's own adaptation. Fine-tuning: mix the
    neighbours' task models (their meta-models in the first round), then one
    epoch of SGD of ``lr`` on the same data. Both minimise the cross-entropy
    over 𝒯's logits only: the task is a |𝒯|-way classifier, scored so. Before
    either starts from the meta-models (``first``), the head is set as
    ``task_head`` and ``head_sharing`` ask (:func:`task_head`). A client with no support
    samples of 𝒯 and nothing generated keeps the mixed model.
    """
    extra = msg.extra
    n = extra["neighbors"]
    if extra["first"] and extra["scratch"]:  # no pretraining: every client starts from θ_0
        theta = ctx.model.init_flat(ctx.seed).to(ctx.device)
    else:
        start = (
            algorithm.model_vector(ctx, state.params) if extra["first"] else state.extras["task"]
        )
        own = start.detach().cpu().numpy()
        vecs = [own, *[np.asarray(v) for v in neighbors[:n]]]
        if extra["first"]:
            vecs = [own] + [
                algorithm.model_vector(ctx, torch.from_numpy(np.array(v))).cpu().numpy()
                for v in neighbors[:n]
            ]
        weights = [msg.self_weight, *msg.weights]
        theta = torch.from_numpy(
            np.sum([w * v for w, v in zip(weights, vecs, strict=True)], axis=0).astype(np.float32)
        ).to(ctx.device)
    seed = ctx.round_seed(extra["task"], TASK_SALT + 4)
    x, y = support_set(ctx, extra["labels"], extra["shots"], seed)
    universe = extra["universe"]
    per_label = extra["per_label"] or balanced_count(y)
    generated = 0
    for gen_vec, missing in zip(neighbors[n:], extra["generated"], strict=True):
        vae = _vae(ctx, universe)
        index = [universe.index(m) for m in missing]
        g = torch.Generator().manual_seed(ctx.round_seed(extra["task"], TASK_SALT + 2))
        rng = np.random.default_rng(ctx.round_seed(extra["task"], TASK_SALT + 3))
        params = torch.from_numpy(np.array(gen_vec, dtype=np.float32)).to(ctx.device)
        gx, gy = generate_missing(vae, index, per_label, 0.4, g, rng, params)
        x = torch.cat([x, gx.reshape(-1, *x.shape[1:]).to(x.dtype)])
        y = torch.cat([y, torch.as_tensor([universe[i] for i in gy.tolist()], dtype=y.dtype)])
        generated += len(gy)
    if extra["first"]:
        theta = task_head(ctx.model, theta, x, y, extra["labels"], extra["head"], extra["rows"])
    loss = float("nan")
    task_loss = restricted_loss(ctx.model, extra["labels"])  # a |𝒯|-way classifier
    if len(y) and extra["adapt"] is not None:
        steps, lr = extra["adapt"]
        theta, loss = sgd_epochs(
            ctx.model,
            theta,
            x,
            y,
            lr=lr,
            epochs=steps,
            batch_size=len(y),
            seed=seed,
            loss_fn=task_loss,
        )
    elif len(y):
        theta, loss = sgd_epochs(
            ctx.model,
            theta,
            x,
            y,
            lr=extra["lr"],
            epochs=1,
            batch_size=extra["batch_size"],
            seed=ctx.round_seed(state.round, TASK_SALT + extra["task"]),
            loss_fn=task_loss,
        )
    extras = {**state.extras, "task": theta.detach()}
    return state.evolve(extras=extras), {"task_loss": loss, "generated": float(generated)}


register(
    Program(
        TASK_EVALUATE,
        lambda algorithm, ctx, state, neighbors, msg: task_evaluate(algorithm, ctx, state, msg),
    )
)
register(Program(TRAIN_GENERATOR, train_generator, channels=("generator",)))
register(Program(TASK_FINETUNE, task_finetune, channels=("task",)))
register(Program(TASK_HEAD_ROWS, task_head_rows, channels=("head",)))
