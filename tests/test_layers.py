"""The package's layers hold (``[tool.importlinter]`` in pyproject.toml), and the check bites.

A module may import only from its own layer or below; the core (steps,
programs, records, runtime, actors, topology, the base algorithm) imports
no plugin. The second test plants an upward import in a copy of the package
and expects the contract to name it, so a contract that silently checks
nothing fails here too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "pyproject.toml"


def lint_imports(package_parent: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` of the ``dfml`` found under ``package_parent``, with this repo's contracts."""
    command = Path(sys.executable).with_name("lint-imports")
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(
        [str(command), "--config", str(CONFIG), "--no-cache"],
        cwd=package_parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_layer_contracts_are_kept():
    proc = lint_imports(ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Contracts: 2 kept, 0 broken." in proc.stdout


def test_an_upward_import_breaks_the_layer_contract(tmp_path):
    shutil.copytree(ROOT / "dfml", tmp_path / "dfml", ignore=shutil.ignore_patterns("__pycache__"))
    with (tmp_path / "dfml" / "steps.py").open("a") as f:
        f.write("\nimport dfml.launch  # planted: the bottom layer reaching the top\n")
    proc = lint_imports(tmp_path)
    assert proc.returncode != 0
    assert "dfml layers BROKEN" in proc.stdout
    assert "dfml.steps -> dfml.launch" in proc.stdout
