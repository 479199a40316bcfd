"""The PFL baseline table of the users-and-papers issue, on one fixed partition.

Digits, a Dirichlet α = 0.3 partition of 20 clients with 75/25 train/test per
client, written once to ``benchmarks/digits_dir0.3_20c.parquet`` (dfml's own
``partition.parquet`` form) and loaded by every run with ``--partition-file``;
the one-hidden-layer MLP 64-128-10 (``--hidden 128``); SGD lr 0.05, batch 10,
one local epoch, all clients every round, 100 rounds; seeds 0, 1, 2 (the
seed changes the initial model and the mini-batch order, not the split).

Reported: the **weighted** accuracy Σ_i acc_i n_i / Σ_i n_i over the clients'
test samples (what PFLlib and Flower report) of the model each client would
use after the last round — FedAvg's global model, FedAvg-FT's model after S
fine-tune steps, FedProx's global model, Per-FedAvg's model after one
adaptation step (Pers.1), pFedMe's personal model θ_i,
Ditto's personal model v_i — and of the local-only model (the common
initialisation trained on the client's own data for the run's 100 epochs).

    .venv/bin/python benchmarks/pfl_baselines.py [--rounds 100] [--seeds 0,1,2] [--out runs/pfl]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import ray

from dfml.data.config import DataConfig, PartitionConfig
from dfml.data.partition import make_splits
from dfml.data.registry import load_dataset
from dfml.launch.options import LaunchConfig, build_config
from dfml.launch.results import partition_table, read_metrics
from dfml.launch.runner import execute

HERE = Path(__file__).resolve().parent
PARTITION = HERE / "digits_dir0.3_20c.parquet"

COMMON = {
    "dataset": "digits",
    "hidden": "128",
    "model": "mlp",
    "batch_size": 10,
    "pers_steps": "0,1,5",
    "local_only_lr": 0.05,
}
#: SGD lr 0.05, one local epoch; Per-FedAvg has no epochs: α = β = 0.05 and
#: τ = 6 meta-updates of two batches of 10 (≈ one pass over a client's ~120 samples).
SGD = {"lr": 0.05, "local_epochs": 1}
META = {"inner_lr": 0.05, "meta_lr": 0.05, "local_steps": 6}

#: (row name, algorithm, extra options, metric column of the model a client uses)
RUNS = [
    ("FedAvg", "fedavg", SGD, "accuracy"),
    ("FedAvg-FT (1 step)", "fedavg-ft", {**SGD, "finetune_steps": 1}, "accuracy"),
    ("FedAvg-FT (5 steps)", "fedavg-ft", {**SGD, "finetune_steps": 5}, "accuracy"),
    ("FedProx (μ 0.01)", "fedprox", {**SGD, "mu": 0.01, "aggregation": "server"}, "accuracy"),
    ("Per-FedAvg (Pers.1)", "perfedavg", {**META, "aggregation": "server"}, "pers1_accuracy"),
    ("pFedMe (personalized)", "pfedme", {**SGD, "aggregation": "server"}, "accuracy"),
    ("Ditto (v_i)", "ditto", {**SGD, "aggregation": "server"}, "accuracy"),
]


def write_partition() -> None:
    """The fixed split: Dirichlet α = 0.3 over 20 clients, 25 % test per client."""
    if PARTITION.exists():
        return
    dataset = load_dataset(DataConfig(dataset="digits"))
    cfg = PartitionConfig(partition="dirichlet", alpha=0.3, test_fraction=0.25)
    splits = make_splits(dataset.y, 20, cfg, seed=0)
    pq.write_table(partition_table(splits), PARTITION)


def weighted(out: Path, column: str) -> float:
    table = read_metrics(out).to_pylist()
    last = max(r["round"] for r in table)
    part = pq.read_table(out / "partition.parquet").to_pylist()
    n_test: dict[int, int] = {}
    for row in part:
        if row["split"] == "test":
            n_test[row["client"]] = n_test.get(row["client"], 0) + 1
    rows = [r for r in table if r["round"] == last]
    acc = np.array([r[column] for r in rows])
    n = np.array([n_test[r["client"]] for r in rows], dtype=np.float64)
    return float(np.dot(acc, n) / n.sum())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", default="runs/pfl")
    args = parser.parse_args()
    write_partition()
    seeds = [int(s) for s in args.seeds.split(",")]
    ray.init(include_dashboard=False, logging_level="ERROR")
    results: dict[str, list[float]] = {}
    local: list[float] = []
    for name, algorithm, extra, column in RUNS:
        for seed in seeds:
            tag = "".join(ch for ch in name.lower() if ch.isalnum())
            out = Path(args.out) / tag / f"seed{seed}"
            options = {
                **COMMON,
                **extra,
                "algorithm": algorithm,
                "seed": seed,
                "rounds": args.rounds,
                "partition_file": str(PARTITION),
            }
            done = out / "summary.json"
            if done.exists() and json.loads(done.read_text()).get("status") == "completed":
                summary = json.loads(done.read_text())  # finished before: reuse
            else:
                cfg, _ = build_config(options)
                launch = LaunchConfig(out=str(out), progress=False, dashboard=False, overwrite=True)
                summary = execute(cfg, launch)
            results.setdefault(name, []).append(weighted(out, column))
            if name == "FedAvg":
                local.append(weighted(out, "local_accuracy"))
            print(
                f"{name} seed {seed}: {results[name][-1]:.4f} ({summary['wall_seconds']:.0f} s)",
                flush=True,
            )
    results["Local-only"] = local
    print(f"\n{args.rounds} rounds, seeds {seeds}; weighted accuracy, mean ± std over seeds\n")
    print("| method | weighted accuracy |")
    print("|---|---|")
    for name, values in results.items():
        sd = statistics.stdev(values) if len(values) > 1 else 0.0
        print(f"| {name} | {np.mean(values):.4f} ± {sd:.4f} |")
    (Path(args.out) / "table.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
