"""The bounds on what a user gives dfml, each refused with one line before anything runs.

Kept in one place so the documentation (docs/limits.md) and the checks
agree:

* **integers**: every integer option fits in a signed 64-bit integer
  (:data:`INT_MIN` .. :data:`INT_MAX`); the configs' own checks add the
  per-option bounds (``clients >= 2``, ...);
* **strings**: no NUL byte in any option (no file system, URI or name takes
  one);
* **paths** (``--out``, ``--resume``, the config file, ``--data-root``,
  ``--partition-file``, ``--edge-list``, ``--tasks-file``, a local
  ``--checkpoint-uri``, report and fetch paths): at most
  :data:`MAX_NAME_BYTES` bytes per name and :data:`MAX_PATH_BYTES` in all;
* **config files**: at most :data:`MAX_CONFIG_BYTES`, nested at most
  :data:`~dfml.untrusted.MAX_DEPTH` deep, no YAML aliases (``*name``,
  whose expansion can blow a small file up to gigabytes; see
  :mod:`dfml.untrusted`, which also bounds the tasks, partition and edge
  list files);
* values quoted back in an error are cut to :data:`SHOWN_CHARS` characters
  (:func:`shown`), so a huge value never fills the terminal.
"""

from __future__ import annotations

import os
from typing import Any

from dfml.errors import ConfigError

INT_MIN, INT_MAX = -(2**63), 2**63 - 1
MAX_NAME_BYTES = 255  # NAME_MAX of Linux and macOS file systems
MAX_PATH_BYTES = 4096  # PATH_MAX of Linux
MAX_CONFIG_BYTES = 1 << 20
SHOWN_CHARS = 80


def shown(value: Any) -> str:
    """``repr(value)``, cut to :data:`SHOWN_CHARS` characters with its full length said."""
    text = repr(value)
    if len(text) <= SHOWN_CHARS:
        return text
    return f"{text[: SHOWN_CHARS - 1]}… ({len(text)} characters)"


def check_string(what: str, value: str) -> None:
    """No NUL byte: no path, URI or name takes one, and the OS rejects them mid-run."""
    if "\x00" in value:
        raise ConfigError(f"{what} holds a NUL byte (\\x00): {shown(value)}")


def check_path(what: str, value: str) -> None:
    """A local path the OS can take: no NUL byte, names and the whole within the limits."""
    check_string(what, value)
    encoded = os.fsencode(value)
    if len(encoded) > MAX_PATH_BYTES:
        raise ConfigError(
            f"{what} is {len(encoded)} bytes long; paths may have at most {MAX_PATH_BYTES}: "
            f"{shown(value)}"
        )
    longest = max(encoded.split(b"/"), key=len)
    if len(longest) > MAX_NAME_BYTES:
        raise ConfigError(
            f"{what} holds a name of {len(longest)} bytes; a file or folder name may have at "
            f"most {MAX_NAME_BYTES}: {shown(value)}"
        )


def check_int(what: str, value: int) -> None:
    """Within a signed 64-bit integer (numpy, torch and Ray take no more)."""
    if not INT_MIN <= value <= INT_MAX:
        digits = len(str(abs(value)))
        raise ConfigError(
            f"{what} must fit in 64 bits ({INT_MIN} .. {INT_MAX}), got a {digits}-digit number"
        )
