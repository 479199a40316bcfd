"""The services a launched run carries besides training: config sections and callbacks.

A service owns its config section — the task service
(:mod:`~dfml.algorithms.clfml.service`) owns ``tasks``
(:class:`~dfml.algorithms.clfml.service.TaskConfig`). The launch layer
routes its options there (:data:`SECTIONS`), keeps the section in
:attr:`~dfml.experiment.ExperimentConfig.services`, checks it before
anything starts and adds the service to the run's callbacks, where the loop
finds it as a step source. The experiment and the core know no service.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dfml.algorithms.clfml.service import TaskConfig, TaskService
from dfml.errors import ConfigError
from dfml.experiment import Experiment, ExperimentConfig, Prepared
from dfml.records import Callback

#: Service config section name → its dataclass (options route by field name).
SECTIONS: dict[str, type] = {"tasks": TaskConfig}


def section(cfg: ExperimentConfig, name: str) -> Any:
    """Service section ``name`` of ``cfg``: the one given, else its defaults."""
    given = cfg.services.get(name)
    return SECTIONS[name]() if given is None else given


def check_services(cfg: ExperimentConfig, prepared: Prepared) -> None:
    """Refuse, before any actor starts, a service section this experiment cannot serve
    (a task with a label no client holds, a tasks file that does not parse)."""
    tasks = section(cfg, "tasks")
    if tasks.active:
        TaskService(tasks, 1, cfg.run.seed, prepared.client_labels, cfg.algorithm)


def service_callbacks(
    cfg: ExperimentConfig, prepared: Prepared, out: Path | None = None
) -> list[Callback]:
    """The services ``cfg`` asks for, as callbacks (and step sources) of the run."""
    tasks = section(cfg, "tasks")
    if not tasks.active:
        return []
    service = TaskService(
        tasks, cfg.run.rounds, cfg.run.seed, prepared.client_labels, cfg.algorithm, out
    )
    return [service]


def task_service(exp: Experiment) -> TaskService:
    """The on-demand task service on ``exp``'s trained system (``submit(labels)``):
    the run's own if it served tasks, else one on the config's ``tasks`` section."""
    if exp.result is None:
        raise ConfigError("tasks are served on a trained system: call run() first")
    service = next((cb for cb in exp.callbacks if isinstance(cb, TaskService)), None)
    if service is None:
        cfg = exp.cfg
        service = TaskService(
            section(cfg, "tasks"),
            cfg.run.rounds,
            cfg.run.seed,
            exp.prepared.client_labels,
            cfg.algorithm,
        )
    return service.bind(exp.runtime)
