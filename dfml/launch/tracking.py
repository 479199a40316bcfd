"""Runs tracked in TensorBoard and MLflow (``--tracking tensorboard,mlflow``).

Users watch and compare runs in the trackers they already use; this module
copies what a run reports into them with the libraries' own writers
(TensorBoard's ``SummaryWriter``, MLflow's ``MlflowClient``): the options as
parameters, every round's client metrics (mean, and for accuracies and
losses min / p10 / median / p90 / max, which is what a fairness-minded
reader of a federated run looks at), the round's bytes and seconds, the
numbers of ``summary.json`` at the end, and, in MLflow, the results files
(summary, run record, plots, parquet tables) as artifacts.

Where: TensorBoard under ``--tensorboard-dir`` (default
``OUT/tensorboard``), one sub-folder per run; MLflow at ``--tracking-uri``
(default ``sqlite:///OUT/mlflow.db``, artifacts in ``OUT/mlflow-artifacts``),
experiment ``dfml``. A tracker that fails warns once, with the error, and
is switched off for the rest of the run: tracking never stops training or
loses results, which are on disk anyway.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dfml.errors import ConfigError
from dfml.records import Callback, RoundRecord

log = logging.getLogger(__name__)

TRACKERS = ("tensorboard", "mlflow")
#: The schemes an MLflow tracking URI may have (MLflow's file store is deprecated).
MLFLOW_SCHEMES = ("sqlite", "http", "https")
#: What the run folder holds for the trackers (``--overwrite`` replaces it).
OUTPUTS = ("tensorboard", "mlflow.db", "mlflow-artifacts")
#: The results files logged as MLflow artifacts, where the run wrote them.
ARTIFACTS = (
    "summary.json",
    "run.json",
    "accuracy.png",
    "metrics.parquet",
    "faults.parquet",
    "tasks.parquet",
)
QUANTILES = {"min": 0.0, "p10": 0.1, "p50": 0.5, "p90": 0.9, "max": 1.0}
EXPERIMENT = "dfml"


def check_tracking(trackers: Sequence[str], uri: str | None, tensorboard_dir: str | None) -> None:
    """One line for a tracker name or URI the trackers cannot take."""
    for name in trackers:
        if name not in TRACKERS:
            raise ConfigError(f"unknown tracker {name!r}; allowed: {', '.join(TRACKERS)}")
    if len(set(trackers)) != len(trackers):
        raise ConfigError(f"--tracking names a tracker twice: {','.join(trackers)}")
    if uri is not None:
        if "mlflow" not in trackers:
            raise ConfigError("--tracking-uri is MLflow's: give --tracking mlflow")
        scheme = uri.split("://", 1)[0] if "://" in uri else ""
        if scheme not in MLFLOW_SCHEMES:
            raise ConfigError(
                f"--tracking-uri must be an MLflow URI with scheme "
                f"{', '.join(s + '://' for s in MLFLOW_SCHEMES)}; got {uri!r}"
            )
    if tensorboard_dir is not None and "tensorboard" not in trackers:
        raise ConfigError("--tensorboard-dir is TensorBoard's: give --tracking tensorboard")


def round_scalars(record: RoundRecord) -> dict[str, float]:
    """A round's numbers for a tracker: each client metric's mean over the clients,
    the spread of accuracies and losses, and the round's bytes and seconds."""
    keys = sorted({k for m in record.metrics.values() for k in m})
    out: dict[str, float] = {}
    for key in keys:
        values = np.array(
            [float(m[key]) for m in record.metrics.values() if _number(m.get(key))],
            dtype=np.float64,
        )
        values = values[np.isfinite(values)]
        if values.size == 0:
            continue
        out[f"{key}/mean"] = float(values.mean())
        if "accuracy" in key or "loss" in key:
            for name, q in QUANTILES.items():
                out[f"{key}/{name}"] = float(np.quantile(values, q))
    out["round/bytes_sent"] = float(record.bytes_sent)
    out["round/seconds"] = float(record.seconds)
    out["round/clients"] = float(len(record.metrics))
    return out


def summary_scalars(summary: Mapping[str, Any]) -> dict[str, float]:
    """The numbers of ``summary.json`` (nested ones by ``a.b``), finite only."""
    out: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for k, v in value.items():
                walk(f"{prefix}{k}.", v)
        elif _number(value) and math.isfinite(value):
            out[prefix.rstrip(".")] = float(value)

    walk("", {k: v for k, v in summary.items() if k != "config"})
    return out


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def flat_params(config: Mapping[str, Any]) -> dict[str, str]:
    """The run's effective settings as ``section.field`` → text (tracker parameters)."""
    return {
        f"{section}.{name}": json.dumps(value, default=list)
        if not isinstance(value, str)
        else value
        for section, fields in config.items()
        for name, value in fields.items()
    }


class TensorBoardWriter:
    """One run's events in ``folder`` (a TensorBoard log directory)."""

    def __init__(self, folder: Path, params: Mapping[str, str]) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(folder))
        table = "\n".join(f"| {k} | {v} |" for k, v in sorted(params.items()))
        self.writer.add_text("config", "| option | value |\n|---|---|\n" + table, 0)

    def log_round(self, step: int, scalars: Mapping[str, float]) -> None:
        for key, value in scalars.items():
            self.writer.add_scalar(key, value, step)

    def finish(self, summary: Mapping[str, float], completed: bool, out: Path | None) -> None:
        for key, value in summary.items():
            self.writer.add_scalar(f"summary/{key}", value, 0)
        self.writer.close()


class MlflowWriter:
    """One MLflow run in experiment ``dfml`` at ``uri``."""

    def __init__(
        self, uri: str, artifacts: Path | None, name: str, params: Mapping[str, str], tags: dict
    ) -> None:
        from mlflow.tracking import MlflowClient

        if not logging.getLogger().isEnabledFor(logging.DEBUG):  # dfml -v shows them
            for noisy in ("mlflow", "alembic"):  # "Creating initial MLflow database tables..."
                logging.getLogger(noisy).setLevel(logging.WARNING)
        self.client = MlflowClient(tracking_uri=uri)
        found = self.client.get_experiment_by_name(EXPERIMENT)
        if found is not None:
            experiment = found.experiment_id
        else:
            location = artifacts.resolve().as_uri() if artifacts is not None else None
            experiment = self.client.create_experiment(EXPERIMENT, artifact_location=location)
        self.run = self.client.create_run(experiment, run_name=name, tags=tags).info.run_id
        from mlflow.entities import Param

        items = [Param(k, v[:6000]) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):  # MLflow takes at most 100 params a batch
            self.client.log_batch(self.run, params=items[i : i + 100])

    def log_round(self, step: int, scalars: Mapping[str, float]) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        metrics = [Metric(_mlflow_key(k), v, stamp, step) for k, v in scalars.items()]
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(self.run, metrics=metrics[i : i + 1000])

    def finish(self, summary: Mapping[str, float], completed: bool, out: Path | None) -> None:
        self.log_round(0, {f"summary/{k}": v for k, v in summary.items()})
        if out is not None:
            for name in ARTIFACTS:
                if (out / name).is_file():
                    self.client.log_artifact(self.run, str(out / name))
        self.client.set_terminated(self.run, status="FINISHED" if completed else "FAILED")


def _mlflow_key(key: str) -> str:
    """MLflow keys allow letters, digits, ``_ - . /`` and spaces; anything else becomes ``_``."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in key)


class Tracker(Callback):
    """Copies a run's rounds and summary into the trackers it was asked for.

    ``out`` is the run's results folder (defaults of the trackers' locations
    and the artifacts); ``config`` its effective settings (``summary.json``'s
    ``config``); ``name`` the run's name in the trackers.
    """

    def __init__(
        self,
        trackers: Sequence[str],
        out: Path | None,
        config: Mapping[str, Any],
        name: str,
        uri: str | None = None,
        tensorboard_dir: str | None = None,
    ) -> None:
        self.trackers, self.out, self.name = tuple(trackers), out, name
        self.params = flat_params(config)
        self.uri, self.tensorboard_dir = uri, tensorboard_dir
        self.writers: dict[str, Any] = {}

    def _open(self) -> dict[str, Callable[[], Any]]:
        base = self.out if self.out is not None else Path.cwd()
        run_id = ""
        if self.out is not None and (self.out / "run.json").is_file():
            run_id = json.loads((self.out / "run.json").read_text()).get("run_id", "")
        tags = {"dfml.run_id": run_id, "dfml.out": str(base.resolve())}
        board = Path(self.tensorboard_dir) if self.tensorboard_dir else base / "tensorboard"
        uri = self.uri or f"sqlite:///{(base / 'mlflow.db').resolve()}"
        return {
            "tensorboard": lambda: TensorBoardWriter(board / self.name, self.params),
            "mlflow": lambda: MlflowWriter(
                uri, base / "mlflow-artifacts", self.name, self.params, tags
            ),
        }

    def _guard(self, name: str, action: Callable[[], Any]) -> Any:
        """Run ``action`` for tracker ``name``; on failure warn once and drop the tracker."""
        try:
            return action()
        except Exception as err:  # a tracker must never stop the run (module docstring)
            log.warning("tracking to %s stopped: %s: %s", name, type(err).__name__, err)
            self.writers.pop(name, None)
            return None

    def on_run_start(self, algorithm: Any, federation: Any) -> None:
        openers = self._open()
        for name in self.trackers:
            writer = self._guard(name, openers[name])
            if writer is not None:
                self.writers[name] = writer

    def on_round_end(self, record: RoundRecord) -> None:
        scalars = round_scalars(record)
        for name, writer in list(self.writers.items()):
            self._guard(name, lambda w=writer: w.log_round(record.round, scalars))

    def on_results(self, summary: Mapping[str, Any], out: Path | None) -> None:
        numbers = summary_scalars(summary)
        completed = summary.get("status") == "completed"
        for name, writer in list(self.writers.items()):
            self._guard(name, lambda w=writer: w.finish(numbers, completed, out))
        self.writers.clear()
