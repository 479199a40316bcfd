"""DP-SGD's gradient (Abadi et al., 2016): clip every sample's gradient, sum, add noise.

For a batch B of n samples, the private gradient is

    g̃ = ( Σ_{i∈B} g_i · min(1, C / (‖g_i‖ + 1e-6)) + σ C z ) / n,   z ~ N(0, I)

with g_i = ∇ℓ(θ; x_i, y_i) the per-sample gradient, C the clipping bound
and σ the noise multiplier (the clip factor is Opacus's, including its
1e-6). A data-independent term of the loss (FedProx's proximal term) is
added to g̃ unclipped and unnoised: it reveals nothing about the data.

**Per-sample gradients in one pass.** Each sample gets its own copy of θ
(a [n, P] matrix), the model runs over (θ_i, x_i) with ``torch.func.vmap``,
and one reverse pass of Σ_i ℓ_i gives row i = g_i, since ℓ_i depends only
on row i. It is the trick :mod:`dfml.algorithms.batched` uses for clients,
applied to samples. Not ``vmap(grad(ℓ))``: the same gradients, but its
first call imports ``torch._dynamo`` (8–10 s per process measured here),
which every actor of a plain-SGD run would pay.

**Noise.** z comes from a ``torch.Generator`` seeded per client and round
(:class:`Privatizer`), drawn on the CPU in float32 and then moved to the
parameters' device, so a run is reproducible and a client's noise does not
depend on its device or on which clients share its actor.

**C = ∞** (only with σ = 0): clipping is the identity and the mean of the
per-sample gradients is the batch gradient, so the ordinary batch gradient
is taken: DP-SGD with C = ∞, σ = 0 is non-private SGD bit for bit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.func import vmap

from dfml.models.flat import FlatModel

#: Salt of the noise seed (a client's round seed with it: ``ctx.round_seed(round, NOISE_SALT)``).
NOISE_SALT = 0xD95
#: Added to a per-sample norm before dividing (Opacus's clip factor).
NORM_EPS = 1e-6

#: θ ↦ an extra, data-independent loss term (FedProx's proximal term).
Regularizer = Callable[[torch.Tensor], torch.Tensor]
#: (θ, x, y) → (gradient, mean loss): how a meta-learner's first-order path takes a gradient.
GradientFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class DPSGD:
    """The DP-SGD settings a run's clients train with (σ already resolved).

    Attributes:
        clip: C > 0, the bound on every per-sample gradient's L2 norm
            (``math.inf``: no clipping, only with ``noise`` 0).
        noise: σ >= 0, the noise multiplier: the Gaussian noise added to the
            sum of clipped gradients has standard deviation σ·C.
    """

    clip: float
    noise: float

    def __post_init__(self) -> None:
        if not self.clip > 0:
            raise ValueError(f"the clipping bound C must be > 0, got {self.clip}")
        if not (self.noise >= 0 and math.isfinite(self.noise)):
            raise ValueError(
                f"the noise multiplier σ must be a finite number >= 0, got {self.noise}"
            )
        if self.noise > 0 and math.isinf(self.clip):
            raise ValueError("noise σ > 0 needs a finite clipping bound C (its std is σ·C)")

    @property
    def clipped(self) -> bool:
        return math.isfinite(self.clip)

    def start(self, seed: int) -> Privatizer:
        """One client's round of DP-SGD, its noise drawn from ``seed``."""
        return Privatizer(self, seed)


def noise_generator(seed: int) -> torch.Generator:
    """The CPU generator of one client's round of noise."""
    return torch.Generator().manual_seed(seed)


def draw_noise(
    generator: torch.Generator, size: int, std: float, device: torch.device
) -> torch.Tensor:
    """std · z, z ~ N(0, I_size), drawn on the CPU (device-independent bits), on ``device``."""
    return (torch.randn(size, generator=generator) * std).to(device)


def per_sample_gradients(
    model: FlatModel, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Every sample's gradient of its cross-entropy at ``theta``: ([n, P], losses [n]).

    One vmapped forward over n copies of θ and one reverse pass (see the
    module docstring). Dropout draws differ per sample (``randomness='different'``).
    """
    n = len(y)
    rows = theta.detach().expand(n, -1).clone().requires_grad_(True)
    with torch.enable_grad():
        logits = vmap(model, randomness="different")(rows, x.unsqueeze(1)).flatten(0, 1)
        losses = torch.nn.functional.cross_entropy(logits, y, reduction="none")
        (grads,) = torch.autograd.grad(losses.sum(), rows)
    return grads, losses.detach()


def clip_factors(norms: torch.Tensor, clip: float) -> torch.Tensor:
    """min(1, C / (‖g_i‖ + 1e-6)) per sample (any shape of norms)."""
    return (clip / (norms + NORM_EPS)).clamp(max=1.0)


def clipped_sum(grads: torch.Tensor, clip: float) -> torch.Tensor:
    """Σ_i g_i · min(1, C / (‖g_i‖ + 1e-6)) over the rows of ``grads`` [n, P]."""
    factors = clip_factors(torch.linalg.vector_norm(grads, dim=1), clip)
    return factors @ grads


class Privatizer:
    """One client's DP-SGD for one round: its settings and its noise generator.

    ``steps`` counts the noised gradients taken (what the accountant must
    count; tests compare it with the algorithm's declared
    :meth:`~dfml.algorithms.base.Algorithm.private_usage`).
    """

    def __init__(self, dp: DPSGD, seed: int) -> None:
        self.dp = dp
        self.generator = noise_generator(seed)
        self.steps = 0

    def noise(self, size: int, device: torch.device) -> torch.Tensor:
        """σC · z for one step, the next draw of this client's generator."""
        return draw_noise(self.generator, size, self.dp.noise * self.dp.clip, device)

    def gradient(
        self,
        model: FlatModel,
        theta: torch.Tensor,
        x: torch.Tensor,
        y: torch.Tensor,
        regularizer: Regularizer | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The private gradient g̃ (plus ∇ of ``regularizer``) and the batch's mean loss."""
        self.steps += 1
        leaf = theta.detach().requires_grad_(True)
        if not self.dp.clipped:  # C = ∞, σ = 0: the batch gradient, as plain SGD takes it
            with torch.enable_grad():
                loss = torch.nn.functional.cross_entropy(model(leaf, x), y)
                if regularizer is not None:
                    loss = loss + regularizer(leaf)
                (g,) = torch.autograd.grad(loss, leaf)
            return g, loss.detach()
        grads, losses = per_sample_gradients(model, theta, x, y)
        total = clipped_sum(grads, self.dp.clip)
        if self.dp.noise > 0:
            total = total + self.noise(total.numel(), total.device)
        g = total / len(y)
        loss = losses.mean()
        if regularizer is not None:
            with torch.enable_grad():
                term = regularizer(leaf)
                (g_reg,) = torch.autograd.grad(term, leaf)
            g = g + g_reg
            loss = loss + term.detach()
        return g, loss

    def gradient_fn(self, model: FlatModel) -> GradientFn:
        """:meth:`gradient` of ``model`` as a (θ, x, y) → (g̃, loss) function."""
        return lambda theta, x, y: self.gradient(model, theta, x, y)
