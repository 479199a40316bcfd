"""One experiment: data → partition → topology → schedule → actors → steps.

:class:`ExperimentConfig` groups the typed config of each concern;
:func:`prepare` does everything that needs no actor (and so validates a
schedule before any actor starts); :class:`Experiment` wires the
federation, runs the step loop and keeps the trained system up for
services (:func:`run_experiment`: run, then stop). The launch layer turns YAML and flags
into the config (also the sections of services such as the task service,
which it builds as callbacks) and writes results.
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
from dfml.algorithms.base import Algorithm
from dfml.algorithms.evaluation import EvalConfig
from dfml.data.config import DataConfig, PartitionConfig
from dfml.data.memory import check_fits
from dfml.data.partition import make_partition
from dfml.data.registry import load_dataset
from dfml.data.split import ClientSplit
from dfml.errors import ConfigError
from dfml.fault.config import FaultConfig
from dfml.models.zoo import ModelConfig, model_size
from dfml.records import Callback, RoundRecord
from dfml.runtime.checkpoint import Checkpoint, Checkpointer
from dfml.runtime.loop import Runtime
from dfml.runtime.membership import Change, MembershipConfig, parse_schedule, plan_membership
from dfml.topology.config import TopologyConfig
from dfml.topology.service import TopologyService

log = logging.getLogger(__name__)

#: Bytes one model parameter costs a client at least: its float32 value, its
#: gradient and two working copies (the mixed and the published vector).
BYTES_PER_PARAMETER = 16


@dataclass(frozen=True)
class RunConfig:
    """Experiment-level knobs: which algorithm, how many clients and rounds,
    and how an actor runs its clients' steps.

    Attributes:
        algorithm: the algorithm to run (``dfml list --verbose`` describes each).
        cluster_by: clustering put in front of the algorithm: ``none``, or
            ``labels`` (ring label dissemination, label-aware clustering along
            an MST, then the algorithm's gossip within each cluster, weighted
            by |D^M|; any algorithm whose clients gossip, see
            docs/clfml.md). clfml and cdfedavg always cluster by labels.
        clients: N, the number of federated clients at start (>= 2).
        rounds: communication rounds to run (>= 1).
        seed: seeds the partition, the random topologies, model init and sampling.
        vectorize: run the local SGD (and evaluation) of all clients an actor
            hosts as one vectorised computation (``torch.func.vmap`` over
            their stacked parameter vectors) instead of client by client;
            used where the local update is plain SGD (dfedavg, fedavg,
            fedavg-ft's training, fedprox with mu 0) and the model is an
            MLP, else ignored. Equal to ``false`` up to float rounding (not
            bit for bit; each is deterministic); many times faster with many
            small clients.
    """

    algorithm: str = "dfedavg"
    cluster_by: str = "none"
    clients: int = 10
    rounds: int = 30
    seed: int = 0
    vectorize: bool = True

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
    membership: MembershipConfig = field(default_factory=MembershipConfig)
    #: Config sections of the services a launch adds (section name → its
    #: dataclass, e.g. ``tasks``); carried for the record and ``--resume``.
    services: dict[str, Any] = field(default_factory=dict)
    algorithm: Any = None

    def __post_init__(self) -> None:
        if self.resources.backend == "local" and self.fault.active:
            raise ConfigError(
                "the fault layer (--chaos-*, --recovery true) needs "
                "--backend ray: it replicates state between Ray actors"
            )


@dataclass
class Prepared:
    """The driver-side facts of an experiment, before any actor exists.

    ``splits`` holds one data share per client id: the initial clients
    0..N-1, then the reserve that joining clients take in order.
    """

    splits: list[ClientSplit]
    initial: list[int]
    topology: TopologyService
    schedule: dict[int, Change]
    param_count: int
    num_classes: int
    input_shape: tuple[int, ...]
    partition_repair_moves: int = 0
    #: Client id → the labels its training data holds (ℒ_i), initial clients only.
    client_labels: dict[int, tuple[int, ...]] = field(default_factory=dict)

    @property
    def graph(self) -> nx.Graph:
        """The communication graph at start (membership epoch 0)."""
        return self.topology.graph

    @property
    def train_sizes(self) -> list[int]:
        return [len(self.splits[c].train) for c in self.initial]


@dataclass
class ExperimentResult:
    history: list[RoundRecord]
    prepared: Prepared
    wall_seconds: float
    actors: list[dict[str, Any]]
    runtime: Runtime


def check_schedule(
    topology: TopologyService, schedule: dict[int, Change], splits: list[ClientSplit]
) -> None:
    """Apply every change to a copy of the topology: a rule that cannot hold fails now."""
    probe = topology.copy()
    for rnd in sorted(schedule):
        change = schedule[rnd]
        try:
            if change.join:
                probe.join({c: len(splits[c].train) for c in change.join})
            if change.leave:
                probe.leave(change.leave)
        except ConfigError as err:
            raise ConfigError(f"schedule before round {rnd}: {err}") from None


def prepare(cfg: ExperimentConfig) -> Prepared:
    """Load labels, partition (initial clients + reserve), topology, schedule; validate."""
    dataset = load_dataset(cfg.data)
    n, reserve = cfg.run.clients, cfg.membership.reserve
    part = make_partition(dataset.y, n + reserve, cfg.partition, cfg.run.seed)
    splits = part.splits
    initial = list(range(n))
    schedule = plan_membership(
        parse_schedule(cfg.membership.schedule),
        initial,
        list(range(n, n + reserve)),
        cfg.run.rounds,
        cfg.run.seed,
    )
    sizes = {c: len(splits[c].train) for c in initial}
    topology = TopologyService(cfg.topology, sizes, cfg.run.seed, id_limit=n + reserve)
    check_schedule(topology, schedule, splits)
    cfg.fault.check_rounds(cfg.run.rounds)
    size = model_size(cfg.model, dataset.input_shape, dataset.num_classes)
    check_fits(
        f"the model ({size:,} parameters: each client's vector, gradients and copies)",
        size * BYTES_PER_PARAMETER,
        "lower --hidden or choose a smaller --model",
    )
    return Prepared(
        splits,
        initial,
        topology,
        schedule,
        size,
        dataset.num_classes,
        dataset.input_shape,
        part.repair_moves,
        {
            c: tuple(int(v) for v in np.unique(splits[c].relabel(dataset.y[splits[c].train])))
            for c in initial
        },
    )


def make_federation(cfg: ExperimentConfig, prep: Prepared) -> Federation:
    """The in-process (``--backend local``), plain or fault-tolerant federation
    (chaos or ``--recovery true``). Actors map the dataset :func:`prepare`
    loaded (cached) from the object store."""
    if cfg.resources.backend == "local":
        from dfml.actors.inprocess import InProcessFederation

        return InProcessFederation(
            cfg.data, cfg.model, prep.splits, cfg.run.seed, cfg.resources, initial=prep.initial
        )
    if cfg.fault.active:
        from dfml.fault.federation import FaultTolerantFederation

        return FaultTolerantFederation(
            cfg.data,
            cfg.model,
            prep.splits,
            cfg.run.seed,
            cfg.resources,
            cfg.fault,
            cfg.run.rounds,
            initial=prep.initial,
            dataset=load_dataset(cfg.data),
        )
    return Federation(
        cfg.data,
        cfg.model,
        prep.splits,
        cfg.run.seed,
        cfg.resources,
        initial=prep.initial,
        dataset=load_dataset(cfg.data),
    )


class Experiment:
    """One experiment's live system: start and train, serve, close.

    A context manager, so the actors stay up after training for services on
    the trained system (Ray must already be initialised)::

        with Experiment(cfg, algorithm) as exp:
            result = exp.run()
            service = task_service(exp)  # dfml.launch.services
            print(service.submit([1, 4, 7]).accuracy)

    With ``checkpointer``, whole-run checkpoints are written every
    ``checkpoint_every`` rounds; with ``resume``, the run continues from that
    checkpoint (same config) instead of starting afresh.
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        algorithm: Algorithm,
        callbacks: Sequence[Callback] = (),
        prepared: Prepared | None = None,
        checkpointer: Checkpointer | None = None,
        resume: Checkpoint | None = None,
    ) -> None:
        self.cfg, self.algorithm, self.callbacks = cfg, algorithm, list(callbacks)
        self.t0 = time.perf_counter()
        self.prepared = prepared or prepare(cfg)
        self.federation = make_federation(cfg, self.prepared)
        self.runtime = Runtime(
            algorithm,
            self.federation,
            self.prepared.topology.copy(),
            cfg.run.rounds,
            callbacks=self.callbacks,
            schedule=self.prepared.schedule,
            clients_per_round=cfg.membership.clients_per_round,
            participation=cfg.membership.participation,
            checkpointer=checkpointer,
            resume=resume,
            seed=cfg.run.seed,
            eval_every=cfg.evaluation.eval_every,
        )
        self.result: ExperimentResult | None = None

    def __enter__(self) -> Experiment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self) -> ExperimentResult:
        """Train (and run the callbacks' steps); the actors stay up until :meth:`close`."""
        history = self.runtime.run()
        self.result = ExperimentResult(
            history,
            self.prepared,
            time.perf_counter() - self.t0,
            self.federation.info(),
            self.runtime,
        )
        return self.result

    def close(self) -> None:
        """Stop the client actors."""
        self.federation.shutdown()


def run_experiment(
    cfg: ExperimentConfig,
    algorithm: Algorithm,
    callbacks: Sequence[Callback] = (),
    prepared: Prepared | None = None,
    checkpointer: Checkpointer | None = None,
    resume: Checkpoint | None = None,
) -> ExperimentResult:
    """Run ``algorithm`` on real Ray actors and stop them; Ray must already be initialised."""
    with Experiment(cfg, algorithm, callbacks, prepared, checkpointer, resume) as exp:
        return exp.run()
