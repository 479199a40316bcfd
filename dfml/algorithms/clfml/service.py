"""The on-demand task service: Case I/II, missing-label augmentation, fine-tuning.

After the last round's own steps, every task 𝒯 (``--tasks N`` random tasks
of 2–5 labels drawn with the seed, or ``--tasks-file``) is served in turn,
without retraining the cluster meta-models:

1. k* = argmin_k ℋ(w_k, q); Case I (𝒯 ⊆ ℒ_k*) engages cluster k* alone;
   Case II the fewest further clusters that cover 𝒯
   (:func:`~dfml.algorithms.clfml.tasks.select_clusters`). The engaged
   clients are every client of an engaged cluster.
2. Case II with ``--augment``: for every engaged cluster k missing labels
   𝒯 ∖ ℒ_k, the cluster ℓ (engaged, first in engagement order) holding each
   missing label trains a label-conditional VAE g_ℓ for ``generator_rounds``
   gossip rounds among its clients (uniform weights over the cluster's
   reconnected sub-graph), each client on its own samples of the labels g_ℓ
   serves. Only g_ℓ's flat parameter vector travels (channel ``generator``);
   the driver averages the members' vectors and cluster k's clients
   generate ``generated_per_label`` samples per missing label, mixed up
   within each label (:func:`~dfml.algorithms.clfml.augment.generate_missing`).
   Raw samples never leave a client.
3. Adaptation (T′ = 0, channel ``task_adapted``): each engaged client adapts
   its meta-model on the task's support data as its method does.
4. Fine-tuning: ``finetune_rounds`` T′ rounds of decentralized SGD among
   the engaged clients (uniform weights over the reconnected sub-graph of
   the topology of each engaged cluster, or of all engaged clients with
   ``--finetune-mixing engaged``), starting from each client's cluster meta-model, on its
   label-balanced query set D^Q restricted to 𝒯 plus the generated samples;
   the task model is its own channel (``task``), the meta-model is untouched.
   Case II with augmentation runs the same rounds without the generated
   samples (channel ``task_plain``: ``accuracy_no_augmentation``).
5. The requester scores the task models on held-out samples of every label
   of 𝒯 after T′ = 0, the rounds in :data:`CURVE_ROUNDS` and the last; each
   client scores the final model on its own test samples of 𝒯.

These are independent chains of rounds (the generator's, the fine-tuning
with and without the generated samples), so each step runs the next round
of every chain that is due (:meth:`TaskService._waves`, the client program
:func:`~dfml.algorithms.clfml.task_client.task_round`): G + T′ steps for an
augmented Case II task, T′ for a Case I task, with the numbers of the
chains run one after another (tested).

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

from dfml.algorithms.aggregate import weighted_average
from dfml.algorithms.base import Message, RunEnv
from dfml.algorithms.clfml.augment import generate_missing
from dfml.algorithms.clfml.clustering import (
    arrival_order,
    centralized_online_kmeans,
    cluster_labels,
)
from dfml.algorithms.clfml.labels import label_vector
from dfml.algorithms.clfml.phases import TASK_ROUND, Phase
from dfml.algorithms.clfml.scoring import TaskRequester, one_thread, score_task
from dfml.algorithms.clfml.state import SLOT
from dfml.algorithms.clfml.task_client import (
    GENERATOR,
    HEAD,
    TASK,
    TASK_ADAPTED,
    TASK_PLAIN,
    shared_rows,
    vae_for,
)
from dfml.algorithms.clfml.tasks import (
    MAX_TASKS,
    Task,
    load_tasks,
    missing_labels,
    primary_cluster,
    random_tasks,
    select_clusters,
)
from dfml.channels import fetch, is_handle
from dfml.errors import ConfigError
from dfml.models.head import head_layout
from dfml.records import Callback
from dfml.steps import PARAMS, DriverState, Step, StepResult, StepSource
from dfml.topology.graphs import link_cost_graph, minimum_spanning_tree
from dfml.topology.service import FixedTopology

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

#: One job of a task's wave: (kind, chain tag, round): ``generator`` round g,
#: ``head`` rows, ``adapt`` (T′ = 0), ``tune`` round r of the chain with the
#: generated samples (tag ``""``) or of the ablation (``"plain"``), ``own``.
Job = tuple[str, str, int]

#: (kind, tag) → (the job's name in its metrics, the channel it writes).
JOB_NAMES: dict[tuple[str, str], tuple[str, str | None]] = {
    ("generator", ""): ("generator", GENERATOR),
    ("head", ""): ("head", HEAD),
    ("adapt", ""): ("adapt", TASK_ADAPTED),
    ("tune", ""): ("task", TASK),
    ("tune", "plain"): ("plain", TASK_PLAIN),
    ("own", ""): ("own", None),
}


class TaskService(Callback, StepSource):
    """Plans the task steps of the last round (a step source) and reports them.

    A task's chains — augmentation's generator rounds, ``adapt`` (each
    engaged client adapts its meta-model on the task's support data as its
    method does, T′ = 0), T′ fine-tuning rounds, the ablation's T′ rounds —
    run as waves, one step each (:meth:`_waves`); after T′ = 0 and the
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
        #: vector), as scored for ``accuracy``: what a server hands out.
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
        sharing = self.cfg.head_sharing != "none" and bool(requests)
        waves, start = self._waves(augment, sharing)
        groups = {src: [c for c in env.live() if assignment[c] == src] for src in sources}
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
            "waves": waves,
            "plan": self._plan(waves, start, augment, sharing),
            "pos": 0,
            "topology": self._finetune_topology(env, clients, assignment),
            "generator_groups": groups,
            "generator_topology": (
                FixedTopology.of_groups(env.topology.graph, groups.values(), TASK_MIXING)
                if augment
                else None
            ),
            "scores": {},
            "generators": {},
        }

    def _waves(self, augment: bool, sharing: bool) -> tuple[list[list[Job]], int]:
        """A task's rounds, one step each, and the wave its adaptation starts.

        A task is a few chains of rounds: g_ℓ's ``generator_rounds`` gossip
        rounds; the adaptation T′ = 0 and the T′ fine-tuning rounds with the
        generated samples, which need the trained g_ℓ; the same T′ rounds
        without them (the ablation), which need nothing; with
        ``head_sharing``, the holders' head rows, which the adaptation needs.
        A round of one chain needs nothing from the same wave's rounds of
        the others, so wave i runs the i-th due round of every chain in one
        step: G + T′ steps for an augmented Case II task where the chains
        one after another took G + 2T′ + 3. The adaptation is not a round
        of the fine-tuning chain (its first round starts from the
        meta-models again), so it shares a wave with that first round; the
        ablation's own adaptation was never read, so it is not run.
        """
        rounds = self.cfg.finetune_rounds
        generator = self.cfg.generator_rounds if augment else 0
        start = max(generator, 1 if sharing else 0)
        waves: list[list[Job]] = [[] for _ in range(start + rounds)]
        for g in range(1, generator + 1):
            waves[g - 1].append(("generator", "", g))
        if sharing:
            waves[0].append(("head", "", 0))
        for r in range(1, rounds + 1) if augment else ():
            waves[r - 1].append(("tune", "plain", r))
        waves[start].append(("adapt", "", 0))
        for r in range(1, rounds + 1):
            waves[start + r - 1].append(("tune", "", r))
        waves[-1].append(("own", "", rounds))
        return waves, start

    def _plan(self, waves: list[list[Job]], start: int, augment: bool, sharing: bool) -> list[str]:
        """The driver's sequence: each wave, with what the driver does between
        (g_ℓ shipped and the shared rows summed before the adaptation; the
        requester's scorings after the rounds in :data:`CURVE_ROUNDS` and the last)."""
        last = self.cfg.finetune_rounds
        plan = ["receivers"] if sharing else []
        for i, wave in enumerate(waves):
            if i == start:
                plan += (["ship"] if augment else []) + (["rows"] if sharing else [])
            plan.append(f"wave:{i}")
            for kind, tag, r in wave:
                if kind == "adapt":
                    plan.append("score::0")
                elif kind == "tune" and (r == last or (not tag and r in CURVE_ROUNDS)):
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
            if stage == "wave":
                return self._wave_step(st, state, st["waves"][int(tag)])
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

    def _wave_step(self, st: dict, state: DriverState, wave: list[Job]) -> Step:
        """One step that runs every job of ``wave`` on its clients
        (:func:`~dfml.algorithms.clfml.task_client.task_round`); clients
        publish only the channels the wave's jobs write."""
        jobs: dict[int, list[dict[str, Any]]] = {}
        refs: dict[int, list[Any]] = {}
        written = set()
        for kind, tag, r in wave:
            name, channel = JOB_NAMES[(kind, tag)]
            if channel is not None:
                written.add(channel)
            for c, msg in self._job_messages(st, state, kind, tag, r).items():
                jobs.setdefault(c, []).append(
                    {
                        "name": name,
                        "kind": "tune" if kind == "adapt" else kind,
                        "count": len(msg.neighbors),
                        "weights": msg.weights,
                        "self_weight": msg.self_weight,
                        "extra": msg.extra,
                    }
                )
                refs.setdefault(c, []).extend(msg.neighbors)
        msgs = {
            c: Message(state.round, tuple(refs[c]), extra={"jobs": jobs[c]}) for c in sorted(jobs)
        }
        return Step(Phase.TASK, TASK_ROUND, state.round, msgs, publish=tuple(sorted(written)))

    def _job_messages(
        self, st: dict, state: DriverState, kind: str, tag: str, r: int
    ) -> dict[int, Message]:
        """Each client's message for one job (as it would be for a step of its own)."""
        if kind == "generator":
            msgs = {}
            for src, labels in st["sources"].items():
                extra = {"labels": labels, "universe": self.universe, "first": r == 1}
                for c in st["generator_groups"][src]:
                    msgs[c] = self._mixing_message(
                        st["generator_topology"], c, state, GENERATOR, extra, mix=r != 1
                    )
            return msgs
        if kind == "head":
            return self._head_messages(st, state)
        if kind == "own":
            extra = {"labels": list(st["task"].labels), "into": TASK}
            return {c: Message(state.round, (), extra=extra) for c in st["clients"]}
        into = TASK_ADAPTED if kind == "adapt" else TASK_PLAIN if tag else TASK
        augment = not tag and bool(st["generators"])
        return self._tune_messages(st, state, kind == "adapt", r <= 1, augment, into)

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
        (:func:`uniform_average`), the embedding its holders will use."""
        if self.cfg.head_sharing != "prototypes":
            return
        assignment = st["assignment"]
        wanted = {k for req in st["requests"].values() for k, _ in req}
        for k in sorted(wanted):
            members = [c for c in st["clients"] if assignment[c] == k]
            st["receivers"][k] = uniform_average([state.channels[PARAMS][c] for c in members])[0]

    def _head_messages(self, st: dict, state: DriverState) -> dict[int, Message]:
        """Every engaged client of a holder cluster computes what it sends for
        the labels other clusters lack (:func:`~dfml.algorithms.clfml.task_client.task_head_rows`)."""
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
        return msgs

    def _rows(self, st: dict, state: DriverState) -> None:
        """Sum each holder cluster's published (sum, count) pieces into one head
        row per (receiving cluster, missing label) (:func:`shared_rows`)."""
        assignment = st["assignment"]
        for src, req in st["requests"].items():
            members = [c for c in st["clients"] if assignment[c] == src]
            handles = [state.channels[HEAD][c] for c in members]
            getter = ray.get if any(is_handle(h) for h in handles) else list
            total = np.sum([np.asarray(v, dtype=np.float64) for v in fetch(getter, handles)], 0)
            assert self.head_dim is not None
            rows = shared_rows(total, req, self.head_dim, self.cfg.head_sharing)
            for k, by_label in rows.items():
                st["rows"].setdefault(k, {}).update(by_label)

    def _ship(self, st: dict, state: DriverState) -> None:
        """g_ℓ = the average of cluster ℓ's generator vectors (:func:`uniform_average`)."""
        assignment = st["assignment"]
        vectors = {}
        for src in st["sources"]:
            members = sorted(c for c in state.channels[GENERATOR] if assignment.get(c) == src)
            handle, vectors[src] = uniform_average([state.channels[GENERATOR][c] for c in members])
            st["generators"][src] = handle
        if self.requester.reference is not None:
            st["recognition"] = self._recognition(st, vectors)

    def _recognition(self, st: dict, vectors: Mapping[int, np.ndarray]) -> float:
        """How often the reference classifier recognises what the shipped g_ℓ
        (``vectors``, source cluster → g_ℓ) generate as the labels they were
        asked for (as the clients generate them)."""
        with one_thread():
            return self._recognised(st, vectors)

    def _recognised(self, st: dict, vectors: Mapping[int, np.ndarray]) -> float:
        hits, total = 0.0, 0
        dim = int(np.prod(self.requester.test.x.shape[1:]))
        vae = vae_for(dim, self.universe, torch.device("cpu"))
        for src, labels in st["sources"].items():
            vector = vectors[src]
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
        channel = TASK_PLAIN if name else TASK if int(rnd) else TASK_ADAPTED
        handles = [state.channels[channel][c] for c in clients]
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

    def _tune_messages(
        self,
        st: dict,
        state: DriverState,
        adapt: bool,
        first: bool,
        augment: bool,
        into: str,
    ) -> dict[int, Message]:
        """The adaptation (``adapt``) or a fine-tuning round of the chain whose
        models are the state extra ``into`` (:func:`~dfml.algorithms.clfml.task_client.task_finetune`);
        its ``first`` round mixes the meta-models, the later ones the chain's."""
        labels = list(st["task"].labels)
        channel = PARAMS if first else into
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
                "into": into,
            }
            msgs[c] = self._mixing_message(
                topology, c, state, channel, extra, mix=not adapt, extra_refs=gens
            )
        return msgs

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
        own = [r.metrics for r in results.values() if "own:task_correct" in r.metrics]
        if own:
            correct = sum(m["own:task_correct"] for m in own)
            total = sum(m["own:task_total"] for m in own)
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


def uniform_average(handles: Sequence[Any]) -> tuple[Any, np.ndarray]:
    """(a handle of, the value of) the uniform average of the published vectors
    ``handles``, computed in the driver and put in the object store once.

    The vectors averaged here (a generator g_ℓ, a cluster's model) are small,
    and the clients and the requester's measurements read the same result. A
    Ray task next to the data (as the server step runs) waited 1–2 s per
    task for a worker on the 2-core box (it holds no CPU while the actors
    hold every one, and idle workers are reaped between tasks); the sum is
    the server step's :func:`~dfml.algorithms.aggregate.weighted_average`,
    so its bits are the same.
    """
    remote = any(is_handle(h) for h in handles)
    value = weighted_average(
        fetch(ray.get if remote else list, handles), [1.0 / len(handles)] * len(handles)
    )
    return (ray.put(value) if remote else value), value


def adaptation(algorithm_cfg: Any, cfg: TaskConfig) -> tuple[int, float]:
    """(steps, lr) of a method's own adaptation to a task's support data (T′ = 0).

    A meta-learner adapts as its inner loop does (K = ``inner_steps`` steps
    of α = ``inner_lr``); a plain learner takes one step of ``finetune_lr``.
    """
    if getattr(algorithm_cfg, "meta_learner", "sgd") != "sgd":
        return int(algorithm_cfg.inner_steps), float(algorithm_cfg.inner_lr)
    return 1, float(cfg.finetune_lr)
