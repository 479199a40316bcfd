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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from dfml import programs
from dfml.channels import Row
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
class Message:
    """What one client receives for one step.

    ``neighbors`` are object refs (or, in-process, arrays) of the vectors to mix
    with; the client's own vector enters with ``self_weight``:
    x_i ← self_weight·x_i + Σ_j weights[j]·neighbors[j]. ``evaluate``: whether
    a training or adopt step also scores the client (``--eval-every``).
    """

    round: int
    neighbors: tuple[Any, ...] = ()
    weights: tuple[float, ...] = ()
    self_weight: float = 1.0
    extra: Mapping[str, Any] = field(default_factory=dict)
    evaluate: bool = True


class _ByClient(Mapping[int, Any]):
    """A read-only mapping over columns whose rows are the clients ``ids``
    (sorted), each value built when asked for (:meth:`__getitem__`)."""

    __slots__ = ("_position", "ids")

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = ids
        self._position: dict[int, int] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    def __iter__(self) -> Iterator[int]:
        return iter(self.ids.tolist())

    def __contains__(self, cid: object) -> bool:
        return cid in self._positions()

    def _positions(self) -> dict[int, int]:
        if self._position is None:
            self._position = {c: i for i, c in enumerate(self.ids.tolist())}
        return self._position


def _handles(bases: Sequence[Any], base_of: np.ndarray, row_of: np.ndarray) -> list[Any]:
    """The handles the (object, row) columns name: a :class:`Row` of a packed
    object, or the object itself where the row is −1."""
    return [
        Row(bases[b], r) if r >= 0 else bases[b]
        for b, r in zip(base_of.tolist(), row_of.tolist(), strict=True)
    ]


class MessageTable(_ByClient, Mapping[int, Message]):
    """A step's gossip messages as columns: a read-only mapping client id →
    :class:`Message`, each built when asked for.

    One message object per client was most of what the driver and the
    actors did besides training at 10,000 clients: building, pickling and
    unpickling 10,000 dataclasses, each with its tuples of handles. The
    table is a few arrays — the clients (sorted), their neighbours' handles
    as (packed object, row) pairs in CSR form, the weights — and one tuple
    of the distinct objects the handles name, so it pickles in one go and
    an actor reads its neighbours' handles without a message per client.
    Messages carry no ``extra``; any code may treat the table as the plain
    mapping it is.
    """

    __slots__ = (
        "base_of",
        "bases",
        "evaluate",
        "offsets",
        "round",
        "row_of",
        "self_weights",
        "weights",
    )

    def __init__(
        self,
        round: int,
        ids: np.ndarray,
        offsets: np.ndarray,
        bases: tuple[Any, ...],
        base_of: np.ndarray,
        row_of: np.ndarray,
        weights: np.ndarray,
        self_weights: np.ndarray,
        evaluate: bool = True,
    ) -> None:
        super().__init__(ids)
        self.round, self.offsets = round, offsets
        self.bases, self.base_of, self.row_of = bases, base_of, row_of
        self.weights, self.self_weights, self.evaluate = weights, self_weights, evaluate

    @classmethod
    def build(
        cls,
        round: int,
        rows: Sequence[tuple[int, float, Sequence[Any], Sequence[float]]],
        evaluate: bool = True,
    ) -> MessageTable:
        """The table of ``rows``: (client, self weight, neighbour handles,
        their weights) each, in any order. A handle is a :class:`Row` of a
        packed object, or the object (a ref; in-process, the array) itself."""
        rows = sorted(rows, key=lambda r: r[0])
        bases, base_of, row_of = _handle_columns([h for r in rows for h in r[2]])
        counts = [len(r[2]) for r in rows]
        return cls(
            round,
            np.array([r[0] for r in rows], dtype=np.int64),
            np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(np.int64),
            bases,
            base_of,
            row_of,
            np.array([w for r in rows for w in r[3]], dtype=np.float64),
            np.array([r[1] for r in rows], dtype=np.float64),
            evaluate,
        )

    # ----- the mapping ----------------------------------------------------
    def __getitem__(self, cid: int) -> Message:
        i = self._positions()[cid]
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return Message(
            self.round,
            tuple(self.handles(a, b)),
            tuple(self.weights[a:b].tolist()),
            float(self.self_weights[i]),
            evaluate=self.evaluate,
        )

    def handles(self, start: int = 0, stop: int | None = None) -> list[Any]:
        """The neighbour handles of entries ``start:stop`` (all by default), in
        client order and each client's neighbour order."""
        return _handles(self.bases, self.base_of[start:stop], self.row_of[start:stop])

    # ----- new tables -----------------------------------------------------
    def subset(self, ids: Sequence[int]) -> MessageTable:
        """The table of clients ``ids`` (each in this one), sharing ``bases``."""
        positions = self._positions()
        take = np.array(sorted(positions[c] for c in ids), dtype=np.int64)
        starts, stops = self.offsets[take], self.offsets[take + 1]
        counts = stops - starts
        offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
        entries = np.repeat(starts - offsets[:-1], counts) + np.arange(offsets[-1], dtype=np.int64)
        return MessageTable(
            self.round,
            self.ids[take],
            offsets,
            self.bases,
            self.base_of[entries],
            self.row_of[entries],
            self.weights[entries],
            self.self_weights[take],
            self.evaluate,
        )

    def unscored(self) -> MessageTable:
        """The same messages with ``evaluate`` off (``--eval-every``)."""
        return MessageTable(*self._columns()[:-1], evaluate=False)

    def _columns(self) -> tuple[Any, ...]:
        """The constructor's arguments, in order."""
        return (
            self.round,
            self.ids,
            self.offsets,
            self.bases,
            self.base_of,
            self.row_of,
            self.weights,
            self.self_weights,
            self.evaluate,
        )

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (MessageTable, self._columns())


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


class ResultTable(_ByClient, Mapping[int, StepResult]):
    """A step's results as columns: a read-only mapping client id →
    :class:`StepResult`, each built when asked for.

    An actor's answer to the driver, where every client has the same float
    metrics and publishes the same channels (a batched step): unpickling one
    :class:`StepResult` per client, each with its dicts and handles, was the
    driver's largest cost besides waiting at 10,000 clients. Columns: the
    clients (sorted), each metric as a float64 array, and each channel as
    the distinct objects its handles name, (object, row) arrays and the
    values' sizes in bytes.
    """

    __slots__ = ("channels", "metrics")

    def __init__(
        self,
        ids: np.ndarray,
        metrics: Mapping[str, np.ndarray],
        channels: Mapping[str, tuple[tuple[Any, ...], np.ndarray, np.ndarray, np.ndarray]],
    ) -> None:
        super().__init__(ids)
        self.metrics, self.channels = dict(metrics), dict(channels)

    @classmethod
    def pack(cls, results: Mapping[int, StepResult]) -> ResultTable | None:
        """``results`` as a table, or ``None`` when they are not alike (other
        metric names or channels per client, a metric that is not a float)."""
        ids = sorted(results)
        if not ids:
            return None
        first = results[ids[0]]
        names, channels = list(first.metrics), list(first.refs)
        if set(first.sizes) != set(channels):
            return None
        columns: dict[str, list[float]] = {n: [] for n in names}
        handles: dict[str, list[Any]] = {c: [] for c in channels}
        sizes: dict[str, list[int]] = {c: [] for c in channels}
        for cid in ids:
            res = results[cid]
            if list(res.metrics) != names or list(res.refs) != channels:
                return None
            if list(res.sizes) != list(res.refs):
                return None
            for n, v in res.metrics.items():
                if type(v) is not float:
                    return None
                columns[n].append(v)
            for c, h in res.refs.items():
                handles[c].append(h)
                sizes[c].append(res.sizes[c])
        return cls(
            np.array(ids, dtype=np.int64),
            {n: np.array(v, dtype=np.float64) for n, v in columns.items()},
            {
                c: (*_handle_columns(handles[c]), np.array(sizes[c], dtype=np.int64))
                for c in channels
            },
        )

    @classmethod
    def concat(cls, tables: Sequence[ResultTable]) -> ResultTable | None:
        """One table of the clients of ``tables`` (disjoint), or ``None`` when
        their metrics or channels differ."""
        if not tables:
            return None
        first = tables[0]
        if any(
            set(t.metrics) != set(first.metrics) or set(t.channels) != set(first.channels)
            for t in tables
        ):
            return None
        ids = np.concatenate([t.ids for t in tables])
        order = np.argsort(ids, kind="stable")
        channels = {}
        for name in first.channels:
            bases: list[Any] = []
            base_of = []
            for t in tables:
                part_bases, part_of, _, _ = t.channels[name]
                base_of.append(part_of + len(bases))
                bases.extend(part_bases)
            channels[name] = (
                tuple(bases),
                np.concatenate(base_of)[order],
                np.concatenate([t.channels[name][2] for t in tables])[order],
                np.concatenate([t.channels[name][3] for t in tables])[order],
            )
        metrics = {n: np.concatenate([t.metrics[n] for t in tables])[order] for n in first.metrics}
        return cls(ids[order], metrics, channels)

    def __getitem__(self, cid: int) -> StepResult:
        i = self._positions()[cid]
        refs, sizes = {}, {}
        for name, (bases, base_of, row_of, size) in self.channels.items():
            (refs[name],) = _handles(bases, base_of[i : i + 1], row_of[i : i + 1])
            sizes[name] = int(size[i])
        return StepResult(refs, {n: float(v[i]) for n, v in self.metrics.items()}, sizes)

    def handles(self, name: str) -> list[Any]:
        """Channel ``name``'s handle of every client, in client order."""
        bases, base_of, row_of, _ = self.channels[name]
        return _handles(bases, base_of, row_of)

    def metric_rows(self) -> list[dict[str, float]]:
        """Every client's metrics, in client order."""
        names = list(self.metrics)
        if not names:
            return [{} for _ in range(len(self.ids))]
        columns = zip(*(self.metrics[n].tolist() for n in names), strict=True)
        return [dict(zip(names, row, strict=True)) for row in columns]

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (ResultTable, (self.ids, self.metrics, self.channels))


def join_results(parts: Sequence[Mapping[int, StepResult]]) -> Mapping[int, StepResult]:
    """The results of disjoint groups of clients (an actor's chunks, the
    actors of a step) as one: a :class:`ResultTable` where every part is one
    and they are alike, else a dict in client order."""
    if parts and all(isinstance(p, ResultTable) for p in parts):
        table = parts[0] if len(parts) == 1 else ResultTable.concat(parts)
        if table is not None:
            return table
    out: dict[int, StepResult] = {}
    for part in parts:
        out.update(part)
    return dict(sorted(out.items()))


def _handle_columns(handles: Sequence[Any]) -> tuple[tuple[Any, ...], np.ndarray, np.ndarray]:
    """(the distinct objects ``handles`` name, each handle's object, its row or −1)."""
    bases: list[Any] = []
    index: dict[int, int] = {}  # id(object) → its place in bases
    base_of, row_of = [], []
    for h in handles:
        base, row = (h.ref, h.index) if isinstance(h, Row) else (h, -1)
        k = index.get(id(base))
        if k is None:
            k = index[id(base)] = len(bases)
            bases.append(base)
        base_of.append(k)
        row_of.append(row)
    return tuple(bases), np.array(base_of, dtype=np.int64), np.array(row_of, dtype=np.int64)


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
        if isinstance(results, ResultTable):
            ids = results.ids.tolist()
            for name, (_, _, _, sizes) in results.channels.items():
                self.channels.setdefault(name, {}).update(
                    zip(ids, results.handles(name), strict=True)
                )
                self.sizes.setdefault(name, {}).update(zip(ids, sizes.tolist(), strict=True))
            return
        for cid, res in results.items():
            for name, ref in res.refs.items():
                self.channels.setdefault(name, {})[cid] = ref
            for name, size in res.sizes.items():
                self.sizes.setdefault(name, {})[cid] = size

    def merge_metrics(self, results: Mapping[int, Any]) -> None:
        if isinstance(results, ResultTable):
            for cid, metrics in zip(results.ids.tolist(), results.metric_rows(), strict=True):
                self.metrics.setdefault(cid, {}).update(metrics)
            return
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
