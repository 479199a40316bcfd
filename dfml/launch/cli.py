"""``dfml`` command line: one subcommand per module, found through a table.

The table (:data:`COMMANDS`) imports each subcommand's module only when the
parser is built; the modules share the option flags through
:mod:`dfml.launch.flags` and never import this one.

Bad input (a flag, a config value, a dataset path, a topology, a Ray
address, a results folder) ends with one line on stderr and exit code 2; no
traceback. The rules are spelled out in :mod:`dfml.launch.options`.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from dfml.errors import UserError
from dfml.launch.flags import add_option_flags, options_from
from dfml.launch.signals import EXIT_TERMINATED, Terminated, sigterm_interrupts

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _run_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="run one experiment")
    p.add_argument("config", nargs="?", help="YAML file of options")
    add_option_flags(p)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from dfml.launch.runner import launch_run

    summary, launch, resumed = launch_run(options_from(args, set()))
    accuracy = f"final_accuracy={summary['final_accuracy']:.4f}  results in {launch.out}"
    print(accuracy if resumed is None else f"resumed at round {resumed}: {accuracy}")
    return 0


def _list_parser(sub: Any) -> None:
    p = sub.add_parser("list", help="list algorithms, datasets, topologies, ...")
    p.add_argument(
        "--verbose",
        dest="details",
        action="store_true",
        help="one line per algorithm: what it is, its paper and its Config class",
    )
    p.set_defaults(handler=_list)


def _list(args: argparse.Namespace) -> int:
    from dfml.data.config import PARTITIONS
    from dfml.data.registry import DATASETS
    from dfml.launch.registry import ALGORITHMS, CLUSTER_BY
    from dfml.models.zoo import MODELS
    from dfml.topology.config import MIXINGS, TOPOLOGIES

    rows = [
        ("cluster-by", CLUSTER_BY),
        ("datasets", DATASETS),
        ("partitions", PARTITIONS),
        ("topologies", TOPOLOGIES),
        ("mixing", MIXINGS),
        ("models", ["auto", *sorted(MODELS)]),
    ]
    if args.details:
        from dfml.launch.help import algorithm_lines

        print("algorithms:")
        for line in algorithm_lines():
            print(f"  {line}")
    else:
        rows.insert(0, ("algorithms", sorted(ALGORITHMS)))
    for title, names in rows:
        print(f"{title}: {', '.join(names)}")
    return 0


def _compare_parser(sub: Any) -> None:
    from dfml.launch.compare import add_parser

    add_parser(sub)


def _chaos_parser(sub: Any) -> None:
    from dfml.launch.chaos import add_parser

    add_parser(sub)


def _serve_parser(sub: Any) -> None:
    from dfml.launch.serve import add_parser

    add_parser(sub)


def _tune_parser(sub: Any) -> None:
    from dfml.launch.sweep import add_parser

    add_parser(sub)


def _report_parser(sub: Any) -> None:
    from dfml.launch.report import add_parser

    add_parser(sub)


def _recipes_parser(sub: Any) -> None:
    from dfml.launch.recipes import add_parser

    add_parser(sub)


def _jobs_parser(sub: Any) -> None:
    from dfml.launch.jobs.commands import add_parser

    add_parser(sub)


#: Subcommands: each adds its parser and sets ``handler``.
COMMANDS: list[Callable[[Any], None]] = [
    _run_parser,
    _list_parser,
    _compare_parser,
    _chaos_parser,
    _tune_parser,
    _serve_parser,
    _report_parser,
    _recipes_parser,
    _jobs_parser,
]


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="dfml", description="Decentralized federated meta-learning on Ray.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        with sigterm_interrupts():
            return args.handler(args)
    except UserError as err:
        print(f"dfml: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except Terminated:
        print("dfml: terminated (SIGTERM); results written so far are kept", file=sys.stderr)
        return EXIT_TERMINATED
    except KeyboardInterrupt:
        print("dfml: interrupted; results written so far are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
