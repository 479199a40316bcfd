"""One pass of every check a run needs before anything starts.

Each config section validates its own fields when it is built (the frozen
dataclasses' ``__post_init__``); what needs more than one section, or the
data, is checked here, in one place, by each part that knows its rule:
:func:`prepare` (data, partition, topology, membership schedule), the
algorithm (``check_setup``: what it needs of the clients' labels), each
service section (its own build), and the algorithm's needs of the run
(joins, fixed neighbours). ``dfml run``, ``compare`` and ``chaos`` all call
:func:`validate` for every run before the first one starts, so a bad run
found late never costs the runs before it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from dfml.algorithms.base import Algorithm
from dfml.errors import ConfigError
from dfml.experiment import ExperimentConfig, Prepared, prepare
from dfml.launch.services import build_algorithm, check_services


@dataclass(frozen=True)
class Validated:
    """A run that passed every check: its prepared data and its algorithm.

    ``seconds`` is what the checks' set-up cost (``data``, and ``privacy``
    when DP-SGD derives its noise), for the summary's ``setup_seconds``.
    """

    prepared: Prepared
    algorithm: Algorithm
    seconds: dict[str, float] = field(default_factory=dict)


def check_fixed_neighbours(cfg: ExperimentConfig) -> None:
    """An algorithm whose clients keep state about each neighbour's messages
    (CHOCO-SGD) needs every client in every round, over one weighted graph."""
    name = cfg.run.algorithm
    if cfg.membership.clients_per_round is not None or cfg.membership.participation < 1:
        raise ConfigError(
            f"algorithm {name!r} needs every client in every round: "
            "--clients-per-round and --participation do not apply to it"
        )
    if cfg.topology.dynamic:
        raise ConfigError(
            f"algorithm {name!r} needs the same neighbours every round: "
            f"--topology {cfg.topology.topology} draws new ones each round"
        )


def check_algorithm_fits(cfg: ExperimentConfig, prepared: Prepared, algorithm: Algorithm) -> None:
    """What the algorithm needs of the run: a static membership unless it is
    elastic, fixed neighbours where its clients keep per-neighbour state."""
    if prepared.schedule and not algorithm.elastic:
        raise ConfigError(
            f"algorithm {cfg.run.algorithm!r} does not support clients joining or leaving "
            "(--schedule)"
        )
    if algorithm.fixed_neighbours:
        check_fixed_neighbours(cfg)


def validate(cfg: ExperimentConfig) -> Validated:
    """Run every check of ``cfg`` that needs no actor and no results folder."""
    seconds = {}
    t0 = time.perf_counter()
    prepared = prepare(cfg)
    seconds["data"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    algorithm = build_algorithm(cfg, prepared)
    if algorithm.privacy is not None:  # Opacus's import and σ for --dp-epsilon
        seconds["privacy"] = time.perf_counter() - t0
    algorithm.check_setup(prepared.client_labels)
    check_services(cfg, prepared)
    check_algorithm_fits(cfg, prepared, algorithm)
    return Validated(prepared, algorithm, seconds)
