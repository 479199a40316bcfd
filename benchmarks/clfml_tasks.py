"""CL-FML against its baselines on tasks, every label of 𝒯 scored.

Runs ``dfml compare`` for each ``--shots`` value (support samples per label
of a task; 0 = all of D^Q ∩ 𝒯) over the algorithms and seeds, then writes

* ``OUT/table.md``: per algorithm and shots, mean ± std over seeds of the
  all-label task accuracy, Case I, Case II, present and missing labels, the
  old own-label score, T′ = 0 (each method's own adaptation) and T′ = 1;
* ``OUT/adaptation.png``: task accuracy against fine-tuning rounds T′ (at
  the first shots value) and against shots per label (at T′ = 1 and at the
  last T′), one line per algorithm.

Every figure comes from the runs' ``summary.json`` files, which come from
their ``task_predictions.parquet`` (see docs/clfml.md).

    .venv/bin/python benchmarks/clfml_tasks.py --dataset digits --clients 30 --groups 3 \\
        --tasks 50 --seeds 0,1,2 --shots 0,1,2,5 --out runs/clfml-tasks \\
        [--set-for cdfedavg:task-head=linear ...] [--keep-completed]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from dfml.launch.compare import mean_std, run_compare

ALGORITHMS = "clfml,cdfedavg,gfml,dfedavg"
#: (summary key, column title) of the table.
COLUMNS = [
    ("task_accuracy", "all labels"),
    ("task_accuracy_case1", "Case I"),
    ("task_accuracy_case2", "Case II"),
    ("task_accuracy_present", "present"),
    ("task_accuracy_missing", "missing"),
    ("task_accuracy_own", "own labels (old)"),
    ("task_accuracy_before", "T′ = 0"),
]


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits", help="dataset (default digits)")
    p.add_argument("--clients", type=int, default=30, help="clients (default 30)")
    p.add_argument("--groups", type=int, default=3, help="label groups (default 3)")
    p.add_argument("--overlap", type=float, default=0.2, help="group overlap (default 0.2)")
    p.add_argument("--clusters", default="3", help="CL-FML's K (default 3)")
    p.add_argument("--topology", default="small-world", help="topology (default small-world)")
    p.add_argument("--rounds", type=int, default=30, help="training rounds (default 30)")
    p.add_argument("--tasks", type=int, default=50, help="tasks per run (default 50)")
    p.add_argument("--finetune-rounds", type=int, default=5, help="T′ (default 5)")
    p.add_argument("--query-fraction", type=float, default=0.2, help="D^Q share (default 0.2)")
    p.add_argument("--seeds", default="0,1,2", help="seeds (default 0,1,2)")
    p.add_argument("--shots", default="0", help="shots per label, 0 = all (default 0)")
    p.add_argument("--algorithms", default=ALGORITHMS, help=f"default {ALGORITHMS}")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra dfml option for every run it applies to (repeatable; default none)",
    )
    p.add_argument(
        "--set-for",
        action="append",
        default=[],
        metavar="ALGO:KEY=VALUE",
        help="extra dfml option for one algorithm's runs, e.g. cdfedavg:task-head=linear, so "
        "each method can run with its own best flags (repeatable; default none)",
    )
    p.add_argument(
        "--keep-completed",
        action="store_true",
        help="keep runs an earlier invocation finished with the same options (default off)",
    )
    p.add_argument("--out", default="runs/clfml-tasks", help="results (default runs/clfml-tasks)")
    return p.parse_args(argv)


def option_groups(
    algorithms: list[str], common: dict[str, Any], per_algorithm: list[str]
) -> list[tuple[list[str], dict[str, Any]]]:
    """Algorithms that share their options, in order: one ``dfml compare`` per group.

    ``dfml compare`` applies one set of options to every algorithm; methods
    with their own flags (``--set-for``) run as a comparison of their own.
    """
    extra: dict[str, dict[str, Any]] = {a: {} for a in algorithms}
    for item in per_algorithm:
        algorithm, sep, setting = item.partition(":")
        key, eq, value = setting.partition("=")
        if not sep or not eq or algorithm not in extra:
            raise SystemExit(
                f"--set-for {item!r}: expected ALGO:KEY=VALUE with ALGO one of {algorithms}"
            )
        extra[algorithm][key.replace("-", "_")] = value
    groups: list[tuple[list[str], dict[str, Any]]] = []
    for a in algorithms:
        options = {**common, **extra[a]}
        for members, shared in groups:
            if shared == options:
                members.append(a)
                break
        else:
            groups.append(([a], options))
    return groups


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args = parse(argv)
    algorithms = args.algorithms.split(",")
    seeds = [int(s) for s in args.seeds.split(",")]
    shots = [int(s) for s in args.shots.split(",")]
    root = Path(args.out)
    options: dict[str, Any] = {
        "dataset": args.dataset,
        "partition": "label-group",
        "groups": args.groups,
        "group_overlap": args.overlap,
        "clients": args.clients,
        "clusters": args.clusters,
        "topology": args.topology,
        "rounds": args.rounds,
        "tasks": args.tasks,
        "finetune_rounds": args.finetune_rounds,
        "query_fraction": args.query_fraction,
        "progress": False,
        "dashboard": False,
    }
    if args.topology == "small-world":
        options["degree"] = 4
    for item in args.set:
        key, _, value = item.partition("=")
        options[key.replace("-", "_")] = value
    groups = option_groups(algorithms, options, args.set_for)
    results: dict[int, dict[str, list[dict[str, Any]]]] = {}
    for k in shots:
        results[k] = {}
        for members, shared in groups:
            out = root / f"shots{k}" / "-".join(members) if len(groups) > 1 else root / f"shots{k}"
            run_compare(
                {**shared, "shots": k, "out": str(out)},
                members,
                seeds,
                keep=args.keep_completed,
            )
            for a in members:
                results[k][a] = [
                    json.loads((out / a / f"seed{s}" / "summary.json").read_text()) for s in seeds
                ]
    (root / "table.md").write_text(table(results, algorithms, args.finetune_rounds))
    plot(results, algorithms, root / "adaptation.png")
    logging.info("wrote %s and %s", root / "table.md", root / "adaptation.png")


def curve_value(summary: dict[str, Any], t: int) -> float | None:
    return summary.get("task_accuracy_curve", {}).get(str(t))


def cell(values: list[float | None]) -> str:
    mean, std = mean_std(values)
    return "–" if np.isnan(mean) else f"{mean:.3f} ± {std:.3f}"


def table(results: dict, algorithms: list[str], last: int) -> str:
    titles = [t for _, t in COLUMNS] + ["T′ = 1", f"T′ = {last}"]
    lines = [
        "| algorithm | shots | " + " | ".join(titles) + " |",
        "|---|---|" + "---|" * len(titles),
    ]
    for k, by_algorithm in results.items():
        for a in algorithms:
            runs = by_algorithm[a]
            cells = [cell([s.get(key) for s in runs]) for key, _ in COLUMNS]
            cells += [cell([curve_value(s, t) for s in runs]) for t in (1, last)]
            lines.append(f"| {a} | {k or 'all'} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot(results: dict, algorithms: list[str], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4), dpi=120)
    left, right = fig.subplots(1, 2)
    first = next(iter(results))
    for i, a in enumerate(algorithms):
        color = f"C{i}"  # one colour per algorithm in both panels
        runs = results[first][a]
        rounds = sorted({int(t) for s in runs for t in s.get("task_accuracy_curve", {})})
        means = [mean_std([curve_value(s, t) for s in runs])[0] for t in rounds]
        left.plot(rounds, means, marker="o", color=color, label=a)
        shots = sorted(results, key=lambda k: (k == 0, k))
        last = rounds[-1] if rounds else 0
        for t, style in ((1, "-"), (last, "--")):
            ys = [mean_std([curve_value(s, t) for s in results[k][a]])[0] for k in shots]
            right.plot(
                [str(k or "all") for k in shots],
                ys,
                style,
                marker="o",
                color=color,
                label=f"{a}, T′ = {t}",
            )
    left.set(
        xlabel="fine-tuning rounds T′",
        ylabel="task accuracy, all labels of the task",
        title=f"shots {first or 'all'}",
    )
    right.set(xlabel="support samples per label", title="after T′ rounds")
    for ax in (left, right):
        ax.grid(alpha=0.3)
        ax.set_ylim(0, 1.0)
    left.legend(fontsize="small")
    right.legend(fontsize="x-small", ncols=2)
    fig.tight_layout()
    fig.savefig(path, format="png")


if __name__ == "__main__":
    main()
