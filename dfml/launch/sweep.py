"""``dfml tune SPACE.yaml``: hyper-parameter sweeps on Ray Tune.

SPACE.yaml holds a search space over any ``dfml run`` option and,
optionally, options every trial shares (flags override them)::

    space:
      lr: {loguniform: [0.01, 0.5]}
      local_epochs: {choice: [1, 2, 3]}
      hidden: {grid: [8, 16]}
      mu: {uniform: [0.0, 1.0]}
    options:
      algorithm: fedprox
      dataset: digits

Each trial is a whole ``dfml run`` with its own results folder
(``OUT/trials/TRIAL``), driven by Ray Tune's ``Tuner``: ``--num-samples``
draws per grid point, ``--scheduler asha`` stops weak trials early from the
mean client accuracy each round reports (``fifo`` runs every trial to the
end), trials run as many at a time as the cluster's CPUs hold
(``--trial-cpus`` each), and an interrupted sweep continues with
``--resume OUT`` (Tune's own restore: finished trials are kept, unfinished
and errored ones run again). The objective
is any number of ``summary.json`` (``--metric``, ``--mode``); the sweep
writes ``OUT/table.md`` (every trial, best first) and ``OUT/best.json``.

Every trial's options are checked before Tune starts: each dimension's
bounds and values go through the same validation as ``dfml run`` (one line,
exit 2, for a bad name, a bad distribution, a value the option refuses).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dfml.errors import ConfigError, Interruption, TrainingDivergedError, UserError
from dfml.launch.flags import add_option_flags, options_from
from dfml.launch.options import build_config, read_yaml
from dfml.launch.validation import validate
from dfml.records import Callback, RoundRecord

log = logging.getLogger(__name__)

DISTRIBUTIONS = ("choice", "grid", "uniform", "loguniform")
SCHEDULERS = ("fifo", "asha")
MODES = ("max", "min")
#: Where Tune keeps its experiment state under OUT (what ``--resume`` restores).
TUNE_DIR = "tune"
#: The sweep's own settings (the flags that are not run options) and their defaults.
SETTINGS: dict[str, Any] = {
    "metric": "final_accuracy",
    "mode": "max",
    "num_samples": 1,
    "scheduler": "fifo",
    "trial_cpus": 1.0,
    "max_concurrent": 0,
}
#: Where a sweep keeps its settings, so that ``--resume`` continues it as it began.
SETTINGS_FILE = "sweep.json"
#: The per-round number ASHA compares trials by.
ROUND_METRIC = "accuracy"
#: The key of a trial's last report once its run has ended (Tune's own ``done``
#: is also set for the trials ASHA stopped).
COMPLETED = "dfml_run_ended"
#: Set in the last report of a trial whose run diverged: a result of its
#: configuration, not an error of the sweep.
DIVERGED = "dfml_run_diverged"


def parse_space(space: Any) -> dict[str, tuple[str, list[Any]]]:
    """``{option: {distribution: values}}`` → option → (distribution, values); one line if not."""
    if not isinstance(space, Mapping) or not space:
        raise ConfigError("the space file needs a non-empty 'space:' mapping of option: {kind: …}")
    parsed = {}
    for name, spec in space.items():
        if not isinstance(spec, Mapping) or len(spec) != 1:
            raise ConfigError(
                f"space option {name!r} must be one of {{{', '.join(DISTRIBUTIONS)}: …}}, "
                f"got {spec!r}"
            )
        ((kind, values),) = spec.items()
        if kind not in DISTRIBUTIONS:
            raise ConfigError(
                f"space option {name!r}: unknown distribution {kind!r}; "
                f"allowed: {', '.join(DISTRIBUTIONS)}"
            )
        if not isinstance(values, list) or not values:
            raise ConfigError(f"space option {name!r}: {kind} needs a non-empty list")
        if kind in ("uniform", "loguniform"):
            ok = len(values) == 2 and all(_finite(v) for v in values) and values[0] < values[1]
            if not ok or (kind == "loguniform" and values[0] <= 0):
                low = "0 < low < high" if kind == "loguniform" else "low < high"
                raise ConfigError(
                    f"space option {name!r}: {kind} needs [low, high] with {low}, got {values!r}"
                )
        parsed[str(name).replace("-", "_")] = (kind, list(values))
    return parsed


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def corner_points(space: Mapping[str, tuple[str, list[Any]]]) -> list[dict[str, Any]]:
    """Every listed value and both bounds of every range, in every combination of the
    first and last: what a trial may be given, checked before any trial starts."""
    per = {name: [values[0], values[-1]] for name, (_, values) in space.items()}
    points = [dict(zip(per, combo, strict=True)) for combo in itertools.product(*per.values())]
    for name, (kind, values) in space.items():
        if kind in ("choice", "grid"):
            points.extend({**points[0], name: v} for v in values[1:-1])
    return points


def tune_space(space: Mapping[str, tuple[str, list[Any]]]) -> dict[str, Any]:
    """The space in Ray Tune's terms."""
    from ray import tune

    make = {
        "choice": tune.choice,
        "grid": tune.grid_search,
        "uniform": lambda v: tune.uniform(*v),
        "loguniform": lambda v: tune.loguniform(*v),
    }
    return {name: make[kind](values) for name, (kind, values) in space.items()}


class StoppedEarly(Interruption):
    """The sweep's scheduler stopped this trial (Tune ends its thread by SystemExit)."""

    reason = "stopped early by the sweep's scheduler"


class RoundReporter(Callback):
    """Reports each round's mean client accuracy to Tune (what ASHA compares)."""

    def on_round_end(self, record: RoundRecord) -> None:
        from ray import tune

        try:
            tune.report({"round": record.round, ROUND_METRIC: record.mean("accuracy")})
        except SystemExit as stop:
            # the run ends ``interrupted`` with its results kept, then the trial stops
            raise StoppedEarly() from stop


def run_trial(config: dict[str, Any], base: dict[str, Any], root: str, metric: str) -> None:
    """One trial: a whole ``dfml run`` of ``base`` + ``config`` in ``ROOT/trials/TRIAL``.

    The folder is the sweep's own (a new sweep refuses a used OUT), so a trial
    that runs again there, as a restored sweep re-runs unfinished and errored
    trials, replaces what its interrupted attempt left. A diverged run is the
    trial's result (status ``diverged``), not an error.
    """
    from ray import tune

    from dfml.launch.runner import execute

    out = Path(root) / "trials" / tune.get_context().get_trial_id()
    options = {**base, **config, "out": str(out), "progress": False, "dashboard": False}
    cfg, launch = build_config({**options, "overwrite": True})
    try:
        summary = execute(cfg, launch, callbacks=[RoundReporter()])
    except StoppedEarly:
        raise SystemExit(0) from None  # how a stopped trial ends for Tune
    except TrainingDivergedError:
        summary = json.loads((out / "summary.json").read_text())  # written before it raised
    value = summary.get(metric)
    final = {"round": summary.get("rounds_completed", 0) - 1, COMPLETED: True}
    final[DIVERGED] = summary.get("status") == "diverged"
    final[ROUND_METRIC] = summary.get("final_accuracy")
    if _finite(value) and not final[DIVERGED]:  # a diverged configuration is never the best
        final[metric] = float(value)
    tune.report(final)


def run_sweep(
    space_file: str,
    flags: Mapping[str, Any],
    *,
    metric: str | None = None,
    mode: str | None = None,
    num_samples: int | None = None,
    scheduler: str | None = None,
    trial_cpus: float | None = None,
    max_concurrent: int | None = None,
) -> tuple[Path, list[dict[str, Any]]]:
    """Run the sweep (or, with ``resume`` among the flags, continue the one in that
    folder); write OUT/table.md and OUT/best.json; return (OUT, rows).

    A setting left ``None`` is :data:`SETTINGS`' default, or, resuming, what the
    sweep began with (OUT/sweep.json): a resumed sweep ranks its trials as it
    began, and a differing setting is refused.
    """
    doc = read_yaml(space_file)
    unknown = set(doc) - {"space", "options"}
    if unknown:
        raise ConfigError(f"space file {space_file!r}: unknown keys {sorted(unknown)}")
    space = parse_space(doc.get("space"))
    base = {**(doc.get("options") or {}), **flags}
    if "overwrite" in base:
        raise ConfigError("--overwrite applies to dfml run, not dfml tune; give another --out")
    resume = base.pop("resume", None)
    root = Path(str(resume or base.pop("out", "runs/tune"))).resolve()
    base.pop("out", None)
    given = {
        "metric": metric,
        "mode": mode,
        "num_samples": num_samples,
        "scheduler": scheduler,
        "trial_cpus": trial_cpus,
        "max_concurrent": max_concurrent,
    }
    settings = _settings(given, root, bool(resume))
    metric, mode, scheduler = settings["metric"], settings["mode"], settings["scheduler"]
    num_samples, trial_cpus = settings["num_samples"], settings["trial_cpus"]
    max_concurrent = settings["max_concurrent"]
    if mode not in MODES:
        raise ConfigError(f"--mode must be one of {', '.join(MODES)}, got {mode!r}")
    if scheduler not in SCHEDULERS:
        raise ConfigError(f"--scheduler must be one of {', '.join(SCHEDULERS)}, got {scheduler!r}")
    if num_samples < 1:
        raise ConfigError(f"--num-samples must be >= 1, got {num_samples}")
    if not (_finite(trial_cpus) and trial_cpus > 0):
        raise ConfigError(f"--trial-cpus must be a positive number, got {trial_cpus!r}")
    if max_concurrent < 0:
        raise ConfigError(
            f"--max-concurrent must be >= 0 (0: as many as fit), got {max_concurrent}"
        )
    for point in corner_points(space):
        cfg, _ = build_config({**base, **point, "out": str(root / "trials" / "check")})
        validate(cfg)
    state = root / TUNE_DIR
    if resume and not state.is_dir():
        raise ConfigError(f"--resume: {str(root)!r} holds no sweep to continue")
    if not resume and (state.exists() or (root / "table.md").exists()):
        raise ConfigError(
            f"results folder {str(root)!r} already holds a sweep; give another --out, "
            "or --resume OUT to continue it"
        )
    if not resume:
        root.mkdir(parents=True, exist_ok=True)
        (root / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
    limits = (num_samples, trial_cpus, max_concurrent)
    results = _fit(space, base, root, metric, scheduler, limits, bool(resume))
    rows = _rows(results, space, metric, mode, root / "trials")
    _await_stopped_summaries(rows)
    if not any(_finite(r.get(metric)) for r in rows):
        raise UserError(
            f"no trial reported --metric {metric!r}; give a number of summary.json "
            f"(e.g. final_accuracy); trials are in {root / 'trials'}"
        )
    (root / "table.md").write_text(markdown_table(rows, list(space), metric))
    best = rows[0]
    record = {
        "metric": metric,
        "mode": mode,
        "trial": best["trial"],
        "out": best["out"],
        metric: best[metric],
        "config": {k: best[k] for k in space},
    }
    (root / "best.json").write_text(json.dumps(record, indent=2) + "\n")
    return root, rows


def _settings(given: Mapping[str, Any], root: Path, resume: bool) -> dict[str, Any]:
    """The sweep's settings: the given ones over the defaults; resuming, the ones the
    sweep began with (a given one that differs is refused)."""
    chosen = {k: v for k, v in given.items() if v is not None}
    kept = root / SETTINGS_FILE
    if not (resume and kept.is_file()):
        return {**SETTINGS, **chosen}
    stored = {**SETTINGS, **json.loads(kept.read_text())}
    for key, value in chosen.items():
        if value != stored[key]:
            flag = "--" + key.replace("_", "-")
            raise ConfigError(
                f"{flag} {value}: the sweep in {str(root)!r} runs with {flag} {stored[key]}, "
                "and a resumed sweep keeps its settings; leave the flag out"
            )
    return stored


def _fit(
    space: Mapping[str, tuple[str, list[Any]]],
    base: dict[str, Any],
    root: Path,
    metric: str,
    scheduler: str,
    limits: tuple[int, float, int],
    resume: bool,
) -> Any:
    """Tune's run (or restore) of the sweep; ``limits``: samples, CPUs a trial,
    trials at a time (0: as many as the cluster holds)."""
    num_samples, trial_cpus, max_concurrent = limits
    import os

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # with verbose=0: no tables on stdout
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    started = False
    if not ray.is_initialized():
        from dfml.launch.runner import init_ray

        started = init_ray(base.get("ray_address"), False, base.get("object_store_gb"))
    try:
        trainable = tune.with_resources(
            tune.with_parameters(run_trial, base=base, root=str(root), metric=metric),
            {"cpu": trial_cpus},
        )
        if resume:
            tuner = tune.Tuner.restore(str(root / TUNE_DIR), trainable, resume_errored=True)
        else:
            chosen = (
                ASHAScheduler(time_attr="training_iteration", grace_period=1)
                if scheduler == "asha"
                else FIFOScheduler()
            )
            tuner = tune.Tuner(
                trainable,
                param_space=tune_space(space),
                tune_config=tune.TuneConfig(
                    metric=ROUND_METRIC,
                    mode="max",
                    num_samples=num_samples,
                    scheduler=chosen,
                    max_concurrent_trials=max_concurrent or None,
                    # a fresh process a trial: with reuse, a trial ASHA stops was
                    # dropped without its run writing summary.json
                    reuse_actors=False,
                ),
                run_config=tune.RunConfig(
                    name=TUNE_DIR, storage_path=str(root), verbose=0, log_to_file=True
                ),
            )
        return tuner.fit()
    finally:
        if started:
            ray.shutdown()


def _await_stopped_summaries(rows: list[dict[str, Any]], timeout: float = 15.0) -> None:
    """Give the trials ASHA stopped a moment to write their summary.json.

    Tune returns from ``fit`` once it has told a trial to stop, without waiting
    for the trial's thread, which is then ending its run (``interrupted``) and
    writing its results; a trial whose process Tune ends first keeps the rounds
    it streamed to metrics.parquet.
    """
    deadline = time.monotonic() + timeout
    waiting = [Path(r["out"]) for r in rows if r["status"] == "stopped"]
    while waiting and time.monotonic() < deadline:
        waiting = [out for out in waiting if not (out / "summary.json").is_file()]
        time.sleep(0.2)
    for out in waiting:
        log.warning("trial %s was stopped before it wrote summary.json", out.name)


def _rows(
    results: Any, space: Mapping[str, Any], metric: str, mode: str, trials: Path
) -> list[dict[str, Any]]:
    """One row per trial, best first (trials without the metric last; ties by trial id)."""
    rows = []
    for result in results:
        last = result.metrics or {}
        trial = last.get("trial_id", Path(result.path).name)
        rows.append(
            {
                "trial": trial,
                **{k: result.config.get(k) for k in space},
                metric: last.get(metric),
                "rounds": int(last["round"]) + 1 if "round" in last else 0,
                "status": _status(last),
                "out": str(trials / trial),
                "error": str(result.error).splitlines()[0] if result.error else "",
            }
        )
    sign = -1 if mode == "max" else 1

    def order(row: dict[str, Any]) -> tuple[bool, float, str]:
        value = row[metric]
        return (not _finite(value), sign * value if _finite(value) else 0.0, row["trial"])

    rows.sort(key=order)
    return rows


def _status(last: Mapping[str, Any]) -> str:
    """How a trial ended, from its last report (none: it failed before one)."""
    if last.get(DIVERGED):
        return "diverged"
    if last.get(COMPLETED):
        return "completed"
    return "stopped" if last else "failed"


def markdown_table(rows: list[dict[str, Any]], names: list[str], metric: str) -> str:
    columns = ["trial", *names, metric, "rounds", "status"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{row[c]:.4g}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def add_parser(sub: Any) -> None:
    p = sub.add_parser("tune", help="sweep run options on Ray Tune; write a table of the best")
    p.add_argument("space", help="YAML file: 'space:' option → {choice|grid|uniform|loguniform: …}")
    p.add_argument("--metric", help="summary.json number to optimise (default: final_accuracy)")
    p.add_argument("--mode", help="max or min (default: max)")
    p.add_argument("--num-samples", type=int, help="draws per grid point (default: 1)")
    p.add_argument(
        "--scheduler",
        help="fifo (every trial runs to the end) or asha (stops weak trials early; default: fifo)",
    )
    p.add_argument("--trial-cpus", type=float, help="CPUs per trial (default: 1)")
    p.add_argument(
        "--max-concurrent",
        type=int,
        help="trials at a time (default: 0, as many as the cluster's CPUs hold)",
    )
    p.epilog = "With --resume OUT, the sweep keeps the settings it began with (OUT/sweep.json)."
    add_option_flags(p)  # --resume OUT continues the sweep in OUT
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    skip = {"space", "metric", "mode", "num_samples", "scheduler", "trial_cpus", "max_concurrent"}
    flags = options_from(argparse.Namespace(**{**vars(args), "config": None}), skip)
    root, rows = run_sweep(
        args.space,
        flags,
        metric=args.metric,
        mode=args.mode,
        num_samples=args.num_samples,
        scheduler=args.scheduler,
        trial_cpus=args.trial_cpus,
        max_concurrent=args.max_concurrent,
    )
    metric = json.loads((root / "best.json").read_text())["metric"]
    print((root / "table.md").read_text(), end="")
    print(f"best: trial {rows[0]['trial']} ({metric}={rows[0][metric]}); results in {root}")
    return 0
