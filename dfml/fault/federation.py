"""The fault-tolerant federation: ``step`` returns complete results, or raises.

:class:`FaultTolerantFederation` is a drop-in :class:`Federation`. The round
loop (``Algorithm.run``) does not know about failures: every ``step`` and
``call`` either returns a result for every client or raises
:class:`FaultToleranceError`.

**Replication (Dispatcher).** After each call of every ``checkpoint_every``-th
round (and once at start), each actor packs its clients' states and pushes
them to their leaf-set holders (and the store, and the durable copy); the
call is complete only when those copies are acknowledged. A replica's
version is the call number, so "newest" is well defined.

**The redo rule: a failed call is redone, never half-kept.** A failure
during a call (chaos strikes right after the call is sent; a death in the
call's replication phase counts too) is handled inside that call:

1. every client of a dead actor is restored on a replacement actor from its
   newest acknowledged replica taken *before* this call (or re-initialised:
   a *loss*) and re-publishes its vector; the call's messages are rewritten
   to point at the re-published vectors;
2. the restored clients redo the call from the restored state (its results
   from the dead actor, if any arrived, are dropped);
3. a client that already finished the call having mixed a restored client's
   vector is rolled back and redoes it too — but only when the restored
   vector differs from the one it used (the replica is older than the call);
4. the call's replicas are (re)made.

A death between calls is found at the start of the next call and handled
the same way (the newest replica then is the state after the last call).

Steps are deterministic functions of (state, neighbour vectors, round seed)
and Chaos decides *what* fails from (seed, round), so the result of a
chaos run depends only on the seed, never on timing. With
``checkpoint_every=1`` the newest replica is exactly the state before the
failed call, no re-published vector differs, and the run is bit-identical
to the failure-free one. With ``checkpoint_every=k`` a restored client
loses (and the run replays differently) the progress since its replica.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import ray
from ray.exceptions import RayError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from dfml.actors.config import ResourceConfig
from dfml.actors.federation import Federation
from dfml.algorithms.base import Message
from dfml.data.config import DataConfig
from dfml.data.partition import ClientSplit
from dfml.errors import ConfigError
from dfml.fault.actor import RemoteFaultClientActor, RestorePlan
from dfml.fault.chaos import strike_round
from dfml.fault.config import FaultConfig
from dfml.fault.dispatcher import TIERS, ReplicaIndex, ReplicaRecord, replication_plan, ring_order
from dfml.fault.events import FaultEvent
from dfml.fault.holder import RemoteReplicaStore
from dfml.fault.manager import Manager
from dfml.fault.retriever import order_candidates
from dfml.models.zoo import ModelConfig
from dfml.steps import Entry, Step, StepResult

log = logging.getLogger(__name__)


@dataclass
class _Unsettled:
    """A call whose results are out but whose replicas may still be in flight."""

    seq: int
    rnd: int | None
    read_only: bool
    method: Entry
    messages: dict[int, Any]
    publish: bool
    before: dict[int, tuple[ray.ObjectRef, str]]
    copies: dict[int, ray.ObjectRef]
    copied_by: dict[int, str]


class FaultToleranceError(RuntimeError):
    """A call could not be completed despite recovery (or the failure was no crash)."""


def _refs_in(msg: Any) -> set[ray.ObjectRef]:
    if not isinstance(msg, Message):
        return set()
    values = [*msg.neighbors, *msg.extra.values()]
    return {v for v in values if isinstance(v, ray.ObjectRef)}


def _substitute(msg: Any, renamed: Mapping[ray.ObjectRef, tuple[int, ray.ObjectRef]]) -> Any:
    """The message with every re-published client's vector ref swapped in."""
    if not renamed or not isinstance(msg, Message):
        return msg

    def swap(v: Any) -> Any:
        return renamed[v][1] if isinstance(v, ray.ObjectRef) and v in renamed else v

    return dataclasses.replace(
        msg,
        neighbors=tuple(swap(v) for v in msg.neighbors),
        extra={k: swap(v) for k, v in msg.extra.items()},
    )


class FaultTolerantFederation(Federation):
    """Client actors that are replicated, watched, replaced and restored."""

    def __init__(
        self,
        data: DataConfig,
        model: ModelConfig,
        splits: Sequence[ClientSplit],
        seed: int,
        resources: ResourceConfig,
        fault: FaultConfig,
        rounds: int | None = None,
        start_timeout_s: float = 300.0,
        initial: Sequence[int] | None = None,
    ) -> None:
        super().__init__(data, model, splits, seed, resources, start_timeout_s, initial)
        if rounds is not None:
            fault.check_rounds(rounds)
        self.fault = fault
        self.rounds = rounds
        self.restores = fault.restores
        self.index = ReplicaIndex(fault.keep_versions)
        self.manager = Manager(self)
        self.events: list[FaultEvent] = []
        self.holders: dict[str, Any] = {}
        self.holder_kind: dict[str, str] = {}
        self.placement: dict[str, dict[str, Any]] = {}
        self.published: dict[int, tuple[ray.ObjectRef, str]] = {}
        self.renamed: dict[ray.ObjectRef, tuple[int, ray.ObjectRef]] = {}
        self.algorithm: Any = None
        self.seq = 0
        self.round_index = -1
        self.replication_bytes = 0
        self.replication_seconds = 0.0
        self.redone_steps = 0
        self._restoring: dict[int, tuple[str, str, ray.ObjectRef]] = {}
        self._call_seq: int | None = None
        self._unsettled: _Unsettled | None = None
        self._replicated_seq = -1
        self._struck: set[int] = set()
        self._step_round: int | None = None
        self._step_read_only = False
        self._t0 = time.perf_counter()

    # ----- bookkeeping --------------------------------------------------
    def clock(self) -> float:
        return time.perf_counter() - self._t0

    def record(self, event: FaultEvent) -> None:
        self.events.append(event)

    def forget_holder(self, incarnation: str) -> None:
        self.holders.pop(incarnation, None)
        self.index.forget_holder(incarnation)

    @property
    def max_attempts(self) -> int:
        return 10 + 4 * len(self.cohorts)

    # ----- actors ---------------------------------------------------------
    def actor_options(self, index: int) -> dict[str, Any]:
        # Never let Ray restart a client actor: it would come back with fresh
        # parameters and answer as if nothing happened.
        return {**super().actor_options(index), "max_restarts": 0, "max_task_retries": 0}

    def make_actor(
        self,
        index: int,
        algorithm: Any,
        options: Mapping[str, Any] | None = None,
        clients: Sequence[int] | None = None,
    ) -> Any:
        opts = {**self.actor_options(index), **(options or {})}
        members = self.cohorts[index] if clients is None else clients
        return RemoteFaultClientActor.options(**opts).remote(
            self.spec(members), algorithm, self.fault.keep_versions
        )

    def make_spare(self) -> Any:
        """An idle actor (torch and dataset loaded, no clients) on any node.

        It reserves no CPU while idle (the actor it replaces frees one).
        """
        opts = {**self.actor_options(0), "num_cpus": 0, "scheduling_strategy": "SPREAD"}
        return RemoteFaultClientActor.options(**opts).remote(
            self.spec([]), self.algorithm, self.fault.keep_versions
        )

    def start_store(self) -> None:
        """The replica store, on the driver's node: it fails only with the driver."""
        if not (self.restores and self.fault.replica_store):
            return
        inc = self.manager.new_incarnation("store")
        here = ray.get_runtime_context().get_node_id()
        handle = RemoteReplicaStore.options(
            num_cpus=0,
            max_restarts=0,
            scheduling_strategy=NodeAffinitySchedulingStrategy(here, soft=False),
        ).remote(self.fault.keep_versions)
        self.manager.watch("store", inc, handle)
        self.manager.store = (inc, handle)
        self.holders[inc] = handle
        self.holder_kind[inc] = "store"

    def start(
        self, algorithm: Any, states: Mapping[int, Any] | None = None
    ) -> dict[int, StepResult]:
        self.algorithm = algorithm
        if self.roster is None:
            self.plan()
        if self.fault.chaos and self.fault.chaos_mode == "node":
            alive = [n for n in ray.nodes() if n.get("Alive")]
            if len(alive) < 2:
                raise ConfigError(
                    f"chaos_mode 'node' needs a multi-node Ray cluster; this one has {len(alive)} node"
                )
        self.actors = [self.make_actor(k, algorithm) for k in range(len(self.cohorts))]
        for k, handle in enumerate(self.actors):
            self.manager.register_actor(k, handle)
        self.start_store()
        self.manager.replenish()
        pending = [
            a.start_info.remote(None if states is None else {c: states[c] for c in self.cohorts[k]})
            for k, a in enumerate(self.actors)
        ]
        _, not_ready = ray.wait(pending, num_returns=len(pending), timeout=self.start_timeout_s)
        if not_ready:
            self.shutdown()
            raise ConfigError(
                f"{len(not_ready)} of {len(pending)} client actors could not be placed within "
                f"{self.start_timeout_s:.0f} s (each asks for {self.resources.num_cpus_per_actor} CPU, "
                f"{self.resources.num_gpus_per_actor} GPU; cluster has {ray.cluster_resources()})"
            )
        started: dict[int, StepResult] = {}
        for k, info in enumerate(ray.get(pending)):
            inc = self.manager.incarnation[k]
            self._placed(inc, k, info)
            for cid, res in info["results"].items():
                self.published[cid] = (res.ref, info["digests"][cid])
            started.update(info["results"])
        if self.restores:
            everyone = set(range(len(self.cohorts)))
            self._retry(lambda: self._replicate(0) == everyone)
            self._replicated_seq = 0
        log.info(
            "fault-tolerant federation: %d actors, %d spares, replicas=%d, store=%s",
            len(self.actors),
            len(self.manager.spares),
            self.fault.replicas,
            self.manager.store is not None,
        )
        return dict(sorted(started.items()))

    def _by_actor(self, messages: Mapping[int, Any]) -> dict[int, dict[int, Any]]:
        """Messages grouped by the actor slot hosting each client."""
        return {
            k: {c: messages[c] for c in ids} for k, ids in self.roster.by_slot(messages).items()
        }

    # ----- membership -------------------------------------------------
    def open_slot(self, k: int) -> None:
        handle = self.make_actor(k, self.algorithm, clients=[])
        self.actors.append(handle)
        inc = self.manager.register_actor(k, handle)
        self._placed(inc, k, ray.get(handle.ping.remote()))

    def add_clients(self, starts: Mapping[int, Any]) -> dict[int, StepResult]:
        """Join, then replicate the joined clients at once, so that a death in
        the very next step restores them too (instead of losing them)."""
        self._settle()
        self.recover()
        results = super().add_clients(starts)
        slots = self.roster.by_slot(results)
        digests: dict[int, str] = {}
        for part in ray.get([self.actors[k].digests.remote(ids) for k, ids in slots.items()]):
            digests.update(part)
        for cid, res in results.items():
            self.published[cid] = (res.ref, digests[cid])
        if self.restores:
            todo = set(slots)
            self._retry(lambda: self._replicate(self.seq, sorted(todo)) >= todo)
        return results

    def remove_clients(self, ids: Sequence[int]) -> None:
        """Leave: drop the clients and release their replicas."""
        self._settle()
        self.recover()
        super().remove_clients(ids)
        for cid in ids:
            self.published.pop(cid, None)
        self.index.forget_clients(ids)
        release = {
            inc: h.release_replicas.remote(list(ids))
            for inc, h in self.holders.items()
            if inc not in self.manager.dead_incarnations
        }
        for inc, ref in release.items():
            try:
                ray.get(ref, timeout=self.fault.unavailable_timeout)
            except RayError as err:  # a dead holder: the manager sees it through its sentinel
                log.warning("holder %s did not release replicas of %s: %s", inc, list(ids), err)

    def _placed(self, inc: str, k: int, info: Mapping[str, Any]) -> None:
        self.placement[inc] = {"pid": info["pid"], "node_id": info["node_id"]}
        self.manager.started.add(inc)
        self.holders[inc] = self.actors[k]
        self.holder_kind[inc] = "holder"

    def _retry(self, action: Callable[[], bool]) -> None:
        """Run ``action`` until it succeeds, recovering dead actors in between."""
        for _ in range(self.max_attempts):
            self._recover(self.round_index)
            if action():
                return
        raise FaultToleranceError(f"could not complete after {self.max_attempts} recoveries")

    # ----- the calls ----------------------------------------------------
    def run_step(self, step: Step) -> dict[int, StepResult]:
        """Run ``step``; its round decides chaos strikes and checkpoint replication."""
        self._step_round, self._step_read_only = step.round, step.read_only
        try:
            return self.step(step.entry, step.messages, step.publish)
        finally:
            self._step_round, self._step_read_only = None, False

    def step(
        self, method: Entry, messages: Mapping[int, Any], publish: bool = True
    ) -> dict[int, Any]:
        self._settle()
        self.seq += 1
        self._call_seq = self.seq
        try:
            return self._step(
                self.seq,
                method,
                dict(messages),
                publish,
                defer=True,
                rnd=self._step_round,
                read_only=self._step_read_only,
            )
        finally:
            self._call_seq = None

    def _step(
        self,
        seq: int,
        method: Entry,
        messages: dict[int, Any],
        publish: bool,
        defer: bool = False,
        before: dict[int, tuple[ray.ObjectRef, str]] | None = None,
        rnd: int | None = None,
        read_only: bool = False,
    ) -> dict[int, Any]:
        if rnd is not None:
            self.round_index = rnd
        if before is None:
            before = {c: self.published[c] for c in messages if c in self.published}
        results: dict[int, Any] = {}
        digests: dict[int, str] = {}
        pending = set(messages)
        in_run = rnd is not None and (self.rounds is None or rnd < self.rounds)
        strike = self.fault.chaos and in_run and rnd not in self._struck
        checkpoint = (
            in_run
            and not read_only
            and self.restores
            and (rnd + 1) % self.fault.checkpoint_every == 0
        )
        everyone = set(range(len(self.cohorts)))
        replicated: set[int] = set() if checkpoint else everyone
        for _ in range(self.max_attempts):
            restored = self._recover(rnd)
            if restored:
                changed = {
                    before[c][0] for c, dg in restored.items() if c in before and before[c][1] != dg
                }
                for c in restored:
                    if c in messages:
                        results.pop(c, None)
                        pending.add(c)
                redo = sorted(c for c in results if _refs_in(messages[c]) & changed)
                if redo:
                    self._rollback(redo, seq)
                    for c in redo:
                        results.pop(c, None)
                    pending |= set(redo)
                self.redone_steps += len(set(restored) & set(messages)) + len(redo)
                if checkpoint:
                    replicated -= {self.actor_of[c] for c in [*restored, *redo]}
            if pending:
                msgs = {c: _substitute(messages[c], self.renamed) for c in sorted(pending)}
                futures = {
                    k: self.actors[k].step_once.remote(method, sub, publish, seq)
                    for k, sub in self._by_actor(msgs).items()
                }
                # Queued right behind each step: replication costs no extra round trip.
                copies = self._replication_calls(seq, futures, expect=seq) if checkpoint else {}
                copied_by = {k: self.manager.incarnation[k] for k in copies}
                if strike:
                    strike = False
                    self._struck.add(rnd)
                    strike_round(self, rnd)
                out = self.manager.gather(futures)
                for res, dgs in out.results.values():
                    results.update(res)
                    digests.update(dgs)
                    pending -= set(res)
                clean = not (out.dead or out.lost or out.unavailable or pending or self._restoring)
                if (
                    copies
                    and defer
                    and clean
                    and set(copies) == everyone
                    and (self._replicated_seq == seq - 1)
                ):
                    # Acks are collected when the next call starts (:meth:`_settle`).
                    self._unsettled = _Unsettled(
                        seq, rnd, read_only, method, messages, publish, before, copies, copied_by
                    )
                    replicated = set(everyone)
                elif copies:
                    t0 = time.perf_counter()
                    acks = self.manager.gather(copies, copied_by).results
                    replicated |= self._replicated(
                        {k: v for k, v in acks.items() if k in out.results}, seq
                    )
                    self.replication_seconds += time.perf_counter() - t0
                self._after_failures(out)
                continue
            if replicated != everyone:
                replicated |= self._replicate(seq, sorted(everyone - replicated))
                continue
            break
        else:
            raise FaultToleranceError(
                f"call {method!r} (round {rnd}) did not complete after {self.max_attempts} recoveries"
            )
        if checkpoint:
            self._replicated_seq = seq
        if publish:
            for c, res in results.items():
                self.published[c] = (res.ref, digests[c])
            self.renamed = {old: v for old, v in self.renamed.items() if v[0] not in results}
        return dict(sorted(results.items()))

    def _settle(self) -> None:
        """Collect the last call's replica acknowledgements.

        An actor that died after the call returned (before its replicas were
        acknowledged) has its clients restored from the replicas made before
        that call, and the call is redone for them — the same results, since
        steps are deterministic; their re-published vectors replace the dead
        ones in later messages.
        """
        call, self._unsettled = self._unsettled, None
        if call is None:
            return
        self._call_seq = call.seq
        try:
            held = {c: self.published[c][0] for c in call.messages if c in self.published}
            t0 = time.perf_counter()
            self.manager.poll(0.0)  # a death already visible counts, acked or not
            out = self.manager.gather(call.copies, call.copied_by)
            done = self._replicated(out.results, call.seq)
            self.replication_seconds += time.perf_counter() - t0
            dead = self.manager.dead_incarnations
            missing = {k for k in call.copies if k not in done or call.copied_by[k] in dead}
            if not missing:
                return
            redo = {c: m for c, m in call.messages.items() if self.actor_of[c] in missing}
            self._recover(self.round_index)
            for c in redo:  # the call's messages name the vectors from before it
                if c in call.before:
                    self.renamed[call.before[c][0]] = (c, self.published[c][0])
            self.redone_steps += len(redo)
            self._step(
                call.seq,
                call.method,
                redo,
                call.publish,
                before=call.before,
                rnd=call.rnd,
                read_only=call.read_only,
            )
            if call.publish:
                for c in redo:
                    if c in held:
                        self.renamed[held[c]] = (c, self.published[c][0])
        finally:
            self._call_seq = None

    def _after_failures(self, out: Any) -> None:
        for k in out.unavailable:
            self.manager.await_available(k)
        # A vector vanished: its owner must have died; give Ray time to say so.
        if (
            out.lost
            and not self._restoring
            and not self.manager.poll(timeout=self.fault.unavailable_timeout)
        ):
            k, err = next(iter(out.lost.items()))
            raise FaultToleranceError(
                f"client actor {k} lost an input object but no process died: {err}"
            ) from err

    def _rollback(self, clients: list[int], seq: int) -> None:
        grouped = self._by_actor(dict.fromkeys(clients))
        futures = {k: self.actors[k].rollback.remote(sorted(c), seq) for k, c in grouped.items()}
        self.manager.gather(futures)

    def recover(self) -> dict[int, str]:
        """Detect and restore now (also done at the start of every call).

        Returns the restored clients with the digest of their re-published vector.
        """
        self._settle()
        return self._recover(self.round_index)

    def get_state(self, client_id: int) -> Any:
        """A CPU copy of one client's current state (for inspection and tests)."""
        self.recover()
        return ray.get(self.actors[self.actor_of[client_id]].get_state.remote(client_id))

    def info(self) -> list[dict[str, Any]]:
        self.recover()
        return super().info()

    def shutdown(self) -> None:
        extra = [s.handle for s in self.manager.spares]
        if self.manager.store is not None:
            extra.append(self.manager.store[1])
        for handle in extra:
            ray.kill(handle, no_restart=True)
        self.manager.spares = []
        self.manager.store = None
        super().shutdown()

    # ----- Dispatcher ---------------------------------------------------
    def _replication_calls(
        self, version: int, actors: Iterable[int], expect: int | None = None
    ) -> dict[int, ray.ObjectRef]:
        """Ask ``actors`` to replicate their clients as ``version`` (leaf set + store)."""
        ids = self.live()
        actor_of = self.actor_of
        host_of = {c: self.manager.incarnation[actor_of[c]] for c in ids}
        node_of = {inc: p["node_id"] for inc, p in self.placement.items()}
        store = self.manager.store[0] if self.manager.store is not None else None
        futures = {}
        for k in actors:
            cohort = self.cohorts[k]
            plan = replication_plan(cohort, ids, host_of, self.fault.replicas, node_of)
            assign = {c: [*plan[c], *([store] if store else [])] for c in cohort}
            holders = {h: self.holders[h] for hs in assign.values() for h in hs}
            futures[k] = self.actors[k].replicate.remote(
                version,
                assign,
                holders,
                self.fault.checkpoint_uri,
                self.fault.keep_versions,
                self.fault.unavailable_timeout,
                expect,
            )
        return futures

    def _replicated(self, results: Mapping[int, Any], version: int) -> set[int]:
        """Record the acknowledgements; return the actors whose replicas are made."""
        uri = self.fault.checkpoint_uri
        done = set()
        for k, res in results.items():
            if res["skipped"]:
                continue
            done.add(k)
            for hid, cid, ver, rnd, checksum, nbytes in res["acks"]:
                kind = "durable" if hid == uri else self.holder_kind[hid]
                self.replication_bytes += nbytes
                if kind == "durable" or hid in self.holders:
                    self.index.add(ReplicaRecord(cid, ver, rnd, checksum, hid, kind, nbytes))
            for hid, err in res["failed"]:
                log.warning("replica holder %s did not acknowledge v%d: %s", hid, version, err)
                self.record(
                    FaultEvent(
                        self.clock(),
                        self.round_index,
                        "replication_failed",
                        holder=hid,
                        version=version,
                        detail=err,
                    )
                )
        return done

    def _replicate(self, version: int, actors: Iterable[int] | None = None) -> set[int]:
        """Replicate (all, or ``actors``) now; the actors whose replicas are made."""
        t0 = time.perf_counter()
        todo = range(len(self.cohorts)) if actors is None else actors
        out = self.manager.gather(self._replication_calls(version, todo))
        done = self._replicated(out.results, version)
        self.replication_seconds += time.perf_counter() - t0
        return done

    # ----- Manager + Retriever --------------------------------------------
    def _plan(self, cid: int, rnd: int | None, dead: set[int]) -> RestorePlan:
        round_index = max(rnd or 0, 0)
        if not self.restores:
            return RestorePlan(round_index=round_index, from_scratch=True)
        records = self.index.records(cid)
        if self._call_seq is not None:
            # Inside call s the client redoes s: restore its state from before s.
            records = [r for r in records if r.version < self._call_seq]
        candidates = order_candidates(records, self.holders)
        neighbors = tuple(
            (j, [self.published[j][0]])
            for j in ring_order(cid, self.live())
            if self.actor_of[j] not in dead and j in self.published
        )[:4]
        return RestorePlan(
            candidates=tuple(candidates),
            neighbors=neighbors,
            round_index=round_index,
            fetch_timeout=self.fault.unavailable_timeout,
            holders={r.holder: self.holders[r.holder] for r in candidates if r.kind != "durable"},
        )

    def begin_restore(self, k: int) -> None:
        """Actor ``k`` is dead: hand its clients to a replacement and start restoring.

        Called by the manager the moment it sees the death; :meth:`_recover`
        collects the result.
        """
        handle, inc, how = self.manager.replacement(k)
        self.actors[k] = handle
        dead = {*self._restoring, k}
        plans = {c: self._plan(c, self.round_index, dead) for c in self.cohorts[k]}
        self._restoring[k] = (inc, how, handle.restore.remote(plans))

    def _recover(self, rnd: int | None) -> dict[int, str]:
        """Finish every restore under way; {client: digest of its re-published vector}."""
        self.manager.poll(0.0)
        restored: dict[int, str] = {}
        while self._restoring:
            jobs = dict(self._restoring)
            out = self.manager.gather(
                {k: job[2] for k, job in jobs.items()}, {k: job[0] for k, job in jobs.items()}
            )
            for k, job in jobs.items():
                if self._restoring.get(k) is job:  # not replaced by a newer attempt
                    del self._restoring[k]
            for k, res in out.results.items():
                restored.update(self._restored(k, *jobs[k][:2], res, out.arrived[k]))
            if out.lost or out.unavailable:
                raise FaultToleranceError(f"restoring actors {sorted(out.lost)} failed")
        if restored:
            self.manager.replenish()  # after the restore, so it does not compete for CPU
        return restored

    def _restored(
        self, k: int, inc: str, how: str, res: Mapping[str, Any], now: float
    ) -> dict[int, str]:
        self._placed(inc, k, res)
        failed_at = self.manager.failed_at.get(k, now)
        out = {}
        for cid, row in sorted(res["clients"].items()):
            source = row["source"]
            kind = "restored" if source in TIERS else "lost"
            tried = "; ".join(f"{kind_}:{holder} {msg}" for kind_, holder, msg in row["failures"])
            self.record(
                FaultEvent(
                    now,
                    self.round_index,
                    kind,
                    client=cid,
                    actor=k,
                    node=res["node_id"],
                    source=source,
                    holder=row["holder"],
                    version=row["version"],
                    replica_round=row["replica_round"],
                    seconds=now - failed_at,
                    detail=(
                        f"replacement={how}; in the actor {res['restore_seconds']:.3f} s "
                        f"(fetch {res['fetch_seconds']:.3f} s)"
                        + (f"; tried {tried}" if tried else "")
                    ),
                )
            )
            if kind == "lost":
                log.warning("client %d lost its meta-knowledge: restarted from %s", cid, source)
            old = self.published.get(cid)
            new = (res["results"][cid].ref, res["digests"][cid])
            if old is not None:
                for key, (c, _) in list(self.renamed.items()):
                    if c == cid:
                        self.renamed[key] = (cid, new[0])
                self.renamed[old[0]] = (cid, new[0])
            self.published[cid] = new
            out[cid] = new[1]
        return out
