"""Replica holders on real Ray actors: a held pack outlives its sender; damage is
caught where the replica is used, not where it is received."""

from __future__ import annotations

import pytest
import ray
import torch
from ray.exceptions import RayActorError

from dfml.actors.state import ClientState
from dfml.fault.dispatcher import ReplicaRecord
from dfml.fault.holder import RemoteReplicaStore
from dfml.fault.pack import Pack, pack
from dfml.fault.replica import PARAMS, Replica, ReplicaError, pack_state
from dfml.fault.retriever import retrieve


def _replicas(version: int) -> list[Replica]:
    out = []
    for cid in (4, 6):
        gen = torch.Generator().manual_seed(cid)
        state = ClientState(client_id=cid, params=torch.randn(50_000, generator=gen), round=3)
        out.append(pack_state(state, version))
    return out


@ray.remote(num_cpus=0)
class Sender:
    """Stands in for a client actor: puts a pack (so it owns the object) and hands
    its ref to a holder, as ``FaultClientActor.replicate`` does."""

    def send(self, holder: ray.actor.ActorHandle, packed: Pack, clients: list[int]) -> list:
        ref = ray.put(packed)
        node = ray.get_runtime_context().get_node_id()
        return ray.get(holder.keep_pack.remote([ref], clients, node))


def _store() -> ray.actor.ActorHandle:
    return RemoteReplicaStore.options(num_cpus=0, max_restarts=0).remote(2)


def test_a_held_replica_outlives_the_process_that_put_it(ray_session):
    holder, sender = _store(), Sender.remote()
    replicas = _replicas(version=5)
    acks = ray.get(sender.send.remote(holder, pack(replicas), [4, 6]))
    assert [a[:4] for a in acks] == [(r.client_id, 5, 3, r.checksum) for r in replicas]
    ray.kill(sender, no_restart=True)  # the pack's owner is gone
    with pytest.raises(RayActorError):
        ray.get(sender.__ray_ready__.remote(), timeout=30)
    # fill the object store's free space so that any freed object would be reused
    filler = [ray.put(torch.zeros(2_000_000).numpy()) for _ in range(8)]
    held = ray.get(holder.fetch_replicas.remote([(4, 5), (6, 5), (6, 4)]))
    del filler
    assert held[2] is None
    for got, sent in zip(held[:2], replicas, strict=True):
        assert got.arrays[PARAMS].tobytes() == sent.arrays[PARAMS].tobytes()
    ray.kill(holder, no_restart=True)


def test_a_damaged_replica_is_acknowledged_then_refused_at_restore(ray_session):
    holder, sender = _store(), Sender.remote()
    good = _replicas(version=7)
    damaged = pack(good)
    damaged.buffer[100] ^= 0x10  # one bit of client 4's parameters, after sealing
    acks = ray.get(sender.send.remote(holder, damaged, [4]))
    # received as sent: no hashing on receipt, the sender's checksum acknowledged
    assert acks == [(4, 7, 3, good[0].checksum, good[0].nbytes)]
    records = [
        ReplicaRecord(4, 7, 3, good[0].checksum, "store1", "store", good[0].nbytes),
        ReplicaRecord(4, 7, 3, good[0].checksum, "durable", "durable", good[0].nbytes),
    ]

    def fetch(record: ReplicaRecord) -> Replica:
        if record.kind == "durable":
            return good[0]
        return ray.get(holder.fetch_replica.remote(record.client_id, record.version))

    replica, record, failures = retrieve(records, fetch, (ReplicaError,))
    assert record is records[1] and replica is good[0]
    assert [(r.kind, "content checksum" in msg) for r, msg in failures] == [("store", True)]
    ray.kill(holder, no_restart=True)
    ray.kill(sender, no_restart=True)
