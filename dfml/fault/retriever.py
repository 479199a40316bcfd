"""FMRec's Retriever: restore a lost client from the newest replica that survives.

Candidates are tried newest version first (within a version: a leaf-set
holder, then the store, then the durable copy). A candidate is accepted only
if its content checksum matches the one its holder acknowledged; otherwise
(the holder died, the file is missing or damaged) the next one is tried.
Every failed attempt is returned, so the caller can report it.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterable, Sequence

from dfml.fault.dispatcher import TIERS, ReplicaRecord
from dfml.fault.replica import Replica, ReplicaError, verify


def order_candidates(
    records: Iterable[ReplicaRecord], live_holders: Container[str]
) -> list[ReplicaRecord]:
    """Surviving copies, newest version first, then by tier (holder, store, durable)."""
    alive = [r for r in records if r.kind == "durable" or r.holder in live_holders]
    return sorted(alive, key=lambda r: (-r.version, TIERS.index(r.kind), r.holder))


def retrieve(
    candidates: Sequence[ReplicaRecord],
    fetch: Callable[[ReplicaRecord], Replica],
    retriable: tuple[type[BaseException], ...] = (ReplicaError, OSError),
) -> tuple[Replica | None, ReplicaRecord | None, list[tuple[ReplicaRecord, str]]]:
    """First candidate that can be fetched and verified.

    Returns ``(replica, record, failures)``; ``(None, None, failures)`` when no
    candidate survives. Errors outside ``retriable`` propagate.
    """
    failures: list[tuple[ReplicaRecord, str]] = []
    for record in candidates:
        try:
            replica = verify(fetch(record), record.checksum)
            if (replica.client_id, replica.version) != (record.client_id, record.version):
                raise ReplicaError(
                    f"asked for client {record.client_id} v{record.version}, got client "
                    f"{replica.client_id} v{replica.version}"
                )
        except retriable as err:
            failures.append((record, f"{type(err).__name__}: {err}"))
            continue
        return replica, record, failures
    return None, None, failures
