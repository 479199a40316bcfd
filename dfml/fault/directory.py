"""Which vector each client has published, and what old refs now stand for.

A restored client re-publishes its vector under a new ref (the old one died
with its owner). Messages written before the restore still name the old
ref; the :class:`RefDirectory` keeps the *renamed* map (old ref → the
client and its new ref) and rewrites messages with it before they are sent
again. It also keeps each client's published ``(ref, digest)``: the digest
(of the vector's bytes) tells whether a re-published vector differs from
the one neighbours already mixed — only then must they redo the call.

Pure bookkeeping: no Ray calls (refs are only compared and swapped), so it
is tested without a Ray session.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

from ray import ObjectRef

from dfml.algorithms.base import Message
from dfml.channels import Row, is_handle

#: A client's published vector: its handle (an object ref, or a
#: :class:`~dfml.channels.Row` of a packed object) and the digest of its bytes.
Published = tuple[ObjectRef | Row, str]


def refs_in(msg: Any) -> set[ObjectRef]:
    """The object refs a message names (neighbour vectors and extras)."""
    if not isinstance(msg, Message):
        return set()
    values = [*msg.neighbors, *msg.extra.values()]
    return {v for v in values if is_handle(v)}


def changed_refs(before: Mapping[int, Published], restored: Mapping[int, str]) -> set[ObjectRef]:
    """Refs from ``before`` whose client came back with a different vector.

    ``restored``: client → digest of its re-published vector. A restored
    client whose vector is the one it had published before the call (its
    replica is exactly that state) changes nothing for its neighbours.
    """
    return {before[c][0] for c, dg in restored.items() if c in before and before[c][1] != dg}


class RefDirectory:
    """Published ``(ref, digest)`` per client and the renamed-refs map.

    Attributes:
        published: client → its latest published vector.
        renamed: old ref → (client, the ref that replaces it).
    """

    def __init__(self) -> None:
        self.published: dict[int, Published] = {}
        self.renamed: dict[ObjectRef, tuple[int, ObjectRef]] = {}

    def publish(self, cid: int, ref: ObjectRef, digest: str) -> None:
        self.published[cid] = (ref, digest)

    def ref(self, cid: int) -> ObjectRef:
        return self.published[cid][0]

    def snapshot(self, clients: Iterable[int]) -> dict[int, Published]:
        """What ``clients`` have published now (those that have)."""
        return {c: self.published[c] for c in clients if c in self.published}

    def forget(self, clients: Iterable[int]) -> None:
        """Clients left."""
        for cid in clients:
            self.published.pop(cid, None)

    def republished(self, cid: int, ref: ObjectRef, digest: str) -> None:
        """``cid`` was restored and published ``ref``: old refs of it now mean ``ref``."""
        old = self.published.get(cid)
        if old is not None:
            for key, (c, _) in list(self.renamed.items()):
                if c == cid:
                    self.renamed[key] = (cid, ref)
            self.renamed[old[0]] = (cid, ref)
        self.published[cid] = (ref, digest)

    def rename(self, old: ObjectRef, cid: int) -> None:
        """``old`` (a vector of ``cid``) now means ``cid``'s currently published one."""
        self.renamed[old] = (cid, self.published[cid][0])

    def step_published(self, published: Mapping[int, Published]) -> None:
        """A call completed and these clients published: later messages name
        their new refs, so renames that lead to them are no longer needed."""
        self.published.update(published)
        self.renamed = {old: v for old, v in self.renamed.items() if v[0] not in published}

    def substitute(self, msg: Any) -> Any:
        """The message with every renamed ref swapped for its replacement."""
        renamed = self.renamed
        if not renamed or not isinstance(msg, Message):
            return msg

        def swap(v: Any) -> Any:
            return renamed[v][1] if is_handle(v) and v in renamed else v

        return dataclasses.replace(
            msg,
            neighbors=tuple(swap(v) for v in msg.neighbors),
            extra={k: swap(v) for k, v in msg.extra.items()},
        )
