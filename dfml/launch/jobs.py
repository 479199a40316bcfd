"""Run experiments on a Ray cluster through the Ray Jobs API.

Commands (``--address http://HEAD:8265``, or ``RAY_API_SERVER_ADDRESS`` /
``RAY_ADDRESS`` set to that URL)::

    dfml submit CONFIG.yaml [--working-dir DIR] [--follow] [--flag value ...]
    dfml status JOB
    dfml logs JOB [--follow]
    dfml stop JOB [--timeout S]
    dfml fetch JOB OUT [--from URI]

``submit`` reads the YAML file and the flags the way ``dfml run`` does and
builds the configuration locally (a bad option fails here, exit 2, before
anything is sent). It uploads the working directory (the repository, without
``.venv``, ``runs``, ``.git``, data and caches) and starts the job
``python -m dfml.launch.jobs _run_job ID OPTIONS``: the options travel inside
the entry point as one JSON argument, so the config file needs not be inside
the working directory. The job runs the experiment on the cluster without a
progress bar (a bar redrawn with carriage returns is unreadable in a log
file); instead it prints one line per round (``round 3/10 acc=... loss=...``)
and, at the end, ``final_accuracy=...``. ``submit`` prints the job id on
stdout (``JOB=$(dfml submit exp.yaml)``); hints go to stderr.

Where the results go. A job's working directory is a package directory that
Ray shares between jobs with the same files and deletes when its cache is
full, so results are not written there. A relative ``--out`` (or none) puts
them in ``<Ray session dir>/dfml-jobs/<job id>/[<out>]`` on the node that runs
the job's driver (the head node: jobs are submitted without entry-point
resources); an absolute ``--out`` is used as given, e.g. a folder on storage
that the cluster and you share. The job prints
``dfml-job: results folder PATH on node NODE_ID`` in its log first thing.

How ``fetch`` brings them back. Chosen: a small *retrieval job* through the
same Jobs API. ``fetch`` reads the results line from the job's log, then
submits a job (a one-file working directory, needing only Python and Ray on
the cluster) that runs a Ray task pinned to the driver's node
(``NodeAffinitySchedulingStrategy(node, soft=False)``); the task packs the
folder as a ``tar.gz``, the retrieval job prints it base64-encoded between
markers with its SHA-256, and ``fetch`` decodes, checks and unpacks it into
OUT, then deletes the retrieval job. Why this way: it needs nothing but the
dashboard address that ``submit`` already uses; no Ray Client port
(``ray://``, which also wants the same Python version on both ends), no GCS
port and no shared file system. Limits: the folder passes through the
retrieval job's log (about 4/3 of its compressed size), which suits results
folders of up to a few hundred MB; results written on the head node last
until the cluster stops. For large results or clusters you tear down, give
the job an absolute ``--out`` on shared storage (or use ``--checkpoint-uri``)
and copy with ``dfml fetch JOB OUT --from URI`` (``s3://``, ``gs://``, or a
path visible here; copied with ``pyarrow.fs``, no cluster involved).

A missing, malformed or unreachable address is one line naming it, exit 2,
within :data:`CONNECT_TIMEOUT_S` seconds (the connection is checked in a
thread with a deadline before Ray's client, which has no timeout, is used).
An unknown job id is one line, exit 2.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import hashlib
import inspect
import io
import json
import logging
import os
import re
import secrets
import shlex
import sys
import tarfile
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from dfml.errors import ConfigError, UserError

#: Seconds allowed for checking that the dashboard answers.
CONNECT_TIMEOUT_S = 5.0
#: Seconds between two looks at a job's status or log.
POLL_S = 1.0
#: Job states after which nothing changes.
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
#: Left out of the uploaded working directory (Ray's ``excludes``, gitignore syntax).
EXCLUDES = [
    ".venv/",
    "venv/",
    ".git/",
    "runs/",
    "out/",
    "data/",
    "build/",
    "dist/",
    "*.egg-info/",
    "__pycache__/",
    ".pytest_cache/",
    ".ruff_cache/",
    ".mypy_cache/",
    ".hypothesis/",
    ".whl/",
    ".device/",
]
#: Options a submitted job sets itself.
JOB_SET = ("progress", "dashboard", "ray_address")
RESULTS_PREFIX = "dfml-job: results folder "
_RESULTS_LINE = re.compile(r"^dfml-job: results folder (.+) on node ([0-9a-fA-F]+)\s*$", re.M)
_BEGIN, _END, _ERROR = "DFML-FETCH-BEGIN", "DFML-FETCH-END", "DFML-FETCH-ERROR"


# ----- command line ----------------------------------------------------------
def add_parser(sub: Any) -> None:
    """Register ``submit``, ``status``, ``logs``, ``stop`` and ``fetch``."""
    from dfml.launch.cli import add_option_flags

    p = sub.add_parser(
        "submit",
        help="run one experiment as a job on a Ray cluster (Ray Jobs API)",
        description="Upload the working directory and run CONFIG (overlaid with the flags) "
        "as a Ray job; prints the job id.",
    )
    p.add_argument("config", nargs="?", help="YAML file of options (as for dfml run)")
    _address_flag(p)
    p.add_argument(
        "--working-dir",
        dest="working_dir",
        default=".",
        metavar="DIR",
        help="folder uploaded as the job's working directory: the dfml repository "
        "(default: .); .venv, .git, runs, data and caches are left out",
    )
    p.add_argument(
        "--follow",
        dest="follow",
        action="store_true",
        help="after submitting, stream the job's log until it ends",
    )
    add_option_flags(p)
    p.set_defaults(handler=submit_command)

    p = sub.add_parser("status", help="state of a Ray job (PENDING, RUNNING, SUCCEEDED, ...)")
    p.add_argument("job", help="job id printed by dfml submit")
    _address_flag(p)
    p.set_defaults(handler=status_command)

    p = sub.add_parser("logs", help="a Ray job's log")
    p.add_argument("job", help="job id printed by dfml submit")
    _address_flag(p)
    p.add_argument(
        "--follow",
        "-f",
        dest="follow",
        action="store_true",
        help="keep printing until the job ends; exit 0 if it succeeded, 1 otherwise",
    )
    p.set_defaults(handler=logs_command)

    p = sub.add_parser("stop", help="stop a Ray job and wait until it has stopped")
    p.add_argument("job", help="job id printed by dfml submit")
    _address_flag(p)
    p.add_argument(
        "--timeout",
        type=float,
        default=60.0,
        metavar="S",
        help="seconds to wait for the job to stop (default 60)",
    )
    p.set_defaults(handler=stop_command)

    p = sub.add_parser(
        "fetch",
        help="copy a job's results folder (summary.json, metrics.parquet, ...) here",
        description="Copy the results folder of JOB into OUT: from the node that ran the "
        "job (through a small retrieval job), or with --from from shared storage.",
    )
    p.add_argument("job", help="job id printed by dfml submit")
    p.add_argument("out", help="local folder to copy the results into (created if missing)")
    _address_flag(p)
    p.add_argument(
        "--from",
        dest="source",
        default=None,
        metavar="URI",
        help="copy from this folder on shared storage instead (s3://..., gs://..., or a "
        "path visible here: the job's absolute --out); the cluster is not contacted",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="seconds to wait for the retrieval job (default 300)",
    )
    p.set_defaults(handler=fetch_command)


def _address_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--address",
        dest="address",
        default=None,
        metavar="URL",
        help="Ray dashboard of the cluster, e.g. http://HEAD:8265 "
        "(default: $RAY_API_SERVER_ADDRESS, then $RAY_ADDRESS)",
    )


# ----- the cluster -----------------------------------------------------------
def resolve_address(given: str | None) -> str:
    """The dashboard URL: ``--address``, else the environment; ``host:port`` gets ``http://``."""
    address = given or os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
    if not address:
        raise ConfigError(
            "no Ray cluster address: pass --address http://HEAD:8265 (the Ray dashboard) "
            "or set RAY_ADDRESS; start a cluster with 'ray start --head' or 'ray up'"
        )
    address = address.strip().rstrip("/")
    if "://" not in address and re.fullmatch(r"[\w.\-]+:\d+", address):
        address = f"http://{address}"
    parts = urllib.parse.urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            f"Ray address {address!r} is not a dashboard URL; jobs need http://HEAD:8265 "
            "(not auto, ray://... or the GCS port)"
        )
    try:
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise ConfigError(f"Ray address {address!r} has a bad port") from None
    return address


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise ConfigError unless ``address`` answers HTTP within ``timeout`` seconds.

    Runs in a daemon thread with a deadline, so a slow name lookup or a host
    that drops packets cannot hold the command longer than ``timeout``.
    """
    outcome: list[BaseException | None] = []

    def probe() -> None:
        try:
            with urllib.request.urlopen(f"{address}/api/version", timeout=timeout):
                pass
            outcome.append(None)
        except urllib.error.HTTPError:
            outcome.append(None)  # something answers; the Jobs client says what
        except BaseException as err:
            outcome.append(err)

    thread = threading.Thread(target=probe, daemon=True, name="dfml-address-check")
    thread.start()
    thread.join(timeout)
    if not outcome:
        reason = f"no answer within {timeout:g} s"
    elif outcome[0] is None:
        return
    else:
        err = outcome[0]
        reason = str(getattr(err, "reason", "") or err) or type(err).__name__
    raise ConfigError(
        f"cannot reach the Ray dashboard at {address}: {reason}; start a cluster "
        "(ray start --head / ray up) or set --address"
    )


def connect(address: str | None) -> tuple[Any, str]:
    """A JobSubmissionClient for the cluster (checked to answer) and its URL."""
    url = resolve_address(address)
    check_reachable(url)
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(url), url
    except Exception as err:
        message = " ".join(str(err).split()) or type(err).__name__
        raise ConfigError(f"the Ray dashboard at {url} refused the Jobs API: {message}") from None


@contextlib.contextmanager
def quiet_ray() -> Any:
    """Ray's uploader logs every ignored file at INFO; keep it to errors unless -v."""
    logger = logging.getLogger("ray")
    if logging.getLogger().isEnabledFor(logging.DEBUG):
        yield
        return
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def job_info(client: Any, job: str, address: str) -> Any:
    """The job's JobDetails; one line if the cluster has no such job."""
    try:
        return client.get_job_info(job)
    except RuntimeError as err:
        if "404" in str(err) or "does not exist" in str(err):
            raise UserError(
                f"no job {job!r} on the Ray cluster at {address} "
                f"(list them with: ray job list --address {address})"
            ) from None
        raise


def _status(client: Any, job: str) -> str:
    state = client.get_job_status(job)
    return str(getattr(state, "value", state))


def wait_terminal(client: Any, job: str, timeout: float) -> str:
    """Poll until the job reaches a terminal state (or ``timeout``); its last state."""
    deadline = time.monotonic() + timeout
    while True:
        state = _status(client, job)
        if state in TERMINAL or time.monotonic() >= deadline:
            return state
        time.sleep(POLL_S / 2)


# ----- submit ----------------------------------------------------------------
def job_options(args: argparse.Namespace) -> dict[str, Any]:
    """The YAML file overlaid with the flags, validated here; JSON-ready."""
    from dfml.launch.cli import options_from
    from dfml.launch.options import build_config

    options = options_from(args, {"address", "working_dir", "follow"})
    if options.get("resume"):
        raise ConfigError(
            "dfml submit starts a new run; --resume is not supported for jobs "
            "(resume on the cluster with dfml run --resume)"
        )
    for key in JOB_SET:
        options.pop(key, None)
    build_config(options)  # a bad option fails here, before anything is sent
    try:
        return json.loads(json.dumps(options))
    except TypeError as err:
        raise ConfigError(f"an option cannot be sent to the job: {err}") from None


def submission_id(config: str | None) -> str:
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", Path(config).stem if config else "run").strip("-")
    return f"dfml-{stem[:40] or 'run'}-{secrets.token_hex(4)}"


def runtime_env_for(working_dir: str) -> dict[str, Any]:
    folder = Path(working_dir).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"--working-dir {working_dir!r} is not a folder")
    if not (folder / "dfml").is_dir():
        raise ConfigError(
            f"--working-dir {str(folder)!r} has no dfml package; submit from the dfml "
            "repository or pass --working-dir pointing to it"
        )
    return {"working_dir": str(folder.resolve()), "excludes": list(EXCLUDES)}


def submit_command(args: argparse.Namespace) -> int:
    options = job_options(args)
    runtime_env = runtime_env_for(args.working_dir)
    client, address = connect(args.address)
    job = submission_id(args.config)
    entrypoint = f"python -m dfml.launch.jobs _run_job {job} {shlex.quote(json.dumps(options))}"
    metadata = {"dfml": "run", "dfml_config": str(args.config or "")}
    try:
        with quiet_ray():
            client.submit_job(
                entrypoint=entrypoint,
                runtime_env=runtime_env,
                submission_id=job,
                metadata=metadata,
            )
    except Exception as err:
        message = " ".join(str(err).split()) or type(err).__name__
        raise UserError(f"the cluster at {address} did not accept the job: {message}") from None
    print(job, flush=True)
    print(
        f"submitted {job} to {address}; dfml logs {job} --follow --address {address}",
        file=sys.stderr,
    )
    if args.follow:
        return follow_logs(client, job)
    return 0


# ----- status, logs, stop ----------------------------------------------------
def status_command(args: argparse.Namespace) -> int:
    client, address = connect(args.address)
    info = job_info(client, args.job, address)
    state = str(getattr(info.status, "value", info.status))
    message = f" ({info.message})" if info.message else ""
    print(f"{args.job}: {state}{message}")
    return 0


def logs_command(args: argparse.Namespace) -> int:
    client, address = connect(args.address)
    job_info(client, args.job, address)
    if args.follow:
        return follow_logs(client, args.job)
    sys.stdout.write(client.get_job_logs(args.job))
    sys.stdout.flush()
    return 0


def follow_logs(client: Any, job: str) -> int:
    """Print the log as it grows until the job ends; 0 if it succeeded, else 1."""
    shown = 0
    while True:
        state = _status(client, job)  # before reading, so the last read is complete
        text = client.get_job_logs(job)
        if len(text) > shown:
            sys.stdout.write(text[shown:])
            sys.stdout.flush()
            shown = len(text)
        if state in TERMINAL:
            if state != "SUCCEEDED":
                print(f"dfml: job {job} ended {state}", file=sys.stderr)
            return 0 if state == "SUCCEEDED" else 1
        time.sleep(POLL_S)


def stop_command(args: argparse.Namespace) -> int:
    client, address = connect(args.address)
    info = job_info(client, args.job, address)
    state = str(getattr(info.status, "value", info.status))
    if state in TERMINAL:
        print(f"{args.job}: already {state}")
        return 0
    client.stop_job(args.job)
    state = wait_terminal(client, args.job, args.timeout)
    if state not in TERMINAL:
        raise UserError(f"job {args.job} did not stop within {args.timeout:g} s (still {state})")
    print(f"{args.job}: {state}")
    return 0


# ----- fetch -----------------------------------------------------------------
def results_location(log: str) -> tuple[str, str] | None:
    """(folder, node id) from the job's results line, if it printed one."""
    found = _RESULTS_LINE.findall(log)
    return (found[-1][0], found[-1][1]) if found else None


def fetch_command(args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{args.out!r} exists and is not a folder")
    if args.source:
        count = copy_from_uri(args.source, out)
        print(f"{out}: {count} files from {args.source}")
        return 0
    client, address = connect(args.address)
    info = job_info(client, args.job, address)
    state = str(getattr(info.status, "value", info.status))
    where = results_location(client.get_job_logs(args.job))
    if where is None:
        raise UserError(
            f"job {args.job} ({state}) has not reported a results folder; see dfml logs {args.job}"
        )
    folder, node = where
    data = retrieve(client, folder, node, args.timeout)
    count = unpack(data, out)
    note = (
        f"; the job is still {state}: these are the results so far" if state not in TERMINAL else ""
    )
    print(f"{out}: {count} files from {folder} on node {node[:12]}{note}")
    return 0


def copy_from_uri(uri: str, out: Path) -> int:
    """Copy the folder ``uri`` (s3://, gs://, file path) into ``out``; number of files."""
    import pyarrow.fs as pafs

    source = uri if "://" in uri else str(Path(uri).expanduser().resolve())
    try:
        fs, path = pafs.FileSystem.from_uri(source)
        info = fs.get_file_info(path)
    except Exception as err:
        raise ConfigError(f"cannot open {uri!r}: {' '.join(str(err).split())}") from None
    if info.type != pafs.FileType.Directory:
        raise ConfigError(f"{uri!r} is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(path, str(out.resolve()), source_filesystem=fs)
    return sum(1 for p in out.rglob("*") if p.is_file())


def _packer(folder: str, node: str, timeout: float) -> None:
    """Body of the retrieval job: pack ``folder`` on ``node``, print it between markers.

    Shipped as source (see :func:`packer_script`): it may import only the
    standard library and Ray.
    """
    import base64
    import hashlib
    import io
    import os
    import sys
    import tarfile

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    def pack(path):
        if not os.path.isdir(path):
            return None
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            tar.add(path, arcname=".")
        return buffer.getvalue()

    ray.init(logging_level="WARNING")
    task = ray.remote(num_cpus=0, max_retries=0)(pack).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)
    )
    try:
        data = ray.get(task.remote(folder), timeout=timeout)
    except Exception as err:
        message = " ".join(str(err).split())[:300]
        print(f"{_ERROR} cannot read {folder} on node {node}: {message}", flush=True)
        sys.exit(1)
    if data is None:
        print(f"{_ERROR} no folder {folder} on node {node}", flush=True)
        sys.exit(1)
    digest = hashlib.sha256(data).hexdigest()
    out = sys.stdout
    out.write(f"\n{_BEGIN} {digest} {len(data)}\n")
    out.write(base64.encodebytes(data).decode("ascii"))
    out.write(f"{_END}\n")
    out.flush()


def packer_script(folder: str, node: str, timeout: float) -> str:
    """A standalone Python file that runs :func:`_packer` for this folder."""
    return (
        f"_BEGIN, _END, _ERROR = {_BEGIN!r}, {_END!r}, {_ERROR!r}\n\n\n"
        + inspect.getsource(_packer)
        + f"\n\n_packer({folder!r}, {node!r}, {timeout!r})\n"
    )


def retrieve(client: Any, folder: str, node: str, timeout: float) -> bytes:
    """Run the retrieval job for ``folder`` on ``node``; the tar.gz bytes it printed."""
    with tempfile.TemporaryDirectory(prefix="dfml-fetch-") as tmp:
        Path(tmp, "dfml_fetch.py").write_text(packer_script(folder, node, timeout))
        with quiet_ray():
            fetch_job = client.submit_job(
                entrypoint="python dfml_fetch.py",
                runtime_env={"working_dir": tmp},
                submission_id=f"dfml-fetch-{secrets.token_hex(4)}",
                metadata={"dfml": "fetch", "dfml_folder": folder},
            )
    try:
        state = wait_terminal(client, fetch_job, timeout + 60)
        log = client.get_job_logs(fetch_job)
        if state not in TERMINAL:
            client.stop_job(fetch_job)
            raise UserError(f"fetching {folder} took longer than {timeout:g} s; try --timeout")
        return decode_packed(log, folder)
    finally:
        with contextlib.suppress(Exception):
            wait_terminal(client, fetch_job, 10)
            client.delete_job(fetch_job)


def decode_packed(log: str, folder: str) -> bytes:
    """The bytes between the markers of a retrieval job's log, checked."""
    error = re.search(rf"^{_ERROR} (.*)$", log, re.M)
    if error:
        raise UserError(error.group(1).strip())
    found = re.search(rf"^{_BEGIN} ([0-9a-f]{{64}}) (\d+)\n(.*?)^{_END}$", log, re.M | re.S)
    if not found:
        tail = " ".join(log.strip().splitlines()[-1:])[:300]
        raise UserError(f"the retrieval job for {folder} failed: {tail or 'no output'}")
    digest, size, text = found.groups()
    data = base64.b64decode("".join(text.split()))
    if len(data) != int(size) or hashlib.sha256(data).hexdigest() != digest:
        raise UserError(f"the copy of {folder} arrived damaged; run dfml fetch again")
    return data


def unpack(data: bytes, out: Path) -> int:
    """Extract a tar.gz into ``out`` (only plain files and folders); number of files."""
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = tar.getmembers()
        tar.extractall(out, filter="data")
    return sum(1 for m in members if m.isfile())


# ----- inside the job --------------------------------------------------------
def results_folder(out: str | None, job: str) -> Path:
    """Where the job writes: an absolute ``out`` as is, else under the Ray session dir."""
    if out and Path(out).expanduser().is_absolute():
        return Path(out).expanduser()
    root = None
    with contextlib.suppress(Exception):
        import ray

        root = Path(ray._private.worker._global_node.get_session_dir_path())
    if root is None:
        root = Path(tempfile.gettempdir())
    folder = root / "dfml-jobs" / job
    return folder / out if out else folder


def run_job(job: str, options_json: str) -> int:
    """``python -m dfml.launch.jobs _run_job ID OPTIONS``: the job's entry point."""
    import signal

    import ray

    from dfml.algorithms.callbacks import Callback
    from dfml.launch.options import build_config
    from dfml.launch.runner import execute

    class RoundLines(Callback):
        """One log line per round (the job's progress, readable in a log file)."""

        def __init__(self, rounds: int) -> None:
            self.rounds = rounds

        def on_round_end(self, record: Any) -> None:
            print(
                f"round {record.round + 1}/{self.rounds}  acc={record.mean('accuracy'):.4f}  "
                f"loss={record.mean('train_loss'):.4f}  {record.seconds:.2f}s",
                flush=True,
            )

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # dfml stop: results written so far are kept

    signal.signal(signal.SIGTERM, stop)
    options = json.loads(options_json)
    ray.init(logging_level="WARNING")  # the job's cluster (RAY_ADDRESS is set by Ray)
    try:
        out = results_folder(options.get("out"), job)
        options.update(out=str(out), progress=False, dashboard=False)
        cfg, launch = build_config(options)
        node = ray.get_runtime_context().get_node_id()
        print(f"{RESULTS_PREFIX}{out} on node {node}", flush=True)
        summary = execute(cfg, launch, callbacks=[RoundLines(cfg.run.rounds)])
        print(f"final_accuracy={summary['final_accuracy']:.4f}  results in {out}", flush=True)
        return 0
    except UserError as err:
        print(f"dfml: error: {err}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("dfml: stopped; results written so far are kept", file=sys.stderr, flush=True)
        return 130
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 3 and argv[0] == "_run_job":
        return run_job(argv[1], argv[2])
    print("usage: python -m dfml.launch.jobs _run_job JOB_ID OPTIONS_JSON", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
