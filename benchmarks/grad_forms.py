"""Two ways to get C clients' SGD gradients at once, one thread (issue 19).

- ``summed``: the reverse pass of Σ_c ℓ_c through ``vmap(model)``, what
  dfml does (:func:`dfml.algorithms.batched._plain_gradient`);
- ``vmap-grad``: ``vmap(grad_and_value(ℓ_c))`` (the vectorised floor's
  form, tried for dfml in issue 19 and dropped: no faster for the MLP, 2×
  slower for ``--model linear``, and its first call costs seconds).

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
from torch.func import grad_and_value, vmap

from dfml.algorithms.batched import _plain_gradient
from dfml.models.zoo import ModelConfig, build_model


def vmap_grad(model):
    def loss(theta, x, y, mask):
        logp = torch.log_softmax(model(theta, x), -1)
        nll = -torch.gather(logp, 1, y[:, None])[:, 0]
        return (nll * mask).sum() / mask.sum().clamp_min(1.0)

    step = vmap(grad_and_value(loss))

    def gradient(theta, x, y, valid, active):
        return step(theta.detach(), x, y, valid.float())

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
            for form, make in (("summed", _plain_gradient), ("vmap-grad", vmap_grad)):
                first, later, grads[form] = timed(make(model), theta, x, y, valid, active)
                print(f"| {name} | {c:,} | {form} | {first:.2f} | {later * 1e3:.1f} |")
            diff = float((grads["summed"] - grads["vmap-grad"]).abs().max())
            print(f"|  |  | max gradient difference | {diff:.1e} |  |")


if __name__ == "__main__":
    main()
