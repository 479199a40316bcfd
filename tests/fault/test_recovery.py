"""Kill client actors mid-run: every round finishes, every client is restored exactly.

Each run is compared with the failure-free run of the same seed: with
``checkpoint_every=1`` the redo rule makes a run with failures bit-identical
to it (metrics.parquet equal to the last bit).
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import threading

import pytest
import torch
from helpers.fault import AtRoundEnd, faults, incarnation_of, kill_clients, metrics, run

from dfml.actors.state import ClientState


def _same_bits(a: ClientState, b: ClientState) -> bool:
    def raw(t: torch.Tensor) -> bytes:
        return t.detach().cpu().numpy().tobytes()

    return (
        raw(a.params) == raw(b.params)
        and a.extras.keys() == b.extras.keys()
        and all(raw(a.extras[k]) == raw(b.extras[k]) for k in a.extras)
        and (a.round, a.labels) == (b.round, b.labels)
        and (a.last_loss == b.last_loss)
    )


@pytest.mark.parametrize(("mode", "spares"), [("ray.kill", 1), ("sigkill", 0)])
def test_chaos_kill_mid_round_finishes_bit_identical(reference, tmp_path, mode, spares):
    summary = run(
        tmp_path,
        clients_per_actor=2,
        chaos_rounds="1",
        chaos_fraction=0.5,
        chaos_mode=mode,
        spares=spares,
    )
    assert summary["rounds_completed"] == 3
    assert metrics(tmp_path).equals(reference)
    assert summary["failures_injected"] == 2 == summary["clients_restored"]
    assert summary["actors_killed"] == 1 and summary["clients_lost"] == 0
    assert summary["recovery_seconds_max"] >= summary["recovery_seconds_p50"] > 0
    assert summary["replication_bytes"] > 0
    # the two restored clients redo round 1; their replicas were the state the
    # neighbours had mixed, so no neighbour redoes anything
    assert summary["redone_client_steps"] == 2
    rows = faults(tmp_path)
    injected = sorted(r["client"] for r in rows if r["kind"] == "injected")
    restored = [r for r in rows if r["kind"] == "restored"]
    assert sorted(r["client"] for r in restored) == injected
    # Killed while round 1 ran: restored from the replica made after round 0
    # (version 1, round count 1) and round 1 redone.
    assert {(r["version"], r["replica_round"], r["mode"]) for r in restored} == {(1, 1, "")}
    assert all(r["source"] in ("holder", "store") for r in restored)
    assert [r["mode"] for r in rows if r["kind"] == "detected"] == [mode]
    replacement = "spare" if spares else "new actor"
    assert all(replacement in r["detail"] for r in restored)


@pytest.fixture(scope="module")
def holders_run(ray_session, tmp_path_factory):
    """One client per actor, no store, a durable copy; three rounds of kills.

    * after round 0: the actors of clients 0 and 1 die — client 0 loses its
      first replica holder (client 1's actor) with it;
    * after round 1: clients 0, 1, 3 die — every holder of client 0's replica;
    * after round 2: the same, and client 0's durable copy is deleted too.
    """
    out = tmp_path_factory.mktemp("holders")
    ckpt = out / "ckpt"
    seen: dict[str, object] = {}

    def after_round_0(fed) -> None:
        seen["holders0"] = {0: incarnation_of(fed, 3), 1: incarnation_of(fed, 2)}
        seen["before0"] = {c: fed.get_state(c) for c in (0, 1)}
        kill_clients(fed, [0, 1], mode="sigkill")
        seen["restored0"] = fed.recover()
        seen["after0"] = {c: fed.get_state(c) for c in (0, 1)}

    def after_round_1(fed) -> None:
        seen["before1"] = fed.get_state(0)
        kill_clients(fed, [0, 1, 3])
        fed.recover()
        seen["after1"] = fed.get_state(0)

    def after_round_2(fed) -> None:
        fed.recover()  # round 2's replicas are acknowledged: the newest copies exist
        shutil.rmtree(ckpt / "client-00000")
        kill_clients(fed, [0, 1, 3])
        fed.recover()
        seen["lost"] = fed.get_state(0)
        seen["neighbour"] = fed.get_state(2)

    summary = run(
        out,
        [AtRoundEnd({0: after_round_0, 1: after_round_1, 2: after_round_2})],
        clients_per_actor=1,
        recovery=True,
        replicas=2,
        replica_store=False,
        checkpoint_uri=str(ckpt),
        spares=0,
    )
    return out, summary, seen


def test_restored_parameters_equal_the_replica_bit_for_bit(holders_run, reference):
    out, _, seen = holders_run
    assert set(seen["restored0"]) == {0, 1}
    for c in (0, 1):
        assert _same_bits(seen["after0"][c], seen["before0"][c])
    assert _same_bits(seen["after1"], seen["before1"])
    assert metrics(out).equals(reference)  # the losses came after the last round's metrics


def test_client_and_first_holder_die_restore_from_the_second_replica(holders_run):
    out, _, seen = holders_run
    first = [r for r in faults(out) if r["kind"] == "restored" and r["round"] == 0]
    by_client = {r["client"]: (r["source"], r["holder"]) for r in first}
    assert by_client == {0: ("holder", seen["holders0"][0]), 1: ("holder", seen["holders0"][1])}


def test_all_holders_dead_fall_back_to_the_durable_copy(holders_run):
    out, _, _ = holders_run
    second = [r for r in faults(out) if r["kind"] == "restored" and r["round"] == 1]
    sources = {r["client"]: r["source"] for r in second}
    assert sources == {0: "durable", 1: "holder", 3: "holder"}
    durable = next(r for r in second if r["client"] == 0)
    assert durable["holder"] == str(out / "ckpt")


def test_nothing_survives_counts_a_loss_and_takes_a_neighbours_model(holders_run):
    out, summary, seen = holders_run
    lost = [r for r in faults(out) if r["kind"] == "lost"]
    assert [(r["client"], r["source"], r["holder"]) for r in lost] == [(0, "neighbor", "2")]
    assert summary["clients_lost"] == 1
    assert summary["clients_restored"] == 2 + 3 + 2
    assert summary["failures_injected"] == 0  # these kills were not chaos's
    assert torch.equal(seen["lost"].params, seen["neighbour"].params)
    assert seen["lost"].round == 2  # the round being run when it was lost


def test_death_before_the_replicas_are_acknowledged_redoes_the_call(reference, tmp_path):
    """A call's acks are collected when the next call starts. An actor killed
    in between is restored from the replicas made before that call, and the
    call is redone for its clients: still bit-identical."""
    summary = run(
        tmp_path,
        [AtRoundEnd({0: lambda fed: kill_clients(fed, [0])})],
        clients_per_actor=2,
        recovery=True,
        spares=0,
    )
    restored = [r for r in faults(tmp_path) if r["kind"] == "restored"]
    # restored in round 0 (the call being settled) from version 0: the initial state
    assert [(r["client"], r["round"], r["version"], r["replica_round"]) for r in restored] == [
        (0, 0, 0, 0),
        (1, 0, 0, 0),
    ]
    assert summary["clients_lost"] == 0 and summary["redone_client_steps"] == 2
    assert metrics(tmp_path).equals(reference)


def test_a_death_while_the_acks_come_in_under_the_next_step_stays_bit_identical(
    reference, tmp_path
):
    """A call's acks are collected while the next call's step runs. An actor
    SIGKILLed at the end of round 0 and not waited for dies around then:
    seen before the step is sent, while its acks are awaited (the call before
    is redone for its clients, the new step rolled back and rerun), or only
    during the step (restored from the replicas just recorded). Each way the
    run is bit-identical and nothing is lost."""

    def kill(fed) -> None:
        os.kill(_pid(fed, 0), signal.SIGKILL)

    summary = run(tmp_path, [AtRoundEnd({0: kill})], clients_per_actor=2, recovery=True, spares=1)
    restored = sorted(r["client"] for r in faults(tmp_path) if r["kind"] == "restored")
    assert restored == [0, 1]
    assert summary["clients_lost"] == 0 and summary["redone_client_steps"] >= 2
    assert metrics(tmp_path).equals(reference)


def _pid(fed, client: int) -> int:
    return fed.placement_of(fed.actor_of_client(client))["pid"]


class _ThawWhenSuspected(logging.Handler):
    """SIGCONT a frozen actor shortly after the detector first finds it silent.

    A fixed-length freeze raced the driver: on a loaded box the driver could
    be busy elsewhere for the whole freeze, so no heartbeat ever saw it. The
    thaw is tied to the detector's own observation instead.
    """

    def __init__(self, actor: int, pid: int, after: float) -> None:
        super().__init__()
        self.actor, self.pid, self.after = actor, pid, after
        self.timer: threading.Timer | None = None

    def emit(self, record: logging.LogRecord) -> None:
        if self.timer is None and record.getMessage().startswith(
            f"client actor {self.actor} does not answer"
        ):
            self.timer = threading.Timer(self.after, os.kill, (self.pid, signal.SIGCONT))
            self.timer.start()


def test_unavailable_is_not_dead_and_a_silent_actor_is_fenced(reference, tmp_path):
    """SIGSTOP: an actor frozen until a heartbeat has found it silent, then
    for 1 s more (< ``unavailable_timeout``), comes back (no restore); one
    frozen for good is fenced after ``unavailable_timeout`` and restored."""
    detector_log = logging.getLogger("dfml.fault.detector")
    thaws: list[_ThawWhenSuspected] = []

    def freeze_briefly(fed) -> None:
        pid = _pid(fed, 0)
        thaws.append(_ThawWhenSuspected(fed.actor_of_client(0), pid, after=1.0))
        detector_log.addHandler(thaws[-1])
        os.kill(pid, signal.SIGSTOP)

    def freeze_for_good(fed) -> None:
        os.kill(_pid(fed, 2), signal.SIGSTOP)

    try:
        summary = run(
            tmp_path,
            [AtRoundEnd({0: freeze_briefly, 1: freeze_for_good})],
            clients_per_actor=2,
            recovery=True,
            heartbeat_seconds=0.25,
            unavailable_timeout=4.0,
        )
    finally:
        for thaw in thaws:
            detector_log.removeHandler(thaw)
            if thaw.timer is not None:
                thaw.timer.join()
    rows = faults(tmp_path)
    kinds = {(r["kind"], r["actor"]) for r in rows if r["client"] == -1}
    assert ("unavailable", 0) in kinds and ("fenced", 0) not in kinds
    assert ("fenced", 1) in kinds and ("detected", 1) in kinds
    restored = [r["client"] for r in rows if r["kind"] == "restored"]
    assert restored == [2, 3]  # only the fenced actor's clients
    assert summary["clients_lost"] == 0
    assert metrics(tmp_path).equals(reference)


def test_without_recovery_lost_clients_restart_from_scratch(reference, tmp_path):
    """FMRec's Baseline_failure: no replicas; a killed client starts over."""
    final: dict[int, ClientState] = {}

    class Final(AtRoundEnd):
        def on_run_end(self, history) -> None:
            final.update({c: self.federation.get_state(c) for c in range(4)})

    summary = run(
        tmp_path,
        [Final({})],
        clients_per_actor=2,
        chaos_rounds="1",
        chaos_fraction=0.5,
        recovery=False,
        spares=0,
    )
    assert summary["failures_injected"] == 2 == summary["clients_lost"]
    assert summary["clients_restored"] == 0 and summary["replication_bytes"] == 0
    lost = [r for r in faults(tmp_path) if r["kind"] == "lost"]
    assert {r["source"] for r in lost} == {"scratch"}
    restarted = {r["client"] for r in lost}
    # a restarted client counts its rounds from 0 again: it ran rounds 1 and 2 only
    assert {c: s.round for c, s in final.items()} == {
        c: 2 if c in restarted else 3 for c in range(4)
    }
    assert not metrics(tmp_path).equals(reference)
