"""Virtual time: each client's compute speed and link latency, and the order of
events on a virtual clock.

* :mod:`~dfml.clock.config` — the ``clock`` config section
  (``--schedule-mode``, ``--speeds``, ``--stragglers``, ``--speed-trace``,
  ``--step-seconds``, ``--latency``);
* :mod:`~dfml.clock.speeds` — each client's seconds per local step and per
  message, drawn from the seed or read from a trace file;
* :mod:`~dfml.clock.events` — how long a local update takes, which clients'
  events are due next, and how stale the vectors a client used were.

Pure functions of the config, the seed and the client ids: the package knows
no algorithm and no actor, so the schedules built on it
(:mod:`dfml.algorithms.virtual_clock`, :mod:`dfml.algorithms.asynchronous`)
repeat bit for bit.
"""

from dfml.clock.config import SCHEDULE_MODES, ClockConfig
from dfml.clock.events import next_due, staleness, update_seconds
from dfml.clock.speeds import Speed, client_speeds, read_trace

__all__ = [
    "SCHEDULE_MODES",
    "ClockConfig",
    "Speed",
    "client_speeds",
    "next_due",
    "read_trace",
    "staleness",
    "update_seconds",
]
