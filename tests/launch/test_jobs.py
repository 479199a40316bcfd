"""``dfml submit/status/logs/stop/fetch`` (Ray Jobs API).

The cluster tests start their own Ray head (``ray start --head --block`` in a
process group of its own, its own temp dir and ports) and tear it down by
process id, never with ``ray stop``. The commands run in this process through
their handlers, wrapped as ``dfml.launch.cli.main`` wraps them; nothing here
calls ``ray.init``.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from dfml.errors import UserError
from dfml.launch.cli import Parser
from dfml.launch.jobs import commands, dashboard, entry, lifecycle, retrieval

REPO = Path(__file__).resolve().parents[2]
TINY = {
    "dataset": "digits",
    "clients": 4,
    "rounds": 2,
    "model": "mlp",
    "hidden": 8,
    "local_epochs": 1,
    "personalized_eval": False,
    "num_cpus_per_actor": 0.5,
    "clients_per_actor": 2,
}


@functools.cache
def parser() -> Parser:
    p = Parser(prog="dfml")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)
    commands.add_parser(sub)
    return p


def dfml(capsys, *argv: str) -> tuple[int, str, str]:
    """Run one command as ``dfml.launch.cli.main`` does: UserError → one line, exit 2."""
    try:
        args = parser().parse_args(list(argv))
        code = args.handler(args)
    except UserError as err:
        print(f"dfml: error: {err}", file=sys.stderr)
        code = 2
    except SystemExit as exit_:
        code = exit_.code
    out, err = capsys.readouterr()
    return code, out, err


def write_config(folder: Path, **changes) -> Path:
    path = folder / "tiny.yaml"
    path.write_text(json.dumps({**TINY, **changes}))  # JSON is YAML
    return path


# ----- without a cluster -----------------------------------------------------
def test_unreachable_address_is_one_line_exit_2_fast(capsys):
    parser()  # built once (it imports every config class); time the command itself
    t0 = time.monotonic()
    code, _, err = dfml(capsys, "status", "some-job", "--address", "http://127.0.0.1:1")
    elapsed = time.monotonic() - t0
    assert code == 2
    assert err.count("\n") == 1
    assert err.startswith("dfml: error: cannot reach the Ray dashboard at http://127.0.0.1:1")
    assert elapsed < 10


def test_silent_address_is_bounded(capsys, monkeypatch):
    # A non-routable address: either refused at once or cut off by the deadline
    # (shortened from CONNECT_TIMEOUT_S so the wait costs the suite half a second).
    monkeypatch.setattr(
        dashboard, "check_reachable", functools.partial(dashboard.check_reachable, timeout=0.5)
    )
    parser()
    t0 = time.monotonic()
    code, _, err = dfml(capsys, "logs", "j", "--address", "http://10.255.255.1:8265")
    assert code == 2 and err.count("\n") == 1 and "10.255.255.1" in err
    assert time.monotonic() - t0 < 0.5 + 3


def test_missing_address_names_the_flag(capsys, monkeypatch):
    for name in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    code, _, err = dfml(capsys, "stop", "j")
    assert code == 2 and err.count("\n") == 1
    assert "no Ray cluster address: pass --address http://HEAD:8265" in err


def test_address_from_environment(monkeypatch):
    monkeypatch.delenv("RAY_API_SERVER_ADDRESS", raising=False)
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:8265")
    assert dashboard.resolve_address(None) == "http://10.0.0.5:8265"
    assert dashboard.resolve_address("https://head.example:443/") == "https://head.example:443"


@pytest.mark.parametrize("address", ["ray://head:10001", "auto", "http://", "http://h:99999"])
def test_malformed_address(capsys, address):
    code, _, err = dfml(capsys, "status", "j", "--address", address)
    assert code == 2 and err.count("\n") == 1 and "Ray address" in err


def test_submit_checks_the_config_before_contacting(capsys, tmp_path):
    config = write_config(tmp_path, clients=1)
    code, _, err = dfml(capsys, "submit", str(config), "--address", "http://127.0.0.1:1")
    assert code == 2 and err.count("\n") == 1 and "clients must be >= 2" in err
    code, _, err = dfml(capsys, "submit", str(config), "--clients", "3", "--no-such", "1")
    assert code == 2 and "unrecognized arguments: --no-such" in err


def test_submit_refuses_a_folder_without_dfml(capsys, tmp_path):
    config = write_config(tmp_path)
    code, _, err = dfml(
        capsys, "submit", str(config), "--working-dir", str(tmp_path), "--address", "h:1"
    )
    assert code == 2 and "has no dfml package" in err


def test_job_options_leave_progress_and_address_to_the_job(tmp_path):
    config = write_config(tmp_path, dashboard=True)
    args = parser().parse_args(
        ["submit", str(config), "--progress", "true", "--ray-address", "auto", "--lr", "0.2"]
    )
    options = lifecycle.job_options(args)
    assert options == {**TINY, "lr": "0.2"}


def test_results_folder_keeps_absolute_out(tmp_path):
    assert entry.results_folder(str(tmp_path / "r"), "job1") == tmp_path / "r"
    relative = entry.results_folder("runs/x", "job1")
    assert relative.parts[-4:] == ("dfml-jobs", "job1", "runs", "x")
    assert entry.results_folder(None, "job1").parts[-2:] == ("dfml-jobs", "job1")


def test_results_line_is_found_in_a_log():
    log = (
        "Running entrypoint for job j: python -m dfml.launch.jobs ...\n"
        f"{entry.RESULTS_PREFIX}/tmp/a b/dfml-jobs/j on node 0123abcd\n"
        "round 1/2  acc=0.5\n"
    )
    assert retrieval.results_location(log) == ("/tmp/a b/dfml-jobs/j", "0123abcd")
    assert retrieval.results_location("nothing here\n") is None


def packed(folder: Path) -> bytes:
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(folder, arcname=".")
    return buffer.getvalue()


def test_packed_results_round_trip_and_damage_is_caught(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "summary.json").write_text('{"rounds_completed": 2}')
    (src / "sub" / "x.bin").write_bytes(bytes(range(256)) * 50)
    data = packed(src)
    log = (
        "noise\n\n"
        f"{retrieval._BEGIN} {hashlib.sha256(data).hexdigest()} {len(data)}\n"
        f"{base64.encodebytes(data).decode()}{retrieval._END}\n"
    )
    assert retrieval.decode_packed(log, "F") == data
    assert retrieval.unpack(data, tmp_path / "out") == 2
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == {"rounds_completed": 2}
    assert (tmp_path / "out" / "sub" / "x.bin").read_bytes() == (src / "sub" / "x.bin").read_bytes()
    damaged = log.replace(f" {len(data)}\n", f" {len(data) + 1}\n")
    with pytest.raises(UserError, match="arrived damaged"):
        retrieval.decode_packed(damaged, "F")
    with pytest.raises(UserError, match="no folder /x on node n"):
        retrieval.decode_packed(f"{retrieval._ERROR} no folder /x on node n\n", "/x")
    with pytest.raises(UserError, match="retrieval job for F failed: Traceback"):
        retrieval.decode_packed("Traceback\n", "F")


def test_packer_script_is_standalone_python():
    script = retrieval.packer_script("/tmp/it's here", "abc", 60.0)
    compile(script, "dfml_fetch.py", "exec")
    assert "dfml" not in script.replace("dfml_fetch", "").replace("DFML-FETCH", "").lower()


def test_fetch_from_shared_storage(capsys, tmp_path):
    src = tmp_path / "shared" / "run1"
    src.mkdir(parents=True)
    (src / "summary.json").write_text('{"rounds_completed": 2}')
    (src / "metrics.parquet").write_bytes(b"PAR1")
    out = tmp_path / "here"
    code, stdout, _ = dfml(capsys, "fetch", "j", str(out), "--from", str(src))
    assert code == 0 and "2 files" in stdout
    assert json.loads((out / "summary.json").read_text())["rounds_completed"] == 2
    code, _, err = dfml(capsys, "fetch", "j", str(tmp_path / "b"), "--from", str(tmp_path / "nope"))
    assert code == 2 and "is not a folder" in err
    assert not (tmp_path / "b").exists() and not list(tmp_path.glob(".b.*"))


def test_fetch_keeps_an_existing_folder_unless_overwrite(capsys, tmp_path):
    src = tmp_path / "shared" / "run1"
    src.mkdir(parents=True)
    (src / "summary.json").write_text('{"rounds_completed": 2}')
    out = tmp_path / "here"
    out.mkdir()
    (out / "summary.json").write_text("precious")
    (out / "mine.txt").write_text("mine")
    code, _, err = dfml(capsys, "fetch", "j", str(out), "--from", str(src))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and f"folder '{out}' already holds files" in lines[0]
    assert (out / "summary.json").read_text() == "precious"
    # a failing --overwrite fetch leaves the old folder as it was
    code, _, err = dfml(capsys, "fetch", "j", str(out), "--from", str(src / "nope"), "--overwrite")
    assert code == 2 and (out / "summary.json").read_text() == "precious"
    code, _, _ = dfml(capsys, "fetch", "j", str(out), "--from", str(src), "--overwrite")
    assert code == 0 and json.loads((out / "summary.json").read_text())["rounds_completed"] == 2
    assert not (out / "mine.txt").exists(), "the folder is replaced as a whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["here", "shared"]


# ----- against a local Ray head ----------------------------------------------
def free_ports(count: int) -> list[int]:
    """``count`` distinct free ports: every socket stays bound until all are chosen
    (one at a time, the OS may hand the same port out twice, and Ray refuses two
    components on one port)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


def processes_under(folder: str) -> list[int]:
    """Live processes whose working directory or command line lies in ``folder``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            cwd = os.readlink(proc / "cwd")
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
            if state != "Z" and (cwd.startswith(folder) or folder in cmdline):
                found.append(int(proc.name))
    return found


def stop_head(head: subprocess.Popen, folder: str) -> list[int]:
    """End the head's process group, then any straggler of this cluster, by pid."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        head.wait(5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(head.pid, signal.SIGKILL)
    head.wait(10)
    deadline = time.monotonic() + 20
    while (left := processes_under(folder)) and time.monotonic() < deadline:
        for pid in left:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
    return processes_under(folder)


@pytest.fixture(scope="module")
def ray_head() -> Iterator[str]:
    """A local Ray head with the dashboard (Jobs API) on a free port; its URL."""
    folder = tempfile.mkdtemp(prefix="dfj", dir="/tmp")  # short: Ray's socket paths
    bin_dir = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS",)}
    env.update(RAY_AUTH_MODE="disabled", PATH=f"{bin_dir}:{env.get('PATH', '')}")
    names = [
        "port",
        "dashboard-port",
        "ray-client-server-port",
        "dashboard-agent-listen-port",
        "dashboard-agent-grpc-port",
        "runtime-env-agent-port",
        "metrics-export-port",
        "node-manager-port",
        "object-manager-port",
    ]
    ports = dict(zip(names, free_ports(len(names)), strict=True))
    dashboard = ports["dashboard-port"]
    command = [
        f"{bin_dir}/ray",
        "start",
        "--head",
        "--block",
        "--num-cpus=2",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        "--node-ip-address=127.0.0.1",
        "--disable-usage-stats",
        f"--temp-dir={folder}",
        *(f"--{name}={port}" for name, port in ports.items()),
    ]
    log = open(Path(folder) / "head.log", "w")  # noqa: SIM115
    head = subprocess.Popen(
        command, cwd=folder, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    address = f"http://127.0.0.1:{dashboard}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if head.poll() is not None:
                pytest.fail(f"ray start exited: {(Path(folder) / 'head.log').read_text()[-2000:]}")
            with contextlib.suppress(OSError):
                urllib.request.urlopen(f"{address}/api/jobs/", timeout=2).read()
                break
            if time.monotonic() > deadline:
                pytest.fail("the Ray head's Jobs API did not come up within 120 s")
            time.sleep(0.5)
        yield address
    finally:
        left = stop_head(head, folder)
        log.close()
        shutil.rmtree(folder, ignore_errors=True)
        assert not left, f"processes of the test cluster still running: {left}"


def wait_state(address: str, job: str, states: set[str], timeout: float) -> str:
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    state = lifecycle.wait_terminal(client, job, timeout)
    if state not in states:
        pytest.fail(f"job {job} is {state}, wanted {states}:\n{client.get_job_logs(job)[-3000:]}")
    return state


def wait_log(address: str, job: str, text: str, timeout: float) -> str:
    from ray.job_submission import JobSubmissionClient

    client = JobSubmissionClient(address)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        log = client.get_job_logs(job)
        if text in log:
            return log
        if lifecycle.status(client, job) in lifecycle.TERMINAL:
            break
        time.sleep(1)
    pytest.fail(f"{text!r} not in the log of {job}:\n{client.get_job_logs(job)[-3000:]}")


@pytest.mark.slow
def test_submit_status_logs_fetch(capsys, ray_head, tmp_path):
    # The job's lifecycle is under test, not its actors (tested on the shared session):
    # its clients stay in its driver.
    config = write_config(tmp_path, backend="local")
    code, out, err = dfml(
        capsys, "submit", str(config), "--address", ray_head, "--working-dir", str(REPO)
    )
    assert code == 0, err
    job = out.strip()
    assert job.startswith("dfml-tiny-") and "\n" not in job
    wait_state(ray_head, job, {"SUCCEEDED"}, 300)

    code, out, _ = dfml(capsys, "status", job, "--address", ray_head)
    assert code == 0 and out.startswith(f"{job}: SUCCEEDED")

    code, out, _ = dfml(capsys, "logs", job, "--address", ray_head)
    assert code == 0
    assert "round 1/2  acc=" in out and "round 2/2  acc=" in out and "final_accuracy=" in out
    code, followed, _ = dfml(capsys, "logs", job, "--follow", "--address", ray_head)
    assert code == 0 and followed == out

    code, out, err = dfml(capsys, "fetch", job, str(tmp_path / "got"), "--address", ray_head)
    assert code == 0, err
    summary = json.loads((tmp_path / "got" / "summary.json").read_text())
    assert summary["rounds_completed"] == 2 and summary["status"] == "completed"
    assert {"metrics.parquet", "run.json", "partition.parquet"} <= {
        p.name for p in (tmp_path / "got").iterdir()
    }

    code, _, err = dfml(capsys, "status", "no-such-job", "--address", ray_head)
    assert code == 2 and err.count("\n") == 1 and "no job 'no-such-job'" in err


@pytest.mark.slow
def test_stop_ends_a_long_job(capsys, ray_head, tmp_path):
    # What the long job runs does not matter here: its clients stay in its driver.
    config = write_config(tmp_path, rounds=5000, backend="local")
    code, out, err = dfml(
        capsys, "submit", str(config), "--address", ray_head, "--working-dir", str(REPO)
    )
    assert code == 0, err
    job = out.strip()
    wait_log(ray_head, job, "round 1/5000", 300)
    code, out, err = dfml(capsys, "stop", job, "--address", ray_head)
    assert code == 0, err
    assert out.strip() == f"{job}: STOPPED"
    code, out, _ = dfml(capsys, "status", job, "--address", ray_head)
    assert out.startswith(f"{job}: STOPPED")
    code, out, _ = dfml(capsys, "stop", job, "--address", ray_head)
    assert code == 0 and out.strip() == f"{job}: already STOPPED"


class AgentLater:
    """A Jobs client whose head refuses ``refusals`` submissions: no agent yet."""

    def __init__(self, refusals: int, error: str = lifecycle.NO_AGENT) -> None:
        self.refusals, self.error, self.calls = refusals, error, 0

    def submit_job(self, **job):
        self.calls += 1
        if self.calls <= self.refusals:
            raise RuntimeError(f"Request failed with status code 500: {self.error}, try later.")
        return job["submission_id"]


def test_submission_waits_for_the_job_agent_and_gives_up_at_the_deadline():
    client = AgentLater(refusals=2)
    assert lifecycle.submit_when_ready(client, pause_s=0, submission_id="j") == "j"
    assert client.calls == 3
    never = AgentLater(refusals=10**9)
    with pytest.raises(RuntimeError, match="No available agent"):
        lifecycle.submit_when_ready(never, wait_s=0.05, pause_s=0.01, submission_id="j")
    other = AgentLater(refusals=1, error="runtime_env is invalid")
    with pytest.raises(RuntimeError, match="invalid"):
        lifecycle.submit_when_ready(other, pause_s=0, submission_id="j")
    assert other.calls == 1  # any other refusal is not retried


@pytest.mark.e2e
def test_the_upload_keeps_the_package_and_leaves_out_results_and_data(tmp_path):
    """Matched as Ray matches ``excludes`` (its gitwildmatch spec): an unanchored
    ``data/`` left out dfml/data/, so a job ran without the package's data layer."""
    from ray._private.runtime_env.packaging import _get_excludes

    from dfml.launch.jobs.lifecycle import EXCLUDES

    excluded = _get_excludes(tmp_path, list(EXCLUDES))
    for kept in ("dfml/data/memory.py", "dfml/launch/runner.py", "tests/data/test_memory.py"):
        assert not excluded(tmp_path / kept), kept
    for left_out in ("data/MNIST/raw/x", "runs/quickstart/summary.json", ".venv/bin/python"):
        assert excluded(tmp_path / left_out), left_out
