"""Who is who in the fault layer: incarnations, their handles, where they run.

An *incarnation* names one process: the actor of client slot k
(``actor3``), a warm spare (``spare5``) or the replica store (``store4``).
A slot gets a new incarnation each time its actor is replaced, so a
sentinel, a replica holder or an event always names exactly one process.

Pure bookkeeping, no Ray calls: the detector, the spare pool, the store
keeper and the restorer update it; the replicator, chaos and the inspection
API read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class Processes:
    """Slot → incarnation, incarnation → handle and placement, live replica holders.

    Attributes:
        placement: incarnation → ``{"pid", "node_id"}`` once it answered
            (kept after it died: events still say where it ran).
        started: incarnations that answered once (only those are pinged:
            one still importing torch cannot answer yet).
        holders: live replica holders (client actors and the store) → handle.
        holder_kind: incarnation → ``"holder"`` or ``"store"`` (kept after death).
    """

    def __init__(self) -> None:
        self._count = 0
        self._slot_incarnation: dict[int, str] = {}
        self._slot_of: dict[str, int] = {}
        self._handles: dict[str, Any] = {}
        self.placement: dict[str, dict[str, Any]] = {}
        self.started: set[str] = set()
        self.holders: dict[str, Any] = {}
        self.holder_kind: dict[str, str] = {}

    def new_name(self, role: str) -> str:
        """A fresh incarnation name (``actor1``, ``store2``, ``spare3``, ...)."""
        self._count += 1
        return f"{role}{self._count}"

    # ----- client actor slots ---------------------------------------------
    def assign(self, k: int, name: str, handle: Any) -> None:
        """Slot ``k`` is now run by incarnation ``name``."""
        self._slot_incarnation[k] = name
        self._slot_of[name] = k
        self._handles[name] = handle

    def incarnation(self, k: int) -> str:
        """The current incarnation of slot ``k``."""
        return self._slot_incarnation[k]

    def slot_of(self, name: str) -> int:
        """The slot incarnation ``name`` runs (or ran)."""
        return self._slot_of[name]

    def handle(self, k: int) -> Any:
        """The actor handle of slot ``k``'s current incarnation."""
        return self._handles[self._slot_incarnation[k]]

    def node_of(self) -> dict[str, str]:
        """Incarnation → node id, for every placed incarnation."""
        return {name: p["node_id"] for name, p in self.placement.items()}

    # ----- replica holders ------------------------------------------------
    def placed(self, name: str, info: Mapping[str, Any]) -> None:
        """Client actor ``name`` answered from ``info["pid"]`` on ``info["node_id"]``;
        it holds replicas from now on."""
        self.placement[name] = {"pid": info["pid"], "node_id": info["node_id"]}
        self.started.add(name)
        self.add_holder(name, self._handles[name], "holder")

    def add_holder(self, name: str, handle: Any, kind: str) -> None:
        self.holders[name] = handle
        self.holder_kind[name] = kind

    def forget_holder(self, name: str) -> None:
        """A holder died: it is no longer asked for (or given) replicas."""
        self.holders.pop(name, None)
