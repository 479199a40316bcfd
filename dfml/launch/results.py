"""Results on disk: metrics.parquet (round × client), summary.json, accuracy.png.

Metrics stream: each finished round is written once, as its own small
parquet file under ``metrics.parts/`` (atomic: temp file, then rename), so
a 1,000-round run never rewrites its table and a killed run keeps every
round it finished. When the run ends (completed, failed, interrupted) the
parts are merged into ``metrics.parquet`` with pyarrow's ``ParquetWriter``,
one row group per round; :func:`read_metrics` reads either form. A resumed
run first drops the parts of rounds after its checkpoint (they are redone)
and writes back a part for every round the checkpoint holds that has none
(a run ended by Ctrl-C had merged them into ``metrics.parquet``, which the
resumed run's merge replaces), so the final table has every round.

A results folder holds one run: :func:`check_results_folder` refuses one
that already holds results (unless ``--overwrite``), before anything runs;
:func:`clear_results` removes every file a run writes (:data:`RUN_OUTPUTS`),
so an overwritten folder keeps nothing of the old run
(:mod:`dfml.launch.replacement` moves them aside first).
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dfml.data.split import ClientSplit
from dfml.errors import ConfigError
from dfml.fault.report import FaultReport
from dfml.launch.services import SERVICE_OUTPUTS
from dfml.launch.tracking import OUTPUTS as TRACKING_OUTPUTS
from dfml.records import Callback, RoundRecord
from dfml.runtime.checkpoint import RUN_FILE

log = logging.getLogger(__name__)


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def records_to_table(
    history: Sequence[RoundRecord], test_sizes: Mapping[int, int] | None = None
) -> pa.Table:
    """One row per (round, live client): membership epoch, whether it trained, metrics.

    With ``test_sizes``, a ``test_samples`` column: a round's weighted
    accuracy is Σ accuracy · test_samples / Σ test_samples over its rows.
    """
    keys = sorted({k for rec in history for m in rec.metrics.values() for k in m})
    cols: dict[str, list[Any]] = {
        "round": [],
        "client": [],
        "epoch": [],
        "trained": [],
        **{k: [] for k in keys},
    }
    if test_sizes is not None:
        cols["test_samples"] = []
    for rec in history:
        for cid in sorted(rec.metrics):
            if test_sizes is not None:
                cols["test_samples"].append(int(test_sizes[cid]))
            cols["round"].append(rec.round)
            cols["client"].append(cid)
            cols["epoch"].append(rec.epoch)
            cols["trained"].append(cid in rec.trained)
            for k in keys:
                cols[k].append(float(rec.metrics[cid].get(k, np.nan)))
    schema = pa.schema(
        [
            ("round", pa.int32()),
            ("client", pa.int32()),
            ("epoch", pa.int32()),
            ("trained", pa.bool_()),
            *([("test_samples", pa.int32())] if test_sizes is not None else []),
            *[(k, pa.float64()) for k in keys],
        ]
    )
    return pa.table(cols, schema=schema)


PARTS = "metrics.parts"
_PART = re.compile(r"^round-(\d{6})\.parquet$")

SUMMARY, METRICS, PARTITION, PLOT = (
    "summary.json",
    "metrics.parquet",
    "partition.parquet",
    "accuracy.png",
)

#: Every file (or folder) a run of any kind writes into its results folder,
#: the one list: the run's own, the fault report's and every service's (each
#: writer declares its names), so ``--overwrite`` removes or keeps them together.
RUN_OUTPUTS = (
    SUMMARY,
    METRICS,
    PARTS,
    RUN_FILE,
    PARTITION,
    *FaultReport.OUTPUTS,
    *SERVICE_OUTPUTS,
    PLOT,
    *TRACKING_OUTPUTS,
)


def existing_results(out: Path, outputs: Sequence[str] = RUN_OUTPUTS) -> list[str]:
    """The names in ``outputs`` (or their temp files) that ``out`` holds."""
    out = Path(out)
    if not out.is_dir():
        return []
    return [
        name for name in outputs if any(os.path.lexists(out / n) for n in (name, f"{name}.tmp"))
    ]


def check_results_folder(
    out: Path,
    overwrite: bool,
    outputs: Sequence[str] = RUN_OUTPUTS,
    hint: str = "",
) -> None:
    """Fail now, with one line, if ``out`` cannot take this run's results.

    Refused: a path that is a file (or lies under one), a folder that cannot
    be written, and a folder that already holds results (one of ``outputs``)
    unless ``overwrite``. Nothing is written.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"results folder {str(out)!r} is a file; give a folder for --out")
    existing = out
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(
            f"results folder {str(out)!r} cannot be created: {str(existing)!r} is a file"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(f"results folder {str(out)!r} cannot be written: {existing} is read-only")
    found = existing_results(out, outputs)
    if found and not overwrite:
        raise ConfigError(
            f"results folder {str(out)!r} already holds results ({', '.join(found)}); "
            f"give another --out, or --overwrite to replace them{hint}"
        )


def clear_results(out: Path, outputs: Sequence[str] = RUN_OUTPUTS) -> list[str]:
    """Remove every one of ``outputs`` (and their temp files) from ``out``; return the names."""
    removed = []
    for name in existing_results(out, outputs):
        for path in (Path(out) / name, Path(out) / f"{name}.tmp"):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif os.path.lexists(path):
                path.unlink()
        removed.append(name)
    if removed:
        log.info("--overwrite: removed %s from %s", ", ".join(removed), out)
    return removed


def _parts(out: Path) -> dict[int, Path]:
    folder = out / PARTS
    if not folder.is_dir():
        return {}
    found = {}
    for path in folder.iterdir():
        match = _PART.match(path.name)
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


def merge_tables(tables: Sequence[pa.Table]) -> tuple[pa.Schema, list[pa.Table]]:
    """One schema over ``tables`` (a metric missing in a round is NaN there)."""
    schema = pa.unify_schemas([t.schema for t in tables])
    fixed = []
    for t in tables:
        for name in schema.names:
            if name not in t.column_names:
                t = t.append_column(name, pa.array([np.nan] * len(t), schema.field(name).type))
        fixed.append(t.select(schema.names).cast(schema))
    return schema, fixed


def read_metrics(out: Path) -> pa.Table:
    """The metrics of a results folder: merged file, or the parts a killed run left."""
    out = Path(out)
    parts = _parts(out)
    if parts:
        _, tables = merge_tables([pq.read_table(p) for p in parts.values()])
        return pa.concat_tables(tables)
    return pq.read_table(out / METRICS)


def partition_table(splits: Sequence[ClientSplit]) -> pa.Table:
    client, part, index = [], [], []
    for cid, s in enumerate(splits):
        for name, idx in (("meta_train", s.meta_train), ("query", s.query), ("test", s.test)):
            client += [cid] * len(idx)
            part += [name] * len(idx)
            index += idx.tolist()
    return pa.table(
        {
            "client": pa.array(client, pa.int32()),
            "split": pa.array(part),
            "index": pa.array(index, pa.int64()),
        }
    )


class ResultsWriter(Callback):
    """Streams metrics round by round, then writes summary.json and plots."""

    def __init__(self, out: Path, test_sizes: Mapping[int, int] | None = None) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.history: list[RoundRecord] = []
        self.test_sizes = test_sizes

    def on_resume(self, history: Sequence[RoundRecord]) -> None:
        """Keep the rounds before the checkpoint; drop parts of rounds to be redone.

        Every round of ``history`` (the checkpoint's record of the rounds
        done) gets its part back if it has none, so the merge at the end
        holds every round and not only those run after the resume.
        """
        self.history = list(history)
        parts = _parts(self.out)
        for rnd, path in parts.items():
            if rnd >= len(history):
                path.unlink()
        for record in history:
            if record.round not in parts:
                self._write_part(record)

    def on_round_end(self, record: RoundRecord) -> None:
        self.history.append(record)
        self._write_part(record)

    def _write_part(self, record: RoundRecord) -> None:
        folder = self.out / PARTS
        folder.mkdir(exist_ok=True)
        table = records_to_table([record], self.test_sizes)
        _atomic_write(
            folder / f"round-{record.round:06d}.parquet", lambda p: pq.write_table(table, p)
        )

    def finalize(self) -> None:
        """Merge the streamed parts into metrics.parquet (one row group per round)."""
        parts = _parts(self.out)
        if not parts:
            return
        schema, tables = merge_tables([pq.read_table(p) for p in parts.values()])

        def write(path: Path) -> None:
            with pq.ParquetWriter(path, schema) as writer:
                for table in tables:
                    writer.write_table(table)

        _atomic_write(self.out / METRICS, write)
        for path in parts.values():
            path.unlink()
        (self.out / PARTS).rmdir()

    def write_partition(self, splits: Sequence[ClientSplit]) -> None:
        table = partition_table(splits)
        _atomic_write(self.out / PARTITION, lambda p: pq.write_table(table, p))

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        text = json.dumps(summary, indent=2, default=_json_default)
        _atomic_write(self.out / SUMMARY, lambda p: p.write_text(text + "\n"))

    def plot(self, title: str) -> None:
        if self.history:
            plot_accuracy({title: self.history}, self.out / PLOT)


def membership_summary(history: Sequence[RoundRecord]) -> dict[str, Any]:
    """Live clients at the end and per round (round → count)."""
    if not history:
        return {"final_clients": None, "membership": {}}
    return {
        "final_clients": len(history[-1].metrics),
        "membership": {r.round: len(r.metrics) for r in history},
    }


def weighted(record: RoundRecord, test_sizes: Mapping[int, int], key: str = "accuracy") -> float:
    """Σ_i acc_i n_i / Σ_i n_i over the round's clients with a value (n_i: test samples)."""
    pairs = [
        (m[key], test_sizes[c])
        for c, m in record.metrics.items()
        if key in m and not math.isnan(m[key])
    ]
    if not pairs:
        return float("nan")
    acc, n = np.array(pairs, dtype=np.float64).T
    return float(np.dot(acc, n) / n.sum())


def summarize(
    history: Sequence[RoundRecord],
    key: str = "accuracy",
    test_sizes: Mapping[int, int] | None = None,
) -> dict[str, Any]:
    """Final per-client metric, totals and timings of a (possibly partial) run.

    ``seconds_per_round`` is the median after round 0 (round 0 pays lazy
    imports and warm-up; ``first_round_seconds`` reports it).
    ``weighted_accuracy`` = Σ_i acc_i n_i / Σ_i n_i with n_i the client's
    test samples (what PFLlib and Flower report), given ``test_sizes``.
    ``bytes_sent`` is the model bytes clients fetched from each other (the
    compressed messages' bytes where gossip is compressed), in all and per
    round; ``cross_node_bytes`` is the part of it that crossed nodes.
    """
    if not history:
        return {"rounds_completed": 0, "final_accuracy": None, "per_client_accuracy": []}
    last = history[-1]
    ids = sorted(last.metrics)
    per_client = [float(last.metrics[c].get(key, np.nan)) for c in ids]
    seconds = [r.seconds for r in history]
    phases: dict[str, float] = {}
    for r in history:
        for phase, t in r.phase_seconds.items():
            phases[phase] = phases.get(phase, 0.0) + t
    out = {
        "rounds_completed": len(history),
        "final_accuracy": float(np.mean(per_client)),
        "per_client_accuracy": per_client,
        "accuracy_std": float(np.std(per_client)),
        "seconds_per_round": float(np.median(seconds[1:] if len(seconds) > 1 else seconds)),
        "first_round_seconds": float(seconds[0]),
        "phase_seconds": phases,
        "bytes_sent": int(sum(r.bytes_sent for r in history)),
        "bytes_sent_per_round": [int(r.bytes_sent) for r in history],
        "cross_node_bytes": int(sum(r.cross_node_bytes for r in history)),
        "cross_node_bytes_per_round": [int(r.cross_node_bytes) for r in history],
    }
    if test_sizes is not None:
        out["weighted_accuracy_per_round"] = [weighted(r, test_sizes, key) for r in history]
        out["weighted_accuracy"] = out["weighted_accuracy_per_round"][-1]
    return out


def plot_accuracy(
    runs: Mapping[str, Sequence[RoundRecord]], path: Path, key: str = "accuracy"
) -> None:
    """Mean client accuracy per round.

    A single run also shows the min–max band over clients; with several runs
    the bands would hide each other, so only the means are drawn.
    """
    # A bare Figure, not pyplot: no global backend switch in the user's process, no
    # figure registry to leak; imported here so commands that draw nothing skip it.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0), dpi=120)
    ax = fig.subplots()
    for label, history in runs.items():
        scored = [  # rounds --eval-every skipped have no value to draw
            (r.round + 1, v)
            for r in history
            if np.isfinite(v := np.array([m.get(key, np.nan) for m in r.metrics.values()])).any()
        ]
        rounds, values = [x for x, _ in scored], [v for _, v in scored]
        ax.plot(rounds, [np.nanmean(v) for v in values], label=label)
        if len(runs) == 1:
            lows, highs = [np.nanmin(v) for v in values], [np.nanmax(v) for v in values]
            ax.fill_between(rounds, lows, highs, alpha=0.15)
    ax.set_xlabel("round")
    ax.set_ylabel(f"client {key} (mean, min–max)" if len(runs) == 1 else f"mean client {key}")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    _atomic_write(path, lambda p: fig.savefig(p, format="png"))


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | set):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
