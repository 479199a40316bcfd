"""Wrong inputs a user tried on ``dfml``: each is one line on stderr, exit code 2, no
traceback, and no result is lost (one test, or one parametrized table, per defect).

Runs that need Ray use the session's Ray (``ray_session``) and tiny settings;
tests of Ray's start-up pretend no Ray is running (``ray.is_initialized``
patched) and replace ``ray.init`` / ``ray.shutdown``, so they never touch the
session's Ray nor start one.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from helpers.cli import run_cli

from dfml.algorithms.base import LocalSGDConfig
from dfml.data.config import PartitionConfig
from dfml.errors import ConfigError
from dfml.launch import chaos, compare, runner
from dfml.launch.cli import build_parser, main
from dfml.launch.cluster import probe
from dfml.launch.flags import options_from
from dfml.launch.options import LaunchConfig, build_config, config_to_options
from dfml.launch.results import PARTS, RUN_OUTPUTS
from dfml.launch.signals import Terminated, sigterm_interrupts
from dfml.records import Callback

QUIET = ["--progress", "false", "--dashboard", "false"]
TINY = [
    "--dataset",
    "digits",
    "--clients",
    "4",
    "--rounds",
    "1",
    "--model",
    "mlp",
    "--hidden",
    "8",
    "--local-epochs",
    "1",
    "--personalized-eval",
    "false",
    "--num-cpus-per-actor",
    "0.5",
    "--clients-per-actor",
    "2",
    *QUIET,
]


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("dfml") and "Traceback" not in err
    return lines[0]


def old_results(folder: Path) -> dict[str, bytes]:
    """A results folder as a previous run left it (faults.parquet included)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {name: f"old {name}".encode() for name in RUN_OUTPUTS if name != PARTS}
    for name, data in files.items():
        (folder / name).write_bytes(data)
    (folder / "notes.txt").write_text("mine")
    return files


def unchanged(folder: Path, files: dict[str, bytes]) -> bool:
    return all((folder / n).read_bytes() == data for n, data in files.items())


@pytest.fixture
def no_ray(monkeypatch):
    """Pretend no Ray runs here; record ``ray.shutdown``; ``ray.init`` must not be reached."""
    calls = {"init": 0, "shutdown": 0}

    def init(*args, **kwargs):
        calls["init"] += 1
        raise AssertionError("ray.init must not be called")

    def shutdown(*args, **kwargs):
        calls["shutdown"] += 1

    from ray._private import services

    monkeypatch.setattr(runner.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(runner.ray, "init", init)
    monkeypatch.setattr(runner.ray, "shutdown", shutdown)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    # no cluster recorded by 'ray start' on this machine, whatever other users run
    monkeypatch.setattr(services, "find_bootstrap_address", lambda temp_dir: None)
    return calls


# ----- 1. results are never overwritten or mixed ----------------------------------
def test_a_folder_with_results_is_refused_and_untouched(capsys, tmp_path, no_ray):
    out = tmp_path / "run"
    files = old_results(out)
    code, _, err = run_cli(capsys, "run", *TINY, "--out", str(out))
    line = one_line(err)
    assert code == 2 and str(out) in line and "already holds results" in line
    assert "--overwrite" in line
    assert unchanged(out, files) and no_ray["init"] == 0


def test_a_failed_ray_start_writes_nothing_even_with_overwrite(capsys, tmp_path, no_ray):
    out = tmp_path / "run"
    files = old_results(out)
    argv = ["run", *TINY, "--out", str(out), "--overwrite", "--ray-address", "127.0.0.1:1"]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "127.0.0.1:1" in one_line(err)
    assert unchanged(out, files), "old results were removed before Ray had started"
    fresh = tmp_path / "fresh"
    code, _, _ = run_cli(capsys, "run", *TINY, "--out", str(fresh), "--ray-address", "127.0.0.1:1")
    assert code == 2 and not fresh.exists(), "a run that never started left a folder"


def test_overwrite_removes_every_old_result_file(capsys, tmp_path):
    out = tmp_path / "run"
    old_results(out)
    (out / "metrics.parts").mkdir()
    (out / "metrics.parts" / "round-000007.parquet").write_bytes(b"old")
    argv = ["run", *TINY, "--backend", "local", "--out", str(out), "--overwrite"]
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert not (out / "faults.parquet").exists() and not (out / "metrics.parts").exists()
    assert (out / "notes.txt").read_text() == "mine", "only result files are removed"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["rounds_completed"] == 1
    assert pq.read_table(out / "metrics.parquet").num_rows == 4
    assert pq.read_table(out / "partition.parquet").num_rows > 0
    assert json.loads((out / "run.json").read_text())["options"]["clients"] == 4


def test_overwrite_and_resume_exclude_each_other(capsys, tmp_path):
    code, _, err = run_cli(capsys, "run", "--resume", str(tmp_path), "--overwrite")
    assert code == 2 and "--overwrite and --resume exclude each other" in one_line(err)


def test_compare_checks_every_folder_before_running(capsys, tmp_path, no_ray):
    root = tmp_path / "cmp"
    files = old_results(root / "fedprox" / "seed1")
    argv = ["compare", "--algorithms", "fedavg,fedprox", "--seeds", "0,1", *TINY]
    code, _, err = run_cli(capsys, *argv, "--out", str(root))
    line = one_line(err)
    assert code == 2 and str(root / "fedprox" / "seed1") in line
    assert unchanged(root / "fedprox" / "seed1", files) and no_ray["init"] == 0
    assert not (root / "fedavg").exists(), "nothing may run when one folder is refused"
    code, _, err = run_cli(capsys, *argv, "--out", str(tmp_path / "x"), "--resume", str(root))
    assert code == 2 and "--resume applies to dfml run, not dfml compare" in one_line(err)


def test_compare_validates_every_run_before_the_first_starts(capsys, tmp_path, no_ray):
    """The second algorithm's own rule (CHOCO-SGD needs fixed neighbours) is found in
    the one validation pass, before DFedAvg's run could start: nothing is written."""
    root = tmp_path / "cmp"
    argv = ["compare", "--algorithms", "dfedavg,choco-sgd", *TINY, "--topology", "epidemic"]
    code, _, err = run_cli(capsys, *argv, "--peers", "2", "--out", str(root))
    line = one_line(err)
    assert code == 2 and "'choco-sgd' needs the same neighbours every round" in line
    assert no_ray["init"] == 0 and not root.exists()


def test_compare_overwrite_replaces_exactly_its_own_files(capsys, tmp_path):
    root = tmp_path / "cmp"
    old_results(root / "fedavg" / "seed0")
    (root / "report.html").write_text("old report")
    (root / "table.md").write_text("old table")
    (root / "other").mkdir()
    argv = ["compare", "--algorithms", "fedavg", *TINY, "--backend", "local"]
    code, _, err = run_cli(capsys, *argv, "--out", str(root), "--overwrite")
    assert code == 0, err
    run = root / "fedavg" / "seed0"
    assert not (run / "faults.parquet").exists()
    assert json.loads((run / "summary.json").read_text())["status"] == "completed"
    assert (root / "table.md").read_text().startswith("| algorithm")
    assert "old report" not in (root / "report.html").read_text()
    assert (root / "other").is_dir()


def test_chaos_checks_every_folder_and_overwrite_clears_its_table(capsys, tmp_path, monkeypatch):
    root = tmp_path / "chaos"
    files = old_results(root / "recovery")
    options = {"chaos_rounds": "0", "clients": "4", "out": str(root)}
    with pytest.raises(ConfigError, match=r"recovery.*already holds results"):
        chaos.run_chaos(options, list(chaos.MODES))
    assert unchanged(root / "recovery", files)
    (root / "table.csv").write_text("old")
    seen = []

    def fake_execute(cfg, launch, out):
        assert not (root / "table.csv").exists(), "old table kept while the new runs ran"
        seen.append((out.name, launch.overwrite))
        return {"wall_seconds": 1.0}

    monkeypatch.setattr(chaos, "execute", fake_execute)
    monkeypatch.setattr(chaos, "init_ray", lambda *a: False)
    chaos.run_chaos({**options, "overwrite": "true"}, list(chaos.MODES))
    assert seen == [(m, True) for m in chaos.MODES]
    with pytest.raises(ConfigError, match="--resume applies to dfml run, not dfml chaos"):
        chaos.run_chaos({**options, "resume": str(root)}, ["none"])


# ----- 2. a Ray address that leads nowhere -------------------------------------------
@pytest.mark.parametrize(
    ("address", "message"),
    [
        ("127.0.0.1:1", "connection refused"),
        ("ray://127.0.0.1:1", "connection refused"),
        ("no-such-host.invalid:6379", "unknown host"),
        ("foo", "--ray-address must be auto, HOST:PORT or ray://HOST:PORT, got 'foo'"),
        ("127.0.0.1:99999", "--ray-address must be"),
        ("http://127.0.0.1:8265", "--ray-address must be"),
    ],
)
def test_an_unreachable_ray_address_is_one_line_within_seconds(
    capsys, tmp_path, no_ray, address, message
):
    t0 = time.monotonic()
    code, _, err = run_cli(
        capsys, "run", *TINY, "--out", str(tmp_path / "o"), "--ray-address", address
    )
    assert time.monotonic() - t0 < 30  # the probe itself is bounded by 2 x 5 s
    line = one_line(err)
    assert code == 2 and address in line and message in line
    assert no_ray["init"] == 0 and not (tmp_path / "o").exists()


def test_ray_address_auto_without_a_cluster(capsys, tmp_path, no_ray, monkeypatch):
    from ray._private import services

    monkeypatch.setattr(services, "find_gcs_addresses", lambda: [])
    monkeypatch.setattr(services, "find_bootstrap_address", lambda temp_dir: None)
    code, _, err = run_cli(
        capsys, "run", *TINY, "--out", str(tmp_path / "o"), "--ray-address", "auto"
    )
    line = one_line(err)
    assert code == 2 and "--ray-address auto: no Ray cluster is running" in line
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    code, _, err = run_cli(capsys, "run", *TINY, "--out", str(tmp_path / "o"))
    assert code == 2 and "RAY_ADDRESS 127.0.0.1:1: cannot reach" in one_line(err)
    assert no_ray["init"] == 0


def test_ray_connection_errors_become_one_line(capsys, tmp_path, no_ray, monkeypatch):
    def init(*args, **kwargs):
        raise ConnectionError("Failed to connect to Ray cluster at 1.2.3.4:6379\nmore")

    monkeypatch.setattr(runner, "probe", lambda *a: None)
    monkeypatch.setattr(runner.ray, "init", init)
    argv = ["run", *TINY, "--out", str(tmp_path / "o"), "--ray-address", "1.2.3.4:6379"]
    code, _, err = run_cli(capsys, *argv)
    line = one_line(err)
    assert code == 2 and "--ray-address 1.2.3.4:6379: Ray could not connect" in line
    assert no_ray["shutdown"] == 1


def test_object_store_size_reaches_ray_init_and_a_running_cluster_refuses_it(
    capsys, tmp_path, no_ray, monkeypatch
):
    sizes = []

    def init(*args, **kwargs):
        sizes.append(kwargs.get("object_store_memory"))
        # what Ray says when ray.init joins a cluster that `ray start` runs here
        raise ValueError(
            "When connecting to an existing cluster, object_store_memory must not be provided."
        )

    monkeypatch.setattr(runner.ray, "init", init)
    argv = ["run", *TINY, "--out", str(tmp_path / "o"), "--object-store-gb", "1.5"]
    code, _, err = run_cli(capsys, *argv)
    line = one_line(err)
    assert code == 2 and sizes == [int(1.5 * 2**30)]
    assert line.startswith("dfml: error: --object-store-gb sizes a Ray that dfml starts")
    assert "ray start --object-store-memory" in line and no_ray["shutdown"] == 1
    assert not (tmp_path / "o").exists()


def test_the_probe_knows_a_ray_gcs_from_other_servers(ray_session):
    probe("the test cluster", ray_session.get_runtime_context().gcs_address)

    silent, http = socket.socket(), socket.socket()
    for s in (silent, http):
        s.bind(("127.0.0.1", 0))
        s.listen(4)

    def answer_http() -> None:
        conn, _ = http.accept()
        with conn:
            conn.recv(100)
            conn.sendall(b"HTTP/1.1 400 Bad Request\r\n\r\n")

    threading.Thread(target=answer_http, daemon=True).start()
    try:
        with pytest.raises(ConfigError, match="something answers there, but not a Ray cluster"):
            probe("x", f"127.0.0.1:{http.getsockname()[1]}", timeout=2)
        t0 = time.monotonic()
        with pytest.raises(ConfigError, match=r"no answer within 0\.5 s"):
            probe("x", f"127.0.0.1:{silent.getsockname()[1]}", timeout=0.5)
        assert time.monotonic() - t0 < 5
    finally:
        silent.close()
        http.close()


# ----- 3. tracebacks that are now one line -------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--num-gpus-per-actor", "-1"], "num_gpus_per_actor must be a fraction in [0, 1]"),
        (["--num-gpus-per-actor", "inf"], "--num-gpus-per-actor must be a finite number"),
        (["--num-gpus-per-actor", "1.5"], "or a whole number of GPUs, got 1.5"),
        (["--num-cpus-per-actor", "-1"], "num_cpus_per_actor must be a positive finite number"),
        (["--num-cpus-per-actor", "0"], "num_cpus_per_actor must be a positive finite number"),
        (["--num-cpus-per-actor", "nan"], "--num-cpus-per-actor must be a finite number"),
        (["--clients-per-actor", "0"], "clients_per_actor must be >= 1, got 0"),
        (["--max-actors", "-2"], "max_actors must be >= 1, got -2"),
        (["--object-store-gb", "0"], "--object-store-gb must be 0.1 to"),
        (["--object-store-gb", "1e9"], "this machine's memory in GiB), got 1e+09"),
        (["--object-store-gb", "nan"], "--object-store-gb must be a finite number"),
    ],
)
def test_bad_resources_are_one_line(capsys, tmp_path, argv, message):
    code, _, err = run_cli(capsys, "run", *argv, "--out", str(tmp_path / "o"), *QUIET)
    assert code == 2 and message in one_line(err)


def test_out_naming_a_file_is_one_line(capsys, tmp_path, no_ray):
    target = tmp_path / "file"
    target.write_text("precious")
    for out, message in ((target, "is a file"), (target / "sub", "cannot be created")):
        code, _, err = run_cli(capsys, "run", *TINY, "--out", str(out))
        assert code == 2 and str(out) in (line := one_line(err)) and message in line
    assert target.read_text() == "precious"


def _refuse_network(monkeypatch) -> list[str]:
    asked: list[str] = []

    def urlopen(request, *args, **kwargs):
        asked.append(getattr(request, "full_url", str(request)))
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return asked


@pytest.mark.parametrize(
    ("dataset", "host"),
    [
        ("mnist", "ossci-datasets.s3.amazonaws.com"),
        ("emnist", "biometrics.nist.gov"),
        ("cifar10", "www.cs.toronto.edu"),
        ("medmnist:pathmnist", "zenodo.org"),
    ],
)
def test_a_failed_download_names_the_dataset_and_host(capsys, tmp_path, monkeypatch, dataset, host):
    asked = _refuse_network(monkeypatch)
    argv = ["run", "--dataset", dataset, "--data-root", str(tmp_path / "data"), "--download"]
    code, _, err = run_cli(capsys, *argv, "--out", str(tmp_path / "o"), *QUIET)
    line = one_line(err)
    assert code == 2 and asked, "the download was not even tried"
    assert f"dataset {dataset!r}: download from" in line and host in line
    assert "Connection refused" in line and not (tmp_path / "o").exists()


def _idx(array: np.ndarray) -> bytes:
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


@pytest.mark.parametrize(
    ("damage", "file", "message"),
    [
        (lambda b: b[:-100], "train-images-idx3-ubyte", "bytes where its header announces"),
        (lambda b: b"garbage" + b, "t10k-labels-idx1-ubyte", "not an idx file"),
        (lambda b: b[:2] + b"\x0d" + b[3:], "train-labels-idx1-ubyte", "type 0x0d"),
    ],
)
def test_damaged_mnist_files_are_named(capsys, tmp_path, damage, file, message):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for part, n in (("train", 6), ("t10k", 4)):
        (raw / f"{part}-images-idx3-ubyte").write_bytes(_idx(rng.integers(0, 256, (n, 28, 28))))
        (raw / f"{part}-labels-idx1-ubyte").write_bytes(_idx(rng.integers(0, 10, n)))
    (raw / file).write_bytes(damage((raw / file).read_bytes()))
    argv = ["run", "--dataset", "mnist", "--data-root", str(tmp_path), "--clients", "2"]
    code, _, err = run_cli(capsys, *argv, "--out", str(tmp_path / "o"), *QUIET)
    line = one_line(err)
    assert code == 2 and str(raw / file) in line and message in line


def test_mnist_images_and_labels_that_disagree_are_named(capsys, tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for part, n in (("train", 6), ("t10k", 4)):
        (raw / f"{part}-images-idx3-ubyte").write_bytes(_idx(np.zeros((n, 28, 28))))
        (raw / f"{part}-labels-idx1-ubyte").write_bytes(_idx(np.zeros(n + (part == "t10k"))))
    argv = ["run", "--dataset", "mnist", "--data-root", str(tmp_path), *QUIET]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and "holds 4 images but" in one_line(err) and "5 labels" in err


def test_yaml_scalar_for_a_list_option(tmp_path):
    cfg_file = tmp_path / "exp.yaml"
    cfg_file.write_text("pers_steps: 3\nhidden: 16\n")
    cfg, _ = build_config(options_from(build_parser().parse_args(["run", str(cfg_file)]), set()))
    assert cfg.evaluation.pers_steps == (3,) and cfg.model.hidden == (16,)


# ----- 4. nonsense that used to pass with exit 0 --------------------------------------
def test_checkpoint_uri_naming_a_file_is_refused(capsys, tmp_path, no_ray):
    target = tmp_path / "ckpt"
    target.write_text("not a folder")
    out = tmp_path / "o"
    code, _, err = run_cli(capsys, "run", *TINY, "--out", str(out), "--checkpoint-uri", str(target))
    assert code == 2 and "is a file" in one_line(err) and str(target) in err
    assert not out.exists() and target.read_text() == "not a folder"


def test_checkpoint_uri_holding_another_run_is_refused(capsys, tmp_path, no_ray):
    uri = tmp_path / "ckpt"
    (uri / "run" / "round-000004").mkdir(parents=True)
    (uri / "run" / "run.json").write_text("{}")
    argv = ["run", *TINY, "--out", str(tmp_path / "o"), "--checkpoint-uri", str(uri)]
    code, _, err = run_cli(capsys, *argv)
    line = one_line(err)
    assert code == 2 and "already holds a run (checkpoints of rounds [4])" in line
    assert (uri / "run" / "round-000004").is_dir()


# ----- 5. Ctrl-C while Ray starts -----------------------------------------------------
def test_ctrl_c_during_ray_start_shuts_ray_down_and_keeps_old_results(
    capsys, tmp_path, no_ray, monkeypatch
):
    def init(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(runner.ray, "init", init)
    out = tmp_path / "run"
    files = old_results(out)
    code, _, err = run_cli(capsys, "run", *TINY, "--out", str(out), "--overwrite")
    assert code == 130 and "interrupted" in err
    assert no_ray["shutdown"] == 1, "the Ray processes ray.init started were left running"
    assert unchanged(out, files), "the run never started, so nothing may be replaced"


# ----- 6. options the chosen setup does not read ---------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--degree", "3"], "--degree applies to topology k-regular or small-world, not ring"),
        (["--topology", "star", "--edge-probability", "0.5"], "applies to topology erdos-renyi"),
        (
            ["--topology", "k-regular", "--rewire-probability", "0.2"],
            "--rewire-probability applies to topology small-world, not k-regular",
        ),
        (["--peers", "2"], "--peers applies to topology epidemic, not ring"),
        (
            ["--topology", "k-regular", "--epidemic", "local"],
            "--epidemic applies to topology epidemic, not k-regular",
        ),
        (["--alpha", "0.1"], "--alpha applies to partition dirichlet, not iid"),
        (
            ["--model", "linear", "--hidden", "32"],
            "--hidden applies to model auto, mlp, cnn or resnet-lite, not model linear",
        ),
        (["--partition", "dirichlet", "--classes-per-client", "2"], "partition pathological"),
        (["--groups", "3"], "--groups applies to partition label-group, not iid"),
        (["--group-overlap", "0.5"], "--group-overlap applies to partition label-group"),
        (["--quantity-alpha", "2"], "--quantity-alpha applies to partition quantity, not iid"),
        (["--synthetic-samples", "100"], "applies to dataset synthetic, not digits"),
        (["--synthetic-shape", "8"], "--synthetic-shape applies to dataset synthetic"),
        (["--data-root", "/tmp"], "--data-root applies to the datasets read from files"),
        (["--download"], "--download applies to the datasets read from files"),
        (["--chaos-fraction", "0.5"], "--chaos-fraction applies to runs with --chaos-rounds"),
        (
            ["--chaos-kill-rate", "0.1", "--chaos-fraction", "0.5"],
            "--chaos-fraction applies to runs with --chaos-rounds, not a run without them",
        ),
        (["--chaos-mode", "sigkill"], "--chaos-mode applies to runs with chaos"),
        (
            ["--personalized-eval", "false", "--pers-steps", "1"],
            "--pers-steps applies to runs with --personalized-eval true",
        ),
        (
            ["--dashboard", "true", "--ray-address", "10.0.0.1:6379"],
            "--dashboard applies to a local Ray",
        ),
        (
            ["--object-store-gb", "2", "--ray-address", "10.0.0.1:6379"],
            "--object-store-gb applies to a Ray that dfml starts (--backend ray without "
            "--ray-address), not --ray-address 10.0.0.1:6379",
        ),
        (
            ["--object-store-gb", "2", "--backend", "local"],
            "--object-store-gb applies to a Ray that dfml starts",
        ),
        (["--rounds", "2", "--rounds", "3"], "--rounds given twice (2 and 3)"),
    ],
)
def test_an_option_the_setup_does_not_read_is_an_error(capsys, tmp_path, no_ray, argv, message):
    quiet = ["--progress", "false"] + ([] if "--dashboard" in argv else ["--dashboard", "false"])
    code, _, err = run_cli(capsys, "run", *argv, *quiet, "--out", str(tmp_path / "o"))
    assert code == 2 and message in one_line(err)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--peers", "0"], "peers must be >= 1, got 0"),
        (["--peers", "4"], "epidemic peers must be < number of live clients (4), got 4"),
        (
            ["--peers", "3", "--clients", "5"],
            "epidemic oracle draws a random 3-regular graph each round, which needs "
            "peers * live clients even, got 3 * 5",
        ),
        (
            ["--peers", "2", "--rounds", "3", "--schedule", "1:-2"],
            "schedule before round 1: epoch 1 (leaving [",
        ),
        (["--epidemic", "push"], "unknown epidemic sampler 'push'; allowed: oracle, local"),
        (
            ["--epidemic", "local", "--mixing", "metropolis-hastings"],
            "mixing 'metropolis-hastings' needs symmetric links",
        ),
    ],
)
def test_a_peer_count_the_epidemic_sampler_cannot_serve(capsys, tmp_path, no_ray, argv, message):
    """Checked before Ray starts, with the live clients of every round of the schedule."""
    options = dict(zip(TINY[::2], TINY[1::2], strict=True))  # TINY's flags, overridden
    options.update(zip(argv[::2], argv[1::2], strict=True))
    flags = [part for pair in options.items() for part in pair]
    code, _, err = run_cli(
        capsys, "run", *flags, "--topology", "epidemic", "--out", str(tmp_path / "o")
    )
    assert code == 2 and message in one_line(err)
    assert no_ray["init"] == 0 and not (tmp_path / "o").exists()


def test_the_partition_file_fixes_what_drawn_partitions_read(tmp_path):
    import pyarrow as pa

    table = pa.table(
        {
            "client": pa.array([0] * 12 + [1] * 12, pa.int32()),
            "split": ["meta_train"] * 8
            + ["query"] * 2
            + ["test"] * 2
            + ["meta_train"] * 8
            + ["query"] * 2
            + ["test"] * 2,
            "index": pa.array(range(24), pa.int64()),
        }
    )
    path = tmp_path / "partition.parquet"
    pq.write_table(table, path)
    for key, value in (("alpha", "0.3"), ("partition", "dirichlet"), ("min_samples", "5")):
        with pytest.raises(
            ConfigError, match=f"--{key.replace('_', '-')} applies to .* not --partition-file"
        ):
            build_config({"partition_file": str(path), key: value})
    assert build_config({"partition_file": str(path), "zeta": "0.5"})[0].run.clients == 2


def test_options_that_are_read_or_left_default_are_fine(tmp_path):
    build_config({})
    build_config({"topology": "small-world", "degree": "2", "rewire_probability": "0.3"})
    build_config({"partition": "dirichlet", "alpha": "0.3", "min_samples": "5"})
    build_config({"dataset": "synthetic", "synthetic_samples": "100"})
    build_config({"dataset": "mnist", "data_root": str(tmp_path), "download": "true"})
    build_config({"download": "false", "dashboard": "false", "ray_address": "10.0.0.1:6379"})
    build_config({"chaos_rounds": "1", "chaos_fraction": "0.5", "chaos_mode": "sigkill"})
    build_config({"chaos_kill_rate": "0.1", "chaos_mode": "sigkill"})
    # --resume re-reads every recorded option, read or not: exempt
    recorded = config_to_options(build_config({})[0])
    with pytest.raises(ConfigError, match="applies to"):
        build_config(recorded)
    assert build_config(recorded, allow_unused=recorded)[0].topology.topology == "ring"
    # dfml chaos: the run without failures drops the knobs that shape failures
    assert "chaos_fraction" not in chaos.mode_options("none", {"chaos_fraction": 0.5})
    jobs, _, _ = compare.plan({"alpha": "0.2", "partition": "dirichlet"}, ["fedavg"], [0])
    assert jobs[0].cfg.partition.alpha == 0.2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("clients: 4\nrounds: 2\nclients: 6\n", "gives key 'clients' twice (lines 1 and 3)"),
        ("local-epochs: 1\nlocal_epochs: 2\n", "gives key 'local_epochs' twice (lines 1 and 2)"),
    ],
)
def test_duplicate_yaml_keys_are_refused(capsys, tmp_path, text, message):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    code, _, err = run_cli(capsys, "run", str(path), *QUIET)
    assert code == 2 and message in one_line(err) and str(path) in err


def test_yaml_merge_keys_may_be_overridden(tmp_path):
    from dfml.launch.options import read_yaml

    path = tmp_path / "exp.yaml"
    path.write_text("<<: {clients: 4, rounds: 2}\nclients: 6\n")
    assert read_yaml(path) == {"clients": 6, "rounds": 2}


# ----- 7. non-finite numbers ----------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lr", "inf"], "--lr must be a finite number, got 'inf'"),
        (["--partition", "dirichlet", "--alpha", "inf"], "--alpha must be a finite number"),
        (["--partition", "quantity", "--quantity-alpha=-inf"], "got '-inf'"),
        (["--lr", "nan"], "--lr must be a finite number, got 'nan'"),
    ],
)
def test_non_finite_numbers_are_one_line_without_warnings(capsys, tmp_path, argv, message):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        code, _, err = run_cli(capsys, "run", *argv, *QUIET, "--out", str(tmp_path / "o"))
    assert code == 2 and message in one_line(err)


def test_config_classes_say_positive_finite(tmp_path):
    inf = float("inf")
    with pytest.raises(ConfigError, match="lr must be a positive finite number, got inf"):
        LocalSGDConfig(lr=inf)
    for name in ("alpha", "quantity_alpha"):
        with pytest.raises(ConfigError, match=f"{name} must be a positive finite number, got inf"):
            PartitionConfig(**{name: inf})
    yaml_file = tmp_path / "exp.yaml"
    yaml_file.write_text("lr: .inf\n")
    assert main(["run", str(yaml_file), "--out", str(tmp_path / "o")]) == 2


# ----- the summary says how a run ended --------------------------------------------------
def test_an_error_after_ray_started_is_exit_2_and_status_failed(capsys, tmp_path, ray_session):
    out = tmp_path / "run"
    argv = [a if a != "0.5" else "64" for a in TINY]  # --num-cpus-per-actor 64
    code, _, err = run_cli(capsys, "run", *argv, "--out", str(out))
    assert code == 2 and "--num-cpus-per-actor 64.0 exceeds" in one_line(err)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "failed" and "exceeds the cluster's" in summary["error"]
    assert summary["rounds_completed"] == 0


class CtrlCAtRound(Callback):
    def __init__(self, round_index: int) -> None:
        self.round_index = round_index

    def on_round_end(self, record) -> None:
        if record.round == self.round_index:
            raise KeyboardInterrupt


#: A small run a test interrupts after its round 1.
CTRL_C_RUN = {
    "dataset": "digits",
    "clients": 4,
    "rounds": 4,
    "model": "mlp",
    "hidden": 8,
    "local_epochs": 1,
    "personalized_eval": False,
    "num_cpus_per_actor": 0.5,
    "clients_per_actor": 2,
}


def test_ctrl_c_mid_run_writes_status_interrupted(tmp_path):
    """In process: the subject is the runner's path, not the actors."""
    cfg, _ = build_config({**CTRL_C_RUN, "backend": "local"})
    out = tmp_path / "run"
    launch = LaunchConfig(out=str(out), progress=False, dashboard=False)
    with pytest.raises(KeyboardInterrupt):
        runner.execute(cfg, launch, callbacks=[CtrlCAtRound(1)])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["rounds_completed"] == 2
    assert "Ctrl-C" in summary["error"]
    assert sorted(set(pq.read_table(out / "metrics.parquet").column("round").to_pylist())) == [0, 1]


class SigtermAtRound(Callback):
    """Sends this process SIGTERM when round ``round_index`` ends, as ``kill`` would."""

    def __init__(self, round_index: int) -> None:
        self.round_index = round_index

    def on_round_end(self, record) -> None:
        if record.round == self.round_index:
            os.kill(os.getpid(), signal.SIGTERM)
            signal.sigtimedwait([], 0)  # the handler runs here, in the main thread


def test_sigterm_mid_run_ends_it_as_interrupted_with_everything_kept(tmp_path):
    """Ray's SIGTERM handlers made this 'failed' (SystemExit: 15), or, with a local Ray,
    aborted the driver with a C++ stack dump (exit 134); the CLI's handler makes it an
    interrupt (the handler is reclaimed from ray.init: tests/launch/test_signals.py).
    In process (``--backend local``): the subject is the runner's path, not the actors."""
    cfg, _ = build_config({**CTRL_C_RUN, "rounds": 50, "backend": "local"})
    out = tmp_path / "run"
    launch = LaunchConfig(out=str(out), progress=False, dashboard=False)
    with sigterm_interrupts(), pytest.raises(Terminated):
        runner.execute(cfg, launch, callbacks=[SigtermAtRound(1)])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["rounds_completed"] == 2
    assert summary["error"] == "terminated by a signal (SIGTERM)"
    rounds = pq.read_table(out / "metrics.parquet").column("round").to_pylist()
    assert sorted(rounds) == [0] * 4 + [1] * 4


def test_ray_start_up_warnings_show_only_with_verbose():
    root = logging.getLogger()
    before = root.level
    try:
        root.setLevel(logging.WARNING)  # dfml run
        assert runner.ray_logging_level() == logging.ERROR
        root.setLevel(logging.DEBUG)  # dfml -v run
        assert runner.ray_logging_level() == logging.WARNING
    finally:
        root.setLevel(before)


@pytest.mark.ray
def test_a_bad_value_found_after_ray_starts_is_exactly_one_stderr_line(tmp_path):
    """A fresh local Ray with token authentication on by default printed its warning
    line before dfml's own (RAY_AUTH_MODE unset; HOME keeps its token file here)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_MODE", "RAY_ADDRESS")}
    env["HOME"] = str(tmp_path)
    argv = [a if a != "0.5" else "64" for a in TINY]  # --num-cpus-per-actor 64
    command = [sys.executable, "-m", "dfml.launch.cli", "run", *argv, "--ray-address", "local"]
    proc = subprocess.run(
        [*command, "--out", str(tmp_path / "o")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("dfml: error: --num-cpus-per-actor 64.0 exceeds")


# ----- compressed gossip ----------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--algorithm", "choco-sgd", "--compressor", "zip"],
            "unknown compressor 'zip'; allowed: none, topk, randk, qsgd, sign",
        ),
        (["--compressor", "zip"], "unknown compressor 'zip'; allowed: none, topk"),
        (["--algorithm", "choco-sgd", "--compression", "0"], "compression must be in (0, 1]"),
        (
            ["--compressor", "randk", "--compression", "1.5"],
            "compression must be in (0, 1], got 1.5",
        ),
        (
            ["--algorithm", "choco-sgd", "--compressor", "qsgd", "--levels", "0"],
            "levels must be an integer >= 1, got 0",
        ),
        (
            ["--algorithm", "fedavg", "--compressor", "topk"],
            "--compressor compresses the vectors clients gossip, but algorithm 'fedavg' "
            "aggregates at a server; allowed: afml, cdfedavg, choco-sgd, clfml, dfedavg",
        ),
        (
            ["--algorithm", "ditto", "--aggregation", "server", "--compressor", "sign"],
            "aggregation must be gossip, got 'server'",
        ),
        (["--algorithm", "choco-sgd", "--consensus-lr", "0"], "consensus_lr must be in (0, 1]"),
        (
            ["--compression", "0.1"],
            "--compression does not apply to algorithm 'dfedavg' without --compressor",
        ),
        (["--consensus-lr", "0.5"], "option --consensus-lr does not apply to algorithm 'dfedavg'"),
        (
            ["--algorithm", "choco-sgd", "--compressor", "sign", "--compression", "0.1"],
            "--compression applies to compressor topk or randk, not compressor sign",
        ),
        (
            ["--compressor", "topk", "--levels", "4"],
            "--levels applies to compressor qsgd, not compressor topk",
        ),
        (
            ["--algorithm", "choco-sgd", "--participation", "0.5"],
            "algorithm 'choco-sgd' needs every client in every round",
        ),
        (
            ["--algorithm", "choco-sgd", "--topology", "epidemic", "--peers", "2"],
            "algorithm 'choco-sgd' needs the same neighbours every round: "
            "--topology epidemic draws new ones each round",
        ),
    ],
)
def test_bad_compression_input_is_one_line_before_ray(capsys, tmp_path, no_ray, argv, message):
    code, _, err = run_cli(capsys, "run", *TINY, *argv, "--out", str(tmp_path / "o"))
    assert code == 2 and message in one_line(err)
    assert no_ray["init"] == 0 and not (tmp_path / "o").exists()


# ----- task heads -------------------------------------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task-head", "cosine"], "task_head must be one of linear, prototype, got 'cosine'"),
        (
            ["--algorithm", "clfml", "--task-head", "cosine"],
            "task_head must be one of linear, prototype, got 'cosine'",
        ),
        (
            ["--head-sharing", "all"],
            "head_sharing must be one of none, rows, prototypes, got 'all'",
        ),
        (
            ["--head-sharing", "prototypes", "--task-start", "scratch"],
            "head_sharing prototypes shares rows of trained models: it needs task_start trained",
        ),
        (
            ["--algorithm", "gfml", "--episode-head", "cosine"],
            "episode_head must be one of linear, prototype, got 'cosine'",
        ),
        (["--episode-head", "prototype"], "option --episode-head does not apply to algorithm"),
    ],
)
def test_bad_head_input_is_one_line_before_ray(capsys, tmp_path, no_ray, argv, message):
    argv = [*TINY, "--tasks", "2", *argv, "--out", str(tmp_path / "o")]
    code, _, err = run_cli(capsys, "run", *argv)
    assert code == 2 and message in one_line(err)
    assert no_ray["init"] == 0 and not (tmp_path / "o").exists()


def test_the_task_head_sets_the_episode_head_unless_given():
    cfg, _ = build_config({"algorithm": "clfml", "tasks": 2, "task_head": "prototype"})
    assert cfg.algorithm.episode_head == "prototype"
    cfg, _ = build_config(
        {"algorithm": "gfml", "tasks": 2, "task_head": "prototype", "episode_head": "linear"}
    )
    assert cfg.algorithm.episode_head == "linear"
    cfg, _ = build_config({"algorithm": "cdfedavg", "tasks": 2, "task_head": "prototype"})
    assert not hasattr(cfg.algorithm, "episode_head")  # a plain learner has no episodes


def test_compressor_none_is_the_algorithm_as_it_is(tmp_path):
    plain, _ = build_config({"algorithm": "dfedavg"})
    none, _ = build_config({"algorithm": "dfedavg", "compressor": "none"})
    assert none == plain
    choco, _ = build_config({"algorithm": "choco-sgd", "compressor": "none"})
    assert choco.algorithm.compressor == "none"  # CHOCO-SGD sends dense differences


# ----- client speeds and the asynchronous schedule --------------------------------
@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--speeds", "normal:1"], "--speeds must be lognormal:SIGMA with SIGMA >= 0, got"),
        (["--speeds", "lognormal:-0.5"], "SIGMA >= 0, got 'lognormal:-0.5'"),
        (["--stragglers", "0.2"], "--stragglers must be FRACTION:xFACTOR (e.g. 0.2:x10), got"),
        (["--stragglers", "1:x10"], "--stragglers fraction must be in [0, 1), got 1"),
        (["--stragglers", "0.2:x0.5"], "--stragglers slowdown must be >= 1 (times slower)"),
        (
            ["--speeds", "lognormal:1", "--stragglers", "0.1:x2"],
            "--speeds and --stragglers exclude each other",
        ),
        (["--schedule-mode", "eventual"], "unknown schedule_mode 'eventual'; allowed: sync, async"),
        (["--latency", "-1"], "--latency must be a number >= 0, got -1.0"),
        (
            ["--step-seconds", "0.5"],
            "--step-seconds applies to runs with --speeds, --stragglers, --latency or "
            "--schedule-mode async",
        ),
        (
            ["--schedule-mode", "async", "--algorithm", "fedavg"],
            "--schedule-mode async needs clients that gossip, but algorithm 'fedavg' "
            "aggregates at a server",
        ),
        (
            ["--schedule-mode", "async", "--algorithm", "choco-sgd"],
            "algorithm 'choco-sgd' must receive every message of every neighbour",
        ),
        (
            ["--schedule-mode", "async", "--algorithm", "cdfedavg", "--clusters", "auto"],
            "algorithm 'cdfedavg' runs phases of its own each round",
        ),
        (
            ["--schedule-mode", "async", "--topology", "epidemic", "--peers", "2"],
            "--schedule-mode async does not support --topology epidemic (new peers every round)",
        ),
        (
            ["--schedule-mode", "async", "--participation", "0.5"],
            "--schedule-mode async does not support --clients-per-round / --participation",
        ),
        (
            ["--schedule-mode", "async", "--dp-clip", "1", "--dp-noise", "1"],
            "--schedule-mode async does not support --dp-clip",
        ),
        (
            ["--schedule-mode", "async", "--robust-aggregation", "median"],
            "--schedule-mode async does not support --byzantine / --robust-aggregation",
        ),
    ],
)
def test_bad_speeds_and_schedules_are_one_line_before_ray(capsys, tmp_path, no_ray, argv, message):
    code, _, err = run_cli(capsys, "run", *TINY, *argv, "--out", str(tmp_path / "o"))
    assert code == 2 and message in one_line(err)
    assert no_ray["init"] == 0 and not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("client,step_seconds\n0,1\n1,1\n2,1\n", "has 3 clients; the run has 4"),
        ("client,step_seconds\n0,1\n1,1\n2,1\n3,\n", "line 5: missing step_seconds"),
        ("client,step_seconds\n0,1\n1,-2\n2,1\n3,1\n", "line 3: step_seconds must be > 0, got -2"),
        ("client,step_seconds\n0,1\n1,1\n2,slow\n3,1\n", "line 4: step_seconds 'slow' is not"),
    ],
)
def test_a_bad_speed_trace_is_one_line_before_ray(capsys, tmp_path, no_ray, text, message):
    trace = tmp_path / "trace.csv"
    trace.write_text(text)
    argv = ["--speed-trace", str(trace), "--out", str(tmp_path / "o")]
    code, _, err = run_cli(capsys, "run", *TINY, *argv)
    assert code == 2 and message in one_line(err) and str(trace) in err
    assert no_ray["init"] == 0 and not (tmp_path / "o").exists()
