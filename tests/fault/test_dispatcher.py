"""Leaf sets, the replica index and the retriever's order — pure, no Ray."""

from __future__ import annotations

import random

import pytest
import torch

from dfml.actors.state import ClientState
from dfml.fault.dispatcher import (
    ReplicaIndex,
    ReplicaRecord,
    leaf_set,
    replication_plan,
    ring_order,
)
from dfml.fault.replica import Replica, ReplicaError, pack_state
from dfml.fault.retriever import order_candidates, retrieve


def test_ring_order_alternates_outwards():
    assert ring_order(0, range(5)) == [1, 4, 2, 3]
    assert ring_order(2, range(4)) == [3, 1, 0]
    assert ring_order(1, range(2)) == [0]


def test_leaf_set_is_the_nearest_ids_when_every_client_has_its_own_process():
    hosts = {i: f"h{i}" for i in range(6)}
    assert leaf_set(0, range(6), hosts, 2) == [(1, "h1"), (5, "h5")]
    assert leaf_set(3, range(6), hosts, 3) == [(4, "h4"), (2, "h2"), (5, "h5")]
    assert leaf_set(3, range(6), hosts, 0) == []


def test_leaf_set_skips_the_own_process_and_repeats_of_a_process():
    hosts = {0: "A", 1: "A", 2: "A", 3: "B", 4: "B", 5: "B"}
    # ring from 0: 1(A, own) 5(B) 2(A, own) 4(B, taken) 3(B, taken)
    assert leaf_set(0, range(6), hosts, 2) == [(5, "B")]
    hosts = {0: "A", 1: "A", 2: "B", 3: "C"}
    assert leaf_set(1, range(4), hosts, 2) == [(2, "B"), (3, "C")]


def test_leaf_set_puts_one_copy_on_another_node_when_it_can():
    hosts = {i: f"h{i}" for i in range(6)}
    nodes = {"h0": "n1", "h1": "n1", "h5": "n1", "h2": "n2", "h3": "n2", "h4": "n2"}
    # nearest are 1 and 5, both on client 0's node n1: the second becomes 2 (n2)
    assert leaf_set(0, range(6), hosts, 2, nodes) == [(1, "h1"), (2, "h2")]
    # already diverse: unchanged
    assert leaf_set(2, range(6), hosts, 2, nodes) == [(3, "h3"), (1, "h1")]
    # nothing on another node: unchanged
    same = dict.fromkeys(nodes.keys(), "n1")
    assert leaf_set(0, range(6), hosts, 2, same) == [(1, "h1"), (5, "h5")]


def test_replication_plan_never_uses_the_clients_own_process():
    rng = random.Random(0)
    for _ in range(50):
        n = rng.randint(2, 12)
        hosts = {c: f"h{rng.randint(0, 3)}" for c in range(n)}
        replicas = rng.randint(0, 4)
        plan = replication_plan(range(n), range(n), hosts, replicas)
        for c, holders in plan.items():
            assert hosts[c] not in holders
            assert len(holders) == len(set(holders)) <= replicas
            others = {h for h in hosts.values() if h != hosts[c]}
            assert len(holders) == min(replicas, len(others))


def _rec(client, version, holder, kind="holder", checksum="x"):
    return ReplicaRecord(client, version, version, checksum, holder, kind, 100)


def test_index_keeps_the_newest_versions_per_holder_and_forgets_dead_holders():
    index = ReplicaIndex(keep=2)
    for v in (1, 2, 3):
        index.add(_rec(0, v, "a"))
        index.add(_rec(0, v, "b"))
    assert sorted((r.holder, r.version) for r in index.records(0)) == [
        ("a", 2),
        ("a", 3),
        ("b", 2),
        ("b", 3),
    ]
    index.forget_holder("a")
    assert {r.holder for r in index.records(0)} == {"b"}
    assert index.newest_version(0) == 3
    assert index.newest_version(7) is None


def test_candidates_newest_first_then_holder_store_durable():
    records = [
        _rec(0, 2, "/ckpt", "durable"),
        _rec(0, 2, "store1", "store"),
        _rec(0, 1, "a"),
        _rec(0, 2, "b"),
        _rec(0, 2, "dead"),
    ]
    ordered = order_candidates(records, live_holders={"a", "b", "store1"})
    assert [(r.version, r.kind, r.holder) for r in ordered] == [
        (2, "holder", "b"),
        (2, "store", "store1"),
        (2, "durable", "/ckpt"),
        (1, "holder", "a"),
    ]


def _replica(version: int) -> Replica:
    return pack_state(ClientState(0, torch.arange(4, dtype=torch.float32), round=version), version)


def test_retrieve_falls_back_past_dead_and_corrupt_copies():
    good = _replica(1)
    corrupt = _replica(2)
    wrong_version = _replica(1)
    candidates = [
        _rec(0, 3, "dead", checksum="c3"),
        _rec(0, 2, "corrupt", checksum="expected-but-different"),
        _rec(0, 2, "liar", checksum=wrong_version.checksum),
        _rec(0, 1, "ok", checksum=good.checksum),
    ]

    def fetch(rec: ReplicaRecord) -> Replica:
        if rec.holder == "dead":
            raise ReplicaError("holder died")
        return {"corrupt": corrupt, "liar": wrong_version, "ok": good}[rec.holder]

    replica, record, failures = retrieve(candidates, fetch)
    assert replica is good and record is candidates[3]
    assert [r.holder for r, _ in failures] == ["dead", "corrupt", "liar"]
    assert "not the acknowledged" in failures[1][1]
    assert "asked for client 0 v2" in failures[2][1]


def test_retrieve_reports_when_nothing_survives_and_lets_bugs_through():
    rec = _rec(0, 1, "a")

    def gone(_: ReplicaRecord) -> Replica:
        raise FileNotFoundError("no such file")

    assert retrieve([rec, rec], gone) == (
        None,
        None,
        [(rec, "FileNotFoundError: no such file")] * 2,
    )

    def bug(_: ReplicaRecord) -> Replica:
        raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        retrieve([rec], bug)
