"""``dfml compare``: several algorithms × seeds on one scenario, one table.

Every run gets the same options (a YAML file overlaid with flags), except
``algorithm`` and ``seed``, which come from ``--algorithms`` and ``--seeds``.
An option that belongs to some algorithm's config (``--mu``, ``--lam``, ...)
goes only to the listed algorithms that declare it; it is an error if none
does. Every configuration is built and validated before Ray starts.

Results: ``OUT/<algorithm>/seed<s>/`` per run (the usual summary.json,
metrics.parquet, accuracy.png), then ``OUT/table.md`` and ``OUT/table.csv``
(mean ± sample std over seeds), ``OUT/accuracy.png`` (mean client accuracy
per round over all seeds' clients, band min–max), with tasks
``OUT/task_accuracy.png`` (task accuracy per algorithm and case) and ``OUT/report.html``
(:mod:`dfml.launch.report` over every run folder).

Before Ray starts, every run also passes the one validation pass of ``dfml
run`` (data, partition, topology, schedule, algorithm, services:
:mod:`dfml.launch.validation`) and every folder it would write is checked: if ``OUT`` or any run
folder already holds results the command refuses to start, unless
``--overwrite``, which then replaces exactly the files this comparison writes
(other folders under ``OUT`` are left alone). ``--resume`` is ``dfml run``'s.

A run that diverges is kept and counted in the table; when no run completes
the command still writes everything, then ends with one line and exit code
2 instead of 0.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import ray

from dfml.errors import ConfigError, TrainingDivergedError, UserError
from dfml.experiment import ExperimentConfig, RunConfig
from dfml.launch.flags import add_option_flags, options_from
from dfml.launch.kept import add_keep_flag, finished_summary, history_from_metrics
from dfml.launch.options import (
    SECTIONS,
    LaunchConfig,
    all_option_types,
    build_config,
    field_types,
    flag,
)
from dfml.launch.registry import algorithm_class, clusters
from dfml.launch.report import write_report
from dfml.launch.results import (
    RUN_OUTPUTS,
    check_results_folder,
    clear_results,
    plot_accuracy,
)
from dfml.launch.runner import execute, init_ray
from dfml.launch.services import section
from dfml.launch.validation import validate
from dfml.records import Callback, RoundRecord

log = logging.getLogger(__name__)

DEFAULT_OUT = "runs/compare"

#: What the comparison itself writes into OUT (each run writes its own folder).
COMPARE_OUTPUTS = ("table.md", "table.csv", "accuracy.png", "task_accuracy.png", "report.html")


@dataclass(frozen=True)
class Job:
    algorithm: str
    seed: int
    cfg: ExperimentConfig
    launch: LaunchConfig
    out: Path


class HistoryCollector(Callback):
    """Keeps the run's round records (for the combined plot)."""

    def __init__(self) -> None:
        self.history: list[RoundRecord] = []

    def on_round_end(self, record: RoundRecord) -> None:
        self.history.append(record)


# ----- input -----------------------------------------------------------------
def parse_algorithms(text: str) -> list[str]:
    names = [n.strip() for n in str(text).split(",") if n.strip()]
    if not names:
        raise ConfigError("--algorithms needs at least one algorithm name, e.g. fedavg,fedprox")
    for name in names:
        algorithm_class(name)  # one line naming the unknown one and the allowed names
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise ConfigError(f"--algorithms lists {twice[0]!r} more than once")
    return names


def parse_seeds(text: str) -> list[int]:
    items = [s.strip() for s in str(text).split(",")]
    if not all(s.isdigit() for s in items):
        raise ConfigError(f"--seeds must be comma-separated integers >= 0, got {text!r}")
    seeds = [int(s) for s in items]
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds lists a seed more than once: {text!r}")
    return seeds


def algorithm_only_options() -> set[str]:
    """Option names declared by algorithm configs and by no section."""
    in_sections = {k for cls in SECTIONS.values() for k in field_types(cls)}
    return set(all_option_types()) - in_sections


def split_options(options: Mapping[str, Any], algorithms: Sequence[str]) -> dict[str, dict]:
    """Each algorithm's options: shared ones, plus the algorithm options it declares."""
    for key in ("algorithm", "seed"):
        if key in options:
            raise ConfigError(
                f"--{key} cannot be used with dfml compare; use --{key}s (comma-separated)"
            )
    if "resume" in options:
        raise ConfigError("--resume applies to dfml run, not dfml compare")
    specific = algorithm_only_options()
    cluster_by = str(options.get("cluster_by", RunConfig.cluster_by))
    compressor = str(options.get("compressor", "none"))
    declared = {
        a: field_types(
            algorithm_class(a, "labels" if clusters(a) else cluster_by, compressor).Config
        )
        for a in algorithms
    }
    per: dict[str, dict] = {a: {} for a in algorithms}
    for key, value in options.items():
        takers = [a for a in algorithms if key not in specific or key in declared[a]]
        if not takers:
            raise ConfigError(f"option --{flag(key)} applies to none of {', '.join(algorithms)}")
        for a in takers:
            per[a][key] = value
    return per


def plan(
    options: Mapping[str, Any], algorithms: Sequence[str], seeds: Sequence[int]
) -> tuple[list[Job], LaunchConfig, Path]:
    """Build and validate every run's config (no Ray yet)."""
    opts = {k.replace("-", "_"): v for k, v in options.items()}
    root = Path(str(opts.pop("out", DEFAULT_OUT)))
    jobs, launch = [], None
    for name, own in split_options(opts, algorithms).items():
        for seed in seeds:
            out = root / name / f"seed{seed}"
            cfg, launch = build_config({**own, "algorithm": name, "seed": seed, "out": str(out)})
            jobs.append(Job(name, seed, cfg, launch, out))
    assert launch is not None
    return jobs, replace(launch, out=str(root)), root


def check_folders(
    jobs: Sequence[Job], launch: LaunchConfig, root: Path, keep: bool = False
) -> dict[Path, dict[str, Any]]:
    """Validate every run and check every folder before anything runs or is written.

    With ``keep`` (``--keep-completed``), return the summaries of the runs an
    earlier invocation finished with the same options (:mod:`dfml.launch.kept`);
    the other runs' folders, and the comparison's own files, will be replaced.
    """
    if keep and launch.overwrite:
        raise ConfigError(
            "--keep-completed and --overwrite exclude each other: --keep-completed keeps the "
            "finished runs, --overwrite replaces every run"
        )
    for job in jobs:
        validate(job.cfg)
    check_results_folder(root, launch.overwrite or keep, COMPARE_OUTPUTS)
    kept = {}
    for job in jobs:
        summary = finished_summary(job.out, job.cfg) if keep else None
        if summary is not None:
            kept[job.out] = summary
        else:
            check_results_folder(job.out, launch.overwrite or keep, RUN_OUTPUTS)
    return kept


# ----- aggregation -------------------------------------------------------------
def table_columns(
    pers_steps: Sequence[int], target: float | None, tasks: bool = False
) -> list[tuple[str, str]]:
    """(summary key, column title) of the table (task accuracies when tasks were served)."""
    cols = [
        ("final_accuracy", "accuracy"),
        ("weighted_accuracy", "weighted"),
        ("global_accuracy", "global"),
    ]
    cols += [(f"pers{k}_accuracy", f"Pers.{k}") for k in pers_steps if k > 0]
    cols += [
        ("qoi", "QoI"),
        ("accuracy_std", "acc std"),
        ("accuracy_worst10", "worst 10%"),
        ("bytes_sent", "MB sent"),
        ("wall_seconds", "seconds"),
    ]
    if target is not None:
        cols.append(("rounds_to_target", f"rounds to {target:g}"))
        cols.append(("bytes_to_target", f"MB to {target:g}"))
    if tasks:
        cols[1:1] = [
            ("task_accuracy", "task (all labels)"),
            ("task_accuracy_before", "task, T′ = 0"),
            ("task_accuracy_case1", "Case I"),
            ("task_accuracy_case2", "Case II"),
            ("task_accuracy_present", "present labels"),
            ("task_accuracy_missing", "missing labels"),
            ("task_accuracy_own", "own labels (old)"),
            ("task_accuracy_case2_no_augmentation", "Case II, no augmentation"),
            ("dissemination_hops", "hops"),
        ]
    return cols


def mean_std(values: Sequence[float | None]) -> tuple[float, float]:
    """Mean and sample std (ddof 1; 0 for one value) of the finite values."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], float)
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def aggregate(
    summaries: Mapping[str, Sequence[Mapping[str, Any]]], keys: Sequence[str]
) -> list[dict[str, Any]]:
    """One row per algorithm: runs, diverged, and key_mean / key_std per key."""
    rows = []
    for name, runs in summaries.items():
        row: dict[str, Any] = {
            "algorithm": name,
            "runs": len(runs),
            "diverged": sum(s.get("status") == "diverged" for s in runs),
        }
        for key in keys:
            row[f"{key}_mean"], row[f"{key}_std"] = mean_std([s.get(key) for s in runs])
        rows.append(row)
    return rows


def _cell(key: str, mean: float, std: float) -> str:
    if math.isnan(mean):
        return "–"
    if key in ("bytes_sent", "bytes_to_target"):
        mean, std = mean / 1e6, std / 1e6
        return f"{mean:.2f} ± {std:.2f}"
    if key in ("wall_seconds", "rounds_to_target"):
        return f"{mean:.1f} ± {std:.1f}"
    return f"{mean:.3f} ± {std:.3f}"


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]]) -> str:
    head = ["algorithm", "runs", *(title for _, title in columns)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for row in rows:
        runs = f"{row['runs']}" + (f" ({row['diverged']} diverged)" if row["diverged"] else "")
        cells = [_cell(k, row[f"{k}_mean"], row[f"{k}_std"]) for k, _ in columns]
        lines.append("| " + " | ".join([row["algorithm"], runs, *cells]) + " |")
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def pooled_history(histories: Sequence[Sequence[RoundRecord]]) -> list[RoundRecord]:
    """Rounds common to all seeds; each round's clients are all seeds' clients."""
    rounds = min(len(h) for h in histories) if histories else 0
    out = []
    for r in range(rounds):
        metrics = [m for h in histories for _, m in sorted(h[r].metrics.items())]
        out.append(RoundRecord(r, dict(enumerate(metrics)), 0, 0.0))
    return out


#: The task-accuracy bars of ``task_accuracy.png``: summary key → legend.
TASK_BARS = (
    ("task_accuracy_before", "T′ = 0 (own adaptation)"),
    ("task_accuracy", "all tasks"),
    ("task_accuracy_case1", "Case I"),
    ("task_accuracy_case2", "Case II"),
    ("task_accuracy_missing", "missing labels"),
    ("task_accuracy_case2_no_augmentation", "Case II, no augmentation"),
)


def plot_task_accuracy(rows: Sequence[Mapping[str, Any]], path: Path) -> Any:
    """Grouped bars: per algorithm, mean task accuracy (± std over seeds) per case.

    Returns the matplotlib Figure (written to ``path`` as PNG).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.8, 4.0), dpi=120)
    ax = fig.subplots()
    width = 0.8 / len(TASK_BARS)
    x = np.arange(len(rows))
    for i, (key, label) in enumerate(TASK_BARS):
        means = [row[f"{key}_mean"] for row in rows]
        stds = [row[f"{key}_std"] for row in rows]
        ax.bar(x + (i - (len(TASK_BARS) - 1) / 2) * width, means, width, yerr=stds, label=label)
    ax.set_xticks(x, [row["algorithm"] for row in rows])
    ax.set_ylabel("task accuracy (mean over tasks; ± std over seeds)")
    ax.set_ylim(0, 1.05)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize="small")
    fig.tight_layout()
    fig.savefig(path, format="png")
    return fig


# ----- the command --------------------------------------------------------------
def run_compare(
    options: Mapping[str, Any],
    algorithms: Sequence[str],
    seeds: Sequence[int],
    report: Callable[[str], None] = log.info,
    keep: bool = False,
) -> tuple[Path, str]:
    """Run every algorithm × seed; write the table, CSV, plot and report; return (OUT, table).

    ``keep`` (``--keep-completed``): runs an earlier invocation finished with
    the same options are kept, not run again.
    """
    jobs, launch, root = plan(options, algorithms, seeds)
    kept = check_folders(jobs, launch, root, keep)
    to_run = [job for job in jobs if job.out not in kept]
    summaries: dict[str, list[dict[str, Any]]] = {a: [] for a in algorithms}
    histories: dict[str, list[list[RoundRecord]]] = {a: [] for a in algorithms}
    on_ray = bool(to_run) and jobs[0].cfg.resources.backend == "ray"
    started = (
        init_ray(launch.ray_address, launch.dashboard, launch.object_store_gb) if on_ray else False
    )
    try:
        if launch.overwrite or keep:
            clear_results(root, COMPARE_OUTPUTS)
        root.mkdir(parents=True, exist_ok=True)
        for k, job in enumerate(jobs):
            if job.out in kept:
                report(f"[{k + 1}/{len(jobs)}] {job.algorithm} seed {job.seed}: kept {job.out}")
                summaries[job.algorithm].append(kept[job.out])
                histories[job.algorithm].append(history_from_metrics(job.out))
                continue
            report(f"[{k + 1}/{len(jobs)}] {job.algorithm} seed {job.seed} -> {job.out}")
            collector = HistoryCollector()
            run_launch = replace(job.launch, overwrite=job.launch.overwrite or keep)
            try:
                summary = execute(job.cfg, run_launch, job.out, [collector])
            except TrainingDivergedError as err:
                report(f"{job.algorithm} seed {job.seed}: {err}")
                summary = json.loads((job.out / "summary.json").read_text())
            summaries[job.algorithm].append(summary)
            histories[job.algorithm].append(collector.history)
    finally:
        if started:
            ray.shutdown()
    evaluation = jobs[0].cfg.evaluation
    tasks = section(jobs[0].cfg, "tasks").active
    columns = table_columns(evaluation.pers_steps, evaluation.target_accuracy, tasks)
    rows = aggregate(summaries, [k for k, _ in columns])
    table = markdown_table(rows, columns)
    (root / "table.md").write_text(table)
    write_csv(rows, root / "table.csv")
    pooled = {a: pooled_history(h) for a, h in histories.items() if any(h)}
    if pooled:  # no run finished a round: nothing to draw
        plot_accuracy(pooled, root / "accuracy.png")
    if tasks:
        plot_task_accuracy(rows, root / "task_accuracy.png")
    # OUT/report.html was refused or cleared (--overwrite) before the runs began
    write_report([job.out for job in jobs], root / "report.html", overwrite=True)
    if not any(s.get("status") == "completed" for runs in summaries.values() for s in runs):
        raise UserError(
            f"no run of the comparison completed (all {len(jobs)} diverged); the table and "
            f"every run's results are in {root}"
        )
    return root, table


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "compare", help="run several algorithms × seeds on one scenario; write a table and a plot"
    )
    p.add_argument("config", nargs="?", help="YAML file of options shared by all runs")
    p.add_argument("--algorithms", required=True, metavar="A,B,...", help="algorithms to compare")
    p.add_argument("--seeds", default="0", metavar="S,S,...", help="seeds per algorithm")
    add_keep_flag(p)
    add_option_flags(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    algorithms = parse_algorithms(args.algorithms)
    seeds = parse_seeds(args.seeds)
    options = options_from(args, {"algorithms", "seeds", "keep_completed"})
    root, table = run_compare(
        options, algorithms, seeds, lambda line: print(line, flush=True), args.keep_completed
    )
    print(table, end="")
    print(f"results in {root} (table.md, table.csv, accuracy.png, report.html)")
    return 0
