"""``--placement spread`` on two nodes, then clients join onto a node added mid-run.

The cluster runs in a subprocess (``multinode_script.py``): the test process
already holds the shared Ray session and a process can join only one
cluster. Never ``ray stop`` / ``AutoscalingCluster``: they kill every Ray
process on the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("multinode_script.py")


@pytest.fixture(scope="module")
def cluster_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("multinode") / "run"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=SCRIPT.parent,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(lines[-1].removeprefix("RESULT "))


@pytest.mark.slow
def test_spread_puts_the_initial_actors_on_both_nodes(cluster_run):
    first = cluster_run["nodes"]["round0"]
    assert sorted(first) == ["0", "1", "2", "3"]
    assert set(first.values()) == {cluster_run["head"], cluster_run["worker"]}
    # Consecutive cohorts share a node: {0, 1} on one, {2, 3} on the other.
    assert first["0"] == first["1"] != first["2"] == first["3"]


@pytest.mark.slow
def test_clients_that_join_run_on_the_node_added_mid_run_and_train(cluster_run):
    summary = cluster_run["summary"]
    assert summary["status"] == "completed" and summary["rounds_completed"] == 3
    assert summary["joins"] == {"2": [4, 5]}
    after = cluster_run["nodes"]["round2"]
    assert after["4"] == after["5"] == cluster_run["added"]
    assert cluster_run["added"] not in (cluster_run["head"], cluster_run["worker"])
    rows = cluster_run["joined_rows"]
    assert {(r["round"], r["client"]) for r in rows} == {(2, 4), (2, 5)}
    assert all(r["trained"] and 0.0 <= r["accuracy"] <= 1.0 for r in rows)
    assert summary["final_accuracy"] > 0.2  # ten digits: chance is 0.1


@pytest.mark.slow
def test_cross_node_bytes_count_the_ring_edges_between_nodes(cluster_run):
    summary = cluster_run["summary"]
    per_round = summary["cross_node_bytes_per_round"]
    vector = summary["param_count"] * 4  # float32
    # Ring 0-1-2-3-0 with {0, 1} and {2, 3} on two nodes: the vectors of
    # clients 0, 1, 2, 3 each cross once (edges 1-2 and 3-0).
    assert per_round[:2] == [4 * vector, 4 * vector]
    assert 0 < per_round[2] < summary["bytes_sent"]
    assert summary["cross_node_bytes"] == sum(per_round)
