"""The step loop, written once.

Each round, the :class:`Runtime`

1. tells the topology the round begins (a dynamic topology, such as
   ``epidemic``, draws the round's graph), then applies the membership
   changes due before it (the schedule's, and those asked for through
   :meth:`Runtime.add_clients` / :meth:`Runtime.remove_clients`): the roster
   places or drops clients, the topology rewires by its rule, a joining
   client starts from the data-size weighted average of its nearest clients
   that hold a model (its new neighbours when they do; on a round graph that
   reaches none, the nearest such client on the ring of live ids), or from
   the global model in server mode;
2. samples the round's training cohort (partial participation);
3. asks its step sources in order for the next step until none has one:
   the algorithm's driver half (or a callback that plans the training in
   its place, :attr:`~dfml.steps.StepSource.plans_training`), then the callbacks that are step sources
   (the personalized evaluation of the last round, the task service), then
   an evaluation of the live clients that have no accuracy yet this round
   (clients that did not train), so every live client has a row; a round
   that ``--eval-every k`` does not score skips evaluation altogether;
4. hands the round to the callbacks, stops on a diverged client, and writes
   a whole-run checkpoint when one is due.

Everything the driver remembers is in :class:`~dfml.steps.DriverState`,
the :class:`~dfml.actors.roster.Roster` and the
:class:`~dfml.topology.service.TopologyService`; a checkpoint saves those
(plus every client state) and :meth:`Runtime.run` resumes from one.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from ray.exceptions import RayTaskError

from dfml import programs
from dfml.actors.client_actor import ClientStepError
from dfml.actors.heap import frozen_heap
from dfml.actors.placement import cross_node_bytes
from dfml.algorithms.base import EVALUATE, Algorithm, Message, RunEnv
from dfml.channels import get_value, is_handle
from dfml.errors import ConfigError, TrainingDivergedError
from dfml.records import RoundRecord
from dfml.runtime.checkpoint import Checkpoint, Checkpointer
from dfml.runtime.federation import FederationProtocol
from dfml.runtime.membership import Change, join_sources, sample_clients
from dfml.steps import PARAMS, DriverState, MessageTable, Phase, Step, StepResult, StepSource
from dfml.topology.service import TopologyService

log = logging.getLogger(__name__)


class _EvaluateMissing(StepSource):
    """Evaluates the live clients that have no accuracy yet in this round."""

    def next_step(self, state: DriverState, env: RunEnv) -> Step | None:
        if not env.evaluate:
            return None
        missing = [c for c in env.live() if "accuracy" not in state.metrics.get(c, {})]
        if not missing or Phase.EVALUATE in state.phases:
            return None
        msg = Message(round=state.round)
        return Step(
            Phase.EVALUATE,
            EVALUATE,
            state.round,
            dict.fromkeys(missing, msg),
            publish=False,
            read_only=True,
        )

    def absorb(
        self, state: DriverState, step: Step, results: Mapping[int, StepResult], env: RunEnv
    ) -> None:
        state.merge_metrics(results)


def _unscored(step: Step) -> Step:
    """``step`` with its messages told not to score (``--eval-every``), if its
    program scores (training, adopt)."""
    if not programs.get(step.program).scored:
        return step
    if isinstance(step.messages, MessageTable):
        return dataclasses.replace(step, messages=step.messages.unscored())
    messages = {c: dataclasses.replace(m, evaluate=False) for c, m in step.messages.items()}
    return dataclasses.replace(step, messages=messages)


def _materialize(value: Any) -> Any:
    """``value`` with every object ref replaced by the object (for a checkpoint);
    also inside the dataclasses step sources keep in their slots."""
    if is_handle(value):
        return get_value(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return dataclasses.replace(
            value, **{f.name: _materialize(getattr(value, f.name)) for f in fields if f.init}
        )
    if isinstance(value, dict):
        return {k: _materialize(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_materialize(v) for v in value)
    return value


class Runtime:
    """Drives one algorithm over a federation, round by round, step by step."""

    def __init__(
        self,
        algorithm: Algorithm,
        federation: FederationProtocol,
        topology: TopologyService,
        rounds: int,
        *,
        callbacks: Sequence[Any] = (),
        schedule: Mapping[int, Change] | None = None,
        clients_per_round: int | None = None,
        participation: float = 1.0,
        checkpointer: Checkpointer | None = None,
        resume: Checkpoint | None = None,
        seed: int = 0,
        eval_every: int = 1,
    ) -> None:
        self.algorithm, self.federation, self.topology = algorithm, federation, topology
        self.rounds = rounds
        self.callbacks = list(callbacks)
        planners = [cb for cb in self.callbacks if isinstance(cb, StepSource)]
        trainers = [cb for cb in planners if cb.plans_training]
        if len(trainers) > 1:
            raise ConfigError(
                f"{len(trainers)} callbacks plan the training in place of the algorithm; "
                "at most one may"
            )
        #: Asked in this order for each next step: the algorithm (or the one
        #: callback that plans the training in its place, such as the
        #: asynchronous schedule), the other callbacks that plan steps (in
        #: callback order), the evaluation of clients still unscored.
        self.sources: list[StepSource] = [
            *(trainers or [algorithm]),
            *(cb for cb in planners if not cb.plans_training),
            _EvaluateMissing(),
        ]
        self.schedule = dict(schedule or {})
        self.clients_per_round, self.participation = clients_per_round, participation
        self.checkpointer, self.resume, self.seed = checkpointer, resume, seed
        self.eval_every = eval_every
        #: Seconds to start the actors (build every client, load its data) or restore them.
        self.start_seconds = 0.0
        self.state = DriverState()
        self.history: list[RoundRecord] = []
        self.joins: dict[int, list[int]] = {}
        self.leaves: dict[int, list[int]] = {}
        self._pending: list[Change] = []
        self._lock = threading.Lock()
        self.env = RunEnv(topology, {}, rounds, seed=seed)

    # ----- the Python API on a running experiment ---------------------------
    def add_clients(self, count: int) -> None:
        """Ask for ``count`` clients (the next reserved data shares) to join before the next round."""
        if count < 1:
            raise ConfigError(f"add_clients needs a count >= 1, got {count}")
        with self._lock:
            free = self._free_reserve()
            taken = {c for ch in self._pending for c in ch.join}
            free = [c for c in free if c not in taken]
            if count > len(free):
                raise ConfigError(
                    f"cannot add {count} clients: only {len(free)} reserved data shares are left"
                )
            self._pending.append(Change(join=free[:count]))

    def remove_clients(self, ids: Sequence[int]) -> None:
        """Ask for clients ``ids`` to leave before the next round."""
        with self._lock:
            unknown = [c for c in ids if c not in self.federation.roster]
            if unknown:
                raise ConfigError(f"cannot remove clients {unknown}: not live")
            self._pending.append(Change(leave=sorted(ids)))

    def _free_reserve(self) -> list[int]:
        planned = {c for ch in self.schedule.values() for c in ch.join}
        roster = self.federation.roster
        used = set(roster.ids()) | roster.departed | planned
        return [c for c in sorted(self.federation.splits) if c not in used and c >= roster.next_id]

    # ----- start / resume --------------------------------------------------
    def _sizes(self) -> dict[int, int]:
        splits = self.federation.splits
        return {c: len(splits[c].train) for c in self.federation.live()}

    def _start(self) -> None:
        ckpt = self.resume
        if ckpt is None:
            if self.federation.roster is None:
                self.federation.plan()
            results = self.federation.start(self.algorithm)
        else:
            from dfml.actors.roster import Roster

            driver = ckpt.driver
            self.federation.plan(Roster.from_dict(driver["roster"]))
            self.topology = TopologyService.from_state(self.topology.cfg, driver["topology"])
            self.env.topology = self.topology
            results = self.federation.start(self.algorithm, ckpt.states)
        self.state.publish(results)
        self.env.sizes = self._sizes()
        if ckpt is not None:
            self._restore_driver(ckpt)

    def _restore_driver(self, ckpt: Checkpoint) -> None:
        driver = ckpt.driver
        saved = driver["state"]
        self.state.round = ckpt.round
        self.state.sources = saved["sources"]
        if saved["global"] is not None:
            self.state.global_ref = self.federation.put(saved["global"])
            for cid in saved["global_holders"]:
                self.state.refs[cid] = self.state.global_ref
        self.history = [RoundRecord(**r) for r in driver["history"]]
        self.joins, self.leaves = driver["joins"], driver["leaves"]
        for cb in self.callbacks:
            cb.on_resume(self.history)
        log.warning(
            "resumed at round %d from %s",
            ckpt.round,
            self.checkpointer.uri if self.checkpointer else "?",
        )

    def _checkpoint(self) -> None:
        assert self.checkpointer is not None
        t0 = time.perf_counter()
        state = self.state
        holders = [
            c
            for c, ref in state.refs.items()
            if state.global_ref is not None and ref is state.global_ref
        ]
        driver = {
            "state": {
                "sources": _materialize(state.sources),
                "global": _materialize(state.global_ref),
                "global_holders": holders,
            },
            "roster": self.federation.roster.to_dict(),
            "topology": self.topology.state_dict(),
            "history": [vars(r) | {"trained": frozenset(r.trained)} for r in self.history],
            "joins": self.joins,
            "leaves": self.leaves,
        }
        states = self.federation.get_states()
        self.checkpointer.save(state.round, driver, states)
        self.checkpointer.seconds += time.perf_counter() - t0

    # ----- membership -------------------------------------------------------
    def _apply_changes(self, round_index: int) -> None:
        with self._lock:
            changes = [
                *([self.schedule[round_index]] if round_index in self.schedule else []),
                *self._pending,
            ]
            self._pending = []
        for change in changes:
            if change.join:
                self._join(round_index, change.join)
            if change.leave:
                self._leave(round_index, change.leave)

    def _join(self, round_index: int, ids: list[int]) -> None:
        splits = self.federation.splits
        self.topology.join({c: len(splits[c].train) for c in ids})
        starts = {c: self._start_message(c, set(ids)) for c in ids}
        results = self.federation.add_clients(starts)
        self.state.publish(results)
        self.env.sizes = self._sizes()
        self.joins.setdefault(round_index, []).extend(ids)

    def _start_message(self, cid: int, joining: set[int]) -> Message:
        """Where a joining client starts: the global model, or its nearest models."""
        state = self.state
        if state.global_ref is not None:
            return Message(state.round, (state.global_ref,), (1.0,), 0.0)
        holders = {c for c in state.refs if c not in joining}
        nearest = join_sources(self.topology.graph, cid, holders, self.topology.ids())
        sizes = np.array([self.env.sizes[c] for c in nearest], dtype=np.float64)
        weights = tuple(float(w) for w in sizes / sizes.sum())
        return Message(state.round, tuple(state.refs[c] for c in nearest), weights, 0.0)

    def _leave(self, round_index: int, ids: list[int]) -> None:
        self.topology.leave(ids)
        self.federation.remove_clients(ids)
        self.state.forget(ids)
        self.env.sizes = self._sizes()
        self.leaves.setdefault(round_index, []).extend(ids)

    # ----- the loop ---------------------------------------------------------
    def _cross_node_bytes(self, step: Step) -> int:
        """Bytes of the channel values ``step`` makes clients fetch from another
        node (each channel counted with its own sizes: a compressed channel
        with its encoded bytes)."""
        if len(set(self.federation.slot_nodes().values())) < 2:
            return 0  # one node: skip the per-client work on every step
        nodes = self.federation.client_nodes()
        total = 0
        for name, refs in self.state.channels.items():
            sender = {ref: cid for cid, ref in refs.items()}
            fetches = [
                (cid, sender[ref])
                for cid, msg in step.messages.items()
                for ref in msg.neighbors
                if ref in sender
            ]
            total += cross_node_bytes(fetches, nodes, self.state.sizes.get(name, {}))
        return total

    def _steps(self) -> tuple[dict[str, float], int, int]:
        """Run the round's steps; (seconds per phase, model bytes moved, of them across nodes)."""
        phase_seconds: dict[str, float] = {}
        crossed = 0
        state, env = self.state, self.env
        while True:
            found = self._next_step()
            if found is None:
                return phase_seconds, state.bytes_sent, crossed
            owner, step = found
            if not env.evaluate:
                step = _unscored(step)
            crossed += self._cross_node_bytes(step)
            seconds = self._run_step(owner, step)
            phase_seconds[step.phase] = phase_seconds.get(step.phase, 0.0) + seconds

    def _next_step(self) -> tuple[StepSource, Step] | None:
        """The first source with a step to run, and that step; ``None``: the round is over."""
        for source in self.sources:
            step = source.next_step(self.state, self.env)
            if step is not None:
                return source, step
        return None

    def _run_step(self, owner: StepSource, step: Step) -> float:
        """Run one step on the clients, hand the results to its planner; its seconds."""
        t0 = time.perf_counter()
        try:
            results = self.federation.run_step(step)
        except ClientStepError as err:  # in-process federation
            raise err.in_phase(step.phase) from err
        except RayTaskError as err:  # an actor's error, with the client's as its cause
            if isinstance(err.cause, ClientStepError):
                raise err.cause.in_phase(step.phase) from err
            raise
        owner.absorb(self.state, step, results, self.env)
        self.state.phases.append(step.phase)
        self.state.bytes_sent += step.bytes_sent
        seconds = time.perf_counter() - t0
        for cb in self.callbacks:
            cb.on_step_end(step, seconds)
        return seconds

    def serve(self, source: StepSource) -> float:
        """Run ``source``'s steps now, on the live clients, outside the round loop.

        For services on a trained system (the task service's ``submit``):
        the algorithm plans nothing, no round is counted; returns the seconds.
        """
        if self.federation.roster is None:
            raise ConfigError("the runtime has no clients yet: run it first")
        total = 0.0
        while (step := source.next_step(self.state, self.env)) is not None:
            total += self._run_step(source, step)
        return total

    def run(self) -> list[RoundRecord]:
        t0 = time.perf_counter()
        self._start()
        self.start_seconds = time.perf_counter() - t0
        # The roster, splits, topology and handles live as long as the run.
        with frozen_heap():
            for cb in self.callbacks:
                cb.on_start(self)
                cb.on_run_start(self.algorithm, self.federation)
            while self.state.round < self.rounds:
                t0 = time.perf_counter()
                r = self.state.round
                self.topology.begin_round(r)
                self._apply_changes(r)
                self.env.sampled = sample_clients(
                    self.env.live(), r, self.seed, self.clients_per_round, self.participation
                )
                self.env.evaluate = (r + 1) % self.eval_every == 0 or r == self.rounds - 1
                phase_seconds, sent, crossed = self._steps()
                live = self.env.live()
                record = RoundRecord(
                    r,
                    {c: self.state.metrics.get(c, {}) for c in live},
                    sent,
                    time.perf_counter() - t0,
                    self.federation.roster.epoch,
                    frozenset(self.state.trained),
                    phase_seconds,
                    crossed,
                )
                self.history.append(record)
                for cb in self.callbacks:
                    cb.on_round_end(record)
                check_finite(record)
                self.state.next_round()
                if self.checkpointer is not None and (
                    self.checkpointer.due(self.state.round) or self.state.round == self.rounds
                ):
                    self._checkpoint()
        for cb in self.callbacks:
            cb.on_run_end(self.history)
        return self.history

    # ----- what callbacks and tests may read --------------------------------
    @property
    def splits(self) -> Mapping[int, Any]:
        return self.federation.splits

    def live(self) -> list[int]:
        return self.federation.live()

    def published(self, channel: str = PARAMS) -> dict[int, Any]:
        """Client id → ref of its latest published object on ``channel``."""
        return dict(self.state.channels.get(channel, {}))


def run(
    algorithm: Algorithm,
    federation: FederationProtocol,
    rounds: int,
    callbacks: Sequence[Any] = (),
    *,
    topology: TopologyService,
) -> list[RoundRecord]:
    """Run ``rounds`` rounds of ``algorithm`` on ``federation`` over ``topology``.

    A convenience over :class:`Runtime` for tests and notebooks: fixed
    membership, every client every round, no checkpoints.
    """
    return Runtime(algorithm, federation, topology, rounds, callbacks=callbacks).run()


def check_finite(record: RoundRecord) -> None:
    """Stop the run on the first client whose loss is NaN/inf."""
    for cid in sorted(record.metrics):
        loss = record.metrics[cid].get("train_loss", 0.0)
        if not math.isfinite(loss):
            raise TrainingDivergedError(cid, record.round, loss)
