"""Ends the Ray processes a killed ``dfml`` driver would leave behind.

When ``dfml run`` starts a local Ray and is then SIGKILLed (``kill -9``, the
OOM killer), Ray's kernel fate-sharing ends the processes the driver
started (GCS, raylet, dashboard), but not the raylet's own children: its
dashboard agent and runtime-env agent notice the raylet is gone, log that
they exit, and stay up (measured with Ray 2.60: both alive minutes later,
parent PID 1). :func:`start` runs this file as a small process beside the
driver that remembers the raylet's children while the session lives and,
once the driver or the raylet is gone, gives them ``GRACE_S`` to exit on
their own, then SIGKILLs those still running. It reads ``/proc`` only
(Linux, where Ray's fate-sharing is also used) and runs as a plain script,
so it imports neither dfml nor Ray.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

#: How often the session's processes are listed while it lives.
POLL_S = 1.0
#: How long the left-over processes get to exit by themselves.
GRACE_S = 10.0

Proc = tuple[int, str]  # pid and start time: a pid alone may be reused


def _stat(pid: int) -> tuple[str, int, str]:
    """(command name, parent pid, start time) of ``pid`` from ``/proc/PID/stat``."""
    text = Path(f"/proc/{pid}/stat").read_text()
    name = text[text.index("(") + 1 : text.rindex(")")]
    rest = text[text.rindex(")") + 2 :].split()
    return name, int(rest[1]), rest[19]  # fields 2, 4 and 22 of proc(5)


def _read(pid: int) -> tuple[str, int, str] | None:
    try:
        return _stat(pid)
    except (FileNotFoundError, ProcessLookupError):
        return None  # it exited while we looked
    except PermissionError:
        return None  # another user's process (hardened /proc): never one of ours


def children(parent: int) -> set[Proc]:
    """The processes whose parent is ``parent``."""
    found = set()
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _read(int(entry.name))
            if stat is not None and stat[1] == parent:
                found.add((int(entry.name), stat[2]))
    return found


def alive(proc: Proc) -> bool:
    stat = _read(proc[0])
    return stat is not None and stat[2] == proc[1]


def raylet_of(driver: int) -> Proc | None:
    """The raylet this driver started (its child named ``raylet``), if it started one."""
    for proc in children(driver):
        stat = _read(proc[0])
        if stat is not None and stat[0] == "raylet":
            return proc
    return None


def watch(driver: int, raylet: Proc, grace: float = GRACE_S) -> list[int]:
    """Track ``raylet``'s children until the driver or the raylet ends; then kill
    those still running after ``grace`` seconds. Returns the pids it killed."""
    tracked: set[Proc] = set()
    while os.getppid() == driver and alive(raylet):
        tracked |= children(raylet[0])
        time.sleep(POLL_S)
    deadline = time.monotonic() + grace
    while any(map(alive, tracked)) and time.monotonic() < deadline:
        time.sleep(0.2)
    killed = []
    for proc in sorted(tracked):
        if alive(proc):
            try:
                os.kill(proc[0], signal.SIGKILL)
                killed.append(proc[0])
            except ProcessLookupError:
                pass  # it exited between the check and the kill: nothing left to do
    return killed


def start() -> subprocess.Popen | None:
    """Start the reaper of the local Ray this process started; ``None`` when it
    started none (it joined a cluster) or the system has no ``/proc``."""
    if not Path("/proc/self/stat").exists():
        return None
    raylet = raylet_of(os.getpid())
    if raylet is None:
        return None
    return subprocess.Popen(
        [sys.executable, __file__, str(os.getpid()), str(raylet[0]), raylet[1]],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # a signal to the driver's process group spares it
    )


if __name__ == "__main__":
    grace = float(sys.argv[4]) if len(sys.argv) > 4 else GRACE_S
    watch(int(sys.argv[1]), (int(sys.argv[2]), sys.argv[3]), grace)
