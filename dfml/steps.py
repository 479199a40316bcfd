"""What the driver asks of the clients: typed steps, their sources, the driver's state.

The loop (:mod:`dfml.runtime.loop`) is written once; each :class:`StepSource`
of a run — the algorithm's driver half, the evaluation protocol, a service
— says what runs next by returning a :class:`Step` (a phase name, the
registered client program to run, the participating client ids with one
message each) or ``None`` when it has nothing more this round. Training
rounds, FedAvg's server adopt and the final personalized evaluation are
all steps, so checkpoints, chaos, progress and metrics cover every one.

:class:`DriverState` is everything the sources remember between steps
(after fedjax's explicit server state): the latest object refs per named
channel, the global model, one typed slot per source that keeps state of
its own (e.g. MEFL's EOA, CL-FML's clustering), the round and what the
round has measured so far. It lives in the driver only — the algorithm
object shipped to the actors holds its config and nothing else — and its
array parts are what a whole-run checkpoint saves.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dfml import programs
from dfml.programs import Metrics

#: The channel every client publishes: its flat parameter vector.
PARAMS = "params"

#: What clients publish after a step: ``True`` every channel, ``False`` none,
#: or the names of the channels the step changes (the others keep their
#: handles: their values are the same, and putting them again would cost a
#: store write each, per client and step).
Publish = bool | tuple[str, ...]


class Phase(enum.StrEnum):
    """Phase names the core and the base algorithms use (a plugin adds its own)."""

    TRAIN = "train"
    ADOPT = "adopt"
    EVALUATE = "evaluate"
    FINAL_EVALUATION = "final-evaluation"


@dataclass(frozen=True)
class Step:
    """One step of the run: ``program`` on every client in ``messages``.

    Attributes:
        phase: the phase name callbacks and the fault layer see.
        program: the name of a registered client program (:mod:`dfml.programs`).
        round: the round the step belongs to.
        messages: participating client id → its :class:`~dfml.algorithms.base.Message`.
        publish: which channels clients publish afterwards (:data:`Publish`):
            all (``True``), none (``False``: a read-only step, e.g.
            evaluation), or only the named ones the step changes.
        bytes_sent: model bytes this step moves between clients.
        read_only: the step changes no client state (evaluation): the fault
            layer makes no replica after it.
    """

    phase: str
    program: str
    round: int
    messages: Mapping[int, Any]
    publish: Publish = True
    bytes_sent: int = 0
    read_only: bool = False

    def __post_init__(self) -> None:
        programs.get(self.program)  # an unknown name fails where the step is planned

    @property
    def participants(self) -> list[int]:
        return sorted(self.messages)


@dataclass(frozen=True)
class StepResult:
    """A client's answer: refs of its published channels and small metrics.

    ``sizes`` is the size in bytes of each published channel value: what a
    neighbour fetching it receives (a compressed channel's encoded bytes).
    """

    refs: Mapping[str, Any]
    metrics: Metrics
    sizes: Mapping[str, int] = field(default_factory=dict)

    @property
    def ref(self) -> Any:
        """The ref of the ``params`` channel (``None`` if nothing was published)."""
        return self.refs.get(PARAMS)

    @property
    def nbytes(self) -> int:
        """The size of the published parameter vector (0 if none was published)."""
        return self.sizes.get(PARAMS, 0)


@dataclass
class DriverState:
    """The driver half's memory between steps (checkpointable).

    Attributes:
        round: the round in progress (completed rounds before it).
        phases: phases already run in this round, in order.
        channels: channel name → client id → latest published ref.
        sizes: channel name → client id → bytes of its latest published value.
        global_ref: the server's model (server mode), else ``None``.
        sources: step source name → that source's own state (a dataclass it
            owns, e.g. MEFL's EOA, CL-FML's clustering); checkpointed with the rest.
        metrics: client id → metrics measured so far in this round.
        trained: clients that ran the training step this round.
        bytes_sent: model bytes moved so far in this round.
    """

    round: int = 0
    phases: list[str] = field(default_factory=list)
    channels: dict[str, dict[int, Any]] = field(default_factory=lambda: {PARAMS: {}})
    sizes: dict[str, dict[int, int]] = field(default_factory=lambda: {PARAMS: {}})
    global_ref: Any = None
    sources: dict[str, Any] = field(default_factory=dict)
    metrics: dict[int, Metrics] = field(default_factory=dict)
    trained: set[int] = field(default_factory=set)
    bytes_sent: int = 0

    @property
    def refs(self) -> dict[int, Any]:
        """The ``params`` channel: client id → ref of its latest vector."""
        return self.channels[PARAMS]

    @property
    def nbytes(self) -> dict[int, int]:
        """The ``params`` channel's sizes: client id → bytes of its latest vector."""
        return self.sizes.setdefault(PARAMS, {})

    def publish(self, results: Mapping[int, StepResult]) -> None:
        """Record every published channel of ``results`` and its size."""
        for cid, res in results.items():
            for name, ref in res.refs.items():
                self.channels.setdefault(name, {})[cid] = ref
            for name, size in res.sizes.items():
                self.sizes.setdefault(name, {})[cid] = size

    def merge_metrics(self, results: Mapping[int, Any]) -> None:
        for cid, res in results.items():
            self.metrics.setdefault(cid, {}).update(res.metrics)

    def forget(self, ids: list[int]) -> None:
        """Drop departed clients from every channel."""
        for per_client in [*self.channels.values(), *self.sizes.values()]:
            for cid in ids:
                per_client.pop(cid, None)
        for cid in ids:
            self.metrics.pop(cid, None)
        self.trained -= set(ids)

    def next_round(self) -> None:
        self.round += 1
        self.phases = []
        self.metrics = {}
        self.trained = set()
        self.bytes_sent = 0


class StepSource(abc.ABC):
    """Anything that plans steps: an algorithm's driver half, the evaluation
    protocol, a service on the trained system.

    The loop asks the run's sources in order for their next step; the first
    that has one runs, and its results go back to that source's
    :meth:`absorb`. What a source must remember from one round to the next
    goes in its slot of :attr:`DriverState.sources`, so a checkpoint holds it.
    """

    #: Whether this source plans the round's training in place of the
    #: algorithm's driver half (an event-driven schedule such as
    #: asynchronous clients): the loop then asks it first and never asks
    #: the algorithm.
    plans_training: ClassVar[bool] = False

    @abc.abstractmethod
    def next_step(self, state: DriverState, env: Any) -> Step | None:
        """The next step in the current round, or ``None`` when this source is done.

        ``env`` is the run's :class:`~dfml.algorithms.base.RunEnv` (topology,
        data sizes, the round's cohort).
        """

    @abc.abstractmethod
    def absorb(
        self, state: DriverState, step: Step, results: Mapping[int, StepResult], env: Any
    ) -> None:
        """Fold ``step``'s ``results`` into ``state``."""
