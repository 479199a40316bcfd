"""The fault-aware client actor: a :class:`ClientActor` that can be restored.

On top of the generic actor it

* runs each step **atomically and at most once per call**: a step that fails
  part-way (a neighbour's vector vanished with its owner) leaves every state
  as it was; a step re-sent with the same call number returns the stored
  result instead of training twice; the state before the last step is kept
  so that the driver can roll a client back and redo it;
* is the Dispatcher's client half (:meth:`replicate`, :meth:`replicated`):
  pack each hosted client's state, ``ray.put`` the cohort's replicas once as one packed
  object and hand its ref straight to the leaf-set holders (and the store;
  each replica also goes to the durable copy) — the driver only sends the
  plan and receives acknowledgements;
* is the Retriever's client half (:meth:`restore`): fetch replicas from the
  holders, verify, load, re-publish;
* can start as an empty warm spare and :meth:`adopt` a dead actor's clients.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import ray
import torch
from ray.exceptions import RayError

from dfml.actors.client_actor import ClientActor, CohortSpec
from dfml.actors.state import ClientContext, ClientData, ClientState
from dfml.channels import get_value
from dfml.data.split import ClientSplit
from dfml.fault.dispatcher import ReplicaRecord
from dfml.fault.durable import read_replica, write_replica
from dfml.fault.holder import CONCURRENCY_GROUPS, ReplicaHolder, Watched
from dfml.fault.pack import pack
from dfml.fault.replica import Replica, ReplicaError, digest, pack_state, unpack_state
from dfml.fault.retriever import retrieve
from dfml.steps import Publish

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RestorePlan:
    """How to bring one lost client back, in order of preference.

    Attributes:
        candidates: replica copies, newest first (see ``order_candidates``).
        neighbors: ``(client, [ref])`` of ring neighbours' published vectors,
            nearest first; used only when no replica survives (a *loss*).
            Each ref sits in a list so that Ray hands it over unresolved.
        round_index: the round being run (the re-initialised client's round count).
        from_scratch: restart from the initial model (FMRec's Baseline_failure).
    """

    candidates: tuple[ReplicaRecord, ...] = ()
    neighbors: tuple[tuple[int, list[Any]], ...] = ()
    round_index: int = 0
    from_scratch: bool = False
    fetch_timeout: float = 30.0
    holders: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Sending:
    """Replicas sent by :meth:`FaultClientActor.replicate`, acks not yet collected."""

    futures: Mapping[str, ray.ObjectRef]
    replicas: Mapping[int, Replica]
    uri: str | None
    keep: int
    timeout: float


class FaultClientActor(ClientActor, Watched, ReplicaHolder):
    """Client actor with atomic steps, replication, restore and adoption."""

    def __init__(self, spec: CohortSpec, algorithm: Any, keep_versions: int = 2) -> None:
        super().__init__(replace(spec, splits={}), algorithm)
        self.spec = spec
        self._init_holder(keep_versions)
        self._done: dict[int, tuple[int, Any]] = {}
        self._before: dict[int, tuple[int, Any, tuple[int, Any] | None]] = {}
        self._digests: dict[int, tuple[ClientState, str]] = {}
        self._sending: dict[int, Any] = {}
        self._sending_cv = threading.Condition()
        self.adopt(spec.splits)

    def adopt(self, splits: Mapping[int, ClientSplit]) -> dict[str, Any]:
        """Build contexts and initial states for ``splits`` (a spare taking over)."""
        self._build(self._dataset(), splits)
        return self.ping()

    def warm_up(self, split: ClientSplit) -> float:
        """One client step on a throwaway client (``split``'s data, initial model).

        A spare's first real step would otherwise pay torch's first-call
        costs (seconds: lazy imports, ``torch.func`` set-up) inside the round
        it joins. Returns the seconds spent; nothing is kept.
        """
        from dfml.algorithms.base import Message

        t0 = time.perf_counter()
        dataset = self._dataset()
        data = ClientData.from_split(dataset, split, self.device)
        ctx = ClientContext(0, self.model, data, self.device, 0)
        state = self.algorithm.init_state(ctx, self.init_params.clone())
        try:
            self.algorithm.client_step(ctx, state, [], Message(round=0))
        except Exception:
            log.warning("spare warm-up step failed; the spare still works", exc_info=True)
        return time.perf_counter() - t0

    # ----- steps ---------------------------------------------------------
    def _digest(self, cid: int) -> str:
        """The digest of ``cid``'s vector, hashed once per state: a state is
        immutable, and a step's digest is asked again when it is replicated."""
        state = self.states[cid]
        known = self._digests.get(cid)
        if known is None or known[0] is not state:
            known = (state, digest(state.params.detach().cpu().numpy()))
            self._digests[cid] = known
        return known[1]

    def start_info(self, states: Mapping[int, Any] | None = None) -> dict[str, Any]:
        """Load ``states`` (a resume) if given; publish; digests; where this runs."""
        for state in (states or {}).values():
            self.set_state(state)
        results = self.publish_all()
        return {"results": results, "digests": self.digests(list(results)), **self.ping()}

    def digests(self, client_ids: list[int]) -> dict[int, str]:
        """Digests of the clients' published vectors."""
        return {c: self._digest(c) for c in client_ids}

    def remove_clients(self, client_ids: list[int]) -> list[int]:
        for cid in client_ids:
            self._done.pop(cid, None)
            self._before.pop(cid, None)
            self._digests.pop(cid, None)
        return super().remove_clients(client_ids)

    def step_once(
        self, program: str, messages: Mapping[int, Any], publish: Publish, seq: int
    ) -> tuple[dict[int, Any], dict[int, str]]:
        """``step`` for call ``seq``: atomic, and clients done in ``seq`` are not redone."""
        done = {c: res for c, (s, res) in self._done.items() if s == seq and c in messages}
        todo = {c: m for c, m in messages.items() if c not in done}
        before = {c: self.states[c] for c in todo}
        try:
            out = self.step(program, todo, publish)
        except BaseException:
            self.states.update(before)
            raise
        for c in todo:
            # the result of the call before is kept too: a rollback restores both
            self._before[c] = (seq, before[c], self._done.get(c))
            self._done[c] = (seq, out[c])
        out.update(done)
        digests = {c: self._digest(c) for c in out} if publish else {}
        return dict(sorted(out.items())), digests

    def rollback(self, client_ids: list[int], seq: int) -> list[int]:
        """Return clients to their state before call ``seq`` (to redo it), and
        to the result of the call before (a redo of that call returns it)."""
        for cid in client_ids:
            entry = self._before.get(cid)
            if entry is None or entry[0] != seq:
                raise RuntimeError(f"client {cid} has no state from before call {seq}")
        for cid in client_ids:
            _, state, done = self._before.pop(cid)
            self.states[cid] = state
            if done is None:
                self._done.pop(cid, None)
            else:
                self._done[cid] = done
        return sorted(client_ids)

    # ----- Dispatcher (client half) --------------------------------------
    def replicate(
        self,
        token: int,
        version: int,
        assign: Mapping[int, list[str]],
        holders: Mapping[str, Any],
        uri: str | None,
        keep: int,
        timeout: float,
        expect: int | None = None,
    ) -> None:
        """Send each client's replica to its holders; :meth:`replicated` collects the acks.

        Runs in the actor's main thread, queued right behind a step, so it
        packs exactly the states that step left; it only packs, puts and
        sends (a few ms), so the next step need not wait for the holders.
        With ``expect``, replicate only if every client finished call
        ``expect`` (the call was queued behind that step, which may have failed).
        """
        try:
            if expect is not None and any(self._done.get(c, (None,))[0] != expect for c in assign):
                self._sent(token, {"skipped": True, "acks": [], "failed": []})
                return
            replicas = {
                cid: pack_state(self.states[cid], version, self._digest(cid)) for cid in assign
            }
            wanted: dict[str, list[int]] = {}
            for cid, hids in assign.items():
                for hid in hids:
                    wanted.setdefault(hid, []).append(cid)
            # One packed object for the whole cohort, put once; each holder keeps its clients.
            packed = [ray.put(pack(replicas.values()))] if wanted else []
            node = ray.get_runtime_context().get_node_id()
            futures = {
                hid: holders[hid].keep_pack.remote(packed, cids, node)
                for hid, cids in wanted.items()
            }
            self._sent(token, Sending(futures, replicas, uri, keep, timeout))
        except BaseException as err:
            self._sent(token, err)  # :meth:`replicated` must not wait for it forever
            raise

    def _sent(self, token: int, entry: Any) -> None:
        with self._sending_cv:
            self._sending[token] = entry
            self._sending_cv.notify_all()

    @ray.method(concurrency_group="replicate")
    def replicated(self, token: int) -> dict[str, Any]:
        """The acknowledgements of :meth:`replicate` ``token`` (and the durable copies).

        A concurrency group of its own: the holders' answers are awaited here
        while the main thread runs the next step.
        """
        with self._sending_cv:
            self._sending_cv.wait_for(lambda: token in self._sending)
            entry = self._sending.pop(token)
        if isinstance(entry, BaseException):
            raise RuntimeError(f"replication request {token} failed in this actor") from entry
        if isinstance(entry, dict):
            return entry
        acks: list[tuple[Any, ...]] = []
        failed: list[tuple[str, str]] = []
        for hid, fut in entry.futures.items():
            try:
                acks += [(hid, *ack) for ack in ray.get(fut, timeout=entry.timeout)]
            except RayError as err:
                failed.append((hid, f"{type(err).__name__}: {err}"))
        if entry.uri is not None:
            for cid, rep in entry.replicas.items():
                try:
                    nbytes = write_replica(entry.uri, rep, entry.keep)
                except OSError as err:
                    failed.append((entry.uri, f"{type(err).__name__}: {err}"))
                    continue
                acks.append((entry.uri, cid, rep.version, rep.round, rep.checksum, nbytes))
        return {"skipped": False, "acks": acks, "failed": failed}

    # ----- Retriever (client half) ---------------------------------------
    def _fetch(self, plan: RestorePlan, record: ReplicaRecord) -> Replica:
        if record.kind == "durable":
            return read_replica(record.holder, record.client_id, record.version)
        ref = plan.holders[record.holder].fetch_replica.remote(record.client_id, record.version)
        return ray.get(ref, timeout=plan.fetch_timeout)

    def _prefetch(self, plans: Mapping[int, RestorePlan]) -> dict[int, Any]:
        """Every client's first choice, one batched call per holder, all in parallel."""
        wanted: dict[str, list[ReplicaRecord]] = {}
        for plan in plans.values():
            if plan.candidates and plan.candidates[0].kind != "durable":
                wanted.setdefault(plan.candidates[0].holder, []).append(plan.candidates[0])
        calls = {}
        for hid, records in wanted.items():
            plan = plans[records[0].client_id]
            pairs = [(r.client_id, r.version) for r in records]
            calls[hid] = (
                records,
                plan.fetch_timeout,
                plan.holders[hid].fetch_replicas.remote(pairs),
            )
        fetched: dict[int, Any] = {}
        for hid, (records, timeout, ref) in calls.items():
            try:
                replicas = ray.get(ref, timeout=timeout)
            except RayError as err:
                replicas = [err] * len(records)
            for record, replica in zip(records, replicas, strict=True):
                fetched[record.client_id] = replica or ReplicaError(
                    f"holder {hid} has no replica v{record.version}"
                )
        return fetched

    def restore(self, plans: Mapping[int, RestorePlan]) -> dict[str, Any]:
        """Bring each planned client back; report where from; publish the result."""
        t_start = time.perf_counter()
        report: dict[int, dict[str, Any]] = {}
        prefetched = self._prefetch(plans)
        t_fetched = time.perf_counter()

        def fetch(plan: RestorePlan, record: ReplicaRecord) -> Replica:
            if record is plan.candidates[0] and record.client_id in prefetched:
                got = prefetched.pop(record.client_id)
                if isinstance(got, BaseException):
                    raise got
                return got
            return self._fetch(plan, record)

        for cid, plan in sorted(plans.items()):
            t0 = time.perf_counter()
            replica, record, failures = retrieve(
                plan.candidates,
                lambda rec, plan=plan: fetch(plan, rec),
                (ReplicaError, OSError, RayError),
            )
            row: dict[str, Any] = {"failures": [(r.kind, r.holder, msg) for r, msg in failures]}
            if replica is not None and record is not None:
                self.set_state(unpack_state(replica))
                check = pack_state(self.states[cid].to_host(), replica.version).checksum
                if check != replica.checksum:
                    raise ReplicaError(f"client {cid}: restored state differs from its replica")
                row.update(
                    source=record.kind,
                    holder=record.holder,
                    version=replica.version,
                    replica_round=replica.round,
                    checksum=check,
                )
            else:
                row.update(self._reinitialise(cid, plan, row["failures"]))
            row["seconds"] = time.perf_counter() - t0
            report[cid] = row
        results = self._results(plans)
        return {
            "clients": report,
            "fetch_seconds": t_fetched - t_start,
            "restore_seconds": time.perf_counter() - t_start,
            "results": results,
            "digests": {c: self._digest(c) for c in plans},
            **self.ping(),
        }

    def _reinitialise(
        self, cid: int, plan: RestorePlan, failures: list[tuple[str, str, str]]
    ) -> dict[str, Any]:
        """No replica survived: start from a neighbour's model (or from scratch)."""
        ctx = self.contexts[cid]
        if not plan.from_scratch:
            for neighbor, (ref,) in plan.neighbors:
                try:
                    vector = get_value(ref, timeout=plan.fetch_timeout)
                except RayError as err:
                    failures.append(("neighbor", str(neighbor), f"{type(err).__name__}: {err}"))
                    continue
                if vector.dtype != np.float32 or vector.shape != tuple(self.init_params.shape):
                    # a masked object or an empty one (secure aggregation) is no model
                    failures.append(("neighbor", str(neighbor), "published no plain model"))
                    continue
                params = torch.from_numpy(np.array(vector, copy=True)).to(self.device)
                state = self.algorithm.init_state(ctx, params).evolve(round=plan.round_index)
                self.states[cid] = state
                return {
                    "source": "neighbor",
                    "holder": str(neighbor),
                    "version": -1,
                    "replica_round": -1,
                    "checksum": "",
                }
        self.states[cid] = self.algorithm.init_state(ctx, self.init_params.clone())
        return {
            "source": "scratch",
            "holder": "",
            "version": -1,
            "replica_round": -1,
            "checksum": "",
        }


RemoteFaultClientActor = ray.remote(concurrency_groups=CONCURRENCY_GROUPS)(FaultClientActor)
