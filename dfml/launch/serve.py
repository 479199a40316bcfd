"""``dfml serve``: train (or resume) a system, then serve on-demand tasks over HTTP.

Takes every option of ``dfml run`` (and ``--resume RUN``) plus ``--host`` and
``--port``. The address is checked before anything trains (a bad host or a
port in use is one line, exit 2); the run's results are written as by
``dfml run`` once training ends; then the trained system stays up and Ray
Serve answers on the address (:mod:`dfml.launch.serving`) until Ctrl-C or
SIGTERM, which shut Serve and the actors down and keep the results.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
from typing import Any

from dfml.errors import ConfigError
from dfml.experiment import Experiment
from dfml.launch.flags import add_option_flags, options_from

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8000


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "serve", help="train (or --resume) a system, then serve on-demand tasks over HTTP"
    )
    p.add_argument("config", nargs="?", help="YAML file of options")
    p.add_argument(
        "--host",
        default=DEFAULT_HOST,
        help=f"address to listen on; 0.0.0.0 for every interface (default: {DEFAULT_HOST})",
    )
    p.add_argument(
        "--port", default=str(DEFAULT_PORT), help=f"TCP port, 1-65535 (default: {DEFAULT_PORT})"
    )
    add_option_flags(p)
    p.set_defaults(handler=handle)


def check_address(host: str, port: str) -> tuple[str, int]:
    """(host, port) if this machine can listen there now; else one ConfigError line.

    Checked before training, so a taken port does not cost a run.
    """
    try:
        number = int(port)
    except ValueError:
        number = 0
    if not 1 <= number <= 65535 or str(number) != port.strip():
        raise ConfigError(f"--port {port!r} is not a TCP port; give a whole number in 1-65535")
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:
        raise ConfigError(
            f"--host {host!r} is not an IP address; give one of this machine's, such as "
            f"{DEFAULT_HOST} (this machine only) or 0.0.0.0 (every interface)"
        ) from None
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, number))
        except OSError as err:
            raise ConfigError(
                f"cannot listen on {host}:{number} ({err.strerror}); give a free --port "
                "or another --host"
            ) from None
    return host, number


def handle(args: argparse.Namespace) -> int:
    from dfml.launch.runner import launch_run

    host, port = check_address(args.host, args.port)
    options = options_from(args, {"host", "port"})

    def keep(exp: Experiment, summary: dict[str, Any]) -> None:
        from dfml.launch.serving.session import Serving

        with Serving(exp, host, port) as serving:
            print(
                f"final_accuracy={summary['final_accuracy']:.4f}  serving tasks on "
                f"{serving.url} (Ctrl-C stops)",
                flush=True,
            )
            serving.run()

    launch_run(options, keep)
    return 0
