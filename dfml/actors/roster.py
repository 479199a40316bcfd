"""The roster: which clients are live, and which actor slot hosts each.

Client ids are opaque ints: they need not be contiguous, and an id that left
is never handed out again (its data share, results rows and replicas stay
unambiguous). The roster is the one owner of id → actor placement; the
federation, the fault layer and the results all ask it. Every join or leave
bumps the membership ``epoch`` so per-epoch views (topology, mixing rows)
know when to rewire.

Placement keeps neighbouring ids together (ring neighbours then share a
process, as contiguous cohorts did): a joining client goes to the slot with
the fewest clients among those with room, else to a new slot while the
cluster has room for one (``max_slots``), else to the least loaded slot.
Pure bookkeeping: no Ray here, so it is tested and checkpointed as data.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dfml.actors.config import ResourceConfig
from dfml.errors import ConfigError


@dataclass
class Roster:
    """Live client ids, their actor slots and the membership epoch.

    Attributes:
        slots: slot k → the sorted client ids its actor hosts (a slot whose
            clients all left stays, empty, ready for joins).
        capacity: clients a slot takes before a new slot is preferred.
        max_slots: how many actor slots the cluster can run (``None``: no bound).
        epoch: membership epoch, +1 per change.
        next_id: the id the next joining client gets.
        departed: ids that left (never reused).
    """

    slots: list[list[int]]
    capacity: int
    max_slots: int | None = None
    epoch: int = 0
    next_id: int = 0
    departed: set[int] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._slot_of = {cid: k for k, ids in enumerate(self.slots) for cid in ids}
        if self.next_id <= max(self._slot_of, default=-1):
            self.next_id = max(self._slot_of) + 1

    # ----- construction -------------------------------------------------
    @classmethod
    def plan(
        cls,
        ids: Sequence[int],
        cfg: ResourceConfig,
        cluster_cpus: float,
        cluster_gpus: float,
    ) -> Roster:
        """Contiguous cohorts of ``ids`` over as many actors as the cluster runs at once.

        With ``clients_per_actor`` set, that many clients per actor; otherwise
        one actor per actor slot the cluster has (CPU and GPU fractions),
        capped by ``max_actors`` and the number of clients.
        """
        ids = sorted(ids)
        n = len(ids)
        slots_free = math.floor(cluster_cpus / cfg.num_cpus_per_actor + 1e-9)
        if cfg.num_gpus_per_actor > 0:
            slots_free = min(slots_free, math.floor(cluster_gpus / cfg.num_gpus_per_actor + 1e-9))
        max_slots = max(1, slots_free)
        if cfg.max_actors is not None:
            max_slots = min(max_slots, cfg.max_actors)
        if cfg.clients_per_actor is not None:
            num = math.ceil(n / cfg.clients_per_actor)
            if cfg.max_actors is not None:
                num = min(num, cfg.max_actors)
            max_slots = cfg.max_actors
        else:
            num = max(1, min(n, max_slots))
        bounds = [round(k * n / num) for k in range(num + 1)]
        slots = [ids[bounds[k] : bounds[k + 1]] for k in range(num)]
        capacity = cfg.clients_per_actor or max(len(s) for s in slots)
        return cls(slots, capacity, max_slots)

    # ----- queries ------------------------------------------------------
    def ids(self) -> list[int]:
        """Live client ids, sorted."""
        return sorted(self._slot_of)

    def __contains__(self, cid: object) -> bool:
        return cid in self._slot_of

    def __len__(self) -> int:
        return len(self._slot_of)

    def slot_of(self, cid: int) -> int:
        try:
            return self._slot_of[cid]
        except KeyError:
            raise KeyError(f"client {cid} is not live (live: {self.describe()})") from None

    @property
    def actor_of(self) -> dict[int, int]:
        """Client id → actor slot (a copy)."""
        return dict(self._slot_of)

    def by_slot(self, ids: Iterable[int]) -> dict[int, list[int]]:
        """``ids`` grouped by the slot hosting them, each group sorted."""
        grouped: dict[int, list[int]] = {}
        for cid in sorted(ids):
            grouped.setdefault(self.slot_of(cid), []).append(cid)
        return grouped

    def describe(self) -> str:
        ids = self.ids()
        return f"{len(ids)} clients, ids {ids[:5]}{'...' if len(ids) > 5 else ''}"

    # ----- changes ------------------------------------------------------
    def new_ids(self, count: int) -> list[int]:
        """The next ``count`` fresh ids (not yet placed)."""
        return list(range(self.next_id, self.next_id + count))

    def place(self, ids: Sequence[int]) -> tuple[dict[int, list[int]], list[int]]:
        """Place joining ``ids``: ({slot: ids placed there}, slots newly opened)."""
        placed: dict[int, list[int]] = {}
        opened: list[int] = []
        for cid in sorted(ids):
            if cid in self._slot_of or cid in self.departed or cid < self.next_id:
                raise ConfigError(f"client id {cid} was already used; ids are never reused")
            room = [k for k, s in enumerate(self.slots) if len(s) < self.capacity]
            if room:
                k = min(room, key=lambda j: (len(self.slots[j]), j))
            elif self.max_slots is None or len(self.slots) < self.max_slots:
                self.slots.append([])
                k = len(self.slots) - 1
                opened.append(k)
            else:
                k = min(range(len(self.slots)), key=lambda j: (len(self.slots[j]), j))
            self.slots[k] = sorted([*self.slots[k], cid])
            self._slot_of[cid] = k
            placed.setdefault(k, []).append(cid)
            self.next_id = cid + 1
        self.epoch += 1
        return placed, opened

    def remove(self, ids: Iterable[int]) -> dict[int, list[int]]:
        """Drop ``ids``; returns {slot: ids removed there}."""
        ids = sorted(set(ids))
        unknown = [c for c in ids if c not in self._slot_of]
        if unknown:
            raise ConfigError(f"cannot remove clients {unknown}: not live ({self.describe()})")
        grouped = self.by_slot(ids)
        for k, gone in grouped.items():
            self.slots[k] = [c for c in self.slots[k] if c not in gone]
        for c in ids:
            del self._slot_of[c]
        self.departed |= set(ids)
        self.epoch += 1
        return grouped

    # ----- checkpoints --------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "slots": [list(s) for s in self.slots],
            "capacity": self.capacity,
            "max_slots": self.max_slots,
            "epoch": self.epoch,
            "next_id": self.next_id,
            "departed": sorted(self.departed),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Roster:
        return cls(
            [list(map(int, s)) for s in data["slots"]],
            int(data["capacity"]),
            data["max_slots"],
            int(data["epoch"]),
            int(data["next_id"]),
            set(map(int, data["departed"])),
        )
