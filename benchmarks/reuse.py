"""The benchmarks' one way to run a configuration: a finished run in its folder is
reused, so an interrupted benchmark continues where it stopped."""

from __future__ import annotations

import json
from collections.abc import Collection
from pathlib import Path
from typing import Any

from dfml.launch.options import LaunchConfig, build_config
from dfml.launch.runner import execute


def run_or_reuse(
    options: dict[str, Any], out: Path, finished: Collection[str] = ("completed",)
) -> dict[str, Any]:
    """summary.json of ``options`` run into ``out``; a run there whose status is in
    ``finished`` is returned as it is, anything else there is replaced."""
    done = out / "summary.json"
    if done.exists() and json.loads(done.read_text()).get("status") in finished:
        return json.loads(done.read_text())
    cfg, _ = build_config(options)
    launch = LaunchConfig(out=str(out), progress=False, dashboard=False, overwrite=True)
    return execute(cfg, launch)
