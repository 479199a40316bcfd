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

import networkx as nx
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from dfml.actors.state import ClientContext, ClientState
from dfml.algorithms.base import Message, Metrics, RunEnv
from dfml.algorithms.clfml.algorithm import reconnect
from dfml.algorithms.clfml.augment import ConditionalVAE, generate_missing
from dfml.algorithms.clfml.clustering import (
    arrival_order,
    centralized_online_kmeans,
    cluster_labels,
)
from dfml.algorithms.clfml.labels import label_vector
from dfml.algorithms.clfml.phases import TASK_EVALUATE, TASK_FINETUNE, TRAIN_GENERATOR, Phase
from dfml.algorithms.clfml.state import SLOT
from dfml.algorithms.clfml.tasks import (
    Task,
    load_tasks,
    missing_labels,
    primary_cluster,
    random_tasks,
    select_clusters,
)
from dfml.algorithms.sgd import sgd_epochs
from dfml.errors import ConfigError
from dfml.programs import Program, register
from dfml.records import Callback
from dfml.steps import PARAMS, DriverState, Step, StepResult, StepSource
from dfml.topology.graphs import link_cost_graph, minimum_spanning_tree

TASK_SALT = 0x7A5C
FINETUNE_MIXING = ("cluster", "engaged")


@dataclass(frozen=True)
class TaskConfig:
    """On-demand tasks served after training (CL-FML and its baselines).

    Attributes:
        tasks: number of random tasks of 2–5 labels drawn with the seed (0: none).
        tasks_file: a YAML/JSON list of tasks (label lists, or ``{labels, q}``).
        finetune_rounds: T′, decentralized fine-tuning rounds per task.
        finetune_lr: SGD step size of task fine-tuning.
        augment: generate the missing labels of Case II tasks with a VAE.
        generator_rounds: gossip rounds that train each generator g_ℓ.
        generated_per_label: samples a client generates per missing label.
        task_clusters: K of the central clustering that picks the engaged
            clients for algorithms that do not cluster (dfedavg, gfml).
        finetune_mixing: who averages models while fine-tuning: ``cluster``
            (engaged clients of the same cluster only) or ``engaged`` (all
            engaged clients, across clusters).
    """

    tasks: int = 0
    tasks_file: str | None = None
    finetune_rounds: int = 5
    finetune_lr: float = 0.05
    augment: bool = True
    generator_rounds: int = 10
    generated_per_label: int = 4
    task_clusters: int = 3
    finetune_mixing: str = "cluster"

    def __post_init__(self) -> None:
        if self.finetune_mixing not in FINETUNE_MIXING:
            raise ConfigError(
                f"finetune_mixing must be one of {', '.join(FINETUNE_MIXING)}, "
                f"got {self.finetune_mixing!r}"
            )
        if self.tasks < 0:
            raise ConfigError(f"tasks must be >= 0, got {self.tasks}")
        if self.tasks and self.tasks_file:
            raise ConfigError("give tasks or tasks_file, not both")
        for name in ("finetune_rounds", "generator_rounds", "generated_per_label", "task_clusters"):
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

    Attributes:
        labels: 𝒯, the task's labels.
        case: 1 (the primary cluster holds 𝒯) or 2 (further clusters engaged).
        primary_cluster: k* = argmin_k ℋ(w_k, q).
        clusters: the engaged clusters, primary first.
        clients: the engaged clients (every client of an engaged cluster).
        accuracy_before: the cluster meta-models' accuracy on 𝒯's test samples.
        accuracy: the fine-tuned task models' accuracy on the same samples.
        accuracy_no_augmentation: Case II: the same fine-tuning without the
            generated samples (``None`` for Case I tasks).
        seconds: wall time of serving the task.
    """

    labels: list[int]
    case: int
    primary_cluster: int
    clusters: list[int]
    clients: list[int]
    accuracy_before: float | None
    accuracy: float | None
    accuracy_no_augmentation: float | None
    seconds: float


def closed_rows(graph: nx.Graph, ids: Sequence[int]) -> dict[int, list[int]]:
    """Each client's neighbours in ``graph`` restricted to ``ids``, components linked."""
    sub = graph.subgraph(ids).copy()
    sub.add_nodes_from(ids)
    linked = reconnect(sub)  # the same rule as CL-FML's cluster sub-graphs
    return {c: sorted(linked.neighbors(c)) for c in ids}


def uniform_message(rnd: int, refs: Sequence[Any], extra: dict[str, Any]) -> Message:
    w = 1.0 / (len(refs) + 1)
    return Message(rnd, tuple(refs), tuple([w] * len(refs)), w, extra)


class TaskService(Callback, StepSource):
    """Plans the task steps of the last round (a step source) and reports them."""

    def __init__(
        self,
        cfg: TaskConfig,
        rounds: int,
        seed: int,
        client_labels: Mapping[int, Sequence[int]],
        algorithm_cfg: Any,
        out: Path | None = None,
    ) -> None:
        self.cfg, self.rounds, self.seed, self.out = cfg, rounds, seed, out
        self.client_labels = {c: tuple(v) for c, v in client_labels.items()}
        self.universe = sorted(set().union(*map(set, self.client_labels.values())))
        self.batch_size = int(getattr(algorithm_cfg, "batch_size", 32))
        if cfg.tasks_file:
            self.tasks = load_tasks(cfg.tasks_file, self.universe)
        else:
            self.tasks = random_tasks(self.universe, cfg.tasks, seed)
        for task in self.tasks:
            task.check(self.universe)
        self.records: list[dict[str, Any]] = []
        self._stage: dict[str, Any] | None = None
        self._queue = list(range(len(self.tasks)))
        self._runtime: Any = None
        self._live = False

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
        for k in engaged:
            for label in missing_labels(task.labels, labels[k]):
                src = next(j for j in engaged if label in labels[j])
                sources.setdefault(src, [])
                if label not in sources[src]:
                    sources[src].append(label)
                for c in clients:
                    if assignment[c] == k:
                        needs.setdefault(c, []).append((label, src))
        plan = ["before"]
        augment = case == 2 and self.cfg.augment and bool(sources)
        if augment:
            plan += ["generator"] * self.cfg.generator_rounds + ["ship"]
        plan += ["finetune"] * self.cfg.finetune_rounds + ["after"]
        if augment:  # the ablation: the same fine-tuning without the generated samples
            plan += ["finetune-plain"] * self.cfg.finetune_rounds + ["after-plain"]
        return {
            "index": index,
            "task": task,
            "case": case,
            "primary": k_star,
            "engaged": engaged,
            "clients": clients,
            "assignment": assignment,
            "sources": sources,
            "needs": needs,
            "plan": plan,
            "pos": 0,
            "rows": self._finetune_rows(env, clients, assignment),
            "counts": {},
            "generators": {},
            "first": True,
        }

    def _finetune_rows(
        self, env: RunEnv, clients: Sequence[int], assignment: Mapping[int, int]
    ) -> dict[int, list[int]]:
        """Who mixes with whom while fine-tuning (``finetune_mixing``).

        ``engaged``: one reconnected sub-graph over every engaged client.
        ``cluster``: one per engaged cluster, so models trained apart (on
        other label sets) are never averaged; knowledge of missing labels
        reaches a cluster only through the generated samples.
        """
        if self.cfg.finetune_mixing == "engaged":
            return closed_rows(env.topology.graph, clients)
        rows: dict[int, list[int]] = {}
        for k in sorted({assignment[c] for c in clients}):
            members = [c for c in clients if assignment[c] == k]
            rows.update(closed_rows(env.topology.graph, members))
        return rows

    def _advance(self, state: DriverState, env: RunEnv) -> Step | None:
        st = self._stage
        assert st is not None
        if st["pos"] >= len(st["plan"]):
            return None
        stage = st["plan"][st["pos"]]
        labels = list(st["task"].labels)
        rnd = state.round
        if stage.startswith("before") or stage.startswith("after"):
            which = "meta" if stage == "before" else "task"
            extra = {"labels": labels, "which": which}
            msgs = {c: Message(rnd, (), extra=extra) for c in st["clients"]}
            return Step(Phase.TASK, TASK_EVALUATE, rnd, msgs, publish=False, read_only=True)
        if stage == "generator":
            return self._generator_step(st, state, env)
        if stage == "ship":
            self._ship(st, state)
            st["pos"] += 1
            st["first"] = True
            return self._advance(state, env)
        return self._finetune_step(st, state, stage == "finetune" and bool(st["generators"]))

    def _generator_step(self, st: dict, state: DriverState, env: RunEnv) -> Step:
        msgs = {}
        assignment = st["assignment"]
        for src, labels in st["sources"].items():
            members = [c for c in env.live() if assignment[c] == src]
            rows = closed_rows(env.topology.graph, members)
            for c in members:
                refs = [] if st["first"] else [state.channels["generator"][j] for j in rows[c]]
                extra = {"labels": labels, "universe": self.universe, "first": st["first"]}
                msgs[c] = uniform_message(state.round, refs, extra)
        st["first"] = False
        return Step(Phase.TASK, TRAIN_GENERATOR, state.round, msgs)

    def _ship(self, st: dict, state: DriverState) -> None:
        """g_ℓ = the average of cluster ℓ's generator vectors (a Ray task next to the data)."""
        from dfml.algorithms.server import average

        assignment = st["assignment"]
        for src in st["sources"]:
            members = sorted(c for c in state.channels["generator"] if assignment.get(c) == src)
            refs = [state.channels["generator"][c] for c in members]
            st["generators"][src] = average([1.0 / len(refs)] * len(refs), refs)

    def _finetune_step(self, st: dict, state: DriverState, augment: bool) -> Step:
        labels = list(st["task"].labels)
        first = st["first"]
        channel = PARAMS if first else "task"
        msgs = {}
        for c in st["clients"]:
            refs = [state.channels[channel][j] for j in st["rows"][c]]
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
                "neighbors": len(refs),
                "generated": gen_labels,
                "universe": self.universe,
                "per_label": self.cfg.generated_per_label,
                "lr": self.cfg.finetune_lr,
                "batch_size": self.batch_size,
                "task": st["index"],
            }
            w = 1.0 / (len(refs) + 1)
            msgs[c] = Message(state.round, (*refs, *gens), tuple([w] * len(refs)), w, extra)
        st["first"] = False
        return Step(Phase.TASK, TASK_FINETUNE, state.round, msgs)

    def absorb(
        self, state: DriverState, step: Step, results: Mapping[int, StepResult], env: RunEnv
    ) -> None:
        st = self._stage
        assert st is not None
        if step.publish:
            state.publish(results)
        stage = st["plan"][st["pos"]]
        if step.program == TASK_EVALUATE:
            correct = sum(r.metrics["task_correct"] for r in results.values())
            total = sum(r.metrics["task_total"] for r in results.values())
            st["counts"][stage] = correct / total if total else float("nan")
            st["first"] = True
        st["pos"] += 1

    def _finish(self) -> None:
        st = self._stage
        assert st is not None
        self._stage = None
        acc = st["counts"]
        self.records.append(
            {
                "labels": list(st["task"].labels),
                "case": st["case"],
                "primary_cluster": st["primary"],
                "clusters": st["engaged"],
                "clients": st["clients"],
                "accuracy_before": acc.get("before"),
                "accuracy": acc.get("after"),
                "accuracy_no_augmentation": acc.get(
                    "after-plain", acc.get("after") if st["case"] == 2 else None
                ),
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
        out = {
            "task_accuracy": mean(self.records),
            "task_accuracy_before": mean(self.records, "accuracy_before"),
            "task_accuracy_case1": mean([r for r in self.records if r["case"] == 1]),
            "task_accuracy_case2": mean(case2),
            "task_accuracy_case2_no_augmentation": mean(case2, "accuracy_no_augmentation"),
            "tasks_case2": len(case2),
            "tasks": self.records,
        }
        if self.out is not None:
            rows = [
                {**r, "clients": list(r["clients"]), "clusters": list(r["clusters"])}
                for r in self.records
            ]
            pq.write_table(pa.Table.from_pylist(rows), Path(self.out) / "tasks.parquet")
        return out


# ----- client half (the service's programs, registered below) ---------------
def _task_mask(y: torch.Tensor, labels: Sequence[int]) -> torch.Tensor:
    return torch.isin(y, torch.as_tensor(list(labels), device=y.device))


def task_evaluate(
    algorithm: Any, ctx: ClientContext, state: ClientState, msg: Message
) -> tuple[ClientState, Metrics]:
    """Correct / total on the client's test samples of 𝒯, prediction restricted to 𝒯."""
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
    dim = int(np.prod(ctx.data.x_test.shape[1:]))
    with torch.random.fork_rng(devices=[]):  # the same init everywhere; global RNG untouched
        torch.manual_seed(TASK_SALT)
        return ConditionalVAE(dim, len(universe)).to(ctx.device)


def train_generator(
    algorithm: Any,
    ctx: ClientContext,
    state: ClientState,
    neighbors: Sequence[np.ndarray],
    msg: Message,
) -> tuple[ClientState, Metrics]:
    """Mix the neighbours' g_ℓ, then one epoch of Adam on own samples of g_ℓ's labels."""
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
    x = d.x_train[mask].reshape(int(mask.sum()), -1).clamp(0.0, 1.0)
    y = torch.as_tensor([index[int(v)] for v in d.y_train[mask].tolist()], dtype=torch.long)
    loss_value = float("nan")
    if len(y):
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


def task_finetune(
    algorithm: Any,
    ctx: ClientContext,
    state: ClientState,
    neighbors: Sequence[np.ndarray],
    msg: Message,
) -> tuple[ClientState, Metrics]:
    """One round of task fine-tuning: mix neighbours' task models, SGD on D^Q ∩ 𝒯 (+ generated)."""
    extra = msg.extra
    n = extra["neighbors"]
    start = algorithm.model_vector(ctx, state.params) if extra["first"] else state.extras["task"]
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
    d = ctx.data
    mask = _task_mask(d.y_query, extra["labels"])
    x, y = d.x_query[mask], d.y_query[mask]
    universe = extra["universe"]
    generated = 0
    for gen_vec, missing in zip(neighbors[n:], extra["generated"], strict=True):
        vae = _vae(ctx, universe)
        index = [universe.index(m) for m in missing]
        g = torch.Generator().manual_seed(ctx.round_seed(extra["task"], TASK_SALT + 2))
        rng = np.random.default_rng(ctx.round_seed(extra["task"], TASK_SALT + 3))
        params = torch.from_numpy(np.array(gen_vec, dtype=np.float32)).to(ctx.device)
        gx, gy = generate_missing(vae, index, extra["per_label"], 0.4, g, rng, params)
        x = torch.cat([x, gx.reshape(-1, *x.shape[1:]).to(x.dtype)])
        y = torch.cat([y, torch.as_tensor([universe[i] for i in gy.tolist()], dtype=y.dtype)])
        generated += len(gy)
    loss = float("nan")
    if len(y):
        theta, loss = sgd_epochs(
            ctx.model,
            theta,
            x,
            y,
            lr=extra["lr"],
            epochs=1,
            batch_size=extra["batch_size"],
            seed=ctx.round_seed(state.round, TASK_SALT + extra["task"]),
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
