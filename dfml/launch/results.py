"""Results on disk: metrics.parquet (round × client), summary.json, accuracy.png.

The metrics file is rewritten after every round, so a run stopped by an
error (a diverged client, a crash) keeps everything it had measured.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dfml.algorithms.base import RoundRecord
from dfml.algorithms.callbacks import Callback
from dfml.data.partition import ClientSplit

log = logging.getLogger(__name__)


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def records_to_table(history: Sequence[RoundRecord]) -> pa.Table:
    """One row per (round, client); metric columns are the union of keys."""
    keys = sorted({k for rec in history for m in rec.metrics.values() for k in m})
    cols: dict[str, list[Any]] = {"round": [], "client": [], **{k: [] for k in keys}}
    for rec in history:
        for cid in sorted(rec.metrics):
            cols["round"].append(rec.round)
            cols["client"].append(cid)
            for k in keys:
                cols[k].append(float(rec.metrics[cid].get(k, np.nan)))
    schema = pa.schema(
        [("round", pa.int32()), ("client", pa.int32()), *[(k, pa.float64()) for k in keys]]
    )
    return pa.table(cols, schema=schema)


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
    """Writes metrics.parquet as rounds finish, then summary.json and plots."""

    def __init__(self, out: Path) -> None:
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.history: list[RoundRecord] = []

    def on_round_end(self, record: RoundRecord) -> None:
        self.history.append(record)
        table = records_to_table(self.history)
        _atomic_write(self.out / "metrics.parquet", lambda p: pq.write_table(table, p))

    def write_partition(self, splits: Sequence[ClientSplit]) -> None:
        table = partition_table(splits)
        _atomic_write(self.out / "partition.parquet", lambda p: pq.write_table(table, p))

    def write_summary(self, summary: Mapping[str, Any]) -> None:
        text = json.dumps(summary, indent=2, default=_json_default)
        _atomic_write(self.out / "summary.json", lambda p: p.write_text(text + "\n"))

    def plot(self, title: str) -> None:
        if self.history:
            plot_accuracy({title: self.history}, self.out / "accuracy.png")


def summarize(history: Sequence[RoundRecord], key: str = "accuracy") -> dict[str, Any]:
    """Final per-client metric, totals and timings of a (possibly partial) run."""
    if not history:
        return {"rounds_completed": 0, "final_accuracy": None, "per_client_accuracy": []}
    last = history[-1]
    per_client = [float(last.metrics[c].get(key, np.nan)) for c in sorted(last.metrics)]
    return {
        "rounds_completed": len(history),
        "final_accuracy": float(np.mean(per_client)),
        "per_client_accuracy": per_client,
        "accuracy_std": float(np.std(per_client)),
        "seconds_per_round": float(np.mean([r.seconds for r in history])),
        "bytes_sent": int(sum(r.bytes_sent for r in history)),
    }


def plot_accuracy(
    runs: Mapping[str, Sequence[RoundRecord]], path: Path, key: str = "accuracy"
) -> None:
    """Mean client accuracy per round.

    A single run also shows the min–max band over clients; with several runs
    the bands would hide each other, so only the means are drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for label, history in runs.items():
        rounds = [r.round + 1 for r in history]
        values = [[m.get(key, np.nan) for m in r.metrics.values()] for r in history]
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
    plt.close(fig)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple | set):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
