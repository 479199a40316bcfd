"""The services a launched run carries besides training: config sections and callbacks.

A service is a step source with its own config section, registered here in
:data:`SERVICES` and nowhere else: the task service
(:mod:`~dfml.algorithms.clfml.service`, section ``tasks``,
:class:`~dfml.algorithms.clfml.service.TaskConfig`) and the disagreement
probe (:mod:`~dfml.algorithms.probe`, section ``probe``), the privacy
accountant (:mod:`~dfml.algorithms.privacy`, section ``privacy``: DP-SGD,
whose settings the run's algorithm also receives, :func:`private_training`)
and the virtual clock (section ``clock``: :mod:`~dfml.algorithms.virtual_clock`
for ``sync``, the schedule of :mod:`~dfml.algorithms.asynchronous` that plans
the training in the algorithm's place for ``async``).
The launch layer
routes a section's options there by field name (:data:`SECTIONS`), keeps it
in :attr:`~dfml.experiment.ExperimentConfig.services`, checks it before
anything starts and adds the active services to the run's callbacks, where
the loop finds them as step sources. The experiment and the core know no
service.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dfml.algorithms.asynchronous import AsyncGossip, check_async
from dfml.algorithms.base import Algorithm
from dfml.algorithms.clfml.scoring import ReferenceClassifier, TaskRequester, TaskTestSet
from dfml.algorithms.clfml.service import TaskConfig, TaskService
from dfml.algorithms.clfml.tasks import load_tasks
from dfml.algorithms.privacy.accountant import PrivacyAccountant
from dfml.algorithms.privacy.accounting import DataSizes, Usage, run_noise
from dfml.algorithms.privacy.config import PrivacyConfig
from dfml.algorithms.privacy.dpsgd import DPSGD
from dfml.algorithms.probe import DisagreementProbe, ProbeConfig
from dfml.algorithms.robust.config import RobustConfig
from dfml.algorithms.robust.report import ByzantineReport
from dfml.algorithms.robust.settings import Robustness
from dfml.algorithms.robust.setup import build_robustness
from dfml.algorithms.secure.config import SecureConfig
from dfml.algorithms.secure.report import SecureReport
from dfml.algorithms.virtual_clock import SyncClock, local_steps
from dfml.clock import ClockConfig, client_speeds
from dfml.data.registry import load_dataset
from dfml.errors import ConfigError
from dfml.experiment import Experiment, ExperimentConfig, Prepared
from dfml.launch.registry import ALGORITHMS, algorithm_class
from dfml.models.zoo import build_model
from dfml.records import Callback


@dataclass(frozen=True)
class Service:
    """A registered service: its config section and how a run builds it.

    Attributes:
        config: the section's frozen dataclass (its fields are the options;
            an ``active`` property says whether the run asked for it).
        build: (config, prepared experiment, rounds, results folder) → the
            service, a callback and step source of the run. It raises a
            one-line :class:`~dfml.errors.ConfigError` for a section this
            experiment cannot serve, which :func:`check_services` calls
            before any actor starts.
        outputs: the files the service writes into the results folder (part
            of :data:`~dfml.launch.results.RUN_OUTPUTS`, so ``--overwrite``
            replaces them with everything else).
    """

    config: type
    build: Callable[[ExperimentConfig, Prepared, int, Path | None], Callback]
    outputs: tuple[str, ...] = ()


def _build_probe(
    cfg: ExperimentConfig, prep: Prepared, rounds: int, out: Path | None = None
) -> DisagreementProbe:
    return DisagreementProbe(section(cfg, "probe"), rounds)


def private_usage(cfg: ExperimentConfig, prep: Prepared) -> dict[int, Usage]:
    """Every client's (initial and reserve) noised steps per round and their sampling
    rate, as the run's algorithm declares them; one line if it cannot train privately."""
    algorithm = run_class(cfg)(cfg.algorithm)
    try:
        return {
            cid: algorithm.private_usage(DataSizes(len(s.meta_train), len(s.query)))
            for cid, s in enumerate(prep.splits)
        }
    except ConfigError as err:
        raise ConfigError(f"--dp-clip: {err}; DP-SGD trains {_private_algorithms()}") from None


def _private_algorithms() -> str:
    """The algorithms that train privately with their default knobs, for the error line."""
    names = []
    for name, cls in sorted(ALGORITHMS.items()):
        try:
            cls(cls.Config()).private_usage(DataSizes(8, 2))
        except ConfigError:
            continue
        names.append(name)
    return ", ".join(names) + " (fedmeta-maml and perfedavg with --first-order true)"


def private_training(cfg: ExperimentConfig, prep: Prepared) -> DPSGD | None:
    """The DP-SGD settings the run's clients train with, or ``None`` (no ``--dp-clip``).

    With ``--dp-epsilon``, σ is the smallest that keeps every client within
    ε after ``rounds`` rounds of its declared usage (Opacus's
    ``get_noise_multiplier`` per client, the largest kept).
    """
    sec: PrivacyConfig = section(cfg, "privacy")
    if not sec.active:
        return None
    assert sec.dp_clip is not None
    usage = private_usage(cfg, prep)  # one line for an algorithm that cannot train privately
    noise = sec.dp_noise
    if noise is None:
        assert sec.dp_epsilon is not None
        noise = run_noise(sec.dp_epsilon, sec.dp_delta, usage.values(), cfg.run.rounds)
    return DPSGD(sec.dp_clip, noise)


def run_class(cfg: ExperimentConfig) -> type[Algorithm]:
    """The class that runs ``cfg``'s algorithm: clustered, compressed and robust as it asks."""
    compressor = getattr(cfg.algorithm, "compressor", "none")
    robust = section(cfg, "robustness").active
    masked = section(cfg, "secure").active
    return algorithm_class(cfg.run.algorithm, cfg.run.cluster_by, compressor, robust, masked)


def build_algorithm(cfg: ExperimentConfig, prep: Prepared) -> Algorithm:
    """The run's algorithm: its class and config, ``--vectorize``, DP-SGD and the
    Byzantine settings if asked."""
    cls = run_class(cfg)
    extra: dict[str, Any] = {}
    if section(cfg, "robustness").active:
        extra["robustness"] = robustness(cfg, prep)
    return cls(
        cfg.algorithm, vectorize=cfg.run.vectorize, privacy=private_training(cfg, prep), **extra
    )


def robustness(cfg: ExperimentConfig, prep: Prepared) -> Robustness:
    """The run's attackers (drawn from the seed among the initial clients) and robust
    rule; one line for a rule the topology or the cohort cannot serve."""
    sec: RobustConfig = section(cfg, "robustness")
    centralized = bool(getattr(run_class(cfg)(cfg.algorithm), "centralized", False))
    if centralized:
        n, members = len(prep.initial), cfg.membership
        cohort = members.clients_per_round or max(1, math.ceil(members.participation * n - 1e-9))
        sets = dict.fromkeys(prep.initial, min(cohort, n))
    else:
        sets = {c: 1 + len(prep.topology.neighbors(c)) for c in prep.initial}
    return build_robustness(sec, cfg.run.seed, prep.initial, prep.num_classes, sets, centralized)


def _build_byzantine_report(
    cfg: ExperimentConfig, prep: Prepared, rounds: int, out: Path | None = None
) -> ByzantineReport:
    test_sizes = {c: len(s.test) for c, s in enumerate(prep.splits)}
    return ByzantineReport(robustness(cfg, prep), test_sizes)


def _build_accountant(
    cfg: ExperimentConfig, prep: Prepared, rounds: int, out: Path | None = None
) -> PrivacyAccountant:
    sec: PrivacyConfig = section(cfg, "privacy")
    dp = private_training(cfg, prep)
    assert dp is not None  # built only for an active section
    return PrivacyAccountant(dp, sec.dp_delta, private_usage(cfg, prep), sec.dp_epsilon)


def check_async_run(cfg: ExperimentConfig, prep: Prepared) -> None:
    """Refuse what ``--schedule-mode async`` does not run: an algorithm whose
    client step is not "mix, then the local update"
    (:func:`~dfml.algorithms.asynchronous.check_async`),
    and the features that count per synchronous round or need every client
    at a round's end. (The fault layer and checkpoints work: the schedule's
    steps hold no reference to an older vector, and its slot is plain numbers.)"""
    check_async(run_class(cfg)(cfg.algorithm))
    refused = [
        (bool(prep.schedule), "--schedule (clients joining or leaving)"),
        (
            cfg.membership.clients_per_round is not None or cfg.membership.participation < 1,
            "--clients-per-round / --participation (every free client trains)",
        ),
        (cfg.topology.dynamic, f"--topology {cfg.topology.topology} (new peers every round)"),
        (section(cfg, "privacy").active, "--dp-clip (DP-SGD counts one update per round)"),
        (section(cfg, "tasks").active, "--tasks"),
        (
            section(cfg, "secure").active,
            "--secure-aggregation (its masks are made for a round's synchronous cohort)",
        ),
        (
            section(cfg, "robustness").active,
            "--byzantine / --robust-aggregation (the attackers and robust rules mix per round)",
        ),
    ]
    for given, what in refused:
        if given:
            raise ConfigError(f"--schedule-mode async does not support {what}")


def _build_secure_report(
    cfg: ExperimentConfig, prep: Prepared, rounds: int, out: Path | None = None
) -> SecureReport:
    """Refuse what the masks cannot serve: a sum of fewer than two vectors (it would
    be the vector itself), and, gossiping, the features that read every client's
    plain vector (the personalized protocol's consensus model, the probe)."""
    centralized = bool(getattr(run_class(cfg)(cfg.algorithm), "centralized", False))
    if centralized:
        n, members = len(prep.initial), cfg.membership
        cohort = members.clients_per_round or max(1, math.ceil(members.participation * n - 1e-9))
        if min(cohort, n) < 2:
            raise ConfigError(
                f"--secure-aggregation: a cohort of {min(cohort, n)} client would show the "
                "server its vector; allowed: two or more clients per round"
            )
        return SecureReport("server")
    for client in prep.initial:
        if len(prep.topology.neighbors(client)) < 2:
            raise ConfigError(
                f"--secure-aggregation: client {client} has "
                f"{len(prep.topology.neighbors(client))} neighbour(s), whose vector its mix "
                "would reveal; allowed: a topology where every client has two or more"
            )
    refused = [
        (
            cfg.evaluation.personalized_eval,
            "--personalized-eval true (its consensus model averages every plain vector); "
            "give --personalized-eval false",
        ),
        (section(cfg, "probe").active, "--probe-every (it reads the neighbours' plain vectors)"),
    ]
    for given, what in refused:
        if given:
            raise ConfigError(f"--secure-aggregation in gossip mode does not support {what}")
    return SecureReport("gossip")


def _build_clock(
    cfg: ExperimentConfig, prep: Prepared, rounds: int, out: Path | None = None
) -> SyncClock | AsyncGossip:
    """The sync clock, or the async schedule; every client's speed (reserve
    included) and local steps per update from its training data."""
    sec: ClockConfig = section(cfg, "clock")
    if sec.asynchronous:
        check_async_run(cfg, prep)
    speeds = client_speeds(sec, list(range(len(prep.splits))), cfg.run.seed)
    steps = {c: local_steps(cfg.algorithm, len(s.train)) for c, s in enumerate(prep.splits)}
    return AsyncGossip(speeds, steps) if sec.asynchronous else SyncClock(speeds, steps)


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
    if tasks.tasks_file:  # a bad file is refused before the reference classifier is fitted
        load_tasks(tasks.tasks_file, sorted(set().union(*prep.client_labels.values())))
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


#: Every service a run can carry, by section name (the one registration).
SERVICES: dict[str, Service] = {
    "tasks": Service(TaskConfig, build_task_service, TaskService.OUTPUTS),
    "probe": Service(ProbeConfig, _build_probe),
    "privacy": Service(PrivacyConfig, _build_accountant),
    "robustness": Service(RobustConfig, _build_byzantine_report),
    "clock": Service(ClockConfig, _build_clock),
    "secure": Service(SecureConfig, _build_secure_report),
}

#: The files the services write into a results folder.
SERVICE_OUTPUTS: tuple[str, ...] = tuple(f for s in SERVICES.values() for f in s.outputs)

#: Service config section name → its dataclass (options route by field name).
SECTIONS: dict[str, type] = {name: s.config for name, s in SERVICES.items()}


def check_services(cfg: ExperimentConfig, prepared: Prepared) -> None:
    """Refuse, before any actor starts, a service section this experiment cannot serve
    (a task with a label no client holds, a tasks file that does not parse)."""
    for name, service in SERVICES.items():
        if section(cfg, name).active:
            service.build(cfg, prepared, 1, None)


def service_callbacks(
    cfg: ExperimentConfig, prepared: Prepared, out: Path | None = None
) -> list[Callback]:
    """The services ``cfg`` asks for, as callbacks (and step sources) of the run."""
    return [
        service.build(cfg, prepared, cfg.run.rounds, out)
        for name, service in SERVICES.items()
        if section(cfg, name).active
    ]


def task_service(exp: Experiment) -> TaskService:
    """The on-demand task service on ``exp``'s trained system (``submit(labels)``):
    the run's own if it served tasks, else one on the config's ``tasks`` section."""
    if exp.result is None:
        raise ConfigError("tasks are served on a trained system: call run() first")
    service = next((cb for cb in exp.callbacks if isinstance(cb, TaskService)), None)
    if service is None:
        service = build_task_service(exp.cfg, exp.prepared, exp.cfg.run.rounds)
    return service.bind(exp.runtime)
