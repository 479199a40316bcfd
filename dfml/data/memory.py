"""Memory a request would need, checked against what this machine has before allocating.

A typo (``--synthetic-samples 100000000000``, ``--hidden 1000000000``)
should be one line, not minutes of swapping and an out-of-memory kill. The
available memory is Linux's ``MemAvailable`` (``/proc/meminfo``), lowered
to the cgroup's room (``memory.max`` − ``memory.current``) inside a
container; where neither can be read, ``os.sysconf``'s free pages, else no
check.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from dfml.errors import ConfigError

log = logging.getLogger(__name__)

_MEMINFO = Path("/proc/meminfo")
_CGROUP = Path("/sys/fs/cgroup")


def _read_int(path: Path) -> int | None:
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None  # "max": no limit


def available_memory() -> int | None:
    """Bytes this process could still allocate, or None when the system does not say."""
    found: list[int] = []
    try:
        for line in _MEMINFO.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found.append(int(line.split()[1]) * 1024)
    except OSError:
        names = ("SC_AVPHYS_PAGES", "SC_PAGE_SIZE")
        if all(n in os.sysconf_names for n in names):
            found.append(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    limit, used = _read_int(_CGROUP / "memory.max"), _read_int(_CGROUP / "memory.current")
    if limit is not None and used is not None:
        found.append(max(limit - used, 0))
    return min(found) if found else None


def check_fits(what: str, needed: int, hint: str) -> None:
    """One ``ConfigError`` line when ``needed`` bytes exceed the memory available here."""
    available = available_memory()
    if available is None:
        log.debug("available memory unknown; %s (%d bytes) not checked", what, needed)
        return
    if needed > available:
        raise ConfigError(
            f"{what} would need {_gib(needed)} of memory, but {_gib(available)} is available "
            f"on this machine; {hint}"
        )


def _gib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**27 else f"{n / 2**20:,.1f} MiB"
