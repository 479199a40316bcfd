"""``dfml`` command line: ``dfml run [CONFIG.yaml] [--flags]`` and ``dfml list``.

Bad input (a flag, a config value, a dataset path, a topology) ends with one
line on stderr and exit code 2; no traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from dfml.errors import TrainingDivergedError, UserError

log = logging.getLogger("dfml")

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"dfml: error: {message}\n")


def _add_option_flags(parser: argparse.ArgumentParser) -> None:
    from dfml.launch.options import all_option_types, flag

    group = parser.add_argument_group("options (also valid as YAML keys; flags override the file)")
    for name, hint in sorted(all_option_types().items()):
        kwargs: dict[str, Any] = {"dest": name, "default": argparse.SUPPRESS, "metavar": "V"}
        if hint is bool:
            kwargs.update(nargs="?", const="true")
        group.add_argument(f"--{flag(name)}", **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dfml", description="Decentralized federated meta-learning on Ray.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    run = sub.add_parser("run", help="run one experiment")
    run.add_argument("config", nargs="?", help="YAML file of options")
    _add_option_flags(run)
    sub.add_parser("list", help="list algorithms, datasets, topologies, partitions, models")
    return parser


def options_from(args: argparse.Namespace) -> dict[str, Any]:
    from dfml.launch.options import read_yaml

    options = read_yaml(args.config) if args.config else {}
    skip = {"command", "config", "verbose"}
    options.update({k: v for k, v in vars(args).items() if k not in skip})
    return options


def init_ray(address: str | None, dashboard: bool) -> bool:
    """Start (or join) Ray unless this process already did; True if started here."""
    import ray

    if ray.is_initialized():
        return False
    ctx = ray.init(
        address=address,
        include_dashboard=dashboard,
        dashboard_host="127.0.0.1",
        logging_level=logging.WARNING,
    )
    if dashboard and ctx.dashboard_url:
        log.warning("Ray dashboard: http://%s", ctx.dashboard_url)
    return True


def command_run(options: dict[str, Any]) -> int:
    import ray

    from dfml.algorithms.callbacks import ProgressBar
    from dfml.experiment import prepare, run_experiment
    from dfml.launch.options import build_config, config_to_dict
    from dfml.launch.registry import algorithm_class
    from dfml.launch.results import ResultsWriter, summarize

    cfg, launch = build_config(options)
    algorithm = algorithm_class(cfg.run.algorithm)(cfg.algorithm)
    prepared = prepare(cfg)
    out = Path(launch.out)
    writer = ResultsWriter(out)
    writer.write_partition(prepared.splits)
    started = init_ray(launch.ray_address, launch.dashboard)
    bar = ProgressBar(cfg.run.rounds, f"{cfg.run.algorithm}/{cfg.data.dataset}", launch.progress)
    summary: dict[str, Any] = {
        "algorithm": cfg.run.algorithm,
        "dataset": cfg.data.dataset,
        "clients": cfg.run.clients,
        "rounds": cfg.run.rounds,
        "seed": cfg.run.seed,
        "topology": cfg.topology.topology,
        "param_count": prepared.param_count,
        "config": config_to_dict(cfg),
    }
    t0 = time.perf_counter()
    status, error = "completed", None
    try:
        result = run_experiment(cfg, algorithm, [bar, writer], prepared)
        summary["actors"] = len(result.actors)
        summary["devices"] = sorted({a["device"] for a in result.actors})
    except TrainingDivergedError as err:
        status, error = "diverged", str(err)
        raise
    finally:
        bar.close()
        summary.update(summarize(writer.history))
        summary.update(status=status, error=error, wall_seconds=time.perf_counter() - t0)
        writer.write_summary(summary)
        writer.plot(f"{cfg.run.algorithm} on {cfg.data.dataset}")
        if started:
            ray.shutdown()
    print(f"final_accuracy={summary['final_accuracy']:.4f}  results in {out}")
    return 0


def command_list() -> int:
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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    try:
        if args.command == "list":
            return command_list()
        return command_run(options_from(args))
    except UserError as err:
        print(f"dfml: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("dfml: interrupted; results written so far are kept", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
