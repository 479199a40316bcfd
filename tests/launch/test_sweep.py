"""``dfml tune``: the space, its checks before Tune starts, and a real ASHA sweep on the
test Ray session whose table and best trial are recomputed from the trials' own
summary.json files."""

from __future__ import annotations

import json
import pickle

import pytest

from dfml.errors import ConfigError, TrainingDivergedError
from dfml.launch import sweep
from dfml.launch.cli import main
from dfml.launch.sweep import corner_points, parse_space, run_sweep

OPTIONS = {
    "dataset": "digits",
    "clients": 4,
    "rounds": 3,
    "model": "mlp",
    "hidden": 8,
    "backend": "local",
}


def space_file(tmp_path, space: dict, options: dict | None = None):
    path = tmp_path / "space.yaml"
    path.write_text(json.dumps({"space": space, "options": options or OPTIONS}))  # JSON is YAML
    return path


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({}, "non-empty 'space:' mapping"),
        ({"lr": [0.1, 0.2]}, "must be one of {choice, grid, uniform, loguniform: …}"),
        ({"lr": {"normal": [0, 1]}}, "unknown distribution 'normal'"),
        ({"lr": {"choice": []}}, "choice needs a non-empty list"),
        ({"lr": {"uniform": [0.5, 0.1]}}, r"uniform needs \[low, high\] with low < high"),
        ({"lr": {"loguniform": [0, 1]}}, "0 < low < high"),
    ],
)
def test_a_bad_space_is_one_line(space, message):
    with pytest.raises(ConfigError, match=message):
        parse_space(space)


def test_every_listed_value_and_both_bounds_are_checked():
    space = parse_space({"lr": {"uniform": [0.1, 0.5]}, "hidden": {"choice": [8, 16, 32]}})
    points = corner_points(space)
    assert {p["lr"] for p in points} == {0.1, 0.5}
    assert {p["hidden"] for p in points} == {8, 16, 32}


@pytest.mark.parametrize(
    ("space", "flags", "message"),
    [
        ({"lrr": {"choice": [0.1]}}, [], "lrr"),
        ({"local_epochs": {"choice": [1, 0]}}, [], "local_epochs"),
        ({"lr": {"choice": [0.1]}}, ["--mode", "best"], "--mode must be one of max, min"),
        ({"lr": {"choice": [0.1]}}, ["--scheduler", "pbt"], "--scheduler must be one of fifo"),
        ({"lr": {"choice": [0.1]}}, ["--num-samples", "0"], "--num-samples must be >= 1"),
        ({"lr": {"choice": [0.1]}}, ["--resume", "nowhere"], "holds no sweep to continue"),
    ],
)
def test_bad_sweep_input_is_one_line_before_tune_starts(
    capsys, tmp_path, monkeypatch, space, flags, message
):
    import ray

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started"))
    code = main(["tune", str(space_file(tmp_path, space)), *flags, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not (tmp_path / "o" / "tune").exists()


@pytest.fixture
def one_trial(monkeypatch):
    """``run_trial`` as Tune calls it, for trial id 't0': its reports are kept."""
    from ray import tune

    reports: list[dict] = []
    context = type("Context", (), {"get_trial_id": lambda self: "t0"})()
    monkeypatch.setattr(tune, "get_context", lambda: context)
    monkeypatch.setattr(tune, "report", reports.append)
    return reports


def test_a_trial_run_again_replaces_its_folder_and_a_divergence_is_its_result(one_trial, tmp_path):
    """A restored sweep re-runs an interrupted trial in the folder its first attempt
    wrote; a trial whose run diverges reports ``diverged`` instead of failing."""
    sweep.run_trial({"lr": 0.1}, OPTIONS, str(tmp_path), "final_accuracy")
    first = json.loads((tmp_path / "trials" / "t0" / "run.json").read_text())["run_id"]
    sweep.run_trial({"lr": 1e30}, OPTIONS, str(tmp_path), "final_accuracy")
    summary = json.loads((tmp_path / "trials" / "t0" / "summary.json").read_text())
    second = json.loads((tmp_path / "trials" / "t0" / "run.json").read_text())["run_id"]
    assert summary["status"] == "diverged" and second != first
    done, diverged = [r for r in one_trial if sweep.COMPLETED in r]  # after the rounds
    assert done[sweep.COMPLETED] and not done[sweep.DIVERGED]
    assert diverged[sweep.COMPLETED] and diverged[sweep.DIVERGED]
    assert "final_accuracy" not in diverged  # no value to rank it by
    assert sweep._status(diverged) == "diverged" and sweep._status(done) == "completed"


def test_a_divergence_crosses_processes_whole():
    again = pickle.loads(pickle.dumps(TrainingDivergedError(5, 4, float("inf"))))
    assert (again.client_id, again.round_index, again.loss) == (5, 4, float("inf"))
    assert str(again) == "client 5 diverged in round 4 (loss=inf); lower --lr or check the data"


def test_an_asha_sweep_of_four_trials_and_its_resume(ray_session, tmp_path):
    path = space_file(
        tmp_path, {"lr": {"loguniform": [0.02, 0.5]}, "local_epochs": {"choice": [1, 2]}}
    )
    out = tmp_path / "sweep"
    flags = {"out": str(out)}
    root, rows = run_sweep(str(path), flags, num_samples=4, scheduler="asha", max_concurrent=2)
    assert root == out and len(rows) == 4
    summaries = {
        p.parent.name: json.loads(p.read_text()) for p in out.glob("trials/*/summary.json")
    }
    completed = [r for r in rows if r["status"] == "completed"]
    assert completed and {r["trial"] for r in completed} <= set(summaries)
    for row in rows:
        if row in completed:
            assert summaries[row["trial"]]["status"] == "completed"
            continue
        # A trial ASHA stopped keeps the rounds it streamed (metrics.parts until the run
        # ends); its summary says why it ended when its run got to write it before Tune
        # ended the trial's process.
        folder = out / "trials" / row["trial"]
        assert (folder / "metrics.parquet").is_file() or any(folder.glob("metrics.parts/*"))
        if row["trial"] in summaries:
            summary = summaries[row["trial"]]
            assert summary["status"] == "interrupted"
            assert summary["error"] == "stopped early by the sweep's scheduler"
    for row in completed:
        summary = summaries[row["trial"]]
        assert row["final_accuracy"] == summary["final_accuracy"] and row["rounds"] == 3
        assert summary["config"]["algorithm"]["lr"] == pytest.approx(row["lr"])
    for row in rows:
        assert 0.02 <= row["lr"] <= 0.5 and row["local_epochs"] in (1, 2)
        assert row["status"] in ("completed", "stopped")  # ASHA may stop the weak ones
    best = json.loads((out / "best.json").read_text())
    finished = {t: s for t, s in summaries.items() if s["status"] == "completed"}
    top = max(finished.items(), key=lambda kv: kv[1]["final_accuracy"])
    assert best["trial"] == top[0] and best["final_accuracy"] == top[1]["final_accuracy"]
    assert (out / "table.md").read_text().count("\n") == 2 + 4

    again = run_sweep(str(path), {"resume": str(out)}, num_samples=4, scheduler="asha")[1]
    assert [(r["trial"], r["final_accuracy"]) for r in again] == [
        (r["trial"], r["final_accuracy"]) for r in rows
    ]
    assert {p.name for p in (out / "trials").iterdir()} == {r["trial"] for r in rows}


def test_a_resumed_sweep_keeps_the_settings_it_began_with(capsys, tmp_path, monkeypatch):
    import ray

    out = tmp_path / "sweep"
    (out / sweep.TUNE_DIR).mkdir(parents=True)
    began = {**sweep.SETTINGS, "metric": "pers5_accuracy", "scheduler": "asha"}
    (out / sweep.SETTINGS_FILE).write_text(json.dumps(began))
    assert sweep._settings(dict.fromkeys(sweep.SETTINGS), out, resume=True) == began
    assert sweep._settings({"metric": "pers5_accuracy"}, out, resume=True) == began
    assert sweep._settings({}, out, resume=False) == sweep.SETTINGS  # a new sweep: defaults

    monkeypatch.setattr(ray, "init", lambda *a, **k: pytest.fail("Ray started"))
    space = space_file(tmp_path, {"lr": {"choice": [0.1]}})
    code = main(["tune", str(space), "--resume", str(out), "--metric", "final_accuracy"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "--metric final_accuracy: the sweep in" in err[0]
    assert "runs with --metric pers5_accuracy" in err[0]
