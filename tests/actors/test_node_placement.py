"""Placement over nodes (``--placement``), cross-node bytes and the autoscaler wait.

The pure parts (bundle order, byte counting, what to ask the autoscaler,
the waiting loop) are tested without Ray; the rest on the shared one-node
session. Several nodes: ``test_multinode.py``.
"""

from __future__ import annotations

import logging
import threading

import pytest
import ray
from ray.util.placement_group import placement_group_table

from dfml.actors import federation as federation_module
from dfml.actors.config import ResourceConfig
from dfml.actors.federation import Federation
from dfml.actors.placement import actor_bundle, cross_node_bytes, pack_order
from dfml.actors.scaling import describe_need, fits, scale_request, wait_for
from dfml.algorithms.base import LocalSGDConfig, Message
from dfml.algorithms.dfedavg import DFedAvg
from dfml.data.config import DataConfig, PartitionConfig
from dfml.data.partition import make_splits
from dfml.data.registry import load_dataset
from dfml.errors import ConfigError
from dfml.models.zoo import ModelConfig


# ----- pure: which slot takes which bundle -------------------------------------------
def test_pack_order_hands_out_bundles_node_by_node():
    # SPREAD alternates nodes; slots 0, 1 (clients 0..k, consecutive) then share node A.
    assert pack_order(["A", "B", "A", "B"]) == [0, 2, 1, 3]
    assert pack_order(["B", "A", "B", "C", "A"]) == [0, 2, 1, 4, 3]
    assert pack_order(["A", "A", "A"]) == [0, 1, 2]
    assert pack_order([]) == []


def test_actor_bundle_names_gpus_only_when_asked():
    assert actor_bundle(ResourceConfig(num_cpus_per_actor=0.5)) == {"CPU": 0.5}
    assert actor_bundle(ResourceConfig(num_gpus_per_actor=0.25)) == {"CPU": 1.0, "GPU": 0.25}


# ----- pure: cross-node bytes ----------------------------------------------------------
def test_cross_node_bytes_by_hand():
    """Ring 0-1-2-3-0; clients 0, 1 on node A, 2, 3 on node B; vectors of 100 bytes
    (client 3's: 40). Each client fetches both ring neighbours."""
    node_of = {0: "A", 1: "A", 2: "B", 3: "B"}
    nbytes = {0: 100, 1: 100, 2: 100, 3: 40}
    ring = {0: (3, 1), 1: (0, 2), 2: (1, 3), 3: (2, 0)}
    fetches = [(i, j) for i, nbrs in ring.items() for j in nbrs]
    # Across: 0←3 (40), 1←2 (100), 2←1 (100), 3←0 (100).
    assert cross_node_bytes(fetches, node_of, nbytes) == 340
    # A vector is pulled into a node once, however many clients there read it.
    assert cross_node_bytes([(2, 0), (3, 0)], node_of, nbytes) == 100
    # One node, or clients of unknown node: nothing crosses.
    assert cross_node_bytes(fetches, dict.fromkeys(node_of, "A"), nbytes) == 0
    assert cross_node_bytes([(0, 2)], {0: "A"}, nbytes) == 0


# ----- pure: what to ask the autoscaler for ---------------------------------------------
def test_scale_request_asks_for_every_actor_only_when_the_new_ones_do_not_fit():
    bundle = {"CPU": 0.5}
    assert fits({"CPU": 1.5}, bundle) == 3
    assert fits({"CPU": 1.5, "GPU": 1.0}, {"CPU": 0.5, "GPU": 0.25}) == 3
    assert fits({"CPU": 4.0}, {"CPU": 1.0, "GPU": 0.5}) == 0  # no GPU key: no room
    assert scale_request({"CPU": 1.0}, bundle, new=2, running=4) == []
    # 2 new actors, room for 1: the request is the run's whole size (4 running + 2 new).
    assert scale_request({"CPU": 0.5}, bundle, new=2, running=4) == [bundle] * 6
    assert scale_request({}, bundle, new=1, running=0) == [bundle]
    assert scale_request({}, bundle, new=0, running=3) == []
    gpu = {"CPU": 1.0, "GPU": 0.25}
    assert scale_request({"CPU": 8.0}, gpu, new=1, running=2) == [gpu] * 3


def test_describe_need_names_resources_and_what_is_free():
    need = describe_need({"CPU": 0.5, "GPU": 0.25}, 4, {"CPU": 1.0})
    assert need == "4 actors need 2 CPU, 1 GPU (free: 1 CPU, 0 GPU)"
    assert describe_need({"CPU": 1.0}, 1, {}) == "1 actor need 1 CPU (free: 0 CPU)"


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_wait_for_shows_its_status_and_continues_when_room_comes(caplog):
    clock = FakeClock()

    def ready(seconds: float) -> bool:
        clock.t += seconds
        return clock.t >= 70

    with caplog.at_level(logging.WARNING, logger="dfml.actors.scaling"):
        waited = wait_for(ready, "2 actors need 1 CPU (free: 0 CPU)", 600, every=30, clock=clock)
    assert waited == 70
    lines = [r.getMessage() for r in caplog.records]
    assert lines[0].startswith("waiting for the autoscaler: 2 actors need 1 CPU")
    assert "waited 30 s of 600 s" in lines[1] and "waited 60 s of 600 s" in lines[2]
    assert lines[3] == "the cluster made room after 70 s; going on"
    assert len(lines) == 4


def test_wait_for_fails_with_one_line_naming_the_need_and_the_flag():
    clock = FakeClock()

    def never(seconds: float) -> bool:
        clock.t += seconds
        return False

    with pytest.raises(ConfigError) as err:
        wait_for(never, "1 actor need 2 CPU (free: 0 CPU)", 5, clock=clock)
    message = str(err.value)
    assert "\n" not in message and "1 actor need 2 CPU" in message
    assert "--scale-timeout 5 s" in message


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"placement": "scatter"}, "placement must be one of default, spread, pack, got 'scatter'"),
        ({"scale_timeout": 0}, "scale_timeout must be 1 to 604,800 seconds, got 0"),
        ({"scale_timeout": 1e-300}, "scale_timeout must be 1 to 604,800 seconds, got 1e-300"),
        ({"scale_timeout": float("inf")}, "scale_timeout must be 1 to 604,800 seconds, got inf"),
        ({"publish_dtype": "bfloat16"}, "publish_dtype must be one of float32, float16, got 'bf"),
    ],
)
def test_bad_placement_options(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        ResourceConfig(**kwargs)


# ----- on the shared one-node session ------------------------------------------------
def _federation(clients: int, resources: ResourceConfig) -> Federation:
    data = DataConfig(dataset="synthetic", synthetic_samples=400, synthetic_shape=(6,))
    splits = make_splits(load_dataset(data).y, clients + 2, PartitionConfig(), 0)
    return Federation(
        data, ModelConfig(model="mlp", hidden=4), splits, 0, resources, initial=range(clients)
    )


def _starts(fed: Federation, ids: list[int]) -> dict[int, Message]:
    return {c: Message(0) for c in ids}


def test_pack_places_each_actor_in_its_bundle_and_joins_get_a_group(ray_session):
    fed = _federation(
        4, ResourceConfig(clients_per_actor=1, num_cpus_per_actor=0.5, placement="pack")
    )
    try:
        fed.start(DFedAvg(LocalSGDConfig()))
        [group] = fed.placement.groups
        table = placement_group_table(group)
        assert table["state"] == "CREATED" and len(table["bundles"]) == 4
        assert table["strategy"] == "PACK"
        strategy = fed.actor_options(2)["scheduling_strategy"]
        assert strategy.placement_group.id == group.id
        fed.add_clients(_starts(fed, [4]))
        assert len(fed.placement.groups) == 2 and len(fed.actors) == 5
        nodes = fed.client_nodes()
        assert sorted(nodes) == [0, 1, 2, 3, 4]
        assert set(nodes.values()) == {ray.get_runtime_context().get_node_id()}
    finally:
        fed.shutdown()
    assert fed.placement.groups == []
    assert placement_group_table(group)["state"] == "REMOVED"


def test_a_placement_group_that_cannot_be_placed_is_one_error_line(ray_session):
    cpus = ray.cluster_resources()["CPU"]
    cfg = ResourceConfig(clients_per_actor=1, num_cpus_per_actor=cpus * 0.75, placement="spread")
    fed = _federation(2, cfg)
    fed.start_timeout_s = 2.0
    with pytest.raises(ConfigError) as err:
        fed.start(DFedAvg(LocalSGDConfig()))
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("--placement spread: a placement group for 2 actors of")
    assert f"could not be placed within 2 s (cluster has {cpus:g} CPU" in message
    assert fed.placement.groups == [] and fed.actors == []


def test_a_join_the_cluster_cannot_hold_waits_then_fails_with_one_line(ray_session, caplog):
    total = ray.cluster_resources()["CPU"]  # two actors take all of it
    fed = _federation(
        2, ResourceConfig(clients_per_actor=1, num_cpus_per_actor=total / 2, scale_timeout=2)
    )
    try:
        fed.start(DFedAvg(LocalSGDConfig()))
        with (
            caplog.at_level(logging.WARNING, logger="dfml.actors.scaling"),
            pytest.raises(ConfigError) as err,
        ):
            fed.add_clients(_starts(fed, [2]))
    finally:
        fed.shutdown()
    message = str(err.value)
    assert "\n" not in message and "--scale-timeout 2 s" in message
    assert f"1 actor need {total / 2:g} CPU" in message
    assert any("waiting for the autoscaler" in r.getMessage() for r in caplog.records)


@ray.remote
class Blocker:
    """Holds CPUs until killed: a cluster without room."""

    def ready(self) -> bool:
        return True


def test_a_join_waits_for_room_and_continues_when_it_comes(ray_session, caplog):
    total = ray.cluster_resources()["CPU"]
    blocker = Blocker.options(num_cpus=total / 2).remote()
    ray.get(blocker.ready.remote())
    cfg = ResourceConfig(
        clients_per_actor=1, num_cpus_per_actor=total / 4, placement="spread", scale_timeout=60
    )
    fed = _federation(2, cfg)  # with the blocker: the cluster is full
    try:
        fed.start(DFedAvg(LocalSGDConfig()))
        threading.Timer(2.0, ray.kill, args=(blocker,)).start()  # room comes
        with caplog.at_level(logging.WARNING, logger="dfml.actors.scaling"):
            joined = fed.add_clients(_starts(fed, [2]))
        assert sorted(joined) == [2] and len(fed.actors) == 3
        assert len(fed.placement.groups) == 2
    finally:
        fed.shutdown()
        ray.kill(blocker)
    waits = [r.getMessage() for r in caplog.records]
    assert waits and waits[0].startswith(
        f"waiting for the autoscaler: 1 actor need {total / 4:g} CPU"
    )


def _cluster_without_cpus(monkeypatch, empty_calls: float) -> list[list[dict[str, float]]]:
    """``ray.cluster_resources`` reports no CPUs for its first calls (a head with
    CPU: 0 whose workers are coming); returns the list of autoscaler requests."""
    real, calls, asked = ray.cluster_resources, [0], []

    def cluster_resources() -> dict[str, float]:
        calls[0] += 1
        return {} if calls[0] <= empty_calls else real()

    monkeypatch.setattr(ray, "cluster_resources", cluster_resources)
    monkeypatch.setattr(
        federation_module, "request_resources", lambda bundles: asked.append(bundles)
    )
    return asked


def test_a_start_on_a_cluster_without_cpus_asks_for_its_actors_and_waits(ray_session, monkeypatch):
    asked = _cluster_without_cpus(monkeypatch, empty_calls=2)
    fed = _federation(4, ResourceConfig(clients_per_actor=2, num_cpus_per_actor=0.5))
    fed.plan()
    assert asked == [[{"CPU": 0.5}] * 2, []]  # the two actors, then the request cleared
    assert fed.cohorts == [[0, 1], [2, 3]]


def test_a_start_on_a_cluster_that_never_gets_cpus_fails_with_one_line(ray_session, monkeypatch):
    asked = _cluster_without_cpus(monkeypatch, empty_calls=float("inf"))
    fed = _federation(4, ResourceConfig(num_cpus_per_actor=0.5, scale_timeout=1))
    with pytest.raises(ConfigError, match=r"1 actor need 0.5 CPU .*--scale-timeout 1 s"):
        fed.plan()
    assert asked == [[{"CPU": 0.5}], []]
