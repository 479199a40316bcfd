"""Asking the autoscaler for room, and waiting for it with a visible status.

When joining clients need actors the cluster has no room for, the
federation asks Ray's autoscaler for them
(``ray.autoscaler.sdk.request_resources``) and waits, logging where it stands
every ``STATUS_EVERY_S`` seconds, until they are placed; if they are not
within ``--scale-timeout`` seconds the run fails with one line. Once placed,
the request is cleared so the autoscaler may scale down again later.

``request_resources`` sets the size the cluster should reach, counting what
already runs (it replaces any earlier request), so the request names a
bundle for every actor of the run, not just the new ones.

Room is judged from the cluster's free totals (what Ray's public API
reports), not per node: a bundle split over two nodes' leftovers counts as
fitting, and the wait then shows it is not.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import ray

from dfml.errors import ConfigError

log = logging.getLogger(__name__)

#: Seconds between two "waiting for the autoscaler" status lines.
STATUS_EVERY_S = 30.0


def fits(free: Mapping[str, float], bundle: Mapping[str, float]) -> int:
    """How many ``bundle``s the resources ``free`` hold (by totals)."""
    counts = [
        math.floor(free.get(key, 0.0) / amount + 1e-9) for key, amount in bundle.items() if amount
    ]
    return min(counts) if counts else 0


def scale_request(
    free: Mapping[str, float], bundle: Mapping[str, float], new: int, running: int
) -> list[dict[str, float]]:
    """The bundles to ask the autoscaler for so ``new`` more actors fit, or ``[]``.

    ``[]`` when ``free`` already holds the ``new`` bundles; otherwise one
    bundle per actor of the run (``running + new``), as the request is the
    cluster's target size, not an increment.
    """
    if new <= 0 or fits(free, bundle) >= new:
        return []
    return [dict(bundle) for _ in range(running + new)]


def describe_need(bundle: Mapping[str, float], count: int, free: Mapping[str, float]) -> str:
    """``4 actors need 2 CPU (free: 0.5 CPU)`` — the status and error wording."""
    need = ", ".join(f"{amount * count:g} {key}" for key, amount in bundle.items())
    have = ", ".join(f"{free.get(key, 0.0):g} {key}" for key in bundle)
    return f"{count} actor{'s' if count != 1 else ''} need {need} (free: {have})"


def wait_for(
    ready: Callable[[float], bool],
    need: str,
    timeout: float,
    *,
    every: float = STATUS_EVERY_S,
    clock: Callable[[], float] = time.monotonic,
) -> float:
    """Wait until ``ready(seconds)`` (a blocking check of at most ``seconds``) is true.

    Logs ``waiting for the autoscaler: <need>; waited T s of <timeout> s`` at
    the start and every ``every`` seconds, and a line when room came; returns
    the seconds waited, or raises a one-line :class:`ConfigError` naming
    ``need`` and ``--scale-timeout`` once ``timeout`` has passed.
    """
    start = clock()
    log.warning("waiting for the autoscaler: %s; up to %.0f s (--scale-timeout)", need, timeout)
    next_status = start + every
    while True:
        now = clock()
        if now - start >= timeout:
            raise ConfigError(
                f"the cluster did not make room in time: {need}; asked the autoscaler and "
                f"waited --scale-timeout {timeout:g} s"
            )
        if ready(min(1.0, timeout - (now - start))):
            waited = clock() - start
            log.warning("the cluster made room after %.0f s; going on", waited)
            return waited
        if clock() >= next_status:
            log.warning(
                "waiting for the autoscaler: %s; waited %.0f s of %.0f s",
                need,
                clock() - start,
                timeout,
            )
            next_status += every


def room_check(
    resources: Callable[[], Mapping[str, float]], bundle: Mapping[str, float], count: int
) -> Callable[[float], bool]:
    """A :func:`wait_for` check: do ``resources()`` hold ``count`` bundles? (If
    not, it sleeps the seconds it is given: resources are polled.)"""

    def check(seconds: float) -> bool:
        if fits(resources(), bundle) >= count:
            return True
        time.sleep(seconds)
        return False

    return check


def ready_check(ref: Any) -> Callable[[float], bool]:
    """A :func:`wait_for` check: is ``ref`` (e.g. a placement group's ``ready()``) ready?"""
    return lambda seconds: bool(ray.wait([ref], timeout=seconds)[0])
