"""The ``clock`` config section: virtual time, client speeds, sync or async schedule."""

from __future__ import annotations

import math
from dataclasses import dataclass

from dfml.clock.speeds import parse_lognormal, parse_stragglers
from dfml.errors import ConfigError

#: ``sync``: every round waits for its slowest engaged client (the default,
#: today's semantics); ``async``: each client trains whenever it is free.
SCHEDULE_MODES = ("sync", "async")


@dataclass(frozen=True)
class ClockConfig:
    """Each client's compute speed and link latency, and how rounds follow them
    on a virtual clock (docs/asynchrony.md).

    A local update of client i takes, in virtual seconds, its local SGD steps
    (E·⌈n_i/B⌉) times its seconds per step, plus its latency times the
    neighbour vectors it fetches. Giving speeds (or a latency, or ``async``)
    adds a ``virtual_time`` column to metrics.parquet and ``time_to_target``
    to summary.json; without them a run is exactly what it was.

    Attributes:
        schedule_mode: ``sync`` (default): every round waits for its slowest
            engaged client, as without speeds. ``async``: event-driven
            (AD-PSGD-style): a client, when free, mixes the newest vectors its
            neighbours have published, trains and publishes; a round is as
            many client updates as there are live clients. For algorithms
            whose clients gossip and mix before the local update (not a
            server, CHOCO-SGD, MEFL or --cluster-by labels).
        speeds: ``lognormal:SIGMA``: each client's seconds per step is
            --step-seconds times exp(SIGMA·z), z standard normal, drawn from
            the seed and the client id. Off by default (every client alike).
        stragglers: ``F:xK``: a seeded fraction F in [0, 1) of the clients
            (rounded to the nearest count) is K >= 1 times slower than
            --step-seconds. Off by default.
        speed_trace: a CSV file with the header ``client,step_seconds`` (and
            optionally ``latency``) and one row per client (--clients plus
            --reserve): each client's seconds per local step (> 0) and per
            message (>= 0). Off by default.
        step_seconds: virtual seconds one local SGD step takes at the nominal
            speed (> 0).
        latency: virtual seconds each neighbour vector a client fetches adds
            to its update (>= 0; a trace's ``latency`` column overrides it).
    """

    schedule_mode: str = "sync"
    speeds: str | None = None
    stragglers: str | None = None
    speed_trace: str | None = None
    step_seconds: float = 0.1
    latency: float = 0.0

    def __post_init__(self) -> None:
        if self.schedule_mode not in SCHEDULE_MODES:
            raise ConfigError(
                f"unknown schedule_mode {self.schedule_mode!r}; allowed: "
                f"{', '.join(SCHEDULE_MODES)}"
            )
        given = [
            f"--{name.replace('_', '-')}"
            for name in ("speeds", "stragglers", "speed_trace")
            if getattr(self, name) is not None
        ]
        if len(given) > 1:
            raise ConfigError(
                f"{' and '.join(given)} exclude each other: give one source of client speeds"
            )
        if self.speeds is not None:
            parse_lognormal(self.speeds)
        if self.stragglers is not None:
            parse_stragglers(self.stragglers)
        if not (self.step_seconds > 0 and math.isfinite(self.step_seconds)):
            raise ConfigError(f"--step-seconds must be a number > 0, got {self.step_seconds}")
        if not (self.latency >= 0 and math.isfinite(self.latency)):
            raise ConfigError(f"--latency must be a number >= 0, got {self.latency}")

    @property
    def active(self) -> bool:
        """Whether the run keeps a virtual clock: async, or speeds or a latency given."""
        return (
            self.schedule_mode == "async"
            or any(v is not None for v in (self.speeds, self.stragglers, self.speed_trace))
            or self.latency > 0
        )

    @property
    def asynchronous(self) -> bool:
        return self.schedule_mode == "async"
