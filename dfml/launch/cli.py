"""``dfml`` command line: one subcommand per module, found through a table.

Bad input (a flag, a config value, a dataset path, a topology) ends with one
line on stderr and exit code 2; no traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from dfml.errors import UserError

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per config field (typed later, when configs are built)."""
    from dfml.launch.options import all_option_types, flag

    group = parser.add_argument_group("options (also valid as YAML keys; flags override the file)")
    for name, hint in sorted(all_option_types().items()):
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "metavar": "V"}
        if hint is bool:
            kwargs.update(nargs="?", const="true")
        group.add_argument(f"--{flag(name)}", **kwargs)


def options_from(args: argparse.Namespace, skip: set[str]) -> dict[str, Any]:
    """YAML file (if any) overlaid with the flags that were given."""
    from dfml.launch.options import read_yaml

    options = read_yaml(args.config) if getattr(args, "config", None) else {}
    skip = skip | {"command", "config", "verbose", "handler"}
    options.update({k: v for k, v in vars(args).items() if k not in skip})
    return options


def _run_parser(sub: Any) -> None:
    p = sub.add_parser("run", help="run one experiment")
    p.add_argument("config", nargs="?", help="YAML file of options")
    add_option_flags(p)
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from dfml.launch.options import build_config
    from dfml.launch.runner import execute

    cfg, launch = build_config(options_from(args, set()))
    summary = execute(cfg, launch)
    print(f"final_accuracy={summary['final_accuracy']:.4f}  results in {launch.out}")
    return 0


def _list_parser(sub: Any) -> None:
    sub.add_parser("list", help="list algorithms, datasets, topologies, ...").set_defaults(
        handler=_list
    )


def _list(args: argparse.Namespace) -> int:
    from dfml.data.config import PARTITIONS
    from dfml.data.registry import DATASETS
    from dfml.launch.registry import ALGORITHMS
    from dfml.models.zoo import MODELS
    from dfml.topology.config import MIXINGS, TOPOLOGIES

    for title, names in (
        ("algorithms", sorted(ALGORITHMS)),
        ("datasets", DATASETS),
        ("partitions", PARTITIONS),
        ("topologies", TOPOLOGIES),
        ("mixing", MIXINGS),
        ("models", ["auto", *sorted(MODELS)]),
    ):
        print(f"{title}: {', '.join(names)}")
    return 0


def _compare_parser(sub: Any) -> None:
    from dfml.launch.compare import add_parser

    add_parser(sub)


def _chaos_parser(sub: Any) -> None:
    from dfml.launch.chaos import add_parser

    add_parser(sub)


#: Subcommands: each adds its parser and sets ``handler``.
COMMANDS: list[Callable[[Any], None]] = [_run_parser, _list_parser, _compare_parser, _chaos_parser]


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
        return args.handler(args)
    except UserError as err:
        print(f"dfml: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("dfml: interrupted; results written so far are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
