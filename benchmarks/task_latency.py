"""Seconds to serve one CL-FML task, and where they go.

Trains the README's CL-FML system (digits, 30 clients in 3 overlapping label
groups, K = 3, seed 0; Ray actors by default) through ``dfml run``'s own
runner, serves its ``--tasks`` random tasks and reports, from the run's
``tasks.parquet`` seconds and a callback timing every task step:

* the median seconds per task (all tasks, Case I, Case II);
* steps per task and the median seconds per step: a step is one round trip
  to the actors, the clients' compute and their publishing;
* the driver's seconds between steps (planning, averaging g_ℓ, the
  requester's scoring): a task's seconds minus its steps' seconds.

With ``--compare DIR`` it also checks that this run's task figures equal
those of another results folder of the same command (``summary.json``'s
``task_accuracy*`` keys, every task's record but its seconds, and
``task_predictions.parquet``) and prints the largest difference.

    .venv/bin/python benchmarks/task_latency.py --out runs/task-latency \\
        [--tasks 50] [--rounds 30] [--backend ray] [--compare runs/task-latency-main]
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from dfml.launch.options import LaunchConfig, build_config
from dfml.launch.runner import execute
from dfml.records import Callback

log = logging.getLogger("task_latency")

#: The README's CL-FML command (docs/clfml.md), less ``--tasks``/``--rounds``/``--out``.
SYSTEM: dict[str, Any] = {
    "algorithm": "clfml",
    "dataset": "digits",
    "partition": "label-group",
    "groups": 3,
    "group_overlap": 0.2,
    "clients": 30,
    "clusters": "3",
    "seed": 0,
}


class StepTimes(Callback):
    """Seconds of every step of the task service (phase ``task``), in order."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_step_end(self, step: Any, seconds: float) -> None:
        if step.phase == "task":
            self.seconds.append(seconds)


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="results folder of the run (must not exist)")
    p.add_argument("--tasks", type=int, default=50, help="tasks served (default 50)")
    p.add_argument("--rounds", type=int, default=30, help="training rounds (default 30)")
    p.add_argument("--backend", default="ray", help="ray (default) or local")
    p.add_argument("--compare", help="a results folder of the same command to compare with")
    return p.parse_args(argv)


def breakdown(summary: dict[str, Any], steps: list[float]) -> dict[str, Any]:
    """Median seconds per task and the split between steps and the driver."""
    tasks = summary["tasks"]
    seconds = [t["seconds"] for t in tasks]
    by_case = {
        case: [t["seconds"] for t in tasks if t["case"] == case] or [float("nan")]
        for case in (1, 2)
    }
    return {
        "tasks": len(tasks),
        "case2_tasks": summary["tasks_case2"],
        "median_seconds": statistics.median(seconds),
        "median_seconds_case1": statistics.median(by_case[1]),
        "median_seconds_case2": statistics.median(by_case[2]),
        "steps_per_task": len(steps) / len(tasks),
        "median_step_seconds": statistics.median(steps) if steps else float("nan"),
        "step_seconds_per_task": sum(steps) / len(tasks),
        "driver_seconds_per_task": (sum(seconds) - sum(steps)) / len(tasks),
    }


def compare(out: Path, other: Path) -> dict[str, Any]:
    """Whether the task figures of ``out`` equal those of ``other``, and the largest gap."""
    a, b = (json.loads((p / "summary.json").read_text()) for p in (out, other))
    keys = sorted(k for k in a if k.startswith("task_accuracy"))
    gaps = [0.0]
    for key in keys:
        x, y = a[key], b.get(key)
        if isinstance(x, dict):
            gaps += [abs(x[k] - y[k]) for k in x]
        elif x is not None and y is not None:
            gaps.append(abs(x - y))
    records = [[{k: v for k, v in t.items() if k != "seconds"} for t in s["tasks"]] for s in (a, b)]
    predictions = [pq.read_table(p / "task_predictions.parquet") for p in (out, other)]
    return {
        "summary_keys_equal": all(a[k] == b.get(k) for k in keys),
        "task_records_equal": records[0] == records[1],
        "predictions_equal": predictions[0].equals(predictions[1]),
        "max_abs_difference": max(gaps),
    }


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse(argv)
    options = {**SYSTEM, "tasks": args.tasks, "rounds": args.rounds, "backend": args.backend}
    cfg, _ = build_config(options)
    steps = StepTimes()
    out = Path(args.out)
    execute(cfg, LaunchConfig(out=str(out), progress=False, dashboard=False), callbacks=[steps])
    summary = json.loads((out / "summary.json").read_text())
    result = breakdown(summary, steps.seconds)
    if args.compare:
        result["compare"] = compare(out, Path(args.compare))
    (out / "task_latency.json").write_text(json.dumps(result, indent=2) + "\n")
    log.info("%s", json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
