"""Fault tolerance inside placement groups: a replacement takes its bundle."""

from __future__ import annotations

import ray
from helpers.fault import run


def test_a_killed_actor_is_replaced_inside_its_placement_group_bundle(ray_session, tmp_path):
    """The two actors' bundles take every CPU of the session, so the replacement
    (no spare: a new actor) can only start inside the dead actor's bundle."""
    cpus = ray.cluster_resources()["CPU"]
    summary = run(
        tmp_path,
        clients_per_actor=2,
        num_cpus_per_actor=cpus / 2,
        placement="pack",
        chaos_rounds="1",
        chaos_fraction=0.5,
        chaos_mode="sigkill",
        spares=0,
    )
    assert summary["status"] == "completed" and summary["rounds_completed"] == 3
    assert summary["failures_injected"] == 2 == summary["clients_restored"]
    assert summary["clients_lost"] == 0
    assert summary["cross_node_bytes"] == 0  # one node
