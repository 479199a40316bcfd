"""A worker node dies mid-run: its clients come back on surviving nodes, restored.

The three-node cluster runs in a subprocess (``node_loss_script.py``): the
test process already holds the shared Ray session and a process can join
only one cluster.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers.fault import faults, metrics

SCRIPT = Path(__file__).with_name("node_loss_script.py")
TESTS = Path(__file__).resolve().parents[1]  # where the helpers package lives
PYTHONPATH = os.environ.get("PYTHONPATH", "")


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("nodes")
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=SCRIPT.parent,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), PYTHONPATH]))},
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    return out / "run", result, faults(out / "run")


@pytest.mark.slow
def test_removed_node_clients_are_recreated_elsewhere_and_restored(cluster_run, reference):
    out, result, rows = cluster_run
    summary = result["summary"]
    assert summary["rounds_completed"] == 3 and summary["clients_lost"] == 0
    assert result["victim"] not in result["alive"] and result["moved"]
    assert all(node in result["alive"] for node in result["nodes_after"].values())
    first = {r["client"] for r in rows if r["kind"] == "restored" and r["round"] == 1}
    assert first == set(result["moved"])
    assert metrics(out).equals(reference)


@pytest.mark.slow
def test_the_silent_reinitialisation_trap_cannot_bite(cluster_run):
    """The naive replica (a task on a restartable actor) came back re-initialised
    after its node died; the fault layer restored the exact state (bit-identical
    metrics above; here: restored from the replica made after round 0)."""
    _, result, rows = cluster_run
    assert result["naive_replica"] == "zeros"  # the trap, provoked
    first = [r for r in rows if r["kind"] == "restored" and r["round"] == 1]
    assert first and all(
        r["source"] in ("holder", "store") and (r["version"], r["replica_round"]) == (1, 1)
        for r in first
    )


@pytest.mark.slow
def test_chaos_node_mode_crashes_a_worker_and_loses_nothing(cluster_run):
    _, result, rows = cluster_run
    summary = result["summary"]
    assert summary["nodes_killed"] == 1 and summary["failures_injected"] >= 1
    injected = {r["client"] for r in rows if r["kind"] == "injected"}
    again = {r["client"] for r in rows if r["kind"] == "restored" and r["round"] == 2}
    assert injected == again
    assert summary["clients_restored"] == len(result["moved"]) + len(injected)
    killed = next(r["node"] for r in rows if r["kind"] == "kill")
    assert killed != result["head"] and killed not in result["alive"]
