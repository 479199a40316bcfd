"""Fault events: one record per kill, detection, restore, loss, outage.

Kept free of heavy imports: the chaos module (loaded by the small kill tasks
Ray runs on remote nodes) uses it.
"""

from __future__ import annotations

from dataclasses import dataclass

#: Event kinds, in the order they happen to a client.
KINDS = (
    "kill",  # chaos killed an actor or node (client = -1); confirmed dead
    "unconfirmed_kill",  # chaos sent a kill but Ray never reported the death (not counted)
    "injected",  # a client hosted by a killed actor (counts as failures_injected)
    "detected",  # the manager learned an actor is dead (client = -1)
    "restored",  # a client's state was restored from a replica
    "lost",  # no replica survived: re-initialised from a neighbour or from scratch
    "unavailable",  # an actor stopped answering and came back (no restore)
    "fenced",  # an actor unavailable for too long was killed on purpose
    "replication_failed",  # a holder did not acknowledge a replica
    "spare_lost",  # a warm spare died
    "store_lost",  # the replica store died (recreated empty)
)


@dataclass(frozen=True)
class FaultEvent:
    """One row of ``faults.parquet``.

    ``seconds`` is the event's latency: kill → detection for ``detected``,
    failure → back in service for ``restored``/``lost``, the outage for
    ``unavailable``.
    """

    t: float
    round: int
    kind: str
    client: int = -1
    actor: int = -1
    node: str = ""
    mode: str = ""
    source: str = ""
    holder: str = ""
    version: int = -1
    replica_round: int = -1
    seconds: float = float("nan")
    detail: str = ""
