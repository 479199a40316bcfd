"""What one client's Python objects cost, measured as RSS growth over 100,000 of each.

The per-client objects of an in-process DFedAvg round with ``--model
linear`` on 64-dim data with 10 classes (650 parameters): its state's vector
(a clone of a row, as the vectorised step keeps it), its ``ClientState``,
the numpy view it publishes, a round's metrics dict, its ``Message`` and
``StepResult``, its ``ClientSplit`` (10 samples). Issue 19 used these to find
where memory goes at 10⁵–10⁶ clients.

    .venv/bin/python benchmarks/client_bytes.py [--clients 100000]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from dfml.actors.state import ClientState
from dfml.algorithms.base import Message
from dfml.data.split import ClientSplit
from dfml.steps import StepResult


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, default=100_000)
    n = parser.parse_args().clients
    matrix = torch.randn(n, 650)
    kept: dict[str, list] = {}

    def measure(name: str, make) -> list:
        before = rss()
        kept[name] = [make(i) for i in range(n)]
        print(f"| {name} | {(rss() - before) / n:,.0f} |")
        return kept[name]

    print("| object (one per client) | bytes |")
    print("|---|---|")
    params = measure("state vector (650 float32, cloned row)", lambda i: matrix[i].clone())
    measure("ClientState", lambda i: ClientState(i, params[i], labels=tuple(range(10))))
    views = measure("published numpy view", lambda i: params[i].detach().numpy())
    metrics = measure(
        "metrics dict (one round)",
        lambda i: {"train_loss": i + 0.1, "test_loss": i + 0.2, "accuracy": i + 0.3},
    )
    measure(
        "Message (two ring neighbours)",
        lambda i: Message(0, (views[i - 1], views[(i + 1) % n]), (0.3, 0.3), 0.4),
    )
    measure("StepResult", lambda i: StepResult({"params": views[i]}, metrics[i], {"params": 2600}))
    measure(
        "ClientSplit (8 + 2 samples)",
        lambda i: ClientSplit(np.arange(7), np.arange(1), np.arange(2)),
    )


if __name__ == "__main__":
    main()
