"""What every process in the fault layer can do: be watched, and hold replicas.

* :class:`Watched` — a ``sentinel`` method that never returns, in its own
  concurrency group: the driver keeps one pending call per actor and
  ``ray.wait`` hands it back the moment the process dies (push-style
  detection, no polling). ``ping`` answers from the same group, so it works
  while the actor is busy training.
* :class:`ReplicaHolder` — keeps *copies* of other clients' replicas in this
  process's heap. The copy matters: an object in Ray's store dies with its
  owner (the client that ``ray.put`` it), a heap copy dies only with the
  holder. Holders are never restarted by Ray, so a replica can never be
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

from dfml.fault.replica import Replica, ReplicaError, verify

#: Concurrency groups of every fault-layer actor.
CONCURRENCY_GROUPS = {"watch": 2, "replica": 2}


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
    def keep_replicas(self, refs: Sequence[ray.ObjectRef]) -> list[tuple[int, int, int, str, int]]:
        """Fetch batches of replicas, verify and copy them.

        Acks ``(client, version, round, checksum, bytes)`` per replica.
        """
        acks = []
        for replica in (r for batch in ray.get(list(refs)) for r in batch):
            own = verify(replica).copy()
            with self._held_lock:
                versions = self._held.setdefault(own.client_id, {})
                versions[own.version] = own
                for old in sorted(versions, reverse=True)[self._keep :]:
                    del versions[old]
            acks.append((own.client_id, own.version, own.round, own.checksum, own.nbytes))
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
