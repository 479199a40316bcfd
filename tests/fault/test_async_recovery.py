"""Asynchronous clients under chaos on Ray actors, and resumed from a checkpoint.

The async schedule's steps are ordinary steps — a ``mix`` step that keeps the
mixed vector in the client's state, a ``train`` step from it — and its slot
holds no reference to an older vector, so the fault layer's replicas and the
whole-run checkpoints cover it unchanged: a chaos run loses no client and
ends bit-identical to the failure-free in-process run (which the Ray actors
therefore also equal), and a run resumed from a checkpoint equals the
uninterrupted one.
"""

from __future__ import annotations

import json

import pytest
from helpers.fault import metrics, run

from dfml.launch.cli import main
from dfml.records import Callback

ASYNC = {"schedule_mode": "async", "stragglers": "0.25:x10", "target_accuracy": 0.1}


@pytest.fixture(scope="module")
def async_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("async")
    return out, run(out, backend="local", rounds=4, **ASYNC)


class StopAfter(Callback):
    """Interrupt the run when round ``last`` has ended (as Ctrl-C would)."""

    def __init__(self, last: int) -> None:
        self.last = last

    def on_round_end(self, record) -> None:
        if record.round == self.last:
            raise KeyboardInterrupt


def test_async_resumed_from_a_checkpoint_equals_the_uninterrupted_run(async_run, tmp_path):
    reference, summary = async_run
    out = tmp_path / "run"
    options = {**ASYNC, "backend": "local", "checkpoint_uri": str(tmp_path / "ckpt")}
    with pytest.raises(KeyboardInterrupt):
        run(out, [StopAfter(2)], rounds=4, checkpoint_every=1, **options)
    code = main(["run", "--resume", str(out), "--progress", "false", "--dashboard", "false"])
    resumed = json.loads((out / "summary.json").read_text())
    assert code == 0 and resumed["resumed_from_round"] == 2
    assert metrics(out).to_pandas().equals(metrics(reference).to_pandas())
    assert resumed["updates_per_client"] == summary["updates_per_client"]
    assert resumed["time_to_target"] == summary["time_to_target"]


def test_async_under_chaos_loses_no_client_and_ends_bit_identical(ray_session, async_run, tmp_path):
    reference, summary = async_run
    chaos = run(
        tmp_path,
        rounds=4,
        clients_per_actor=2,
        chaos_rounds="1",
        chaos_fraction=0.5,
        spares=1,
        **ASYNC,
    )
    assert chaos["failures_injected"] == 2 == chaos["clients_restored"]
    assert chaos["clients_lost"] == 0 and chaos["rounds_completed"] == 4
    assert metrics(tmp_path).to_pandas().equals(metrics(reference).to_pandas())
    assert chaos["updates_per_client"] == summary["updates_per_client"]
