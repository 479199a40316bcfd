"""The experiment options as command-line flags, shared by every subcommand that runs.

``dfml run``, ``compare``, ``chaos`` and ``jobs submit`` all take the same
options: one ``--flag`` per config field (:func:`add_option_flags`), read
back over a YAML file (:func:`options_from`). Kept apart from
:mod:`dfml.launch.cli`, so a subcommand module needs nothing from the CLI
that lists it.
"""

from __future__ import annotations

import argparse
from typing import Any

OPTIONS_NOTE = (
    "Every option is also a YAML key (--local-epochs 2 is local_epochs: 2); "
    "flags override the file. A bool flag alone means true. "
    "An option given that the chosen topology, partition, dataset or run does not read "
    "is an error, as is a key or flag given twice. "
    "A results folder that already holds results is refused unless --overwrite is given."
)


class StoreOnce(argparse.Action):
    """Store a flag's value; the same flag twice is a usage error, not 'the last wins'."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        if hasattr(namespace, self.dest):
            parser.error(
                f"{option_string} given twice ({getattr(namespace, self.dest)} and {values}); "
                "give it once"
            )
        setattr(namespace, self.dest, values)


def add_option_flags(parser: argparse.ArgumentParser) -> None:
    """One ``--flag`` per config field, grouped by concern, help from the config docstrings.

    Values stay strings here and are typed when the configs are built, so a
    YAML file and flags go through the same coercion and the same errors.
    """
    from dfml.launch.help import option_groups
    from dfml.launch.options import flag

    parser.epilog = OPTIONS_NOTE
    for group in option_groups():
        arguments = parser.add_argument_group(group.title, group.description)
        for option in group.options:
            kwargs: dict[str, Any] = {
                "dest": option.name,
                "action": StoreOnce,
                "default": argparse.SUPPRESS,
                "metavar": "V",
                "help": option.help.replace("%", "%%"),  # argparse %-formats help
            }
            if option.hint is bool:
                kwargs.update(nargs="?", const="true")
            arguments.add_argument(f"--{flag(option.name)}", **kwargs)


def options_from(args: argparse.Namespace, skip: set[str]) -> dict[str, Any]:
    """YAML file (if any) overlaid with the flags that were given."""
    from dfml.launch.options import read_yaml

    options = read_yaml(args.config) if getattr(args, "config", None) else {}
    skip = skip | {"command", "config", "verbose", "handler"}
    options.update({k: v for k, v in vars(args).items() if k not in skip})
    return options
