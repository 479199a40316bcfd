"""The redo rule: a step either completes for every client, or raises.

:class:`StepRunner` runs each step of the loop as one *call* (numbered:
the call number is a replica's version). Every call either returns a
result for every participating client or raises
:class:`~dfml.fault.errors.FaultToleranceError`; the loop does not know
about failures.

**A failed call is redone, never half-kept.** A failure during a call
(chaos strikes right after the call is sent; a death in the call's
replication phase counts too) is handled inside that call:

1. every client of a dead actor is restored on a replacement actor from its
   newest acknowledged replica taken *before* this call (or re-initialised:
   a *loss*) and re-publishes its vector; the call's messages are rewritten
   to point at the re-published vectors (:class:`RefDirectory`);
2. the restored clients redo the call from the restored state (its results
   from the dead actor, if any arrived, are dropped);
3. a client that already finished the call having mixed a restored client's
   vector is rolled back and redoes it too — but only when the restored
   vector differs from the one it used (the replica is older than the call);
4. the call's replicas are (re)made.

A death between calls is found at the start of the next call and handled
the same way (the newest replica then is the state after the last call);
so is a death after a call returned but before its replicas were
acknowledged (:meth:`StepRunner.settle`: the call is redone for the dead
actor's clients).

**Acknowledgements are collected while the next step runs.** A call's
replicas are acknowledged on the actors' side threads; the driver sends the
next call's step first and then records them (quietly: no death is handled
until they are recorded, so a restore always sees them). When they are not
all in within a heartbeat, or an actor died before acknowledging, the call
before is settled the old way (redone for the dead actor's clients) and
whatever ran of the new step is rolled back and run again.

Steps are deterministic functions of (state, neighbour vectors, round seed)
and chaos decides *what* fails from (seed, round), so the result of a
chaos run depends only on the seed, never on timing. With
``checkpoint_every=1`` the newest replica is exactly the state before the
failed call, no re-published vector differs, and the run is bit-identical
to the failure-free one. With ``checkpoint_every=k`` a restored client
loses (and the run replays differently) the progress since its replica.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import ray

from dfml.actors.roster import Roster
from dfml.fault.config import FaultConfig
from dfml.fault.detector import Detector, Outcome
from dfml.fault.directory import Published, RefDirectory, changed_refs, refs_in
from dfml.fault.errors import FaultToleranceError
from dfml.fault.processes import Processes
from dfml.fault.replicator import Replicator, Unsettled
from dfml.fault.restorer import Restorer
from dfml.fault.timeline import Timeline
from dfml.steps import Publish, Step


class StepObserver(Protocol):
    """Told each time a step of round ``rnd`` was sent to the actors (chaos)."""

    def step_sent(self, rnd: int | None) -> None: ...


@dataclass(frozen=True)
class Call:
    """One numbered call: a step's metadata and messages (``round`` is
    ``None`` for a call outside the round loop: no chaos, no replicas)."""

    seq: int
    phase: str
    program: str
    messages: dict[int, Any]
    publish: Publish
    round: int | None
    read_only: bool


class StepRunner:
    """Runs calls under the redo rule; restores, rolls back and redoes as needed.

    Args:
        roster: the federation's roster (read at each use: it changes).
        observers: told when a step was sent (chaos strikes then).
        on_restored: called after clients were restored (the spares are
            replenished then, so a new one does not compete with the restore).
    """

    def __init__(
        self,
        cfg: FaultConfig,
        rounds: int | None,
        processes: Processes,
        detector: Detector,
        directory: RefDirectory,
        replicator: Replicator,
        restorer: Restorer,
        timeline: Timeline,
        roster: Callable[[], Roster],
        observers: Sequence[StepObserver] = (),
        on_restored: Callable[[], None] = lambda: None,
    ) -> None:
        self.cfg, self.rounds = cfg, rounds
        self.processes, self.detector, self.directory = processes, detector, directory
        self.replicator, self.restorer, self.timeline = replicator, restorer, timeline
        self.roster = roster
        self.observers = list(observers)
        self.on_restored = on_restored
        self.seq = 0
        self.redone_steps = 0

    @property
    def max_attempts(self) -> int:
        return 10 + 4 * len(self.roster().slots)

    # ----- recovery ------------------------------------------------------------
    def recover(self) -> dict[int, str]:
        """Handle deaths seen so far and finish every restore under way.

        Returns the restored clients with the digest of their re-published vector.
        """
        self.detector.poll(0.0)
        restored = self.restorer.finish()
        if restored:
            self.on_restored()
        return restored

    def retry(self, action: Callable[[], bool]) -> None:
        """Run ``action`` until it succeeds, recovering dead actors in between."""
        for _ in range(self.max_attempts):
            self.recover()
            if action():
                return
        raise FaultToleranceError(f"could not complete after {self.max_attempts} recoveries")

    # ----- calls ---------------------------------------------------------------
    def run(self, step: Step) -> dict[int, Any]:
        """Run ``step``; its round decides chaos strikes and checkpoint replication."""
        return self.call(
            step.phase, step.program, step.messages, step.publish, step.round, step.read_only
        )

    def call(
        self,
        phase: str,
        program: str,
        messages: Mapping[int, Any],
        publish: Publish,
        rnd: int | None,
        read_only: bool,
    ) -> dict[int, Any]:
        unsettled = self._unsettled()
        self.seq += 1
        call = Call(self.seq, phase, program, dict(messages), publish, rnd, read_only)
        with self.restorer.inside_call(call.seq):
            return self._attempt(call, call.messages, defer=True, unsettled=unsettled)

    def _unsettled(self) -> Unsettled | None:
        """The last call, if its acknowledgements may be collected while the
        next call's step runs; a death seen now (or a restore under way)
        settles it first instead."""
        pending = self.replicator.take()
        if pending is None:
            return None
        with self.restorer.inside_call(pending.call.seq):
            died = self.detector.poll(0.0)
        # A slot with clients outside that call skipped its replicas (they are
        # made afterwards, the old way), so its acks cannot all come in.
        ids = set(pending.call.messages)
        whole = all(set(self.roster().slots[k]) <= ids for k in pending.copies)
        if died or self.restorer.busy or not whole:
            self._settle(pending)
            return None
        return pending

    def _attempt(
        self,
        call: Call,
        messages: dict[int, Any],
        defer: bool = False,
        before: dict[int, Published] | None = None,
        unsettled: Unsettled | None = None,
    ) -> dict[int, Any]:
        """Run ``call`` for ``messages`` until every client has its result.

        ``unsettled``: the call before, whose acknowledgements are collected
        once this call's step is sent (no death was seen since it returned).
        """
        rnd, seq = call.round, call.seq
        if rnd is not None:
            self.timeline.round = rnd
        if before is None:
            before = self.directory.snapshot(messages)
        results: dict[int, Any] = {}
        digests: dict[int, str] = {}
        pending = set(messages)
        in_run = rnd is not None and (self.rounds is None or rnd < self.rounds)
        checkpoint = self.replicator.due(rnd, call.read_only, in_run)
        everyone = set(range(len(self.roster().slots)))
        replicated: set[int] = set() if checkpoint else everyone
        if unsettled is not None and not pending:
            self._settle(unsettled)
            unsettled = None
        for _ in range(self.max_attempts):
            # With an unsettled call before, a death must not be handled before
            # its acknowledgements are recorded (:meth:`_settle_in_flight`).
            restored = self.recover() if unsettled is None else {}
            if restored:
                changed = changed_refs(before, restored)
                for c in restored:
                    if c in messages:
                        results.pop(c, None)
                        pending.add(c)
                redo = sorted(c for c in results if refs_in(messages[c]) & changed)
                if redo:
                    self._rollback(redo, seq)
                    for c in redo:
                        results.pop(c, None)
                    pending |= set(redo)
                self.redone_steps += len(set(restored) & set(messages)) + len(redo)
                if checkpoint:
                    actor_of = self.roster().actor_of
                    replicated -= {actor_of[c] for c in [*restored, *redo]}
            if pending:
                msgs = {c: self.directory.substitute(messages[c]) for c in sorted(pending)}
                futures = {
                    k: self.processes.handle(k).step_once.remote(
                        call.program, sub, call.publish, seq
                    )
                    for k, sub in self._by_actor(msgs).items()
                }
                sent_to = {k: self.processes.incarnation(k) for k in futures}
                # Queued right behind each step: replication costs no extra round trip.
                copies = (
                    self.replicator.calls(seq, futures, self.roster(), expect=seq)
                    if checkpoint
                    else {}
                )
                copied_by = {k: self.processes.incarnation(k) for k in copies}
                if unsettled is not None:
                    undone = self._settle_in_flight(unsettled, seq, futures, sent_to)
                    unsettled = None
                    if rnd is not None:
                        self.timeline.round = rnd
                    if undone is not None:
                        self.redone_steps += undone
                        replicated = set() if checkpoint else everyone
                        continue
                for observer in self.observers:
                    observer.step_sent(rnd)
                out = self.detector.gather(futures, sent_to)
                for res, dgs in out.results.values():
                    results.update(res)
                    digests.update(dgs)
                    pending -= set(res)
                clean = not (
                    out.dead or out.lost or out.unavailable or pending or self.restorer.busy
                )
                if (
                    copies
                    and defer
                    and clean
                    and set(copies) | replicated == everyone
                    and (self.replicator.replicated_seq == seq - 1)
                ):
                    # Acks are collected while the next call's step runs. After a
                    # restore only the replacement's copies are still out (the
                    # other slots' were waited for while it restored).
                    self.replicator.defer(Unsettled(call, before, copies, copied_by))
                    replicated = set(everyone)
                elif copies:
                    replicated |= self.replicator.wait_acks(
                        copies, copied_by, seq, out.results, self.restorer.in_flight()
                    )
                self._after_failures(out)
                continue
            if replicated != everyone:
                replicated |= self.replicator.replicate(
                    seq, self.roster(), sorted(everyone - replicated)
                )
                continue
            break
        else:
            raise FaultToleranceError(
                f"step {call.phase!r} ({call.program!r}, round {rnd}) did not complete "
                f"after {self.max_attempts} recoveries"
            )
        if checkpoint:
            self.replicator.replicated_seq = seq
        if call.publish:
            self.directory.step_published({c: (res.refs, digests[c]) for c, res in results.items()})
        return dict(sorted(results.items()))

    def settle(self) -> None:
        """Collect the last call's replica acknowledgements.

        An actor that died after the call returned (before its replicas were
        acknowledged) has its clients restored from the replicas made before
        that call, and the call is redone for them — the same results, since
        steps are deterministic; their re-published vectors replace the dead
        ones in later messages.
        """
        pending = self.replicator.take()
        if pending is not None:
            self._settle(pending)

    def _settle_in_flight(
        self,
        pending: Unsettled,
        seq: int,
        steps: Mapping[int, ray.ObjectRef],
        sent_to: Mapping[int, str],
    ) -> int | None:
        """Settle the call before while ``steps`` (call ``seq``'s, per slot, sent
        to the incarnations ``sent_to``) run.

        Returns ``None`` when its acknowledgements all came in. Otherwise
        call ``seq``'s step is undone — waited for, and every client that ran
        it rolled back (to its state and result of the call before) — and the
        call before is settled the old way; returns how many clients were
        rolled back (the caller sends the step again, to every client).
        """
        if self.replicator.settle_quietly(pending, pending.call.seq, steps.values()):
            return None
        with self.restorer.inside_call(pending.call.seq):
            out = self.detector.gather(steps, sent_to)
            ran = sorted(
                c
                for k, (res, _) in out.results.items()
                if self.processes.incarnation(k) == sent_to[k]
                and sent_to[k] not in self.detector.dead
                for c in res
            )
            if ran:
                self._rollback(ran, seq)
            self._settle(pending)
        return len(ran)

    def _settle(self, pending: Unsettled) -> bool:
        """:meth:`settle` of ``pending``; True if its call was redone for some clients."""
        call = pending.call
        with self.restorer.inside_call(call.seq):
            held = self.directory.snapshot(call.messages)
            missing = self.replicator.settle(pending, call.seq)
            if not missing:
                return False
            actor_of = self.roster().actor_of
            redo = {c: m for c, m in call.messages.items() if actor_of[c] in missing}
            self.recover()
            for c in redo:  # the call's messages name the vectors from before it
                if c in pending.before:
                    self.directory.rename(pending.before[c][0], c)
            self.redone_steps += len(redo)
            self._attempt(call, redo, before=pending.before)
            if call.publish:
                for c in redo:
                    if c in held:
                        self.directory.rename(held[c][0], c)
        return True

    # ----- helpers ---------------------------------------------------------------
    def _by_actor(self, messages: Mapping[int, Any]) -> dict[int, dict[int, Any]]:
        """Messages grouped by the actor slot hosting each client."""
        return {
            k: {c: messages[c] for c in ids} for k, ids in self.roster().by_slot(messages).items()
        }

    def _rollback(self, clients: list[int], seq: int) -> None:
        grouped = self._by_actor(dict.fromkeys(clients))
        futures = {
            k: self.processes.handle(k).rollback.remote(sorted(c), seq) for k, c in grouped.items()
        }
        self.detector.gather(futures)

    def _after_failures(self, out: Outcome) -> None:
        for k in out.unavailable:
            self.detector.await_available(k)
        # A vector vanished: its owner must have died; give Ray time to say so.
        if (
            out.lost
            and not self.restorer.busy
            and not self.detector.poll(timeout=self.cfg.unavailable_timeout)
        ):
            k, err = next(iter(out.lost.items()))
            raise FaultToleranceError(
                f"client actor {k} lost an input object but no process died: {err}"
            ) from err
