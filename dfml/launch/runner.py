"""Run one configured experiment end to end and write its results folder.

Shared by ``dfml run`` and by commands that run several experiments
(``dfml compare``): Ray start-up, results files, summary keys.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ray

from dfml.algorithms.callbacks import Callback, ProgressBar
from dfml.algorithms.evaluation import PersonalizedEvaluation
from dfml.errors import ConfigError, TrainingDivergedError
from dfml.experiment import ExperimentConfig, prepare, run_experiment
from dfml.fault.report import FaultReport
from dfml.launch.options import LaunchConfig, config_to_dict, config_to_options
from dfml.launch.registry import algorithm_class
from dfml.launch.results import ResultsWriter, membership_summary, summarize
from dfml.runtime.checkpoint import RUN_FILE, Checkpoint, Checkpointer

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


def run_record(cfg: ExperimentConfig, out: Path) -> dict[str, Any]:
    """What ``--resume`` needs: every experiment option and the results folder."""
    return {"options": config_to_options(cfg), "out": str(out.resolve())}


def execute(
    cfg: ExperimentConfig,
    launch: LaunchConfig,
    out: Path | None = None,
    callbacks: Sequence[Callback] = (),
    resume: Checkpoint | None = None,
) -> dict[str, Any]:
    """Run ``cfg`` (or resume it from ``resume``); write the results folder ``out``.

    Results are written also when the run stops early: the summary's
    ``status`` says ``completed``, ``diverged`` (a client's loss became
    NaN), ``interrupted`` (Ctrl-C) or ``failed`` (with the error), and the
    error is re-raised. Every callback's ``summary()`` is merged into
    summary.json. With ``checkpoint_uri`` set, whole-run checkpoints are
    written every ``checkpoint_every`` rounds and ``run.json`` records the
    config for ``dfml run --resume``.
    """
    out = Path(launch.out) if out is None else out
    algorithm = algorithm_class(cfg.run.algorithm)(cfg.algorithm)
    prepared = prepare(cfg)
    checkpointer = None
    if cfg.fault.checkpoint_uri is not None:
        checkpointer = Checkpointer(cfg.fault.checkpoint_uri, cfg.fault.checkpoint_every)
        checkpointer.check_writable()
    writer = ResultsWriter(out)
    if resume is None:
        record = run_record(cfg, out)
        (out / RUN_FILE).write_text(json.dumps(record, indent=2) + "\n")
        if checkpointer is not None:
            checkpointer.write_run_file(record)
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
        "partition_repair_moves": prepared.partition_repair_moves,
        "config": config_to_dict(cfg),
    }
    t0 = time.perf_counter()
    status, error, runtime = "completed", None, None
    try:
        result = run_experiment(cfg, algorithm, all_callbacks, prepared, checkpointer, resume)
        runtime = result.runtime
        summary["actors"] = len(result.actors)
        summary["devices"] = sorted({a["device"] for a in result.actors})
    except TrainingDivergedError as err:
        status, error = "diverged", str(err)
        raise
    except KeyboardInterrupt:
        status, error = "interrupted", "interrupted by the user (Ctrl-C)"
        raise
    except BaseException as err:
        status, error = "failed", f"{type(err).__name__}: {err}"
        raise
    finally:
        bar.close()
        writer.finalize()
        test_sizes = {c: len(s.test) for c, s in enumerate(prepared.splits)}
        summary.update(summarize(writer.history, test_sizes=test_sizes))
        summary.update(membership_summary(writer.history))
        if runtime is not None:
            summary["joins"] = {r: ids for r, ids in sorted(runtime.joins.items())}
            summary["leaves"] = {r: ids for r, ids in sorted(runtime.leaves.items())}
        if resume is not None:
            summary["resumed_from_round"] = resume.round
        if checkpointer is not None:
            summary["checkpoint_seconds"] = checkpointer.seconds
            summary["checkpoint_bytes"] = checkpointer.bytes_written
        for cb in all_callbacks:
            summary.update(cb.summary())
        summary.update(status=status, error=error, wall_seconds=time.perf_counter() - t0)
        writer.write_summary(summary)
        writer.plot(f"{cfg.run.algorithm} on {cfg.data.dataset}")
        if started:
            ray.shutdown()
    return summary


def load_resume(target: str) -> tuple[dict[str, Any], Checkpointer]:
    """``--resume OUT`` (a results folder) or ``--resume URI`` (its checkpoint URI).

    Returns the run record (options, out) and the checkpointer to read from.
    """
    path = Path(target)
    if (path / RUN_FILE).is_file():
        record = json.loads((path / RUN_FILE).read_text())
    else:
        record = Checkpointer(target, 1).read_run_file()
    fault = record["options"]
    uri, every = fault.get("checkpoint_uri"), int(fault.get("checkpoint_every", 1))
    if not uri:
        raise ConfigError(
            f"the run in {target!r} wrote no checkpoints (it had no --checkpoint-uri); "
            "it cannot be resumed"
        )
    return record, Checkpointer(uri, every)
