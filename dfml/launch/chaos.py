"""``dfml chaos``: FMRec's comparison of one run under three failure regimes.

* ``none`` — no failures (FMRec's *Baseline*; the plain federation);
* ``no-recovery`` — the configured chaos, lost clients restart their
  meta-knowledge from scratch (FMRec's *Baseline_failure*);
* ``recovery`` — the same chaos (same seed, so the same actors fail in the
  same rounds), clients restored from replicas.

Every other option is shared (a YAML file overlaid with flags; chaos comes
from ``--chaos-kill-rate`` / ``--chaos-rounds``). Results: ``OUT/<mode>/``
per run, then ``OUT/table.md`` and ``OUT/table.csv``.

As with ``dfml compare``, every run is validated and every folder checked
before Ray starts; folders that hold results are refused unless
``--overwrite``, which replaces exactly the files this command writes. The
chaos knobs (``--chaos-fraction``, ``--chaos-mode``) are dropped from the
``none`` run, which has no failures for them to shape. ``--resume`` is
``dfml run``'s.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import ray

from dfml.errors import ConfigError
from dfml.launch.flags import add_option_flags, options_from
from dfml.launch.kept import add_keep_flag, finished_summary
from dfml.launch.options import build_config
from dfml.launch.results import RUN_OUTPUTS, check_results_folder, clear_results
from dfml.launch.runner import execute, init_ray
from dfml.launch.validation import validate

log = logging.getLogger(__name__)

MODES = ("none", "no-recovery", "recovery")
DEFAULT_OUT = "runs/chaos"

#: What the command itself writes into OUT (each mode writes its own folder).
CHAOS_OUTPUTS = ("table.md", "table.csv")

#: Options that shape the failures: meaningless, so dropped, in the ``none`` mode.
CHAOS_KNOBS = ("chaos_fraction", "chaos_mode")

#: (summary key, column title) of the table, after the mode.
COLUMNS = (
    ("wall_seconds", "time (s)"),
    ("seconds_per_round", "s/round"),
    ("final_accuracy", "final accuracy"),
    ("failures_injected", "failures"),
    ("clients_restored", "restored"),
    ("clients_lost", "lost"),
    ("recovery_seconds_p50", "recovery p50 (s)"),
    ("recovery_seconds_max", "recovery max (s)"),
    ("replication_seconds_per_round", "replication s/round"),
)


def parse_modes(text: str) -> list[str]:
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ConfigError(f"--modes must be a list of {', '.join(MODES)}; got {text!r}")
    return list(dict.fromkeys(modes))


def mode_options(mode: str, options: Mapping[str, Any]) -> dict[str, Any]:
    """The shared options, set for one failure regime."""
    opts = {k.replace("-", "_"): v for k, v in options.items()}
    if mode == "none":
        shared = {k: v for k, v in opts.items() if k not in CHAOS_KNOBS}
        return {**shared, "chaos_kill_rate": 0.0, "chaos_rounds": (), "recovery": None}
    return {**opts, "recovery": mode == "recovery"}


def table_row(mode: str, summary: Mapping[str, Any]) -> dict[str, Any]:
    row: dict[str, Any] = {"mode": mode}
    for key, _ in COLUMNS:
        value = summary.get(key)
        if value is None and key in ("failures_injected", "clients_restored", "clients_lost"):
            value = 0
        row[key] = value
    return row


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.1f}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]]) -> str:
    head = ["mode", *(title for _, title in COLUMNS)]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * len(head)) + "|"]
    for row in rows:
        cells = [row["mode"], *(_cell(row[k]) for k, _ in COLUMNS)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["mode", *(k for k, _ in COLUMNS)])
        writer.writeheader()
        writer.writerows(rows)


def run_chaos(
    options: Mapping[str, Any],
    modes: Sequence[str],
    report: Callable[[str], None] = log.info,
    keep: bool = False,
) -> tuple[Path, str, list[dict[str, Any]]]:
    """Run each mode; write table.md and table.csv; return (OUT, table, rows).

    ``keep`` (``--keep-completed``): modes an earlier invocation finished with
    the same options are kept, not run again (:mod:`dfml.launch.kept`).
    """
    if "resume" in options:
        raise ConfigError("--resume applies to dfml run, not dfml chaos")
    jobs = [(mode, *build_config(mode_options(mode, options))) for mode in modes]
    failing = [cfg for mode, cfg, _ in jobs if mode != "none"]
    if failing and not failing[0].fault.chaos:
        raise ConfigError(
            "dfml chaos needs failures for its no-recovery/recovery modes: "
            "give --chaos-kill-rate or --chaos-rounds"
        )
    root = Path(options.get("out", DEFAULT_OUT))
    launch = jobs[0][2]
    if keep and launch.overwrite:
        raise ConfigError(
            "--keep-completed and --overwrite exclude each other: --keep-completed keeps the "
            "finished runs, --overwrite replaces every run"
        )
    for _, cfg, _ in jobs:
        validate(cfg)
    check_results_folder(root, launch.overwrite or keep, CHAOS_OUTPUTS)
    kept = {}
    for mode, cfg, _ in jobs:
        summary = finished_summary(root / mode, cfg) if keep else None
        if summary is not None:
            kept[mode] = summary
        else:
            check_results_folder(root / mode, launch.overwrite or keep, RUN_OUTPUTS)
    rows = []
    started = (
        init_ray(launch.ray_address, launch.dashboard, launch.object_store_gb)
        if len(kept) < len(jobs)
        else False
    )
    try:
        if launch.overwrite or keep:
            clear_results(root, CHAOS_OUTPUTS)
        root.mkdir(parents=True, exist_ok=True)
        for k, (mode, cfg, run_launch) in enumerate(jobs):
            if mode in kept:
                report(f"[{k + 1}/{len(jobs)}] {mode}: kept {root / mode}")
                rows.append(table_row(mode, kept[mode]))
                continue
            report(f"[{k + 1}/{len(jobs)}] {mode} -> {root / mode}")
            run_launch = dataclasses.replace(run_launch, overwrite=run_launch.overwrite or keep)
            summary = execute(cfg, run_launch, root / mode)
            rows.append(table_row(mode, summary))
    finally:
        if started:
            ray.shutdown()
    table = markdown_table(rows)
    (root / "table.md").write_text(table)
    write_csv(rows, root / "table.csv")
    return root, table, rows


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "chaos",
        help="FMRec comparison: the same run without failures, without and with recovery",
    )
    p.add_argument("config", nargs="?", help="YAML file of options shared by all runs")
    p.add_argument(
        "--modes",
        default=",".join(MODES),
        metavar="M,M,...",
        help=f"failure regimes to run, from {', '.join(MODES)}",
    )
    add_keep_flag(p)
    add_option_flags(p)
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    modes = parse_modes(args.modes)
    options = options_from(args, {"modes", "keep_completed"})
    root, table, _ = run_chaos(
        options, modes, lambda line: print(line, flush=True), args.keep_completed
    )
    print(table, end="")
    print(f"results in {root} (table.md, table.csv)")
    return 0
