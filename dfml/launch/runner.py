"""Run one configured experiment end to end and write its results folder.

Shared by ``dfml run`` and by commands that run several experiments
(``dfml compare``): Ray start-up, results files, summary keys.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import ray
from pyarrow import fs as pafs

from dfml.actors.device import device_summary
from dfml.algorithms.base import Algorithm
from dfml.algorithms.evaluation import PersonalizedEvaluation
from dfml.errors import ConfigError, Interruption, TrainingDivergedError
from dfml.experiment import Experiment, ExperimentConfig, Prepared
from dfml.fault.report import FaultReport
from dfml.launch.cluster import probe, resolve
from dfml.launch.identity import RunRecord, load_resume
from dfml.launch.limits import check_path
from dfml.launch.options import (
    LaunchConfig,
    absolute_paths,
    build_config,
    check_resume_options,
    coerce,
    config_to_dict,
    config_to_options,
)
from dfml.launch.progress import ProgressBar
from dfml.launch.reaper import start as start_reaper
from dfml.launch.replacement import Replacement
from dfml.launch.results import (
    RUN_OUTPUTS,
    ResultsWriter,
    check_results_folder,
    membership_summary,
    summarize,
)
from dfml.launch.services import service_callbacks
from dfml.launch.signals import reclaim
from dfml.launch.tracking import Tracker
from dfml.launch.validation import validate
from dfml.records import Callback
from dfml.runtime.checkpoint import RUN_FILE, Checkpoint, Checkpointer

log = logging.getLogger(__name__)


def ray_logging_level() -> int:
    """Ray's own log level: its start-up warnings ("Token authentication is enabled",
    ...) only with ``-v``, so a run's stderr holds dfml's lines; errors always."""
    return logging.WARNING if logging.getLogger().isEnabledFor(logging.DEBUG) else logging.ERROR


#: The reapers of the local Rays this process started (:mod:`dfml.launch.reaper`),
#: held so that they are not reported as abandoned while they watch.
REAPERS: list[subprocess.Popen] = []

#: What ``dfml serve`` does with a trained system before its actors stop
#: (:func:`execute`'s ``keep``): (the live experiment, the written summary) → None.
KeepUp = Callable[[Experiment, dict[str, Any]], None]


def init_ray(address: str | None, dashboard: bool, object_store_gb: float | None = None) -> bool:
    """Start (or join) Ray unless this process already did; True if started here.

    The address is resolved and probed first (:mod:`dfml.launch.cluster`), so
    an unreachable one is one line within seconds, not minutes of retries.
    If ``ray.init`` fails or is interrupted (Ctrl-C), whatever it started is
    shut down before the error propagates. ``object_store_gb`` sizes the
    object store of a Ray started here; a cluster's is set by ``ray start``.
    """
    if ray.is_initialized():
        return False
    target = resolve(address)
    if target is not None:
        probe(*target)
    size = {} if object_store_gb is None else {"object_store_memory": int(object_store_gb * 2**30)}
    try:
        ctx = ray.init(
            address=address,
            include_dashboard=dashboard,
            dashboard_host="127.0.0.1",
            logging_level=ray_logging_level(),
            **size,
        )
    except ValueError as err:
        ray.shutdown()
        if not size:
            raise
        # Ray's words for joining a running cluster with a size given.
        raise ConfigError(
            "--object-store-gb sizes a Ray that dfml starts, but Ray joined the cluster "
            f"running here ({' '.join(str(err).split())}); give --ray-address local, or "
            "size the cluster with ray start --object-store-memory"
        ) from None
    except (ConnectionError, RuntimeError) as err:
        ray.shutdown()
        if isinstance(err, RuntimeError) and target is None:
            raise  # starting a local Ray failed: a bug or the machine, not the input
        what = target[0] if target is not None else "a local Ray"
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"{what}: Ray could not connect ({reason})") from None
    except BaseException:
        ray.shutdown()  # the processes this ray.init started (Ctrl-C during start-up)
        raise
    reclaim()  # ray.init installed SIGTERM handlers that would end the run as failed
    reaper = start_reaper()  # a local Ray's agents would outlive a SIGKILLed driver
    if reaper is not None:
        REAPERS.append(reaper)
    if dashboard and ctx.dashboard_url:
        log.warning("Ray dashboard: http://%s", ctx.dashboard_url)
    return True


def check_checkpoints(checkpointer: Checkpointer, overwrite: bool) -> None:
    """A fresh run refuses a checkpoint URI that holds another run's checkpoints.

    Mixing them would let checkpoint pruning delete the new run's rounds and a
    later ``--resume`` continue the old run.
    """
    rounds = checkpointer.rounds()
    has_run = checkpointer.fs.get_file_info(f"{checkpointer.base}/{RUN_FILE}").type
    if (rounds or has_run == pafs.FileType.File) and not overwrite:
        held = f"checkpoints of rounds {sorted(rounds)}" if rounds else RUN_FILE
        raise ConfigError(
            f"checkpoint_uri {checkpointer.uri!r} already holds a run ({held}); give another "
            "--checkpoint-uri, --overwrite to replace it, or --resume OUT to continue it"
        )


def check_results(out: Path, launch: LaunchConfig, resume: Checkpoint | None = None) -> None:
    """Fail now (nothing written) if ``out`` cannot take the run's results."""
    if resume is not None:
        check_results_folder(out, overwrite=True)  # it holds the run's own results
        return
    record = out / RUN_FILE
    hint = ""
    if record.is_file():
        try:
            if json.loads(record.read_text())["options"].get("checkpoint_uri"):
                hint = f", or --resume {out} to continue that run"
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            pass
    check_results_folder(out, launch.overwrite, hint=hint)


def _set_up(
    out: Path,
    prepared: Prepared,
    checkpointer: Checkpointer | None,
    resume: Checkpoint | None,
    record: RunRecord,
    replacement: Replacement | None,
) -> ResultsWriter:
    """Move old results aside (``--overwrite``), create the folder, write run.json and
    the partition (and run.json beside the checkpoints, once no old run's are there)."""
    try:
        if replacement is not None:
            replacement.move_aside()
        writer = ResultsWriter(out, {c: len(sp.test) for c, sp in enumerate(prepared.splits)})
        if resume is None:
            (out / RUN_FILE).write_text(record.to_json())
            if checkpointer is not None and replacement is None:
                checkpointer.write_run_file(record.to_json())
            writer.write_partition(prepared.splits)
    except OSError as err:
        raise ConfigError(f"results folder {str(out)!r} cannot be written ({err})") from None
    return writer


def execute(
    cfg: ExperimentConfig,
    launch: LaunchConfig,
    out: Path | None = None,
    callbacks: Sequence[Callback] = (),
    resume: Checkpoint | None = None,
    record: RunRecord | None = None,
    keep: KeepUp | None = None,
) -> dict[str, Any]:
    """Run ``cfg`` (or resume it from ``resume``); write the results folder ``out``.

    ``record`` is the resumed run's identity (:mod:`dfml.launch.identity`);
    a new run makes its own and writes it as ``run.json``.

    Everything that can be checked is checked before anything is written:
    the config's one validation pass (:func:`~dfml.launch.validation.validate`:
    data, partition, topology, schedule, algorithm, services), the results
    folder (refused if it holds results, unless ``launch.overwrite``), the
    checkpoint URI, and Ray's start. Only then are old results moved aside
    (``--overwrite``) and new ones written; the old ones are removed once the
    run's actors have started, and put back if it ends before
    (:mod:`dfml.launch.replacement`).

    Results are written also when the run stops early: the summary's
    ``status`` says ``completed``, ``diverged`` (a client's loss became
    NaN), ``interrupted`` (Ctrl-C or SIGTERM) or ``failed`` (with the error), and the
    error is re-raised. Every callback's ``summary()`` is merged into
    summary.json. With ``checkpoint_uri`` set, whole-run checkpoints are
    written every ``checkpoint_every`` rounds and ``run.json`` records the
    config for ``dfml run --resume``.

    ``keep`` (``dfml serve``): called with the trained, still running
    experiment and the summary once a completed run's results are written;
    the actors stop (and a Ray started here shuts down) when it returns or
    raises, Ctrl-C included.
    """
    out = Path(launch.out) if out is None else out
    valid = validate(cfg)
    prepared, algorithm, setup = valid.prepared, valid.algorithm, dict(valid.seconds)
    check_results(out, launch, resume)
    if record is None:
        record = RunRecord.new(config_to_options(cfg), out)
    checkpointer = None
    if cfg.fault.checkpoint_uri is not None:
        checkpointer = Checkpointer(
            cfg.fault.checkpoint_uri, cfg.fault.checkpoint_every, run_id=record.run_id
        )
        checkpointer.check_writable()
        if resume is None:
            check_checkpoints(checkpointer, launch.overwrite)
    started = False
    if cfg.resources.backend == "ray":
        t0 = time.perf_counter()
        started = init_ray(launch.ray_address, launch.dashboard, launch.object_store_gb)
        setup["ray"] = time.perf_counter() - t0
    replacement = None
    if resume is None and launch.overwrite:
        replacement = Replacement(out, RUN_OUTPUTS, checkpointer, record)
        callbacks = [*callbacks, replacement]
    try:
        writer = _set_up(out, prepared, checkpointer, resume, record, replacement)
        return _run(
            cfg,
            launch,
            out,
            algorithm,
            prepared,
            writer,
            callbacks,
            checkpointer,
            resume,
            setup,
            keep,
        )
    finally:
        if replacement is not None:
            replacement.settle()
        if started:
            ray.shutdown()


def _run(
    cfg: ExperimentConfig,
    launch: LaunchConfig,
    out: Path,
    algorithm: Algorithm,
    prepared: Prepared,
    writer: ResultsWriter,
    callbacks: Sequence[Callback],
    checkpointer: Checkpointer | None,
    resume: Checkpoint | None,
    setup: dict[str, float],
    keep: KeepUp | None = None,
) -> dict[str, Any]:
    """Run on the started Ray; summary.json is written however the run ends.

    ``setup``: seconds already spent before the run (``data``: load,
    partition, topology; ``ray``: Ray's start); the actors' start is added
    as ``actors``, and their sum is ``setup_seconds``. ``keep``: see :func:`execute`.
    """
    with ExitStack() as stack:  # the experiment's actors stop when it closes
        t0 = time.perf_counter()
        status, error, runtime = "completed", None, None
        bar = ProgressBar(
            cfg.run.rounds, f"{cfg.run.algorithm}/{cfg.data.dataset}", launch.progress
        )
        all_callbacks: list[Callback] = [bar, writer]
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
        try:
            evaluation = PersonalizedEvaluation(cfg.evaluation, cfg.run.rounds)
            all_callbacks = [bar, evaluation, writer, *callbacks]
            if launch.tracking:
                name = f"{cfg.run.algorithm}-{cfg.data.dataset}-seed{cfg.run.seed}-{out.name}"
                all_callbacks.append(
                    Tracker(
                        launch.tracking,
                        out,
                        summary["config"],
                        name,
                        launch.tracking_uri,
                        launch.tensorboard_dir,
                    )
                )
            if cfg.fault.active:
                all_callbacks.append(FaultReport(out))
            all_callbacks.extend(service_callbacks(cfg, prepared, out))
            experiment = stack.enter_context(
                Experiment(cfg, algorithm, all_callbacks, prepared, checkpointer, resume)
            )
            result = experiment.run()
            runtime = result.runtime
            summary["actors"] = len(result.actors)
            summary["devices"] = sorted({a["device"] for a in result.actors})
            summary["actor_devices"] = device_summary(result.actors)
        except TrainingDivergedError as err:
            status, error = "diverged", str(err)
            raise
        except KeyboardInterrupt as err:
            status = "interrupted"
            # SIGTERM and a sweep's scheduler say why; a plain KeyboardInterrupt is Ctrl-C
            ctrl_c = "interrupted by the user (Ctrl-C)"
            error = err.reason if isinstance(err, Interruption) else ctrl_c
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
                setup["actors"] = runtime.start_seconds
                summary.update(runtime.algorithm.summary(runtime.state))
                summary["joins"] = {r: ids for r, ids in sorted(runtime.joins.items())}
                summary["leaves"] = {r: ids for r, ids in sorted(runtime.leaves.items())}
            if resume is not None:
                summary["resumed_from_round"] = resume.round
            if checkpointer is not None:
                summary["checkpoint_seconds"] = checkpointer.seconds
                summary["checkpoint_bytes"] = checkpointer.bytes_written
            for cb in all_callbacks:
                summary.update(cb.summary())
            summary.update(setup_seconds=sum(setup.values()), setup_phases=setup)
            summary.update(status=status, error=error, wall_seconds=time.perf_counter() - t0)
            writer.write_summary(summary)
            writer.plot(f"{cfg.run.algorithm} on {cfg.data.dataset}")
            for cb in all_callbacks:
                cb.on_results(summary, out)
        if keep is not None:
            keep(experiment, summary)
    return summary


def launch_run(
    options: dict[str, Any], keep: KeepUp | None = None
) -> tuple[dict[str, Any], LaunchConfig, int | None]:
    """``dfml run``'s options (a YAML file overlaid with flags) → run, or resume with
    ``--resume OUT|URI``; (summary, launch config, the round resumed at or ``None``).

    ``keep``: see :func:`execute` (``dfml serve``).
    """
    if not options.get("resume"):
        cfg, launch = build_config(options)
        return execute(cfg, launch, keep=keep), launch, None
    cfg, launch, checkpoint, record = _resumed(dict(options))
    summary = execute(cfg, launch, resume=checkpoint, record=record, keep=keep)
    return summary, launch, checkpoint.round


def _resumed(
    options: dict[str, Any],
) -> tuple[ExperimentConfig, LaunchConfig, Checkpoint, RunRecord]:
    """``--resume OUT|URI [launch flags]``: the recorded run's config, the launch flags
    given now over its recorded ones, its last checkpoint and its identity."""
    target = str(options.pop("resume"))
    check_path("--resume", target)
    if coerce("overwrite", options.get("overwrite", False), bool):
        LaunchConfig(resume=target, overwrite=True)  # refused: one line saying why
    given_out = options.pop("out", None)
    record, checkpointer = load_resume(target, None if given_out is None else str(given_out))
    recorded = record.options  # every effective option, read or not: exempt
    cfg, _ = build_config(recorded, allow_unused=recorded)
    check_resume_options(cfg, absolute_paths(options))
    launch_fields = {f.name for f in dataclasses.fields(LaunchConfig)}
    given = {k: v for k, v in options.items() if k in launch_fields}
    _, launch = build_config(
        {**recorded, **given, "out": record.out}, allow_unused=set(recorded) - set(given)
    )
    return cfg, launch, checkpointer.latest(), record
