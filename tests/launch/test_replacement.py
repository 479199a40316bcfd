"""``--overwrite`` moves the old results aside and removes them only once the new run
has started (no Ray: ``--backend local`` runs the real runner, loop and writers with
every client in the test process)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from dfml.actors.inprocess import InProcessFederation
from dfml.errors import ConfigError
from dfml.launch import runner
from dfml.launch.cli import main
from dfml.launch.replacement import ASIDE_PREFIX
from dfml.launch.results import PARTS, RUN_OUTPUTS
from dfml.records import Callback

TINY = "--dataset digits --clients 4 --rounds 2 --model mlp --hidden 8 --local-epochs 1"
TINY += " --personalized-eval false --progress false --dashboard false --backend local"


@pytest.fixture
def failing_start(monkeypatch):
    """Clients that cannot start, as actors on a cluster too small for them."""

    def start(self, *args, **kwargs):
        raise ConfigError("--num-cpus-per-actor 64.0 exceeds the cluster's 4 CPUs")

    monkeypatch.setattr(InProcessFederation, "start", start)


def old_run(out: Path, uri: Path) -> dict[str, bytes]:
    """A CL-FML run's folder (tasks files included) and its checkpoints."""
    out.mkdir(parents=True)
    files = {name: f"old {name}".encode() for name in RUN_OUTPUTS if name != PARTS}
    for name, data in files.items():
        (out / name).write_bytes(data)
    (out / "notes.txt").write_text("mine")
    (uri / "run" / "round-000003").mkdir(parents=True)
    (uri / "run" / "run.json").write_text("old")
    return files


def dfml(capsys, args: str) -> tuple[int, list[str]]:
    code = main(args.split())
    return code, capsys.readouterr().err.strip().splitlines()


def test_a_failure_before_start_up_puts_the_old_results_back(capsys, tmp_path, failing_start):
    out, uri = tmp_path / "run", tmp_path / "ckpt"
    files = old_run(out, uri)
    code, err = dfml(capsys, f"run {TINY} --out {out} --checkpoint-uri {uri} --overwrite")
    assert code == 2 and err == [
        "dfml: error: --num-cpus-per-actor 64.0 exceeds the cluster's 4 CPUs"
    ]
    assert {p.name for p in out.iterdir()} == {*files, "notes.txt"}
    assert all((out / n).read_bytes() == data for n, data in files.items())
    assert (uri / "run" / "round-000003").is_dir() and (
        uri / "run" / "run.json"
    ).read_text() == "old"


def test_a_run_that_started_replaces_every_file_of_the_old_kind(capsys, tmp_path):
    """A CL-FML run overwritten by a run without tasks keeps no tasks.parquet."""
    out, uri = tmp_path / "run", tmp_path / "ckpt"
    old_run(out, uri)
    code, err = dfml(capsys, f"run {TINY} --out {out} --checkpoint-uri {uri} --overwrite")
    assert code == 0, err
    names = {p.name for p in out.iterdir()}
    assert "tasks.parquet" not in names and "task_predictions.parquet" not in names
    assert "faults.parquet" not in names and not any(n.startswith(ASIDE_PREFIX) for n in names)
    assert (out / "notes.txt").read_text() == "mine"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds_completed"] == 2
    assert pq.read_table(out / "metrics.parquet").num_rows == 2 * 4
    record = json.loads((out / "run.json").read_text())
    assert json.loads((uri / "run" / "run.json").read_text())["run_id"] == record["run_id"]
    assert sorted(p.name for p in (uri / "run").iterdir()) == [
        "round-000001",
        "round-000002",
        "run.json",
    ], "the old run's checkpoints are cleared once the new run has started"


class FailAtRound1(Callback):
    def on_round_end(self, record) -> None:
        if record.round == 1:
            raise ConfigError("stopped in round 1")


def test_a_failure_after_start_up_keeps_the_new_runs_results(capsys, tmp_path, monkeypatch):
    out, uri = tmp_path / "run", tmp_path / "ckpt"
    old_run(out, uri)
    run = runner._run

    def failing(cfg, launch, out_, algorithm, prepared, writer, callbacks, *rest):
        callbacks = [*callbacks, FailAtRound1()]
        return run(cfg, launch, out_, algorithm, prepared, writer, callbacks, *rest)

    monkeypatch.setattr(runner, "_run", failing)
    code, err = dfml(capsys, f"run {TINY} --out {out} --checkpoint-uri {uri} --overwrite")
    assert code == 2 and err == ["dfml: error: stopped in round 1"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["rounds_completed"] == 2
    assert not (out / "tasks.parquet").exists(), "the old results went once the run started"
