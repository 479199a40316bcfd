"""Where the cluster is: the Ray dashboard address the job commands talk to, probed.

A missing, malformed or unreachable address is one line naming it, exit 2,
within :data:`CONNECT_TIMEOUT_S` seconds (the connection is checked in a
thread with a deadline before Ray's client, which has no timeout, is used).
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from dfml.errors import ConfigError

#: Seconds allowed for checking that the dashboard answers.
CONNECT_TIMEOUT_S = 5.0


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
