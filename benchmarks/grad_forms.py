"""Two ways to get C clients' SGD gradients at once, one thread (issue 19).

- ``summed``: the reverse pass of Σ_c ℓ_c through ``vmap(model)`` (what
  ``dfml.algorithms.batched`` did before issue 19; copied here);
- ``vmap-grad``: ``vmap(grad_and_value(ℓ_c))`` (what it does now,
  :func:`dfml.algorithms.batched._plain_gradient`).

Both give the same gradients (the max difference is printed). Reported:
the first call (``vmap-grad``'s imports ``torch._dynamo``) and the median of
10 later calls, for the MLP (8,970 parameters) and ``--model linear`` (650)
on batches of 16 64-dim samples.

    .venv/bin/python benchmarks/grad_forms.py [--clients 50,4096]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch.func import vmap

from dfml.algorithms.batched import _plain_gradient
from dfml.models.zoo import ModelConfig, build_model


def summed(model):
    forward = vmap(model)

    def gradient(theta, x, y, valid, active):
        leaf = theta.detach().requires_grad_(True)
        logits = forward(leaf, x)
        per = torch.nn.functional.cross_entropy(
            logits.flatten(0, 1), y.flatten(), reduction="none"
        ).view_as(valid)
        mask = valid.float()
        losses = (per * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        (grads,) = torch.autograd.grad(losses.sum(), leaf)
        return grads, losses

    return gradient


def timed(fn, *args) -> tuple[float, float, torch.Tensor]:
    t0 = time.perf_counter()
    out = fn(*args)
    first = time.perf_counter() - t0
    later = []
    for _ in range(10):
        t0 = time.perf_counter()
        out = fn(*args)
        later.append(time.perf_counter() - t0)
    return first, statistics.median(later), out[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", default="50,4096")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print("| model | clients | form | first call s | later calls ms |")
    print("|---|---|---|---|---|")
    for name in ("mlp", "linear"):
        model = build_model(ModelConfig(model=name), (64,), 10)
        for c in [int(v) for v in args.clients.split(",")]:
            g = torch.Generator().manual_seed(0)
            theta = model.init_flat(0) + 0.01 * torch.randn(c, model.size, generator=g)
            x, y = torch.randn(c, 16, 64, generator=g), torch.randint(0, 10, (c, 16), generator=g)
            valid, active = torch.ones(c, 16, dtype=torch.bool), torch.ones(c, dtype=torch.bool)
            grads = {}
            for form, make in (("summed", summed), ("vmap-grad", _plain_gradient)):
                first, later, grads[form] = timed(make(model), theta, x, y, valid, active)
                print(f"| {name} | {c:,} | {form} | {first:.2f} | {later * 1e3:.1f} |")
            diff = float((grads["summed"] - grads["vmap-grad"]).abs().max())
            print(f"|  |  | max gradient difference | {diff:.1e} |  |")


if __name__ == "__main__":
    main()
