"""The virtual clock's arithmetic: how long an update takes, whose event is next,
how stale the vectors a client used were."""

from __future__ import annotations

from collections.abc import Mapping

from dfml.clock.speeds import Speed


def update_seconds(speed: Speed, steps: int, messages: int) -> float:
    """Virtual seconds of one local update: ``steps`` local SGD steps plus the
    latency of each of the ``messages`` neighbour vectors fetched."""
    return steps * speed.step_seconds + messages * speed.latency


def next_due(done_at: Mapping[int, float], limit: int) -> tuple[float, list[int]]:
    """The earliest event time and the clients due then, at most ``limit``, lowest ids first.

    Ties are broken by id, so the order of events is a function of the times
    alone; clients left over by ``limit`` stay due at the same time.
    """
    if not done_at or limit < 1:
        raise ValueError(f"no event to take: {len(done_at)} clients, limit {limit}")
    time = min(done_at.values())
    return time, sorted(c for c, t in done_at.items() if t == time)[:limit]


def staleness(read: Mapping[int, int], now: Mapping[int, int]) -> list[int]:
    """Versions each used vector is behind its sender's newest, per neighbour (sorted ids).

    ``read``: neighbour → the version (updates completed) of the vector the
    client fetched when it started; ``now``: client → the updates it had
    completed before the client's update ended (a client missing has none).
    """
    return [now.get(j, 0) - read[j] for j in sorted(read)]
