"""Fault events, their summary keys and ``faults.parquet``.

Every kill, detection, restore, loss and transient unavailability is one
:class:`FaultEvent`; nothing the fault layer does is silent. The
:class:`FaultReport` callback turns them into the summary.json keys
(``failures_injected``, ``clients_restored``, ``clients_lost``,
``recovery_seconds_p50``/``_max``, ``replication_bytes``,
``replication_seconds_per_round``, ...) and one parquet row per event.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dfml.fault.events import FaultEvent
from dfml.records import Callback

log = logging.getLogger(__name__)


def events_table(events: Sequence[FaultEvent]) -> pa.Table:
    fields = [f.name for f in dataclasses.fields(FaultEvent)]
    cols = {name: [getattr(e, name) for e in events] for name in fields}
    types = {
        "t": pa.float64(),
        "round": pa.int32(),
        "client": pa.int32(),
        "actor": pa.int32(),
        "version": pa.int64(),
        "replica_round": pa.int32(),
        "seconds": pa.float64(),
    }
    schema = pa.schema([(n, types.get(n, pa.string())) for n in fields])
    return pa.table(cols, schema=schema)


def summarize_faults(
    events: Sequence[FaultEvent],
    replication_bytes: int,
    replication_seconds: float,
    rounds: int,
    redone_steps: int = 0,
) -> dict[str, Any]:
    """The summary.json keys of the fault layer."""

    def count(kind: str) -> int:
        return sum(1 for e in events if e.kind == kind)

    back = [e.seconds for e in events if e.kind in ("restored", "lost")]
    return {
        "failures_injected": count("injected"),
        "actors_killed": sum(1 for e in events if e.kind == "kill" and e.mode != "node"),
        "nodes_killed": sum(1 for e in events if e.kind == "kill" and e.mode == "node"),
        "clients_failed": count("restored") + count("lost"),
        "clients_restored": count("restored"),
        "clients_lost": count("lost"),
        "unavailable_events": count("unavailable"),
        "recovery_seconds_p50": float(np.median(back)) if back else None,
        "recovery_seconds_max": float(np.max(back)) if back else None,
        "replication_bytes": int(replication_bytes),
        "replication_seconds_per_round": replication_seconds / rounds if rounds else 0.0,
        "redone_client_steps": int(redone_steps),
    }


class FaultReport(Callback):
    """Adds the fault keys to summary.json and writes ``faults.parquet``."""

    #: The files it writes into the results folder.
    OUTPUTS = ("faults.parquet",)

    def __init__(self, out: Path | None) -> None:
        self.out = None if out is None else Path(out)
        self.federation: Any = None
        self.rounds = 0

    def on_run_start(self, algorithm: Any, federation: Any) -> None:
        self.federation = federation

    def on_round_end(self, record: Any) -> None:
        self.rounds = record.round + 1

    def summary(self) -> dict[str, Any]:
        fed = self.federation
        if fed is None or not hasattr(fed, "events"):
            return {}
        if self.out is not None:
            table = events_table(fed.events)
            self.out.mkdir(parents=True, exist_ok=True)
            pq.write_table(table, self.out / self.OUTPUTS[0])
        return summarize_faults(
            fed.events,
            fed.replication_bytes,
            fed.replication_seconds,
            self.rounds,
            fed.redone_steps,
        )
