"""The CLI tests' common parts: the small run they give ``dfml run`` / ``compare`` as
flags, one command run as ``dfml`` runs it, and a Ray that must not be started."""

from __future__ import annotations

from typing import Any

import pytest

from dfml.launch import runner
from dfml.launch.cli import main

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


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """``dfml ARGV`` in this process: (exit code, stdout, stderr)."""
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse usage errors
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def refuse_ray(monkeypatch: pytest.MonkeyPatch) -> None:
    """No Ray runs here, and starting one fails the test: a refusal must come first."""

    def init(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("ray.init must not be reached")

    monkeypatch.setattr(runner.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(runner.ray, "init", init)
