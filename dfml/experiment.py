"""One experiment: data → partition → topology → actors → rounds.

:class:`ExperimentConfig` groups the typed config of each concern;
:func:`run_experiment` wires them and runs the algorithm's round loop. The
launch layer turns YAML and flags into the config and writes results.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import networkx as nx
import numpy as np

from dfml.actors.config import ResourceConfig
from dfml.actors.federation import Federation
from dfml.algorithms.base import Algorithm, RoundRecord, SetupContext
from dfml.algorithms.callbacks import Callback
from dfml.algorithms.evaluation import EvalConfig
from dfml.data.config import DataConfig, PartitionConfig
from dfml.data.partition import ClientSplit, make_splits
from dfml.data.registry import load_dataset
from dfml.errors import ConfigError
from dfml.fault.config import FaultConfig
from dfml.models.zoo import ModelConfig, build_model
from dfml.topology.config import TopologyConfig
from dfml.topology.graphs import build_topology
from dfml.topology.mixing import mixing_matrix

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunConfig:
    """Experiment-level knobs: which algorithm, how many clients and rounds."""

    algorithm: str = "dfedavg"
    clients: int = 10
    rounds: int = 30
    seed: int = 0

    def __post_init__(self) -> None:
        if self.clients < 2:
            raise ConfigError(f"clients must be >= 2, got {self.clients}")
        if self.rounds < 1:
            raise ConfigError(f"rounds must be >= 1, got {self.rounds}")
        if self.seed < 0:
            raise ConfigError(f"seed must be >= 0, got {self.seed}")


@dataclass(frozen=True)
class ExperimentConfig:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    partition: PartitionConfig = field(default_factory=PartitionConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    topology: TopologyConfig = field(default_factory=TopologyConfig)
    resources: ResourceConfig = field(default_factory=ResourceConfig)
    evaluation: EvalConfig = field(default_factory=EvalConfig)
    fault: FaultConfig = field(default_factory=FaultConfig)
    algorithm: Any = None


@dataclass
class Prepared:
    """The driver-side facts of an experiment, before any actor exists."""

    splits: list[ClientSplit]
    graph: nx.Graph
    mixing: np.ndarray
    param_count: int
    num_classes: int
    input_shape: tuple[int, ...]

    @property
    def train_sizes(self) -> list[int]:
        return [len(s.train) for s in self.splits]


@dataclass
class ExperimentResult:
    history: list[RoundRecord]
    prepared: Prepared
    wall_seconds: float
    actors: list[dict[str, Any]]


def prepare(cfg: ExperimentConfig) -> Prepared:
    """Load labels, partition, build the topology and mixing matrix."""
    dataset = load_dataset(cfg.data)
    splits = make_splits(dataset.y, cfg.run.clients, cfg.partition, cfg.run.seed)
    graph = build_topology(cfg.topology, cfg.run.clients, cfg.run.seed)
    sizes = [len(s.train) for s in splits]
    mixing = mixing_matrix(graph, cfg.topology.mixing, sizes)
    model = build_model(cfg.model, dataset.input_shape, dataset.num_classes)
    return Prepared(splits, graph, mixing, model.size, dataset.num_classes, dataset.input_shape)


def run_experiment(
    cfg: ExperimentConfig,
    algorithm: Algorithm,
    callbacks: Sequence[Callback] = (),
    prepared: Prepared | None = None,
) -> ExperimentResult:
    """Run ``algorithm`` on real Ray actors; Ray must already be initialised."""
    t0 = time.perf_counter()
    prep = prepared or prepare(cfg)
    algorithm.setup(SetupContext(prep.graph, prep.mixing, prep.train_sizes, prep.param_count * 4))
    if cfg.fault.active:
        from dfml.fault.federation import FaultTolerantFederation

        federation: Federation = FaultTolerantFederation(
            cfg.data, cfg.model, prep.splits, cfg.run.seed, cfg.resources, cfg.fault, cfg.run.rounds
        )
    else:
        federation = Federation(cfg.data, cfg.model, prep.splits, cfg.run.seed, cfg.resources)
    try:
        history = algorithm.run(federation, cfg.run.rounds, callbacks)
        actors = federation.info()
    finally:
        federation.shutdown()
    return ExperimentResult(history, prep, time.perf_counter() - t0, actors)
