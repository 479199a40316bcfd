"""``--tracking``: what a run reports, read back by TensorBoard's and MLflow's own
readers and checked against metrics.parquet and summary.json (in process)."""

from __future__ import annotations

import json
import logging

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers.cli import tiny_argv

from dfml.errors import ConfigError
from dfml.launch.cli import main
from dfml.launch.options import LaunchConfig
from dfml.launch.tracking import round_scalars, summary_scalars
from dfml.records import RoundRecord

RUN = ["run", *tiny_argv(backend="local", rounds=3)]


def per_round(out, key: str) -> dict[int, list[float]]:
    rows = pq.read_table(out / "metrics.parquet").select(["round", key]).to_pylist()
    got: dict[int, list[float]] = {}
    for row in rows:
        got.setdefault(row["round"], []).append(row[key])
    return got


@pytest.mark.e2e
def test_tensorboard_and_mlflow_hold_the_runs_rounds_and_summary(tmp_path, capsys):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main([*RUN, "--tracking", "tensorboard,mlflow", "--lr", "0.2", "--out", str(out)]) == 0
    assert capsys.readouterr().err == ""  # MLflow's start-up INFO lines stay quiet
    summary = json.loads((out / "summary.json").read_text())
    accuracy = per_round(out, "accuracy")

    (folder,) = (out / "tensorboard").iterdir()
    events = EventAccumulator(str(folder))
    events.Reload()
    mean = events.Scalars("accuracy/mean")
    assert [e.step for e in mean] == [0, 1, 2]
    for e in mean:
        assert e.value == pytest.approx(np.mean(accuracy[e.step]), rel=1e-6)
    lowest = events.Scalars("accuracy/min")
    assert [e.value for e in lowest] == pytest.approx([min(accuracy[r]) for r in range(3)])
    (final,) = events.Scalars("summary/final_accuracy")
    assert final.value == pytest.approx(summary["final_accuracy"], rel=1e-6)

    client = MlflowClient(tracking_uri=f"sqlite:///{out / 'mlflow.db'}")
    (run,) = client.search_runs([client.get_experiment_by_name("dfml").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["run.rounds"] == "3" and run.data.params["algorithm.lr"] == "0.2"
    assert run.data.tags["dfml.run_id"] == json.loads((out / "run.json").read_text())["run_id"]
    history = client.get_metric_history(run.info.run_id, "test_loss/p50")
    losses = per_round(out, "test_loss")
    assert [(m.step, m.value) for m in history] == [
        (r, pytest.approx(float(np.median(losses[r])), rel=1e-6)) for r in range(3)
    ]
    assert run.data.metrics["summary/final_accuracy"] == pytest.approx(summary["final_accuracy"])
    names = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"summary.json", "run.json", "metrics.parquet", "accuracy.png"} <= names


def test_a_failing_tracker_warns_once_and_the_run_completes(tmp_path, caplog):
    board = tmp_path / "board"
    board.write_text("a file where TensorBoard wants a folder")
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="dfml.launch.tracking"):
        argv = ["--tracking", "tensorboard", "--tensorboard-dir", str(board), "--out", str(out)]
        code = main([*RUN, *argv])
    assert code == 0
    warnings = [r.getMessage() for r in caplog.records if r.name == "dfml.launch.tracking"]
    assert len(warnings) == 1 and "tracking to tensorboard stopped" in warnings[0]
    assert json.loads((out / "summary.json").read_text())["status"] == "completed"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tracking": ("wandb",)}, "unknown tracker 'wandb'; allowed: tensorboard, mlflow"),
        ({"tracking": ("mlflow", "mlflow")}, "names a tracker twice"),
        ({"tracking_uri": "sqlite:///x.db"}, "--tracking-uri is MLflow's"),
        ({"tracking": ("mlflow",), "tracking_uri": "runs/mlruns"}, "scheme sqlite://"),
        ({"tensorboard_dir": "tb"}, "--tensorboard-dir is TensorBoard's"),
    ],
)
def test_bad_tracking_options_are_one_line(fields, message):
    with pytest.raises(ConfigError, match=message):
        LaunchConfig(**fields)


def test_round_scalars_are_the_clients_mean_and_spread():
    record = RoundRecord(
        4,
        {0: {"accuracy": 0.5, "train_loss": 2.0}, 1: {"accuracy": 1.0}, 2: {"accuracy": 0.0}},
        bytes_sent=96,
        seconds=1.5,
    )
    got = round_scalars(record)
    assert got["accuracy/mean"] == 0.5 and got["accuracy/min"] == 0.0
    assert got["accuracy/max"] == 1.0 and got["accuracy/p50"] == 0.5
    assert got["accuracy/p10"] == pytest.approx(0.1)  # linear between 0.0 and 0.5
    assert got["train_loss/mean"] == 2.0  # only the client that reported it
    assert (got["round/bytes_sent"], got["round/seconds"], got["round/clients"]) == (96, 1.5, 3)
    nested = {"a": 1, "b": {"c": 2.5, "d": "text"}, "e": float("nan"), "f": True, "config": {}}
    assert summary_scalars(nested) == {"a": 1.0, "b.c": 2.5}
