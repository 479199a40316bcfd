"""The task service's client half: what an engaged client runs for a task.

A task's work on a client is a set of independent chains
(:class:`~dfml.algorithms.clfml.service.TaskService` plans them): the
generator g_ℓ's gossip rounds (:func:`train_generator`), the adaptation at
T′ = 0 and the fine-tuning rounds with the generated samples
(:func:`task_finetune`), the same rounds without them (the ablation), the
head rows shared for missing labels (:func:`task_head_rows`) and the
own-label score of the final model (:func:`task_evaluate`). Each writes a
state extra of its own (a channel: :data:`TASK_CHANNELS`). The driver fuses
one round of every chain that is due into one step of one program,
:func:`task_round`, so a task costs as many round trips as its longest
chain, not the sum of all of them.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from dfml.actors.state import ClientContext, ClientState
from dfml.algorithms.base import Message, Metrics
from dfml.algorithms.clfml.augment import ConditionalVAE, generate_missing
from dfml.algorithms.clfml.phases import TASK_ROUND
from dfml.algorithms.meta.episodes import restricted_loss
from dfml.algorithms.meta.prototypes import prototype_head, prototype_rows
from dfml.algorithms.sgd import sgd_epochs
from dfml.models.flat import FlatModel
from dfml.models.head import head_layout
from dfml.programs import Program, register

TASK_SALT = 0x7A5C

#: The task models after T′ rounds with the generated samples (the requester's).
TASK = "task"
#: The same rounds without the generated samples (Case II's ablation).
TASK_PLAIN = "task_plain"
#: Each client's own adaptation, T′ = 0.
TASK_ADAPTED = "task_adapted"
#: g_ℓ's parameter vector.
GENERATOR = "generator"
#: A holder's sums for the head rows other clusters lack.
HEAD = "head"
#: Every channel a task round may write.
TASK_CHANNELS = (TASK, TASK_PLAIN, TASK_ADAPTED, GENERATOR, HEAD)


def _task_mask(y: torch.Tensor, labels: Sequence[int]) -> torch.Tensor:
    return torch.isin(y, torch.as_tensor(list(labels), device=y.device))


def task_evaluate(
    algorithm: Any,
    ctx: ClientContext,
    state: ClientState,
    neighbors: Sequence[np.ndarray],
    msg: Message,
) -> tuple[ClientState, Metrics]:
    """Correct / total of the task model (the state extra ``into``) on the
    client's own test samples of 𝒯, prediction restricted to 𝒯.

    The secondary, own-label score (``accuracy_own``): it sees only the
    labels this client holds; the requester's score covers all of 𝒯.
    """
    labels = msg.extra["labels"]
    params = state.extras[msg.extra["into"]]
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
    return vae_for(int(np.prod(ctx.data.x_test.shape[1:])), universe, ctx.device)


def vae_for(dim: int, universe: Sequence[int], device: torch.device) -> ConditionalVAE:
    """g_ℓ's module over ``dim`` features and the labels ``universe``, at its
    seeded initial parameters (the same everywhere)."""
    return _seeded_vae(dim, len(universe), device)


@functools.lru_cache(maxsize=16)
def _seeded_vae(dim: int, classes: int, device: torch.device) -> ConditionalVAE:
    """g_ℓ's module with its seeded initial parameters, built once per process.

    Every caller reads it only through a flat vector (``params``) or copies
    its parameters (:meth:`ConditionalVAE.flat`), never changes it, so one
    module serves every client and step: building it (seeding the global
    RNG, initialising its layers) cost more than a generator round's
    training on the 2-core box.
    """
    with torch.random.fork_rng(devices=[]):  # the same init everywhere; global RNG untouched
        torch.manual_seed(TASK_SALT)
        return ConditionalVAE(dim, classes).to(device)


class Adam:
    """Adam on one flat tensor, in place: ``torch.optim.Adam`` with its
    defaults (β = (0.9, 0.999), ε = 1e-8), in the operations of its
    single-tensor path, so the bits are the same (tested).

    A generator round takes one or two Adam steps on ~11k parameters; the
    optimizer's own bookkeeping per step (hooks, state dicts, a step
    tensor) cost more than the arithmetic, about a sixth of the round.
    """

    BETAS = (0.9, 0.999)
    EPS = 1e-8

    def __init__(self, param: torch.Tensor, lr: float) -> None:
        self.param, self.lr, self.steps = param, lr, 0
        self.mean = torch.zeros_like(param)
        self.square = torch.zeros_like(param)

    @torch.no_grad()
    def step(self, grad: torch.Tensor) -> None:
        beta1, beta2 = self.BETAS
        self.steps += 1
        self.mean.lerp_(grad, 1 - beta1)
        self.square.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        bias1 = 1 - beta1**self.steps
        bias2 = 1 - beta2**self.steps
        denom = (self.square.sqrt() / bias2**0.5).add_(self.EPS)
        self.param.addcdiv_(self.mean, denom, value=-(self.lr / bias1))


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
    if msg.extra["first"] or GENERATOR not in state.extras:
        vec = vae.flat().to(ctx.device)
    else:
        own = state.extras[GENERATOR]
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
        opt = Adam(param, lr=1e-2)
        gen = torch.Generator().manual_seed(ctx.round_seed(state.round, TASK_SALT))
        rng = np.random.default_rng(ctx.round_seed(state.round, TASK_SALT + 1))
        order = rng.permutation(len(y))
        for start in range(0, len(y), 32):
            b = torch.from_numpy(order[start : start + 32])
            loss = vae.loss(x[b], y[b], gen, params=param)
            (grad,) = torch.autograd.grad(loss, param)
            opt.step(grad)
            loss_value = float(loss.detach())
        vec = param.detach()
    extras = {**state.extras, GENERATOR: vec.float()}
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
    extras = {**state.extras, HEAD: vector}
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
    """One step of a task's chain: adapt (T′ = 0) or one fine-tuning round.

    Adapt (``extra["adapt"]`` = (K, α)): from the client's own meta-model, K
    full-batch gradient steps of α on the support set (+ generated samples),
    no communication — the method's own adaptation. Fine-tuning: mix the
    neighbours' task models (their meta-models in the first round), then one
    epoch of SGD of ``lr`` on the same data. Both minimise the cross-entropy
    over 𝒯's logits only: the task is a |𝒯|-way classifier, scored so. Before
    either starts from the meta-models (``first``), the head is set as
    ``task_head`` and ``head_sharing`` ask (:func:`task_head`). A client with no support
    samples of 𝒯 and nothing generated keeps the mixed model. The result is
    the state extra ``into`` (default ``task``): each chain of a task keeps
    its models apart, and a later round reads its own chain's.
    """
    extra = msg.extra
    n = extra["neighbors"]
    into = extra.get("into", TASK)
    if extra["first"] and extra["scratch"]:  # no pretraining: every client starts from θ_0
        theta = ctx.model.init_flat(ctx.seed).to(ctx.device)
    else:
        start = algorithm.model_vector(ctx, state.params) if extra["first"] else state.extras[into]
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
    extras = {**state.extras, into: theta.detach()}
    return state.evolve(extras=extras), {"task_loss": loss, "generated": float(generated)}


#: What a job of a task round runs, by kind: each writes only its own state
#: extra (``into``, ``generator``, ``head``) or none (``own``).
JOBS = {
    "generator": train_generator,
    "tune": task_finetune,
    "head": task_head_rows,
    "own": task_evaluate,
}


def task_round(
    algorithm: Any,
    ctx: ClientContext,
    state: ClientState,
    neighbors: Sequence[np.ndarray],
    msg: Message,
) -> tuple[ClientState, Metrics]:
    """Every job the driver fused into this step for this client, in order.

    ``msg.extra["jobs"]``: one dict per job, ``{"name", "kind", "count",
    "weights", "self_weight", "extra"}``: its kind (:data:`JOBS`), its
    ``count`` of ``neighbors`` (consecutive, in job order) and its own
    mixing row and message extra — the message it would get as a step of
    its own. No job reads what another job of the step writes, so the
    result is the unfused steps' bit for bit. Metrics are named
    ``{name}:{metric}``.
    """
    metrics: Metrics = {}
    pos = 0
    for job in msg.extra["jobs"]:
        count = job["count"]
        part = Message(
            msg.round,
            tuple(msg.neighbors[pos : pos + count]),
            tuple(job["weights"]),
            job["self_weight"],
            job["extra"],
        )
        state, measured = JOBS[job["kind"]](
            algorithm, ctx, state, neighbors[pos : pos + count], part
        )
        pos += count
        metrics.update({f"{job['name']}:{key}": value for key, value in measured.items()})
    if pos != len(neighbors):
        raise ValueError(f"task round: jobs read {pos} of {len(neighbors)} neighbour values")
    return state, metrics


register(Program(TASK_ROUND, task_round, channels=TASK_CHANNELS))
