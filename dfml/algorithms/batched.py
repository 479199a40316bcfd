"""Many clients' local SGD as one vectorised computation (``torch.func.vmap``).

At 10,000 clients a round is ~2 SGD steps per client on a tiny model, and
their cost is PyTorch's per-call overhead, not arithmetic. When a cohort's
clients share a model (same module, different flat vectors), their steps are
one computation: stack the vectors into a C×P matrix, run the model over
(θ_c, batch_c) with ``vmap`` and take one reverse pass of Σ_c ℓ_c, whose
gradient is, row by row, each client's own — one call per SGD step of the
whole cohort instead of one per client. (Not ``vmap(grad_and_value(ℓ))``:
the same gradients, but its first call imports ``torch._dynamo`` — 2–7 s
per actor — and cross-entropy under vmap runs a Python decomposition.)

The result equals :func:`~dfml.algorithms.sgd.sgd_epochs` run on each client
separately, up to float rounding (batched matrix products sum in another
order, so not bitwise): each client draws its mini-batch order from its own
seed with the same :func:`~dfml.algorithms.sgd.minibatches`, and its loss is
the mean over its batch. Clients of different sizes are ragged: every step
pads each client's batch to ``batch_size`` with masked samples (loss =
Σ mask·ℓ / Σ mask), and a client with no step s left is frozen (its vector
is kept as is). :func:`batched_evaluate` likewise equals
:func:`~dfml.algorithms.sgd.evaluate` per client.

A client's bits do not depend on which clients share its call: the padded
shapes are fixed (``batch_size`` for a step, :data:`EVAL_WIDTH` for
evaluation) rather than the largest of the cohort, so each client's slice of
a batched product and each masked sum is the same computation whoever else
is in the block. That keeps a client's training a function of (parameters,
data, seed) — the fault layer's redo of a few clients after a failure, on
another actor, gives the bits of the failure-free run.

**DP-SGD** (``privacy`` with a finite clipping bound): every sample of
every client gets its own copy of θ_c (a [c, W, P] tensor), the model is
vmapped over clients and samples, and one reverse pass gives every
per-sample gradient; each is clipped, each client's sum gets its own noise
from its own generator (seeded per client, drawn only on the steps the
client takes), as :class:`~dfml.algorithms.privacy.dpsgd.Privatizer` does
for one client. A block then holds W times the vectors, so it holds W
times fewer clients (:func:`blocks`).

Only models built of :data:`STACKABLE_LAYERS` (the MLPs) are batched;
callers check :func:`vectorizable`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import vmap
from torch.nn.utils.rnn import pad_sequence

from dfml.algorithms.privacy.dpsgd import DPSGD, clip_factors, draw_noise, noise_generator
from dfml.algorithms.seeds import generators
from dfml.algorithms.sgd import minibatches
from dfml.models.flat import FlatModel

#: Layers whose vmapped form computes, for each client, exactly what the
#: client alone would (batched matrix products, elementwise maps). Not
#: dropout (a vmap draws other random numbers than the per-client loop) and
#: not convolutions or normalisation: vmapped, a convolution becomes a
#: grouped one whose sums depend on how many clients share the call (so a
#: client's bits would depend on its cohort), and a conv model's cost is its
#: arithmetic, which batching does not cut.
STACKABLE_LAYERS: tuple[type[nn.Module], ...] = (nn.Sequential, nn.Flatten, nn.Linear, nn.ReLU)

#: Test samples per client per vectorised evaluation call (a fixed width: see above).
EVAL_WIDTH = 8

#: Bytes one vectorised call may hold in stacked vectors, gradients and
#: batch data; a larger cohort runs as several blocks (a CNN's 0.86 M
#: parameters × 5,000 clients would otherwise need 17 GB per copy).
BLOCK_BYTES = 256 * 2**20


def vectorizable(model: FlatModel) -> bool:
    """Whether ``model`` is built only of :data:`STACKABLE_LAYERS` (exact types)."""
    return all(type(m) in STACKABLE_LAYERS for m in model.module.modules())


def blocks(thetas: torch.Tensor, xs: Sequence[torch.Tensor], copies: int = 1) -> list[slice]:
    """The client ranges of one vectorised call each, under :data:`BLOCK_BYTES`.

    Per client: about four copies of its vector (θ, its gradient, the new θ,
    autograd's saved views), each ``copies`` times (DP-SGD: one per sample
    of a batch), and its padded samples. At least one client a block.
    """
    samples = max([1, *(len(x) for x in xs)])
    sample_numel = math.prod(xs[0].shape[1:]) if xs else 1
    per_client = 4 * (4 * copies * thetas.shape[1] + samples * sample_numel)
    size = max(1, BLOCK_BYTES // per_client)
    return [slice(start, start + size) for start in range(0, len(thetas), size)]


def pad_clients(
    xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack ragged per-client data into [C, n_max, ...] / [C, n_max] (zero padded).

    ``n_max`` is at least 1, so a cohort of clients without samples still
    has a valid (fully masked) shape. Needs at least one client. When every
    client's samples are consecutive rows of one pair of tensors (an actor's
    cohort data: :func:`~dfml.actors.state.cohort_data`), one gather builds
    both instead of a copy per client.
    """
    gathered = _gather_rows(xs, ys)
    if gathered is not None:
        return gathered
    x, y = pad_sequence(list(xs), batch_first=True), pad_sequence(list(ys), batch_first=True)
    if x.shape[1] == 0:
        x = x.new_zeros((x.shape[0], 1, *x.shape[2:]))
        y = y.new_zeros((y.shape[0], 1))
    return x, y


def _gather_rows(
    xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """:func:`pad_clients` as one ``index_select`` when each client's ``x``/``y``
    is a slice of rows of the same base tensors; ``None`` otherwise."""
    x_base, y_base = xs[0]._base, ys[0]._base
    if (
        x_base is None
        or y_base is None
        or y_base.dim() != 1
        or not x_base.is_contiguous()
        or x_base.shape[1:] != xs[0].shape[1:]  # rows of the base are samples
    ):
        return None
    row = max(math.prod(x_base.shape[1:]), 1)
    if any(x._base is not x_base or not x.is_contiguous() for x in xs) or any(
        y._base is not y_base for y in ys
    ):
        return None
    x_rows = [divmod(x.storage_offset() - x_base.storage_offset(), row) for x in xs]
    starts = [y.storage_offset() - y_base.storage_offset() for y in ys]
    lengths = [y.shape[0] for y in ys]
    if any(
        rem or start != begin or x.shape[0] != n
        for (start, rem), begin, x, n in zip(x_rows, starts, xs, lengths, strict=True)
    ):
        return None
    device = x_base.device
    sizes = torch.tensor(lengths, device=device)
    width = max(1, int(sizes.max()))
    slots = torch.arange(width, device=device)
    valid = slots[None, :] < sizes[:, None]
    index = torch.where(valid, torch.tensor(starts, device=device)[:, None] + slots, 0).flatten()
    x = x_base.index_select(0, index).view(len(xs), width, *x_base.shape[1:])
    y = y_base.index_select(0, index).view(len(ys), width)
    x.masked_fill_(~valid.view(*valid.shape, *([1] * (x.dim() - 2))), 0)
    y.masked_fill_(~valid, 0)
    return x, y


def step_plan(
    sizes: Sequence[int], batch_size: int, epochs: int, seeds: Sequence[int]
) -> np.ndarray:
    """Every client's mini-batch indices, step by step: int64 [C, S, batch_size].

    Client c's steps are exactly those :func:`sgd_epochs` takes with
    ``default_rng(seeds[c])``: ``epochs`` passes of :func:`minibatches`.
    Unused slots (a short last batch, steps after the client's last) hold -1;
    S is the largest number of steps of any client.
    """
    per_client = []
    for n, rng in zip(sizes, generators(seeds), strict=True):
        per_client.append([idx for _ in range(epochs) for idx in minibatches(n, batch_size, rng)])
    steps = max((len(b) for b in per_client), default=0)
    plan = np.full((len(sizes), steps, batch_size), -1, dtype=np.int64)
    for c, batches in enumerate(per_client):
        for s, idx in enumerate(batches):
            plan[c, s, : len(idx)] = idx
    return plan


def _masked_losses(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Each client's mean cross-entropy over its unmasked samples (0 if none).

    ``logits`` [C, W, K], ``y`` and ``mask`` [C, W]. Computed outside the
    vmap on the stacked logits: under vmap, cross-entropy runs a Python
    decomposition (and imports sympy on first use).
    """
    per_sample = torch.nn.functional.cross_entropy(
        logits.flatten(0, 1), y.flatten(), reduction="none"
    ).view_as(mask)
    return (per_sample * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def batched_sgd_epochs(
    model: FlatModel,
    thetas: torch.Tensor,
    xs: Sequence[torch.Tensor],
    ys: Sequence[torch.Tensor],
    *,
    lr: float,
    epochs: int,
    batch_size: int,
    seeds: Sequence[int],
    privacy: DPSGD | None = None,
    noise_seeds: Sequence[int] = (),
    in_place: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`sgd_epochs` of C clients at once: θ_c ← θ_c − η ∇ℓ_c(θ_c; batch_c).

    ``thetas``: [C, P], one start vector per client; ``xs``/``ys``: each
    client's samples (any sizes, also 0); ``seeds``: each client's
    mini-batch seed. With ``privacy``, DP-SGD's step (clipped per-sample
    gradients, each client's noise from its seed in ``noise_seeds``), as
    :func:`sgd_epochs` takes it with a
    :class:`~dfml.algorithms.privacy.dpsgd.Privatizer`. Returns the new
    vectors [C, P] and each client's mean training loss over its batches
    [C] (float64; NaN for a client without samples, as :func:`sgd_epochs`
    returns). One ``vmap`` call per step and block of clients
    (:func:`blocks`). ``in_place``: train ``thetas`` itself (the caller's
    own copy) and return it.
    """
    out = thetas.detach() if in_place else thetas.detach().clone()
    losses = torch.empty(len(ys), dtype=torch.float64, device=thetas.device)
    # C = ∞ (σ = 0): clipping is the identity, the plain step is DP-SGD's.
    private = privacy if privacy is not None and privacy.clipped else None
    if private is not None and len(noise_seeds) != len(ys):
        raise ValueError(f"DP-SGD needs one noise seed per client, got {len(noise_seeds)}")
    for b in blocks(thetas, xs, 1 if private is None else batch_size):
        gradient = (
            (_mlp_gradient(model) or _plain_gradient(model))
            if private is None
            else _private_gradient(model, private, noise_seeds[b], batch_size)
        )
        losses[b] = _train_block(out[b], xs[b], ys[b], lr, epochs, batch_size, seeds[b], gradient)
    return out, losses


#: One step's gradient of a block: (θ [c, P], the batches' inputs [c, W, …] and
#: labels [c, W], which slots hold samples [c, W], which clients step [c]) →
#: (each client's step direction [c, P], zero for a client that does not step;
#: each client's mean batch loss [c]).
BlockGradient = Callable[
    [torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    tuple[torch.Tensor, torch.Tensor],
]


def _train_block(
    theta: torch.Tensor,
    xs: Sequence[torch.Tensor],
    ys: Sequence[torch.Tensor],
    lr: float,
    epochs: int,
    batch_size: int,
    seeds: Sequence[int],
    gradient: BlockGradient,
) -> torch.Tensor:
    """Train the block ``theta`` [c, P] in place with ``gradient``'s steps along each
    client's mini-batch plan; return each client's mean loss over its steps [c]."""
    device = theta.device
    plan = torch.from_numpy(step_plan([len(y) for y in ys], batch_size, epochs, seeds)).to(device)
    x_all, y_all = pad_clients(xs, ys)
    rows = torch.arange(len(ys), device=device)[:, None]
    total = torch.zeros(len(ys), dtype=torch.float64, device=device)
    count = torch.zeros(len(ys), dtype=torch.float64, device=device)
    for s in range(plan.shape[1]):
        idx = plan[:, s]  # [c, batch_size], -1 in the unused slots
        valid = idx >= 0
        take = idx.clamp_min(0)
        active = valid.any(1)
        step, losses = gradient(theta, x_all[rows, take], y_all[rows, take], valid, active)
        theta.sub_(step, alpha=lr)
        total += torch.where(active, losses.detach().double(), 0.0)
        count += active.double()
    return torch.where(count > 0, total / count.clamp_min(1.0), math.nan)


def _plain_gradient(model: FlatModel) -> BlockGradient:
    """Each client's mean-loss gradient on its batch (plain SGD)."""
    forward = vmap(model)

    def gradient(theta, x, y, valid, active):
        with torch.enable_grad():
            leaf = theta.detach().requires_grad_(True)
            losses = _masked_losses(forward(leaf, x), y, valid.float())
            # Client c's loss depends on row c alone, so the gradient of the
            # sum is, row by row, each client's own gradient (∂Σ/∂ℓ_c = 1).
            (grads,) = torch.autograd.grad(losses.sum(), leaf)
        if not bool(active.all()):
            # A client with no step left keeps its vector: a zeroed gradient
            # (so not even a NaN from its fully masked batch reaches it).
            grads.masked_fill_(~active[:, None], 0.0)
        return grads, losses

    return gradient


def _mlp_gradient(model: FlatModel) -> BlockGradient | None:
    """:func:`_plain_gradient` written out for an MLP (``nn.Sequential`` of
    ``Flatten``, ``Linear`` and ``ReLU``), or ``None`` for any other model.

    The same gradients through batched matrix products, by hand: autograd's
    reverse pass over the vmapped model was half a round's time at 10,000
    clients, and the hand-written pass is a quarter faster (no graph, the
    input's gradient never formed, the weights' gradients written straight
    into the [c, P] result). Each client's rows are their own products, so
    a client's bits do not depend on its block, as with the vmapped model.
    """
    layers = _mlp_layers(model)
    if layers is None:
        return None
    # The result buffer, reused step after step (the caller consumes a step's
    # gradient before asking for the next): a fresh [c, P] tensor per step is
    # a fresh mapping of tens of MB whose page faults cost as much as a layer.
    buffer: list[torch.Tensor] = []

    def gradient(theta, x, y, valid, active):
        c = theta.shape[0]
        saved = _mlp_forward(layers, theta, x)  # each layer's output
        h = saved[-1]
        mask = valid.to(theta.dtype)
        losses = _masked_losses(h, y, mask)
        n = mask.sum(1).clamp_min(1.0)
        # ∂ℓ_c/∂logits = (softmax − onehot) · mask / n_c
        d = torch.softmax(h, 2)
        d.scatter_add_(2, y[:, :, None], torch.full_like(d[:, :, :1], -1.0))
        d *= (mask / n[:, None])[:, :, None]
        if not buffer or buffer[0].shape != theta.shape:
            buffer[:] = [torch.empty_like(theta)]
        grads = buffer[0]  # every column is written below: the layers hold every parameter
        for i in range(len(layers) - 1, -1, -1):
            kind, w, b = layers[i]
            inputs = saved[i - 1] if i > 0 else x.reshape(c, x.shape[1], -1)
            if kind == "relu":
                # Autograd's own ReLU backward: one pass, where a mask and a
                # masked fill took ten times as long.
                d = torch.ops.aten.threshold_backward(d, saved[i], 0)
                continue
            weight = theta[:, w[0] : w[1]].view(c, *w[2])
            torch.bmm(d.transpose(1, 2), inputs, out=grads[:, w[0] : w[1]].view(c, *w[2]))
            if b is not None:
                grads[:, b[0] : b[1]] = d.sum(1)
            if i > 0:
                d = torch.bmm(d, weight)
        if not bool(active.all()):
            grads.masked_fill_(~active[:, None], 0.0)
        return grads, losses

    return gradient


def _mlp_forward(
    layers: list[MLPLayer], theta: torch.Tensor, x: torch.Tensor
) -> list[torch.Tensor]:
    """Every layer's output of the MLP ``layers`` for each client's θ [c, P] on
    its inputs [c, W, …] (the last is the logits [c, W, K])."""
    c = theta.shape[0]
    h = x.reshape(c, x.shape[1], -1)
    outputs = []
    for kind, w, b in layers:
        if kind == "relu":
            h = torch.relu(h)
        else:
            out = torch.bmm(h, theta[:, w[0] : w[1]].view(c, *w[2]).transpose(1, 2))
            if b is not None:
                out += theta[:, b[0] : b[1]][:, None, :]
            h = out
        outputs.append(h)
    return outputs


#: One layer of an MLP as :func:`_mlp_gradient` runs it: ("linear", the weight's
#: (start, end, shape) in the flat vector, the bias's (start, end) or None) or
#: ("relu", None, None).
MLPLayer = tuple[str, "tuple[int, int, torch.Size] | None", "tuple[int, int] | None"]


def _mlp_layers(model: FlatModel) -> list[MLPLayer] | None:
    """The layers of ``model`` if it is a flat ``nn.Sequential`` of leading
    ``Flatten`` layers, then ``Linear`` and ``ReLU`` ending in a ``Linear``."""
    module = model.module
    if type(module) is not nn.Sequential:
        return None
    children = list(module.named_children())
    while children and type(children[0][1]) is nn.Flatten:
        children.pop(0)
    if not children or type(children[-1][1]) is not nn.Linear:
        return None
    starts = dict(zip(model.names, np.cumsum([0, *model.numels]).tolist(), strict=False))
    layers: list[MLPLayer] = []
    for name, layer in children:
        if type(layer) is nn.ReLU and layers and layers[-1][0] == "linear":
            layers.append(("relu", None, None))
        elif type(layer) is nn.Linear:
            w0 = starts[f"{name}.weight"]
            weight = (w0, w0 + layer.weight.numel(), layer.weight.shape)
            bias = None
            if layer.bias is not None:
                b0 = starts[f"{name}.bias"]
                bias = (b0, b0 + layer.bias.numel())
            layers.append(("linear", weight, bias))
        else:
            return None
    return layers


def _private_gradient(
    model: FlatModel, privacy: DPSGD, noise_seeds: Sequence[int], batch_size: int
) -> BlockGradient:
    """DP-SGD's step direction: per-sample gradients clipped to C, summed, each
    client's Gaussian noise (from its own generator, on the steps it takes)
    added, divided by the batch's samples."""
    forward = vmap(vmap(model, randomness="different"), randomness="different")
    generators = [noise_generator(s) for s in noise_seeds]
    std = privacy.noise * privacy.clip

    def gradient(theta, x, y, valid, active):
        mask = valid.to(theta.dtype)
        copies = theta.detach()[:, None, :].expand(-1, batch_size, -1).clone().requires_grad_(True)
        with torch.enable_grad():
            logits = forward(copies, x.unsqueeze(2))  # [c, W, 1, K]
            per_sample = torch.nn.functional.cross_entropy(
                logits.flatten(0, 2), y.flatten(), reduction="none"
            ).view_as(mask)
            # Sample (c, w)'s loss depends on copy (c, w) alone: the gradient of
            # the masked sum is, copy by copy, every per-sample gradient.
            (grads,) = torch.autograd.grad((per_sample * mask).sum(), copies)
        factors = clip_factors(torch.linalg.vector_norm(grads, dim=2), privacy.clip) * mask
        summed = torch.einsum("cw,cwp->cp", factors, grads)
        if privacy.noise > 0:
            for c in active.nonzero().flatten().tolist():
                summed[c] += draw_noise(generators[c], summed.shape[1], std, theta.device)
        n = mask.sum(1).clamp_min(1.0)
        step = torch.where(active[:, None], summed / n[:, None], 0.0)
        return step, (per_sample.detach() * mask).sum(1) / n

    return gradient


@torch.no_grad()
def batched_evaluate(
    model: FlatModel,
    thetas: torch.Tensor,
    xs: Sequence[torch.Tensor],
    ys: Sequence[torch.Tensor],
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`evaluate` of C clients at once: mean test loss and accuracy, each [C].

    Client c is scored with ``thetas[c]`` on (xs[c], ys[c]); a client
    without samples gets NaN for both, as :func:`evaluate` returns (float64).
    """
    parts = [_evaluate_block(model, thetas[b], xs[b], ys[b]) for b in blocks(thetas, xs)]
    if len(parts) == 1:
        return parts[0]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _evaluate_block(
    model: FlatModel, thetas: torch.Tensor, xs: Sequence[torch.Tensor], ys: Sequence[torch.Tensor]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Score the block in chunks of :data:`EVAL_WIDTH` samples per client,
    summing each client's chunks in order (float64)."""
    device = thetas.device
    sizes = torch.tensor([len(y) for y in ys], device=device)
    x_all, y_all = pad_clients(xs, ys)
    loss_sum = torch.zeros(len(ys), dtype=torch.float64, device=device)
    correct = torch.zeros(len(ys), dtype=torch.float64, device=device)
    layers = _mlp_layers(model)
    vmapped = vmap(model) if layers is None else None
    every = torch.arange(len(ys), device=device)
    for start in range(0, int(sizes.max()), EVAL_WIDTH):
        # The clients with samples left: all of them (no copy of θ) or a subset.
        sel = every if start == 0 else (sizes > start).nonzero().flatten()
        whole = start == 0 or len(sel) == len(ys)
        x = (
            x_all[:, start : start + EVAL_WIDTH]
            if whole
            else x_all[sel, start : start + EVAL_WIDTH]
        )
        y = (
            y_all[:, start : start + EVAL_WIDTH]
            if whole
            else y_all[sel, start : start + EVAL_WIDTH]
        )
        if x.shape[1] < EVAL_WIDTH:  # the last chunk of the largest client: pad to the width
            x = torch.nn.functional.pad(x, (0, 0) * (x.dim() - 2) + (0, EVAL_WIDTH - x.shape[1]))
            y = torch.nn.functional.pad(y, (0, EVAL_WIDTH - y.shape[1]))
        mask = start + torch.arange(EVAL_WIDTH, device=device)[None, :] < sizes[sel, None]
        theta = thetas if whole else thetas[sel]
        logits = vmapped(theta, x) if layers is None else _mlp_forward(layers, theta, x)[-1]
        loss = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), y.flatten(), reduction="none"
        ).view_as(mask)
        loss_sum[sel] += (loss.double() * mask).sum(1)
        correct[sel] += ((logits.argmax(2) == y) & mask).sum(1).double()
    n = sizes.double()
    empty = sizes == 0
    return (
        torch.where(empty, math.nan, loss_sum / n.clamp_min(1.0)),
        torch.where(empty, math.nan, correct / n.clamp_min(1.0)),
    )
