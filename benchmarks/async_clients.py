"""Sync against async clients on a virtual clock, with stragglers: virtual seconds to a target.

The question of issue 16's asynchrony part: with a fraction of the clients
10 times slower, does ``--schedule-mode async`` reach ``--target-accuracy``
in less virtual time than ``sync``, which waits for the slowest client every
round? Every run is DFedAvg on a ring of 20 clients with the defaults
(IID partition, the default MLP, SGD lr 0.1, batch 32, 2 local epochs, so
about 6 local steps per update on digits), ``--stragglers F:x10`` for F in
0.1 and 0.3 at ``--step-seconds 0.1``, no latency, three seeds (the seed
also draws which clients straggle). ``sync`` runs the same model updates
whatever the speeds, so its time to target is its rounds to target times its
slowest client's round; ``async`` runs as many client updates per round as
there are clients, so its rounds are short and the fast clients make most of
them.

``--repeat`` also runs the issue's acceptance case (``--stragglers 0.2:x10``,
target 0.8, seed 0) twice in each mode and says whether the two
metrics.parquet files are equal.

    .venv/bin/python benchmarks/async_clients.py [--dataset digits] [--model auto] [--seeds 0,1,2]
        [--sync-rounds 60] [--async-rounds 200] [--target 0.8] [--repeat] [--out runs/async]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
from reuse import run_or_reuse

log = logging.getLogger("async_clients")

COMMON: dict[str, Any] = {
    "algorithm": "dfedavg",
    "clients": 20,
    "topology": "ring",
    "backend": "local",
    "personalized_eval": False,
    "step_seconds": 0.1,
}
FRACTIONS = (0.1, 0.3)
SLOWDOWN = 10


def mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.1f} ± {sd:.1f}"


def cell(values: list[float | None], rounds: int) -> str:
    """mean ± std over the seeds, or which seeds never reached the target."""
    if any(v is None for v in values):
        return f"not reached in {rounds} rounds by {sum(v is None for v in values)} seed(s)"
    return mean_std([float(v) for v in values if v is not None])


def repeat_check(args: argparse.Namespace, root: Path) -> None:
    """The acceptance case twice per mode: equal metrics.parquet files, and the times."""
    for mode, rounds in (("sync", args.sync_rounds), ("async", args.async_rounds)):
        options = {
            **COMMON,
            "dataset": args.dataset,
            "model": args.model,
            "stragglers": f"0.2:x{SLOWDOWN}",
            "schedule_mode": mode,
            "seed": 0,
            "rounds": rounds,
            "target_accuracy": args.target,
        }
        outs = [root / "repeat" / f"{mode}-{i}" for i in (1, 2)]
        summaries = [run_or_reuse(options, out) for out in outs]
        # pandas' equals: NaN cells (a client without a staleness this round) in
        # the same places count as equal, every other value must be bit-equal.
        tables = [pq.read_table(out / "metrics.parquet").to_pandas() for out in outs]
        log.info(
            "repeat %s, --stragglers 0.2:x10, seed 0: time_to_target %s s (rounds %s); "
            "metrics.parquet of the two runs equal: %s",
            mode,
            summaries[0]["time_to_target"],
            summaries[0]["rounds_to_target"],
            tables[0].equals(tables[1]),
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="digits", help="dataset (default digits)")
    parser.add_argument(
        "--model", default="auto", help="model (default auto; mlp keeps mnist-5k fast on CPUs)"
    )
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    parser.add_argument("--sync-rounds", type=int, default=60, help="sync rounds (default 60)")
    parser.add_argument("--async-rounds", type=int, default=200, help="async rounds (default 200)")
    parser.add_argument("--target", type=float, default=0.8, help="target accuracy (default 0.8)")
    parser.add_argument("--repeat", action="store_true", help="also run the repeatability case")
    parser.add_argument("--out", default="runs/async", help="results root (default runs/async)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    seeds = [int(s) for s in args.seeds.split(",")]
    root = Path(args.out) / args.dataset
    rows: dict[tuple[float, str], list[dict[str, Any]]] = {}
    for fraction in FRACTIONS:
        for mode, rounds in (("sync", args.sync_rounds), ("async", args.async_rounds)):
            for seed in seeds:
                options = {
                    **COMMON,
                    "dataset": args.dataset,
                    "model": args.model,
                    "stragglers": f"{fraction}:x{SLOWDOWN}",
                    "schedule_mode": mode,
                    "seed": seed,
                    "rounds": rounds,
                    "target_accuracy": args.target,
                }
                out = root / f"f{fraction}-{mode}" / f"seed{seed}"
                summary = run_or_reuse(options, out)
                rows.setdefault((fraction, mode), []).append(summary)
                log.info(
                    "%s stragglers %.1f %s seed %d: time to %.2f %s s, rounds %s, final %.4f "
                    "(%.0f s wall)",
                    args.dataset,
                    fraction,
                    mode,
                    seed,
                    args.target,
                    summary["time_to_target"],
                    summary["rounds_to_target"],
                    summary["final_accuracy"],
                    summary["wall_seconds"],
                )
    table: dict[str, Any] = {"dataset": args.dataset, "seeds": seeds, "target": args.target}
    lines = [
        f"{args.dataset}, 20 clients, ring, DFedAvg, seeds {seeds}, target {args.target}",
        "| stragglers (x10) | mode | virtual s to target | rounds to target | "
        "virtual s / round | final accuracy | mean staleness |",
        "|---|---|---|---|---|---|---|",
    ]
    for (fraction, mode), runs in rows.items():
        rounds = args.sync_rounds if mode == "sync" else args.async_rounds
        times = [s["time_to_target"] for s in runs]
        reached = [s["rounds_to_target"] for s in runs]
        per_round = [s["virtual_time"] / s["rounds"] for s in runs]
        stale = [s.get("staleness_mean", 0.0) for s in runs]
        finals = [s["final_accuracy"] for s in runs]
        lines.append(
            f"| {fraction:.0%} | {mode} | {cell(times, rounds)} | {cell(reached, rounds)} | "
            f"{mean_std(per_round)} | {statistics.mean(finals):.3f} ± "
            f"{statistics.stdev(finals) if len(finals) > 1 else 0.0:.3f} | "
            f"{statistics.mean(stale):.2f} |"
        )
        table[f"{fraction} {mode}"] = {
            "time_to_target": times,
            "rounds_to_target": reached,
            "virtual_seconds_per_round": per_round,
            "final_accuracy": finals,
            "staleness_mean": stale,
        }
    log.info("\n%s", "\n".join(lines))
    (root / "table.json").write_text(json.dumps(table, indent=2))
    if args.repeat:
        repeat_check(args, root)


if __name__ == "__main__":
    main()
