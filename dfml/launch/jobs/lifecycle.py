"""A job's life on the cluster: what is submitted, its state, its log, its end.

``dfml submit`` builds the configuration here (a bad option fails before
anything is sent) and uploads the working directory without
:data:`EXCLUDES`; the job's state is polled until it is one of
:data:`TERMINAL`.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import secrets
import sys
import time
from pathlib import Path
from typing import Any

from dfml.errors import ConfigError, UserError
from dfml.launch.flags import options_from

log = logging.getLogger(__name__)

#: Seconds between two looks at a job's status or log.
POLL_S = 1.0
#: Job states after which nothing changes.
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
#: Seconds a submission waits for the head's job agent (just after ``ray up``
#: or ``ray start`` the dashboard answers before its agent has registered).
AGENT_WAIT_S = 60.0
#: What Ray's dashboard answers while no job agent is up yet.
NO_AGENT = "No available agent to submit job"
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


def status(client: Any, job: str) -> str:
    state = client.get_job_status(job)
    return str(getattr(state, "value", state))


def submit_when_ready(
    client: Any, wait_s: float = AGENT_WAIT_S, pause_s: float = POLL_S, **job: Any
) -> str:
    """``client.submit_job(**job)``, retried while the cluster has no job agent yet.

    A head that has just started answers HTTP before its job agent has
    registered and refuses every job with :data:`NO_AGENT`; that is a wait,
    not an error, for up to ``wait_s`` seconds. Any other refusal is raised
    at once.
    """
    deadline = time.monotonic() + wait_s
    while True:
        try:
            return client.submit_job(**job)
        except Exception as err:
            if NO_AGENT not in str(err) or time.monotonic() >= deadline:
                raise
            log.info("the cluster's job agent is not up yet; submitting again")
            time.sleep(pause_s)


def wait_terminal(client: Any, job: str, timeout: float) -> str:
    """Poll until the job reaches a terminal state (or ``timeout``); its last state."""
    deadline = time.monotonic() + timeout
    while True:
        state = status(client, job)
        if state in TERMINAL or time.monotonic() >= deadline:
            return state
        time.sleep(POLL_S / 2)


def follow_logs(client: Any, job: str) -> int:
    """Print the log as it grows until the job ends; 0 if it succeeded, else 1."""
    shown = 0
    while True:
        state = status(client, job)  # before reading, so the last read is complete
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


def job_options(args: argparse.Namespace) -> dict[str, Any]:
    """The YAML file overlaid with the flags, validated here; JSON-ready."""
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
