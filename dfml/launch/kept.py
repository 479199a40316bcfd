"""``--keep-completed``: what an interrupted ``dfml compare`` or ``chaos`` keeps.

A comparison is many runs; when it is stopped (Ctrl-C, a SIGKILL, a lost
machine), the runs that finished are worth keeping and only the others
should run again. A run folder is kept when its ``run.json`` records the
very options this invocation would run it with and its ``summary.json``
says it finished (``completed``, or ``diverged``, which the table counts);
a folder of an unfinished run (no summary, ``failed``, ``interrupted``) is
replaced by the new run. A folder holding a run with other options is
refused with one line: keeping it would put another experiment in the table.
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from dfml.errors import ConfigError
from dfml.experiment import ExperimentConfig
from dfml.launch.identity import read_record
from dfml.launch.options import absolute_paths, config_to_options, flag
from dfml.records import RoundRecord
from dfml.runtime.checkpoint import RUN_FILE

#: The statuses of a run that ended with results the table uses.
FINISHED = ("completed", "diverged")

#: Columns of ``metrics.parquet`` that name a row rather than measure a client.
ROW_KEYS = ("round", "client")


def _first_difference(stored: Mapping[str, Any], wanted: Mapping[str, Any]) -> str:
    key = sorted(k for k in stored.keys() | wanted.keys() if stored.get(k) != wanted.get(k))[0]
    return f"--{flag(key)} {stored.get(key)!r} there, {wanted.get(key)!r} now"


def finished_summary(out: Path, cfg: ExperimentConfig) -> dict[str, Any] | None:
    """The summary of a finished run of ``cfg`` in ``out``, or ``None`` if it must run.

    Raises one ``ConfigError`` line when ``out`` holds a run of other options.
    """
    if not (out / RUN_FILE).is_file():
        return None  # no run started there (or none that got as far as its record)
    record = read_record(out / RUN_FILE)
    # as run.json holds them: JSON, where a tuple reads back as a list
    wanted = json.loads(json.dumps(absolute_paths(config_to_options(cfg)), default=list))
    if record.options != wanted:
        raise ConfigError(
            f"{out} holds a run with other options ({_first_difference(record.options, wanted)}); "
            "give another --out, or --overwrite to replace it"
        )
    path = out / "summary.json"
    if not path.is_file():
        return None
    try:
        summary = json.loads(path.read_text())
    except ValueError:
        return None  # written while the run was being killed: the run goes again
    if not isinstance(summary, dict) or summary.get("status") not in FINISHED:
        return None
    return summary


def history_from_metrics(out: Path) -> list[RoundRecord]:
    """The per-round client metrics of a kept run, as its callbacks saw them."""
    path = out / "metrics.parquet"
    if not path.is_file():
        return []
    rounds: dict[int, dict[int, dict[str, float]]] = defaultdict(dict)
    for row in pq.read_table(path).to_pylist():
        metrics = {
            k: float(v)
            for k, v in row.items()
            if k not in ROW_KEYS and isinstance(v, int | float) and not isinstance(v, bool)
        }
        rounds[row["round"]][row["client"]] = metrics
    return [RoundRecord(r, rounds[r], 0, 0.0) for r in sorted(rounds)]


def add_keep_flag(parser: argparse.ArgumentParser) -> None:
    """``--keep-completed`` for the commands that run many runs into one folder."""
    parser.add_argument(
        "--keep-completed",
        action="store_true",
        help=(
            "keep the runs an earlier, interrupted invocation finished with the same options "
            "and run only the others (default: off; a folder with results is refused)"
        ),
    )
