"""Run one configured experiment end to end and write its results folder.

Shared by ``dfml run`` and by commands that run several experiments
(``dfml compare``): Ray start-up, results files, summary keys.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray

from dfml.algorithms.callbacks import Callback, ProgressBar
from dfml.algorithms.evaluation import PersonalizedEvaluation
from dfml.errors import TrainingDivergedError
from dfml.experiment import ExperimentConfig, prepare, run_experiment
from dfml.fault.report import FaultReport
from dfml.launch.options import LaunchConfig, config_to_dict
from dfml.launch.registry import algorithm_class
from dfml.launch.results import ResultsWriter, summarize

log = logging.getLogger(__name__)


def init_ray(address: str | None, dashboard: bool) -> bool:
    """Start (or join) Ray unless this process already did; True if started here."""
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


def execute(
    cfg: ExperimentConfig,
    launch: LaunchConfig,
    out: Path | None = None,
    callbacks: Sequence[Callback] = (),
) -> dict[str, Any]:
    """Run ``cfg``; write summary.json, metrics.parquet, accuracy.png to ``out``.

    Results are written also when the run stops early (a diverged client):
    the summary then says ``status: diverged`` and the error is re-raised.
    Every callback's ``summary()`` is merged into summary.json.
    """
    out = Path(launch.out) if out is None else out
    algorithm = algorithm_class(cfg.run.algorithm)(cfg.algorithm)
    prepared = prepare(cfg)
    writer = ResultsWriter(out)
    writer.write_partition(prepared.splits)
    started = init_ray(launch.ray_address, launch.dashboard)
    bar = ProgressBar(cfg.run.rounds, f"{cfg.run.algorithm}/{cfg.data.dataset}", launch.progress)
    evaluation = PersonalizedEvaluation(cfg.evaluation, cfg.run.rounds)
    all_callbacks = [bar, evaluation, writer, *callbacks]
    if cfg.fault.active:
        all_callbacks.append(FaultReport(out))
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
        result = run_experiment(cfg, algorithm, all_callbacks, prepared)
        summary["actors"] = len(result.actors)
        summary["devices"] = sorted({a["device"] for a in result.actors})
    except TrainingDivergedError as err:
        status, error = "diverged", str(err)
        raise
    finally:
        bar.close()
        summary.update(summarize(writer.history))
        for cb in all_callbacks:
            summary.update(cb.summary())
        summary.update(status=status, error=error, wall_seconds=time.perf_counter() - t0)
        writer.write_summary(summary)
        writer.plot(f"{cfg.run.algorithm} on {cfg.data.dataset}")
        if started:
            ray.shutdown()
    return summary
