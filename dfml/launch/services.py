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

import numpy as np

from dfml.algorithms.clfml.scoring import ReferenceClassifier, TaskRequester, TaskTestSet
from dfml.algorithms.clfml.service import TaskConfig, TaskService
from dfml.data.registry import load_dataset
from dfml.errors import ConfigError
from dfml.experiment import Experiment, ExperimentConfig, Prepared
from dfml.models.zoo import build_model
from dfml.records import Callback

#: Service config section name → its dataclass (options route by field name).
SECTIONS: dict[str, type] = {"tasks": TaskConfig}


def section(cfg: ExperimentConfig, name: str) -> Any:
    """Service section ``name`` of ``cfg``: the one given, else its defaults."""
    given = cfg.services.get(name)
    return SECTIONS[name]() if given is None else given


def build_task_service(
    cfg: ExperimentConfig, prep: Prepared, rounds: int, out: Path | None = None
) -> TaskService:
    """The task service of the ``tasks`` section, scoring on the held-out test
    samples of every client (initial and reserve): the requester's validation
    set in simulation. With augmentation, a logistic regression on every
    client's training samples measures the generators.

    Refused (one line) when clients' labels are permuted (``--zeta`` < 1):
    a task's labels would then mean different classes to different clients.
    """
    if any(s.label_permutation is not None for s in prep.splits):
        raise ConfigError("tasks need one meaning per label: use --zeta 1 with --tasks")
    tasks = section(cfg, "tasks")
    dataset = load_dataset(cfg.data)
    test = TaskTestSet.from_indices(dataset, np.concatenate([s.test for s in prep.splits]))
    model = build_model(cfg.model, dataset.input_shape, dataset.num_classes)
    reference = None
    if tasks.augment:
        train = np.sort(np.concatenate([s.train for s in prep.splits]))
        reference = ReferenceClassifier(dataset.features(train), dataset.labels(train))
    requester = TaskRequester(model, test, reference)
    return TaskService(
        tasks, rounds, cfg.run.seed, prep.client_labels, cfg.algorithm, requester, out
    )


def check_services(cfg: ExperimentConfig, prepared: Prepared) -> None:
    """Refuse, before any actor starts, a service section this experiment cannot serve
    (a task with a label no client holds, a tasks file that does not parse)."""
    if section(cfg, "tasks").active:
        build_task_service(cfg, prepared, 1)


def service_callbacks(
    cfg: ExperimentConfig, prepared: Prepared, out: Path | None = None
) -> list[Callback]:
    """The services ``cfg`` asks for, as callbacks (and step sources) of the run."""
    if not section(cfg, "tasks").active:
        return []
    return [build_task_service(cfg, prepared, cfg.run.rounds, out)]


def task_service(exp: Experiment) -> TaskService:
    """The on-demand task service on ``exp``'s trained system (``submit(labels)``):
    the run's own if it served tasks, else one on the config's ``tasks`` section."""
    if exp.result is None:
        raise ConfigError("tasks are served on a trained system: call run() first")
    service = next((cb for cb in exp.callbacks if isinstance(cb, TaskService)), None)
    if service is None:
        service = build_task_service(exp.cfg, exp.prepared, exp.cfg.run.rounds)
    return service.bind(exp.runtime)
