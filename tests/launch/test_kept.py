"""``--keep-completed``: an interrupted compare or chaos keeps its finished runs and
runs only the others (in process: the subject is the folders, not the actors)."""

from __future__ import annotations

import json

import pytest
from helpers.cli import tiny_argv

from dfml.launch import chaos
from dfml.launch.cli import main
from dfml.launch.compare import HistoryCollector
from dfml.launch.identity import RunRecord
from dfml.launch.kept import finished_summary, history_from_metrics
from dfml.launch.options import LaunchConfig, build_config, config_to_options
from dfml.launch.runner import execute

SHARED = tiny_argv(backend="local", local_epochs=1)


def compare(capsys, out, *extra: str) -> tuple[int, str, str]:
    argv = ["compare", "--algorithms", "fedavg,dfedavg", *SHARED, *extra, "--out", str(out)]
    code = main(argv)
    got = capsys.readouterr()
    return code, got.out, got.err


def run_id(folder) -> str:
    return json.loads((folder / "run.json").read_text())["run_id"]


@pytest.fixture
def no_ray(monkeypatch):
    import ray

    def init(*_, **__):
        raise AssertionError("ray.init must not be called")

    monkeypatch.setattr(ray, "init", init)


@pytest.mark.e2e
def test_an_interrupted_compare_keeps_its_finished_runs_and_reruns_the_rest(
    capsys, tmp_path, no_ray
):
    out = tmp_path / "cmp"
    assert compare(capsys, out)[0] == 0
    fedavg, dfedavg = out / "fedavg" / "seed0", out / "dfedavg" / "seed0"
    kept_id, kept_summary = run_id(fedavg), (fedavg / "summary.json").read_bytes()
    # dfedavg's run was killed before it ended: no summary (its other files stay)
    (dfedavg / "summary.json").unlink()
    old_id = run_id(dfedavg)
    (out / "table.md").write_text("stale")

    code, stdout, err = compare(capsys, out)
    assert code == 2 and "already holds results" in err  # refused without the flag

    code, stdout, err = compare(capsys, out, "--keep-completed")
    assert code == 0, err
    assert f"fedavg seed 0: kept {fedavg}" in stdout
    assert run_id(fedavg) == kept_id and (fedavg / "summary.json").read_bytes() == kept_summary
    assert run_id(dfedavg) != old_id
    assert json.loads((dfedavg / "summary.json").read_text())["status"] == "completed"
    table = (out / "table.md").read_text().splitlines()
    assert [line.split(" | ")[0] for line in table[2:]] == ["| fedavg", "| dfedavg"]
    final = json.loads(kept_summary)["final_accuracy"]
    assert f"{final:.3f}" in table[2]


@pytest.mark.e2e
def test_a_folder_holding_a_run_of_other_options_is_refused(capsys, tmp_path, no_ray):
    out = tmp_path / "cmp"
    assert compare(capsys, out)[0] == 0
    before = (out / "fedavg" / "seed0" / "summary.json").read_bytes()
    code, _, err = compare(capsys, out, "--keep-completed", "--lr", "0.5")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1
    assert str(out / "fedavg" / "seed0") in lines[0] and "--lr" in lines[0]
    assert (out / "fedavg" / "seed0" / "summary.json").read_bytes() == before


def test_keep_completed_and_overwrite_exclude_each_other(capsys, tmp_path, no_ray):
    code, _, err = compare(capsys, tmp_path / "cmp", "--keep-completed", "--overwrite")
    assert code == 2 and "--keep-completed and --overwrite exclude each other" in err


def test_unfinished_statuses_run_again(tmp_path):
    cfg, _ = build_config({"dataset": "digits", "clients": 4, "backend": "local"})
    record = RunRecord.new(config_to_options(cfg), tmp_path)
    assert finished_summary(tmp_path, cfg) is None  # nothing there
    (tmp_path / "run.json").write_text(record.to_json())
    for status, kept in (("completed", True), ("diverged", True), ("failed", False)):
        (tmp_path / "summary.json").write_text(json.dumps({"status": status}))
        assert (finished_summary(tmp_path, cfg) is not None) == kept, status
    (tmp_path / "summary.json").write_text('{"status": "compl')  # cut by the kill
    assert finished_summary(tmp_path, cfg) is None


def test_the_history_read_back_is_the_one_the_run_reported(tmp_path):
    cfg, _ = build_config(
        {"dataset": "digits", "clients": 4, "rounds": 3, "hidden": 8, "backend": "local"}
    )
    collector = HistoryCollector()
    execute(cfg, LaunchConfig(out=str(tmp_path), progress=False), tmp_path, [collector])
    read = history_from_metrics(tmp_path)
    assert [r.round for r in read] == [r.round for r in collector.history] == [0, 1, 2]
    for got, want in zip(read, collector.history, strict=True):
        assert sorted(got.metrics) == sorted(want.metrics)
        for client, metrics in want.metrics.items():
            for key in ("accuracy", "train_loss", "test_loss"):
                assert got.metrics[client][key] == pytest.approx(metrics[key], rel=1e-6)
        assert got.mean("accuracy") == pytest.approx(want.mean("accuracy"), rel=1e-6)


def test_chaos_with_every_mode_finished_starts_no_ray_and_rebuilds_the_table(monkeypatch, tmp_path):
    options = {"chaos_kill_rate": "0.2", "clients": "4", "out": str(tmp_path)}

    def no_run(*_, **__):
        raise AssertionError("a finished mode ran again")

    monkeypatch.setattr(chaos, "execute", no_run)
    monkeypatch.setattr(chaos, "init_ray", no_run)
    for mode in chaos.MODES:
        cfg, _ = build_config(chaos.mode_options(mode, options))
        folder = tmp_path / mode
        folder.mkdir()
        folder.joinpath("run.json").write_text(
            RunRecord.new(config_to_options(cfg), folder).to_json()
        )
        summary = {"status": "completed", "final_accuracy": 0.5, "wall_seconds": 1.0}
        folder.joinpath("summary.json").write_text(json.dumps(summary))
    _, table, rows = chaos.run_chaos(options, list(chaos.MODES), keep=True)
    assert [r["mode"] for r in rows] == list(chaos.MODES)
    assert (tmp_path / "table.md").read_text() == table
