"""One thread, one process: batched local SGD of C clients against the per-client loop.

The work of one actor in Workload W at N = 10,000 on two actors: C = 5,000
clients, the default MLP (64-64, 8,970 parameters), 24 training samples each
(30 per client, 80 % train; synthetic 64-dim data, 10 classes), SGD lr 0.05,
batch 16, one epoch — ~2 SGD steps per client. Times
:func:`~dfml.algorithms.batched.batched_sgd_epochs` (one ``vmap`` call per
step of the whole cohort, in blocks) against :func:`~dfml.algorithms.sgd.sgd_epochs`
called once per client, and the same for evaluation (6 test samples each);
also checks that both give the same vectors (max |Δ|). The first batched
call pays torch.func's lazy import, so it runs once untimed.

    .venv/bin/python benchmarks/batched_sgd.py [--clients 5000] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from dfml.algorithms.batched import batched_evaluate, batched_sgd_epochs
from dfml.algorithms.sgd import evaluate, sgd_epochs
from dfml.models.zoo import ModelConfig, build_model

KNOBS = {"lr": 0.05, "epochs": 1, "batch_size": 16}


def median_time(repeats: int, fn: Callable[[], object]) -> tuple[float, object]:
    """Median seconds of ``repeats`` calls, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    c = args.clients
    model = build_model(ModelConfig(model="mlp"), (64,), 10)
    g = torch.Generator().manual_seed(0)
    xs = [torch.randn(24, 64, generator=g) for _ in range(c)]
    ys = [torch.randint(0, 10, (24,), generator=g) for _ in range(c)]
    x_test = [torch.randn(6, 64, generator=g) for _ in range(c)]
    y_test = [torch.randint(0, 10, (6,), generator=g) for _ in range(c)]
    thetas = model.init_flat(0) + 0.01 * torch.randn(c, model.size, generator=g)
    seeds = list(range(c))

    def batched() -> torch.Tensor:
        return batched_sgd_epochs(model, thetas, xs, ys, seeds=seeds, **KNOBS)[0]

    def loop() -> torch.Tensor:
        return torch.stack(
            [
                sgd_epochs(
                    model,
                    thetas[i],
                    xs[i],
                    ys[i],
                    lr=KNOBS["lr"],
                    epochs=KNOBS["epochs"],
                    batch_size=KNOBS["batch_size"],
                    seed=seeds[i],
                )[0]
                for i in range(c)
            ]
        )

    batched_evaluate(model, thetas[:2], x_test[:2], y_test[:2])  # torch.func's lazy import
    t_batched, new_batched = median_time(args.repeats, batched)
    t_loop, new_loop = median_time(args.repeats, loop)
    t_beval, _ = median_time(args.repeats, lambda: batched_evaluate(model, thetas, x_test, y_test))
    t_eval, _ = median_time(
        args.repeats,
        lambda: [evaluate(model, thetas[i], x_test[i], y_test[i]) for i in range(c)],
    )
    delta = float((new_batched - new_loop).abs().max())
    print(f"{c} clients, 1 thread, median of {args.repeats}; max |Δθ| = {delta:.1e}\n")
    print("| work | per-client loop s | batched s | speed-up |")
    print("|---|---|---|---|")
    print(f"| local SGD | {t_loop:.3f} | {t_batched:.3f} | {t_loop / t_batched:.1f}× |")
    print(f"| evaluation | {t_eval:.3f} | {t_beval:.3f} | {t_eval / t_beval:.1f}× |")


if __name__ == "__main__":
    main()
