"""Which channels each client has published, and what old refs now stand for.

A restored client re-publishes its channels under new refs (the old ones
died with their owner). Messages written before the restore still name the
old refs; the :class:`RefDirectory` keeps the *renamed* map (old ref → the
client and the channel whose current ref replaces it) and rewrites messages
with it before they are sent again. Every channel counts, not only the
parameter vector: a step may read a neighbour's compressed message or
label set as well as its vector. It also keeps each client's published
``(refs, digest)``: the digest (of the parameter vector's bytes) tells
whether a re-published client differs from the one neighbours already read
— only then must they redo the call. Every channel is a function of the
client's state, so an equal vector from an equal replica means equal channels.

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
from dfml.steps import PARAMS

#: A published channel value's handle: an object ref, or a
#: :class:`~dfml.channels.Row` of a packed object.
Handle = ObjectRef | Row
#: A client's published channels (name → handle) and the digest of its vector's bytes.
Published = tuple[Mapping[str, Handle], str]


def refs_in(msg: Any) -> set[Handle]:
    """The handles a message names (neighbour values and extras)."""
    if not isinstance(msg, Message):
        return set()
    values = [*msg.neighbors, *msg.extra.values()]
    return {v for v in values if is_handle(v)}


def changed_refs(before: Mapping[int, Published], restored: Mapping[int, str]) -> set[Handle]:
    """Every channel handle from ``before`` whose client came back with a different vector.

    ``restored``: client → digest of its re-published vector. A restored
    client whose vector is the one it had published before the call (its
    replica is exactly that state) changes nothing for its neighbours.
    """
    return {
        ref
        for c, dg in restored.items()
        if c in before and before[c][1] != dg
        for ref in before[c][0].values()
    }


class RefDirectory:
    """Published ``(refs, digest)`` per client and the renamed-refs map.

    Attributes:
        published: client → its latest published channels and digest.
        renamed: old handle → (client, channel): the client's current handle
            of that channel replaces it.
    """

    def __init__(self) -> None:
        self.published: dict[int, Published] = {}
        self.renamed: dict[Handle, tuple[int, str]] = {}

    def publish(self, cid: int, refs: Mapping[str, Handle], digest: str) -> None:
        self.published[cid] = (dict(refs), digest)

    def ref(self, cid: int, channel: str = PARAMS) -> Handle:
        """``cid``'s current handle of ``channel`` (its parameter vector by default)."""
        return self.published[cid][0][channel]

    def snapshot(self, clients: Iterable[int]) -> dict[int, Published]:
        """What ``clients`` have published now (those that have)."""
        return {c: self.published[c] for c in clients if c in self.published}

    def forget(self, clients: Iterable[int]) -> None:
        """Clients left."""
        for cid in clients:
            self.published.pop(cid, None)

    def republished(self, cid: int, refs: Mapping[str, Handle], digest: str) -> None:
        """``cid`` was restored and published ``refs``: its old handles now mean these."""
        old = self.published.get(cid)
        if old is not None:
            self.rename(old[0], cid)
        self.published[cid] = (dict(refs), digest)

    def rename(self, old: Mapping[str, Handle], cid: int) -> None:
        """``old`` (channel → a handle of ``cid``'s) now means ``cid``'s current ones."""
        for channel, ref in old.items():
            self.renamed[ref] = (cid, channel)

    def step_published(self, published: Mapping[int, Published]) -> None:
        """A call completed and these clients published: later messages name
        their new refs, so renames that lead to them are no longer needed.
        A call that published some channels only (:data:`~dfml.steps.Publish`)
        leaves the client's other handles as they were."""
        self.published.update(
            {
                c: ({**self.published.get(c, ({}, ""))[0], **refs}, dg)
                for c, (refs, dg) in published.items()
            }
        )
        self.renamed = {old: v for old, v in self.renamed.items() if v[0] not in published}

    def current(self, ref: Handle) -> Handle:
        """The handle that replaces ``ref`` now (``ref`` itself if none does)."""
        if ref not in self.renamed:
            return ref
        cid, channel = self.renamed[ref]
        refs = self.published.get(cid, ({}, ""))[0]
        return refs.get(channel, ref)

    def substitute(self, msg: Any) -> Any:
        """The message with every renamed handle swapped for its replacement."""
        if not self.renamed or not isinstance(msg, Message):
            return msg

        def swap(v: Any) -> Any:
            return self.current(v) if is_handle(v) else v

        return dataclasses.replace(
            msg,
            neighbors=tuple(swap(v) for v in msg.neighbors),
            extra={k: swap(v) for k, v in msg.extra.items()},
        )
