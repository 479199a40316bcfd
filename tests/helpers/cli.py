"""The small run the CLI tests give ``dfml run`` / ``compare`` as flags."""

from __future__ import annotations

from typing import Any

#: digits, 4 clients, 2 rounds, a small MLP, no progress bar.
TINY: dict[str, Any] = {
    "dataset": "digits",
    "clients": 4,
    "rounds": 2,
    "model": "mlp",
    "hidden": 8,
    "progress": False,
}


def tiny_argv(**changes: Any) -> list[str]:
    """``TINY`` with ``changes`` as command-line flags (``--name value`` each)."""
    argv = []
    for name, value in {**TINY, **changes}.items():
        text = str(value).lower() if isinstance(value, bool) else str(value)
        argv += [f"--{name.replace('_', '-')}", text]
    return argv
