"""Elastic membership and partial participation: typed config, schedule, sampling.

A schedule says, before which round, how many clients join or leave:
``"5:+10,12:-5"`` adds 10 clients before round 5 and removes 5 before round
12; ``"12:-[3,7]"`` removes clients 3 and 7. Joining clients bring real data
of their own: the dataset is partitioned (same partitioner, same seed) over
the initial clients plus a reserve of ``reserve_clients`` future clients,
and the k-th joining client takes the k-th reserved share. Client ids are
the share indices, so an id names one data share forever and is never
reused. Which clients a count-removal takes is drawn from the seed.

The whole schedule is turned into explicit ids (:func:`plan_membership`)
and validated before any actor starts, so a bad schedule costs nothing.
A joining client starts from its nearest clients' models (:func:`join_sources`).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

import networkx as nx
import numpy as np

from dfml.errors import ConfigError
from dfml.fault.dispatcher import ring_order

_EVENT = re.compile(r"\s*(\d+)\s*:\s*([+-])\s*(\d+|\[[\d\s,]*\])\s*")
LEAVE_SALT = 0x1EA5E
SAMPLE_SALT = 0x5A3B1E


@dataclass(frozen=True)
class MembershipConfig:
    """Who takes part, and when: elastic membership and per-round sampling.

    Attributes:
        schedule: joins and leaves, e.g. ``"5:+10,12:-5"`` (before round 5 add
            10 clients, before round 12 remove 5 drawn with the seed) or
            ``"12:-[3,7]"`` (remove clients 3 and 7); empty for none.
        reserve_clients: data shares kept for clients that join later
            (default: the schedule's total joins).
        clients_per_round: K, the number of live clients sampled to train
            each round (default: all).
        participation: the fraction of live clients sampled each round
            (alternative to ``clients_per_round``; 1 means all).
    """

    schedule: str = ""
    reserve_clients: int | None = None
    clients_per_round: int | None = None
    participation: float = 1.0

    def __post_init__(self) -> None:
        parse_schedule(self.schedule)  # one clear line on a malformed schedule
        if self.reserve_clients is not None and self.reserve_clients < 0:
            raise ConfigError(f"reserve_clients must be >= 0, got {self.reserve_clients}")
        if self.clients_per_round is not None and self.clients_per_round < 1:
            raise ConfigError(f"clients_per_round must be >= 1, got {self.clients_per_round}")
        if not (0.0 < self.participation <= 1.0):
            raise ConfigError(f"participation must be in (0, 1], got {self.participation}")
        if self.clients_per_round is not None and self.participation != 1.0:
            raise ConfigError("give clients_per_round or participation, not both")

    @property
    def reserve(self) -> int:
        """Shares to keep for joining clients."""
        joins = sum(e.count for e in parse_schedule(self.schedule) if e.join)
        return joins if self.reserve_clients is None else self.reserve_clients


@dataclass(frozen=True)
class Event:
    """One schedule entry: before ``round``, ``count`` clients join or leave.

    ``ids`` names the leaving clients explicitly (``R:-[3,7]``).
    """

    round: int
    join: bool
    count: int
    ids: tuple[int, ...] = ()


def parse_schedule(text: str | None) -> list[Event]:
    """``"5:+10,12:-5,14:-[3,7]"`` → events, in the order written."""
    text = (text or "").strip()
    if not text:
        return []
    events: list[Event] = []
    pos = 0
    while pos < len(text):
        match = _EVENT.match(text, pos)
        if match is None:
            raise ConfigError(
                f"schedule {text!r}: cannot read {text[pos:]!r}; write entries like "
                "'5:+10' (join), '12:-5' (leave, drawn) or '12:-[3,7]' (leave, these ids), "
                "separated by commas"
            )
        rnd, sign, what = int(match.group(1)), match.group(2), match.group(3)
        if what.startswith("["):
            if sign == "+":
                raise ConfigError(
                    f"schedule {text!r}: joining clients get new ids; write '{rnd}:+N'"
                )
            ids = tuple(int(v) for v in what.strip("[]").replace(",", " ").split())
            if not ids or len(set(ids)) != len(ids):
                raise ConfigError(
                    f"schedule {text!r}: '{match.group(0).strip()}' must name distinct ids"
                )
            events.append(Event(rnd, False, len(ids), ids))
        else:
            count = int(what)
            if count < 1:
                raise ConfigError(f"schedule {text!r}: a change of 0 clients in round {rnd}")
            events.append(Event(rnd, sign == "+", count))
        pos = match.end()
        if pos < len(text):
            if text[pos] != ",":
                raise ConfigError(f"schedule {text!r}: expected ',' at {text[pos:]!r}")
            pos += 1
    return events


@dataclass
class Change:
    """The membership change applied before one round."""

    join: list[int] = field(default_factory=list)
    leave: list[int] = field(default_factory=list)


def plan_membership(
    events: Sequence[Event],
    initial: Sequence[int],
    reserve: Sequence[int],
    rounds: int,
    seed: int,
    min_clients: int = 2,
) -> dict[int, Change]:
    """Turn ``events`` into explicit ids per round, or raise one clear ConfigError.

    ``reserve`` are the ids (share indices) that joining clients take, in
    order. Count-removals draw from the clients live at that moment with a
    generator seeded by (seed, round), so the same schedule and seed always
    remove the same ids.
    """
    live = set(initial)
    ever = set(initial)
    queue = list(reserve)
    plan: dict[int, Change] = {}
    for event in sorted(events, key=lambda e: e.round):  # stable: same-round order kept
        if not 1 <= event.round < rounds:
            raise ConfigError(
                f"schedule round {event.round} is outside 1..{rounds - 1} "
                f"(changes happen before a round of the run's {rounds})"
            )
        change = plan.setdefault(event.round, Change())
        if event.join:
            if event.count > len(queue):
                raise ConfigError(
                    f"schedule joins {event.count} clients before round {event.round} but only "
                    f"{len(queue)} reserved data shares are left; raise --reserve-clients"
                )
            new, queue = queue[: event.count], queue[event.count :]
            change.join += new
            live |= set(new)
            ever |= set(new)
            continue
        if event.ids:
            unknown = [c for c in event.ids if c not in live]
            if unknown:
                raise ConfigError(
                    f"schedule removes clients {unknown} before round {event.round}, but they "
                    f"are not live then (live: {len(live)} clients, ids {sorted(live)[:10]}...)"
                )
            gone = sorted(event.ids)
        else:
            if event.count > len(live) - min_clients:
                raise ConfigError(
                    f"schedule removes {event.count} clients before round {event.round} but "
                    f"only {len(live)} are live; at least {min_clients} must stay"
                )
            rng = np.random.default_rng(np.random.SeedSequence([seed, event.round, LEAVE_SALT]))
            gone = sorted(int(c) for c in rng.choice(sorted(live), event.count, replace=False))
        if len(live) - len(gone) < min_clients:
            raise ConfigError(
                f"schedule leaves {len(live) - len(gone)} clients before round {event.round}; "
                f"at least {min_clients} must stay"
            )
        change.leave += gone
        live -= set(gone)
    return plan


def sample_clients(
    live: Sequence[int],
    round_index: int,
    seed: int,
    clients_per_round: int | None,
    participation: float,
) -> list[int]:
    """The seeded cohort of one round (all clients when nothing is asked)."""
    ids = sorted(live)
    if clients_per_round is None:
        k = len(ids) if participation >= 1.0 else max(1, math.ceil(participation * len(ids) - 1e-9))
    else:
        k = clients_per_round
    if k >= len(ids):
        return ids
    rng = np.random.default_rng(np.random.SeedSequence([seed, round_index, SAMPLE_SALT]))
    return sorted(int(c) for c in rng.choice(ids, k, replace=False))


def join_sources(
    graph: nx.Graph, cid: int, holders: Collection[int], ids: Sequence[int]
) -> list[int]:
    """The clients whose models joining client ``cid`` starts from, sorted.

    The nearest clients on ``graph`` that hold a model (``holders``): every
    holder of the first breadth-first layer around ``cid`` that has one,
    following links either way on a directed graph (a model is near whichever
    way it flows). A dynamic topology's round graph may leave ``cid`` with no
    holder in reach (an epidemic matching that paired two joiners); then it is
    the nearest holder on the ring of the live ``ids``, the order the fault
    layer's leaf sets use.
    """
    if graph.is_directed():
        graph = graph.to_undirected(as_view=True)
    for layer in nx.bfs_layers(graph, cid):
        nearest = sorted(c for c in layer if c in holders)
        if nearest:
            return nearest
    return [next(c for c in ring_order(cid, ids) if c in holders)]
