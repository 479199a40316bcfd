"""CHOCO-SGD end to end through the CLI's runner, and under chaos on Ray actors.

The failure-free run is in-process (``--backend local``): its ``bytes_sent``
must be exactly the top-k messages that travel, and ``bytes_to_target`` the
bytes up to the first round that reached the target (both recomputed here
from the message format and metrics.parquet). The chaos run, on Ray, kills an
actor mid-round: its clients come back from their replicas — public copies,
their sum and the last message included — and the run ends bit-identical to
the failure-free one, on the other backend.
"""

from __future__ import annotations

import pytest
from helpers.fault import metrics, run

CHOCO = {
    "algorithm": "choco-sgd",
    "compressor": "topk",
    "compression": 0.1,
    "consensus_lr": 0.5,
    "target_accuracy": 0.15,
}


@pytest.fixture(scope="module")
def choco_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("choco")
    return out, run(out, backend="local", **CHOCO)


def test_bytes_sent_are_the_compressed_messages(choco_run):
    out, summary = choco_run
    d = summary["param_count"]
    k = round(0.1 * d)
    message = 5 + 4 + k * (2 + 4)  # header, k, uint16 indices, float32 values
    per_round = [0] + [4 * 2 * message] * 2  # round 0 sends nothing; then 2 ring neighbours each
    assert summary["bytes_sent_per_round"] == per_round
    assert summary["bytes_sent"] == sum(per_round) < 0.2 * 2 * 4 * 2 * 4 * d
    table = metrics(out).to_pandas()
    mean = table.groupby("round")["accuracy"].mean().tolist()
    reached = next((r for r, acc in enumerate(mean) if acc >= 0.15), None)
    assert reached is not None, mean
    assert summary["rounds_to_target"] == reached + 1
    assert summary["bytes_to_target"] == sum(per_round[: reached + 1])


def test_choco_under_chaos_loses_no_client_and_ends_bit_identical(ray_session, choco_run, tmp_path):
    reference, _ = choco_run
    summary = run(
        tmp_path, clients_per_actor=2, chaos_rounds="1", chaos_fraction=0.5, spares=1, **CHOCO
    )
    assert summary["failures_injected"] == 2 == summary["clients_restored"]
    assert summary["clients_lost"] == 0 and summary["rounds_completed"] == 3
    assert metrics(tmp_path).equals(metrics(reference))
