"""SIGTERM ends a run the way Ctrl-C does: status ``interrupted``, everything kept.

Ray's ``ray.init`` installs SIGTERM handlers of its own in the driver: one
that calls ``sys.exit`` (the run would end as ``failed`` with
``SystemExit``) and, when it starts a local Ray, one that kills Ray's
processes under the running driver (which then aborts with a C++ stack
dump). While a command runs inside :func:`sigterm_interrupts`, SIGTERM
instead raises :class:`Terminated`, a :class:`KeyboardInterrupt`, in the
main thread, so the run unwinds through the same path as Ctrl-C: the
summary is written, Ray is shut down in order. :func:`reclaim` puts the
handler back after ``ray.init`` replaced it. A second SIGTERM while the
run winds down is logged and ignored, so the results are written whole;
SIGKILL still ends the process at once.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from dfml.errors import Interruption

log = logging.getLogger(__name__)

#: Exit status of a command ended by SIGTERM (128 + 15, what a shell reports).
EXIT_TERMINATED = 143


class Terminated(Interruption):
    """The process received SIGTERM; raised where the main thread runs."""

    reason = "terminated by a signal (SIGTERM)"


_active = False
_received = False


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    global _received
    if _received:
        log.warning("SIGTERM again: still writing the results; SIGKILL ends at once")
        return
    _received = True
    raise Terminated()


def reclaim() -> None:
    """Make SIGTERM raise :class:`Terminated` again (after ``ray.init`` set its own handler)."""
    if _active and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Terminated`; the old handler comes back after."""
    global _active, _received
    if threading.current_thread() is not threading.main_thread():
        yield  # signals reach only the main thread; nothing to install
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    if previous is None:  # a handler set outside Python: the default is what it did
        previous = signal.SIG_DFL
    _active, _received = True, False
    try:
        yield
    finally:
        _active = False
        signal.signal(signal.SIGTERM, previous)
