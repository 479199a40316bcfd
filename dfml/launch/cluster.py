"""Which Ray cluster a run joins, and whether anything answers there, before ``ray.init``.

``ray.init`` retries an unreachable address for minutes (20 attempts of
about 40 s each in Ray 2.60, printing GCS warnings) and answers
``--ray-address auto`` without a cluster with a traceback. So the address
is resolved the way ``ray.init`` resolves it (``RAY_ADDRESS``, ``auto``, the
cluster last started with ``ray start``) and probed first: a TCP connection
and the HTTP/2 preface that every gRPC server (a Ray GCS, a Ray Client
server) answers with a SETTINGS frame, each bounded by
:data:`PROBE_SECONDS`. Anything else is one line naming the address.
"""

from __future__ import annotations

import os
import socket

from dfml.errors import ConfigError
from dfml.launch.options import check_ray_address, split_host_port

#: Seconds the TCP connect, and then the wait for the server's answer, may take.
PROBE_SECONDS = 5.0

_H2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_H2_EMPTY_SETTINGS = b"\x00\x00\x00\x04\x00\x00\x00\x00\x00"
_H2_SETTINGS_TYPE = 0x04
_LOCAL = "leave out --ray-address to start a local Ray"


def resolve(address: str | None) -> tuple[str, str, str] | None:
    """``(what, address, advice)`` of the cluster ``ray.init(address)`` would join.

    ``what`` names where the address came from and ``advice`` how to run
    without it, for messages. ``None``: Ray starts a local instance.
    """
    if address == "local":
        return None
    env = os.environ.get("RAY_ADDRESS")
    if env and address in (None, "auto"):
        try:
            check_ray_address(env)
        except ConfigError:
            raise ConfigError(
                f"RAY_ADDRESS must be auto, HOST:PORT or ray://HOST:PORT, got {env!r}"
            ) from None
        if env not in ("auto", "local"):
            return f"RAY_ADDRESS {env}", env, "unset RAY_ADDRESS to start a local Ray"
    elif address not in (None, "auto"):
        return f"--ray-address {address}", address, _LOCAL
    try:
        from ray._private import services

        found = services.canonicalize_bootstrap_address(address)
    except ConnectionError:
        raise ConfigError(
            "--ray-address auto: no Ray cluster is running on this machine; start one with "
            f"'ray start --head', or {_LOCAL}"
        ) from None
    except (ImportError, AttributeError):  # another Ray: let ray.init resolve it
        return None
    if found is None:
        return None
    if address == "auto":
        return f"--ray-address auto (found {found})", found, _LOCAL
    return (
        f"the Ray cluster last started on this machine with 'ray start' ({found})",
        found,
        "pass --ray-address local to start a local Ray instead",
    )


def _read(sock: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            break
        data += chunk
    return data


def probe(what: str, address: str, advice: str = _LOCAL, timeout: float = PROBE_SECONDS) -> None:
    """Raise one-line :class:`ConfigError` unless a gRPC server answers at ``address``.

    With ``RAY_USE_TLS`` set only the TCP connection is checked.
    """
    hostport = split_host_port(address)
    if hostport is None:
        raise ConfigError(f"{what}: must be auto, HOST:PORT or ray://HOST:PORT")
    host, port = hostport
    tls = os.environ.get("RAY_USE_TLS", "0").strip().lower() in ("1", "true")
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if tls:
                return
            sock.settimeout(timeout)
            sock.sendall(_H2_PREFACE + _H2_EMPTY_SETTINGS)
            head = _read(sock, 9)
    except socket.gaierror:
        reason = f"unknown host {host!r}"
    except ConnectionRefusedError:
        reason = "connection refused: nothing listens on that port"
    except TimeoutError:
        reason = f"no answer within {timeout:g} s"
    except OSError as err:
        reason = err.strerror or type(err).__name__
    else:
        if len(head) == 9 and head[3] == _H2_SETTINGS_TYPE:
            return
        reason = "something answers there, but not a Ray cluster"
    raise ConfigError(
        f"{what}: cannot reach a Ray cluster ({reason}); check the address "
        f"(HOST:PORT of the head's GCS, port 6379 by default, or ray://HOST:10001), or {advice}"
    )
