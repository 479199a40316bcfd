"""Whole-run checkpoints and resume: a SIGKILLed driver continues exactly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import ray
import torch
from helpers.fault import BASE, metrics, run

from dfml.actors.state import ClientState
from dfml.errors import ConfigError
from dfml.launch.cli import main
from dfml.runtime.checkpoint import Checkpointer

#: Two actors of two clients: the driver's kill and resume are the subject, not placement.
RESUMABLE = {
    **BASE,
    "rounds": 8,
    "personalized_eval": True,
    "checkpoint_every": 1,
    "clients_per_actor": 2,
}


def cli_args(options: dict) -> list[str]:
    args = []
    for key, value in options.items():
        args += [f"--{key.replace('_', '-')}", str(value)]
    return args


def test_a_killed_driver_resumes_to_the_uninterrupted_result(ray_session, tmp_path):
    # the uninterrupted run, in process: the same numbers as on Ray, without its actors
    ref_options = {**RESUMABLE, "backend": "local", "checkpoint_uri": str(tmp_path / "ref-ckpt")}
    reference = run(tmp_path / "ref", **ref_options)
    out, uri = tmp_path / "run", tmp_path / "ckpt"
    address = ray.get_runtime_context().gcs_address
    argv = [
        sys.executable,
        "-m",
        "dfml.launch.cli",
        "run",
        *cli_args({**RESUMABLE, "checkpoint_uri": uri, "out": out}),
        "--ray-address",
        address,
        "--progress",
        "false",
        "--dashboard",
        "false",
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    part = out / "metrics.parts" / "round-000003.parquet"
    deadline = time.monotonic() + 240
    while not part.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)  # the driver dies mid-run
    proc.wait()
    assert not (out / "summary.json").exists()
    assert Checkpointer(str(uri), 1).rounds(), "no checkpoint was written before the kill"

    code = main(["run", "--resume", str(out), "--progress", "false", "--dashboard", "false"])
    assert code == 0
    resumed = json.loads((out / "summary.json").read_text())
    assert resumed["status"] == "completed"
    assert 1 <= resumed["resumed_from_round"] <= 8
    assert resumed["per_client_accuracy"] == reference["per_client_accuracy"]
    assert resumed["final_accuracy"] == reference["final_accuracy"]
    assert resumed["pers5_accuracy"] == reference["pers5_accuracy"]
    rounds = metrics(out).column("round").to_pylist()
    assert sorted(set(rounds)) == list(range(8)) and len(rounds) == 8 * 4  # appended, no repeats


def test_resume_rejects_a_changed_experiment_flag(tmp_path, capsys):
    out = tmp_path / "run"
    options = {**RESUMABLE, "rounds": 2, "backend": "local"}
    run(out, **options, checkpoint_uri=str(tmp_path / "ckpt"))
    code = main(["run", "--resume", str(out), "--lr", "0.5", "--progress", "false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--lr 0.5 differs" in err[0]


def test_a_run_without_checkpoints_cannot_be_resumed(tmp_path, capsys):
    out = tmp_path / "run"
    run(out, **{**BASE, "rounds": 1, "backend": "local"})
    assert main(["run", "--resume", str(out)]) == 2
    assert "wrote no checkpoints" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path / "nothing")]) == 2


def state(cid: int, value: float) -> ClientState:
    return ClientState(cid, torch.full((3,), value), round=2, labels=(0, 1))


def test_only_the_newest_checkpoints_are_kept(tmp_path):
    ckpt = Checkpointer(str(tmp_path), every=2, keep=2)
    for r in (2, 4, 6):
        ckpt.save(r, {}, {0: state(0, r)})
    assert ckpt.rounds() == [6, 4]
    assert ckpt.due(4) and not ckpt.due(5)


def test_a_checkpoint_uri_naming_a_file_is_refused(tmp_path):
    target = Path(tmp_path / "file")
    target.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        Checkpointer(str(target), 1).check_writable()
