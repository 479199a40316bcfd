"""FMRec's Dispatcher, driver half: who keeps whose replica, and what is where.

FMRec stores each agent's meta-knowledge in its *leaf set*: the agents whose
ids are numerically closest on the DHT ring. Here the ring is the sorted live
client ids and a replica is kept by the **process** hosting a leaf-set
neighbour. A copy in the client's own process would die with it, so the
leaf set skips clients of the same actor and takes each holder process at
most once; when every holder so chosen shares the client's node, the last
one is swapped for the nearest holder on another node (a node crash then
cannot take every copy).

:class:`ReplicaIndex` is the driver's record of acknowledged replicas
(client, version, round, checksum, holder). It holds no bytes: replicas
travel actor → object store → holder, and the holder keeps its own copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

#: Retrieval preference among replicas of the same version.
TIERS = ("holder", "store", "durable")


@dataclass(frozen=True)
class ReplicaRecord:
    """One acknowledged copy of one replica version.

    ``holder`` is the holder process's id (an actor incarnation) for tiers
    ``holder`` and ``store``, the URI for ``durable``.
    """

    client_id: int
    version: int
    round: int
    checksum: str
    holder: str
    kind: str
    nbytes: int


def ring_order(client: int, ids: Sequence[int]) -> list[int]:
    """Other live ids by distance on the ring of sorted ``ids``: next, previous, 2nd next, ...

    Ids need not be contiguous (clients join and leave); ``range(n)`` gives
    the ring 0..n-1.
    """
    ring = sorted(ids)
    n = len(ring)
    pos = ring.index(client)
    out: list[int] = []
    seen = {client}
    for d in range(1, n // 2 + 1):
        for j in (ring[(pos + d) % n], ring[(pos - d) % n]):
            if j not in seen:
                seen.add(j)
                out.append(j)
    return out


def leaf_set(
    client: int,
    ids: Sequence[int],
    host_of: Mapping[int, str],
    replicas: int,
    node_of: Mapping[str, str] | None = None,
) -> list[tuple[int, str]]:
    """The ``replicas`` nearest ring neighbours held by distinct other processes.

    Returns ``(neighbour client, holder process)`` pairs, nearest first. With
    ``node_of`` (process → node), at least one holder is on another node than
    the client whenever such a process exists.
    """
    own = host_of[client]
    chosen: list[tuple[int, str]] = []
    spare: list[tuple[int, str]] = []
    for j in ring_order(client, ids):
        host = host_of[j]
        if host == own or any(host == h for _, h in chosen + spare):
            continue
        if len(chosen) < replicas:
            chosen.append((j, host))
        else:
            spare.append((j, host))
    if node_of is None or not chosen:
        return chosen
    home = node_of.get(own)
    if all(node_of.get(h) == home for _, h in chosen):
        away = next(((j, h) for j, h in spare if node_of.get(h) != home), None)
        if away is not None:
            chosen[-1] = away
    return chosen


def replication_plan(
    clients: Iterable[int],
    ids: Sequence[int],
    host_of: Mapping[int, str],
    replicas: int,
    node_of: Mapping[str, str] | None = None,
) -> dict[int, list[str]]:
    """Holder processes of each client's replicas (leaf-set hosts, nearest first)."""
    return {c: [h for _, h in leaf_set(c, ids, host_of, replicas, node_of)] for c in clients}


class ReplicaIndex:
    """Acknowledged replicas per client; each holder keeps ``keep`` versions."""

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._records: dict[int, list[ReplicaRecord]] = {}

    def add(self, record: ReplicaRecord) -> None:
        rows = [
            r
            for r in self._records.get(record.client_id, [])
            if (r.version, r.holder) != (record.version, record.holder)
        ]
        rows.append(record)
        same_holder = sorted(
            (r for r in rows if r.holder == record.holder), key=lambda r: -r.version
        )
        dropped = set(same_holder[self.keep :])
        self._records[record.client_id] = [r for r in rows if r not in dropped]

    def records(self, client: int) -> list[ReplicaRecord]:
        return list(self._records.get(client, []))

    def forget_clients(self, clients: Iterable[int]) -> None:
        """Clients left: their replicas are released."""
        for client in clients:
            self._records.pop(client, None)

    def forget_holder(self, holder: str) -> None:
        """A holder died: its copies are gone."""
        for client, rows in self._records.items():
            self._records[client] = [r for r in rows if r.holder != holder]

    def newest_version(self, client: int) -> int | None:
        rows = self._records.get(client, [])
        return max((r.version for r in rows), default=None)
