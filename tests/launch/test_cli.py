from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers.cli import run_cli
from helpers.reference import reference_dfedavg

from dfml.experiment import prepare
from dfml.launch.options import build_config

QUIET = ["--progress", "false", "--dashboard", "false"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--dataset", "nosuch"], "unknown dataset 'nosuch'; allowed: digits"),
        (["--algorithm", "nosuch"], "unknown algorithm 'nosuch'; allowed:"),
        (["--topology", "torus"], "unknown topology 'torus'"),
        (["--partition", "weird"], "unknown partition 'weird'"),
        (["--clients", "1"], "clients must be >= 2, got 1"),
        (["--clients", "ten"], "--clients must be int, got 'ten'"),
        (["--topology", "k-regular", "--degree", "4", "--clients", "4"], "k"),
        (["--lr", "-0.1"], "lr must be a positive finite number, got -0.1"),
        (["--lr", "nan"], "--lr must be a finite number, got 'nan'"),
        (["--dataset", "mnist"], "needs --data-root|give --data-root"),
        (["--no-such-flag", "1"], "unrecognized arguments: --no-such-flag"),
        (["--num-gpus-per-actor", "1.5"], "num_gpus_per_actor"),
        (["--probe-every", "-1"], "probe_every must be an integer >= 0, got -1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, message):
    code, _, err = run_cli(capsys, "run", *argv, *QUIET)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dfml")
    assert any(part in lines[0] for part in message.split("|")), lines[0]
    assert "Traceback" not in err


def test_missing_dataset_files_name_the_files(capsys, tmp_path):
    code, _, err = run_cli(
        capsys, "run", "--dataset", "mnist", "--data-root", str(tmp_path), *QUIET
    )
    assert code == 2
    assert "train-images-idx3-ubyte" in err and str(tmp_path) in err


def test_disconnected_user_graph(capsys, tmp_path):
    edges = tmp_path / "g.txt"
    edges.write_text("0 1\n2 3\n")
    code, _, err = run_cli(
        capsys,
        "run",
        "--clients",
        "4",
        "--topology",
        "edge-list",
        "--edge-list",
        str(edges),
        *QUIET,
    )
    assert code == 2 and "disconnected" in err


def test_bad_yaml_and_missing_config(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("clients: [1, 2\n")
    assert run_cli(capsys, "run", str(bad))[0] == 2
    assert run_cli(capsys, "run", str(tmp_path / "none.yaml"))[0] == 2
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("clients: 4\nbogus: 1\n")
    code, _, err = run_cli(capsys, "run", str(unknown))
    assert code == 2 and "unknown option --bogus" in err


def test_flags_override_yaml(tmp_path):
    from dfml.launch.cli import build_parser
    from dfml.launch.flags import options_from

    cfg_file = tmp_path / "exp.yaml"
    cfg_file.write_text("clients: 12\nrounds: 7\ntopology: star\nlr: 0.2\n")
    args = build_parser().parse_args(["run", str(cfg_file), "--rounds", "3"])
    cfg, launch = build_config(options_from(args, set()))
    assert (cfg.run.clients, cfg.run.rounds, cfg.topology.topology, cfg.algorithm.lr) == (
        12,
        3,
        "star",
        0.2,
    )
    assert launch.progress is True


@pytest.mark.e2e
def test_entry_point_prints_no_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "dfml.launch.cli", "run", "--dataset", "nosuch"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "dfml: error: unknown dataset 'nosuch'; allowed: digits, mnist-5k, synthetic, mnist, fashion-mnist, "
        "emnist, cifar10, cifar100, medmnist:<name>"
    ]


def test_run_writes_results(capsys, tmp_path, ray_session):
    out = tmp_path / "run"
    code, stdout, _ = run_cli(
        capsys,
        "run",
        "--dataset",
        "digits",
        "--clients",
        "4",
        "--rounds",
        "2",
        "--hidden",
        "16",
        "--clients-per-actor",
        "2",
        "--num-cpus-per-actor",
        "0.5",
        "--probe-every",
        "1",
        "--out",
        str(out),
        *QUIET,
    )
    assert code == 0, stdout
    summary = json.loads((out / "summary.json").read_text())
    for key in (
        "algorithm",
        "dataset",
        "clients",
        "rounds",
        "final_accuracy",
        "per_client_accuracy",
        "wall_seconds",
        "seconds_per_round",
        "bytes_sent",
        "config",
        "seed",
    ):
        assert key in summary, key
    assert summary["status"] == "completed" and summary["rounds_completed"] == 2
    assert len(summary["per_client_accuracy"]) == 4
    # Per actor: its clients and device; CPU actors carry no GPU share fields.
    assert summary["actor_devices"] == [{"clients": 2, "device": "cpu", "gpu_ids": []}] * 2
    # Setup: data + Ray + actors, each timed, before round 0; round 0 on its own.
    setup = summary["setup_phases"]
    assert set(setup) == {"data", "ray", "actors"} and min(setup.values()) > 0
    assert summary["setup_seconds"] == pytest.approx(sum(setup.values()))
    assert summary["first_round_seconds"] > 0 and "train" in summary["phase_seconds"]
    table = pq.read_table(out / "metrics.parquet").to_pydict()
    assert len(table["round"]) == 8 and set(table["client"]) == {0, 1, 2, 3}
    assert summary["final_accuracy"] == pytest.approx(
        sum(a for r, a in zip(table["round"], table["accuracy"], strict=True) if r == 1) / 4
    )
    assert (out / "accuracy.png").stat().st_size > 1000
    assert pq.read_table(out / "partition.parquet").num_rows > 0
    # The probe service (--probe-every 1): a disagreement per client and round, summarised.
    assert summary["probe_rounds"] == [0, 1] and "probe" in summary["phase_seconds"]
    for r in (0, 1):
        values = [d for rr, d in zip(table["round"], table["disagreement"], strict=True) if rr == r]
        assert len(values) == 4 and min(values) > 0
        assert summary["probe_disagreement_mean"][r] == pytest.approx(sum(values) / 4)


def test_divergence_stops_with_exit_2_and_keeps_results(capsys, tmp_path):
    out = tmp_path / "nan"
    code, _, err = run_cli(
        capsys,
        "run",
        "--dataset",
        "digits",
        "--clients",
        "4",
        "--rounds",
        "5",
        "--lr",
        "1e30",
        "--backend",
        "local",
        "--out",
        str(out),
        *QUIET,
    )
    assert code == 2
    assert "diverged in round" in err and "client" in err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "diverged"
    assert Path(out / "metrics.parquet").exists()


def test_local_backend_runs_the_same_dfedavg_without_starting_ray(capsys, tmp_path, monkeypatch):
    """``--backend local``: every client in the driver, Ray never called; the
    clients end where the plain-PyTorch DFedAvg loop ends."""
    import ray

    def no_ray(*_, **__):
        raise AssertionError("--backend local called into Ray")

    for name in ("init", "get", "put", "wait"):
        monkeypatch.setattr(ray, name, no_ray)
    options = ["--dataset", "digits", "--clients", "4", "--rounds", "2", "--hidden", "8"]
    out = tmp_path / "local"
    code, stdout, _ = run_cli(
        capsys, "run", *options, "--backend", "local", "--out", str(out), *QUIET
    )
    assert code == 0, stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and "ray" not in summary["setup_phases"]
    cfg, _ = build_config({"dataset": "digits", "clients": 4, "rounds": 2, "hidden": 8})
    _, expected = reference_dfedavg(cfg, prepare(cfg))
    table = pq.read_table(out / "metrics.parquet").to_pydict()
    last = [a for r, a in zip(table["round"], table["accuracy"], strict=True) if r == 1]
    np.testing.assert_allclose(last, expected, atol=1e-9)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--placement", "spread"], "placement 'spread' needs --backend ray"),
        (["--num-gpus-per-actor", "0.25"], "num_gpus_per_actor 0.25 needs --backend ray"),
        (["--chaos-rounds", "1"], "the fault layer (--chaos-*, --recovery true) needs --backend"),
        (["--backend", "threads"], "backend must be one of ray, local, got 'threads'"),
    ],
)
def test_what_the_local_backend_cannot_do_is_one_line(capsys, argv, message):
    backend = [] if "--backend" in argv else ["--backend", "local"]
    code, _, err = run_cli(capsys, "run", *backend, *argv, "--out", "/nonexistent/never")
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and message in lines[0], lines
