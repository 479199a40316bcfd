"""Ring against k-regular against Epidemic Learning's peer samplers, DFedAvg on digits
(or ``--dataset mnist-5k``).

The question of issue 16's dynamic-peers part: does ``--topology epidemic
--peers 3`` reach the final accuracy of DFedAvg on a ring in fewer rounds?
Every run is DFedAvg on the fixed partition ``benchmarks/digits_dir0.3_20c.parquet``
(digits, Dirichlet α = 0.3 over 20 clients, 25 % test per client, the PFL
baselines' split), the MLP 64-128-10 (``--hidden 128``), SGD lr 0.05,
batch 10, one local epoch, every client every round, the default
``data-size`` mixing, and the same seeds (the seed changes the initial model,
the mini-batch order and the random graphs, not the split). Compared at equal
degree: a fixed random 3-regular graph against a fresh one every round
(EL-Oracle) and against each client pushing to 3 random peers (EL-Local);
the same pair at 2 peers against the ring (degree 2).

For each seed the target is the ring's mean client accuracy after the last
round; a row's "rounds to target" is the first round count after which its
mean client accuracy is at least that (the ring's own row says when the ring
first got there). Bytes per round count every vector a client fetches.

    .venv/bin/python benchmarks/topologies.py [--rounds 60] [--seeds 0,1,2] [--out runs/topologies]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

import numpy as np
import ray
from reuse import run_or_reuse

from dfml.launch.results import read_metrics

HERE = Path(__file__).resolve().parent
PARTITION = HERE / "digits_dir0.3_20c.parquet"  # written by benchmarks/pfl_baselines.py

COMMON: dict[str, Any] = {
    "algorithm": "dfedavg",
    "dataset": "digits",
    "partition_file": str(PARTITION),
    "model": "mlp",
    "hidden": "128",
    "lr": 0.05,
    "batch_size": 10,
    "local_epochs": 1,
    "personalized_eval": False,
}

#: (row name, degree or peers, topology options); the ring comes first: it sets the target.
RUNS: list[tuple[str, int, dict[str, Any]]] = [
    ("ring", 2, {"topology": "ring"}),
    ("epidemic oracle", 2, {"topology": "epidemic", "peers": 2, "epidemic": "oracle"}),
    ("epidemic local", 2, {"topology": "epidemic", "peers": 2, "epidemic": "local"}),
    ("k-regular", 3, {"topology": "k-regular", "degree": 3}),
    ("epidemic oracle", 3, {"topology": "epidemic", "peers": 3, "epidemic": "oracle"}),
    ("epidemic local", 3, {"topology": "epidemic", "peers": 3, "epidemic": "local"}),
]


def curve(out: Path) -> np.ndarray:
    """Mean client accuracy after each round of the run in ``out``."""
    rows = read_metrics(out).select(["round", "accuracy"]).to_pylist()
    rounds = max(r["round"] for r in rows) + 1
    sums, counts = np.zeros(rounds), np.zeros(rounds)
    for row in rows:
        sums[row["round"]] += row["accuracy"]
        counts[row["round"]] += 1
    return sums / counts


def rounds_to(acc: np.ndarray, target: float) -> int | None:
    """Rounds run until the mean accuracy first reaches ``target``; None if never."""
    hits = np.flatnonzero(acc >= target)
    return int(hits[0]) + 1 if hits.size else None


def fmt_rounds(values: list[int | None], rounds: int) -> str:
    """Per-seed rounds and their mean; a seed that never reached counts as > rounds."""
    cells = [str(v) if v is not None else f">{rounds}" for v in values]
    if any(v is None for v in values):
        return f"{', '.join(cells)} (mean > {np.mean([v or rounds for v in values]):.1f})"
    return f"{', '.join(cells)} (mean {np.mean(values):.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=60, help="rounds per run (default 60)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--out", default="runs/topologies", help="results root")
    parser.add_argument(
        "--dataset",
        default="digits",
        help="digits (the fixed partition) or mnist-5k (Dirichlet α = 0.3 over 20 clients, "
        "drawn with the run's seed)",
    )
    parser.add_argument(
        "--backend", default="ray", help="ray, or local: every client in this process (ray)"
    )
    args = parser.parse_args()
    if args.dataset == "digits" and not PARTITION.exists():
        raise SystemExit(f"{PARTITION} is missing; benchmarks/pfl_baselines.py writes it")
    if args.dataset != "digits":
        del COMMON["partition_file"]
        COMMON.update(dataset=args.dataset, clients=20, partition="dirichlet", alpha=0.3)
    COMMON["backend"] = args.backend
    seeds = [int(s) for s in args.seeds.split(",")]
    if args.backend == "ray":
        ray.init(include_dashboard=False, logging_level="ERROR")
    curves: dict[tuple[str, int], list[np.ndarray]] = {}
    sent: dict[tuple[str, int], float] = {}
    for name, degree, topology in RUNS:
        for seed in seeds:
            out = Path(args.out) / f"{name.replace(' ', '-')}-{degree}" / f"seed{seed}"
            options = {**COMMON, **topology, "seed": seed, "rounds": args.rounds}
            summary = run_or_reuse(options, out)
            curves.setdefault((name, degree), []).append(curve(out))
            sent[(name, degree)] = summary["bytes_sent"] / args.rounds
            print(
                f"{name} {degree} seed {seed}: final {summary['final_accuracy']:.4f} "
                f"({summary['wall_seconds']:.0f} s)",
                flush=True,
            )
    targets = [c[-1] for c in curves[("ring", 2)]]
    table: dict[str, Any] = {"rounds": args.rounds, "seeds": seeds, "ring_final": targets}
    print(f"\n{args.rounds} rounds, seeds {seeds}; target = the ring's final mean accuracy")
    print(f"per seed: {', '.join(f'{t:.4f}' for t in targets)}\n")
    print("| topology | degree / peers | final accuracy | rounds to the ring's final | KB/round |")
    print("|---|---|---|---|---|")
    for (name, degree), runs in curves.items():
        finals = [float(c[-1]) for c in runs]
        reach = [rounds_to(c, t) for c, t in zip(runs, targets, strict=True)]
        sd = statistics.stdev(finals) if len(finals) > 1 else 0.0
        print(
            f"| {name} | {degree} | {np.mean(finals):.4f} ± {sd:.4f} | "
            f"{fmt_rounds(reach, args.rounds)} | {sent[(name, degree)] / 1024:.0f} |"
        )
        table[f"{name} {degree}"] = {
            "final": finals,
            "rounds_to_ring_final": reach,
            "curves": [c.tolist() for c in runs],
        }
    (Path(args.out) / "table.json").write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
