"""What every process in the fault layer can do: be watched, and hold replicas.

* :class:`Watched` — a ``sentinel`` method that never returns, in its own
  concurrency group: the driver keeps one pending call per actor and
  ``ray.wait`` hands it back the moment the process dies (push-style
  detection, no polling). ``ping`` answers from the same group, so it works
  while the actor is busy training.
* :class:`ReplicaHolder` — keeps other clients' replicas, received as one
  packed object per sending actor (:mod:`dfml.fault.pack`). A holder on the
  sender's node keeps zero-copy views into the object the sender put: the
  node's object store already holds those bytes, and an object that a live
  process has mapped stays in the store after its owner (the sender) dies —
  the store defers freeing it until the last view is gone. So a replica
  dies with its holder, not with the client, and costs no copy. A holder on
  another node copies the pack into its heap (the bytes had to cross nodes
  anyway; a crash of the sender's node cannot take them). Nothing is
  hashed on receipt: the acknowledgement carries the sender's checksum and
  the copy is verified when it is used (:func:`dfml.fault.retriever.retrieve`),
  so damage is caught where it matters, once instead of once per holder and
  round. Holders are never restarted by Ray, so a replica can never be
  rebuilt by re-running a task on a fresh process (RAY_NOTES' trap).

Both are mixed into the client actors (leaf-set holders) and into
:class:`ReplicaStore`, a light actor (numpy only, no torch) on the driver's node.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from typing import Any

import ray

from dfml.fault.pack import Pack
from dfml.fault.replica import Replica, ReplicaError

#: Concurrency groups of every fault-layer actor (``replicate``: a client
#: actor awaiting its holders' acks while its main thread trains).
CONCURRENCY_GROUPS = {"watch": 2, "replica": 2, "replicate": 1}


class Watched:
    """Push-style liveness: a never-returning sentinel and a cheap ping."""

    @ray.method(concurrency_group="watch")
    def sentinel(self) -> None:
        threading.Event().wait()

    @ray.method(concurrency_group="watch")
    def ping(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "node_id": ray.get_runtime_context().get_node_id()}


class ReplicaHolder:
    """Copies of other clients' replicas, the newest ``keep`` versions each."""

    def _init_holder(self, keep: int) -> None:
        self._keep = keep
        self._held: dict[int, dict[int, Replica]] = {}
        self._held_lock = threading.Lock()

    @ray.method(concurrency_group="replica")
    def keep_pack(
        self, refs: Sequence[ray.ObjectRef], clients: Sequence[int], sender_node: str
    ) -> list[tuple[int, int, int, str, int]]:
        """Keep ``clients``' replicas out of the packed object ``refs[0]``.

        ``sender_node``: the node whose store holds the pack; from another
        node the pack is copied here. Acks ``(client, version, round,
        checksum, bytes)`` per replica, the checksum as the sender sealed it.
        """
        pack: Pack = ray.get(refs[0])
        if sender_node != ray.get_runtime_context().get_node_id():
            pack = pack.copy()
        acks = []
        for cid in clients:
            replica = pack.replica(cid)
            with self._held_lock:
                versions = self._held.setdefault(cid, {})
                versions[replica.version] = replica
                for old in sorted(versions, reverse=True)[self._keep :]:
                    del versions[old]
            acks.append((cid, replica.version, replica.round, replica.checksum, replica.nbytes))
        return acks

    @ray.method(concurrency_group="replica")
    def fetch_replica(self, client_id: int, version: int) -> Replica:
        with self._held_lock:
            replica = self._held.get(client_id, {}).get(version)
        if replica is None:
            raise ReplicaError(f"no replica of client {client_id} v{version} held here")
        return replica

    @ray.method(concurrency_group="replica")
    def fetch_replicas(self, wanted: Sequence[tuple[int, int]]) -> list[Replica | None]:
        """Several ``(client, version)`` at once (``None`` where not held)."""
        with self._held_lock:
            return [self._held.get(c, {}).get(v) for c, v in wanted]

    @ray.method(concurrency_group="replica")
    def release_replicas(self, client_ids: Sequence[int]) -> int:
        """Drop every replica of departed clients; returns how many were dropped."""
        with self._held_lock:
            return sum(len(self._held.pop(c, {})) for c in client_ids)

    @ray.method(concurrency_group="replica")
    def held_versions(self) -> dict[int, list[int]]:
        with self._held_lock:
            return {c: sorted(v, reverse=True) for c, v in self._held.items()}


class ReplicaStore(Watched, ReplicaHolder):
    """A replica holder that hosts no clients (so chaos never targets it)."""

    def __init__(self, keep: int) -> None:
        self._init_holder(keep)


RemoteReplicaStore = ray.remote(concurrency_groups=CONCURRENCY_GROUPS)(ReplicaStore)
