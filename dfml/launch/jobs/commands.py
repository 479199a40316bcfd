"""The ``submit``, ``status``, ``logs``, ``stop`` and ``fetch`` subcommands."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from dfml.errors import ConfigError, UserError
from dfml.launch.flags import add_option_flags
from dfml.launch.jobs.dashboard import connect, quiet_ray
from dfml.launch.jobs.lifecycle import (
    TERMINAL,
    follow_logs,
    job_info,
    job_options,
    runtime_env_for,
    submission_id,
    submit_when_ready,
    wait_terminal,
)
from dfml.launch.jobs.retrieval import copy_from_uri, results_location, retrieve, unpack


def add_parser(sub: Any) -> None:
    """Register ``submit``, ``status``, ``logs``, ``stop`` and ``fetch``."""
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


def submit_command(args: argparse.Namespace) -> int:
    options = job_options(args)
    runtime_env = runtime_env_for(args.working_dir)
    client, address = connect(args.address)
    job = submission_id(args.config)
    entrypoint = f"python -m dfml.launch.jobs _run_job {job} {shlex.quote(json.dumps(options))}"
    metadata = {"dfml": "run", "dfml_config": str(args.config or "")}
    try:
        with quiet_ray():
            submit_when_ready(
                client,
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
