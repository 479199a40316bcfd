"""A cohort's replicas as one packed object: one byte buffer, one ``ray.put``.

Replication sends every client of an actor to the same few holder
processes, so the actor packs all of its clients' replicas into one
contiguous buffer plus a small index (:class:`Pack`) and puts that into the
object store once. Pickled by Ray, the buffer travels out of band: a holder
on the sender's node gets zero-copy views into the very bytes the sender
put, and :meth:`Pack.replica` cuts one client's :class:`Replica` out of it
as views again — no copy, no hashing. Ten replicas in ten objects cost ten
puts and some forty pickled buffers; one pack costs one of each.

Numpy only (no torch), so the replica store can hold packs.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from dfml.fault.replica import Replica, ReplicaError

#: Each array starts at a multiple of this many bytes (aligned views for any dtype).
ALIGN = 64


@dataclass(frozen=True)
class Span:
    """Where one named array lies in the buffer."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    offset: int
    nbytes: int


@dataclass(frozen=True)
class Entry:
    """One client's replica inside a pack: everything but the array bytes."""

    client_id: int
    version: int
    round: int
    meta: dict[str, Any]
    checksum: str
    params_digest: str
    spans: tuple[Span, ...]

    @property
    def nbytes(self) -> int:
        return sum(s.nbytes for s in self.spans)


@dataclass(frozen=True)
class Pack:
    """Replicas of several clients, their arrays back to back in ``buffer`` (uint8)."""

    entries: tuple[Entry, ...]
    buffer: np.ndarray

    def clients(self) -> list[int]:
        return [e.client_id for e in self.entries]

    @functools.cached_property
    def _index(self) -> dict[int, Entry]:
        # One dict, not a scan per lookup: a pack of n clients is cut into n replicas.
        return {e.client_id: e for e in self.entries}

    def entry(self, client_id: int) -> Entry:
        try:
            return self._index[client_id]
        except KeyError:
            raise ReplicaError(f"no replica of client {client_id} in this pack") from None

    def replica(self, client_id: int) -> Replica:
        """One client's replica; its arrays are read-only views into the buffer.

        The views keep the whole buffer alive (and, for a pack fetched from
        the object store, keep that object mapped) for as long as they live.
        """
        entry = self.entry(client_id)
        arrays = {}
        for s in entry.spans:
            view = self.buffer[s.offset : s.offset + s.nbytes].view(np.dtype(s.dtype))
            view = view.reshape(s.shape)
            view.flags.writeable = False
            arrays[s.name] = view
        return Replica(
            entry.client_id,
            entry.version,
            entry.round,
            arrays,
            dict(entry.meta),
            entry.checksum,
            entry.params_digest,
        )

    def replicas(self) -> Iterator[Replica]:
        return (self.replica(c) for c in self.clients())

    def copy(self) -> Pack:
        """The same pack with its buffer in this process's heap."""
        return Pack(self.entries, np.array(self.buffer, copy=True))


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


def pack(replicas: Iterable[Replica]) -> Pack:
    """Copy the replicas' arrays into one buffer; keep their identities and checksums."""
    replicas = list(replicas)
    entries = []
    offset = 0
    for rep in replicas:
        spans = []
        for name in sorted(rep.arrays):
            array = rep.arrays[name]
            spans.append(Span(name, array.dtype.str, tuple(array.shape), offset, array.nbytes))
            offset = _aligned(offset + array.nbytes)
        entries.append(
            Entry(
                rep.client_id,
                rep.version,
                rep.round,
                dict(rep.meta),
                rep.checksum,
                rep.params_digest,
                tuple(spans),
            )
        )
    buffer = np.empty(offset, dtype=np.uint8)
    for rep, entry in zip(replicas, entries, strict=True):
        for s in entry.spans:
            raw = np.ascontiguousarray(rep.arrays[s.name]).reshape(-1).view(np.uint8)
            buffer[s.offset : s.offset + s.nbytes] = raw
    return Pack(tuple(entries), buffer)
