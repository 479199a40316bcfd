"""Where client actors run: placement groups for ``--placement spread|pack``.

With ``default`` Ray's scheduler puts each actor wherever it fits. With
``spread`` or ``pack`` the actors of a start get one Ray placement group
(one bundle of {CPU, GPU} per actor, strategy SPREAD or PACK) and each actor
is scheduled into its own bundle; the actors a join opens get a group of
their own, placed on whatever room the cluster has then (typically the
nodes that joined).

Which slot takes which bundle is dfml's choice, Ray fixes only where each
bundle lies. The rule (:func:`pack_order`): slots in order take the bundles
node by node. Slots are contiguous cohorts of client ids in order, and on a
ring consecutive ids are neighbours, so the cohorts on one node form one
run of consecutive ids and only the two clients at the ends of each run
talk to another node. It also holds for spread, whose bundles Ray
alternates over the nodes.

:func:`cross_node_bytes` counts what the placement costs in traffic.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import ray
from ray.util.placement_group import (
    PlacementGroup,
    placement_group,
    placement_group_table,
    remove_placement_group,
)
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from dfml.actors.config import ResourceConfig

log = logging.getLogger(__name__)


def actor_bundle(cfg: ResourceConfig) -> dict[str, float]:
    """The resources one actor asks for, as a placement-group / autoscaler bundle."""
    bundle = {"CPU": cfg.num_cpus_per_actor}
    if cfg.num_gpus_per_actor > 0:
        bundle["GPU"] = cfg.num_gpus_per_actor
    return bundle


def pack_order(bundle_nodes: Sequence[str]) -> list[int]:
    """Bundle indices in the order slots take them: node by node.

    ``bundle_nodes[b]`` is the node bundle ``b`` lies on; nodes come in the
    order of their first bundle, a node's bundles in index order. E.g. SPREAD
    over nodes A, B gives ``[A, B, A, B]`` → ``[0, 2, 1, 3]``: slots 0 and 1
    share node A.
    """
    first: dict[str, int] = {}
    for b, node in enumerate(bundle_nodes):
        first.setdefault(node, b)
    return sorted(range(len(bundle_nodes)), key=lambda b: (first[bundle_nodes[b]], b))


def cross_node_bytes(
    fetches: Iterable[tuple[int, int]],
    node_of: Mapping[int, str],
    nbytes: Mapping[int, int],
) -> int:
    """Bytes of client vectors that cross nodes in one step.

    ``fetches``: (receiver, sender) client pairs, one per neighbour vector a
    client fetches; ``node_of``: client → node; ``nbytes``: client → size of
    its vector. Ray pulls an object into a node once, however many clients
    there read it, so a vector counts once per other node that fetches it.
    A pair with a client of unknown node counts nothing.
    """
    moved = {
        (sender, node_of[receiver])
        for receiver, sender in fetches
        if receiver in node_of and sender in node_of and node_of[receiver] != node_of[sender]
    }
    return sum(nbytes.get(sender, 0) for sender, _ in moved)


class Placement:
    """The placement groups of one federation and which bundle each slot uses."""

    def __init__(self, cfg: ResourceConfig) -> None:
        self.cfg = cfg
        self.groups: list[PlacementGroup] = []
        self._bundle: dict[int, tuple[PlacementGroup, int]] = {}

    @property
    def active(self) -> bool:
        """Whether actors go into placement groups (``--placement spread|pack``)."""
        return self.cfg.placement != "default"

    def reserve(self, slots: Sequence[int], wait: Callable[[Any], None]) -> None:
        """One placement group for ``slots``; ``wait(ready_ref)`` returns once it
        is placed (or raises: the group is removed, its room given back)."""
        if not self.active or not slots:
            return
        group = placement_group(
            [actor_bundle(self.cfg)] * len(slots), strategy=self.cfg.placement.upper()
        )
        try:
            wait(group.ready())
        except BaseException:
            remove_placement_group(group)
            raise
        self.groups.append(group)
        nodes = placement_group_table(group)["bundles_to_node_id"]
        order = pack_order([nodes[b] for b in range(len(slots))])
        for k, b in zip(sorted(slots), order, strict=True):
            self._bundle[k] = (group, b)
        log.info(
            "placement %s: %d actors over %d nodes",
            self.cfg.placement,
            len(slots),
            len(set(nodes.values())),
        )

    def options(self, k: int) -> dict[str, Any]:
        """Ray actor options that put slot ``k``'s actor (also a replacement) into its bundle."""
        if k not in self._bundle:
            return {}
        group, b = self._bundle[k]
        return {
            "scheduling_strategy": PlacementGroupSchedulingStrategy(
                placement_group=group, placement_group_bundle_index=b
            )
        }

    def release(self) -> None:
        """Give every group's room back (after the actors are gone)."""
        for group in self.groups:
            remove_placement_group(group)
        self.groups, self._bundle = [], {}


def describe_cluster() -> str:
    """The cluster's CPU / GPU totals and what is free, for error lines."""
    total, free = ray.cluster_resources(), ray.available_resources()
    return (
        f"cluster has {total.get('CPU', 0):g} CPU, {total.get('GPU', 0):g} GPU; "
        f"free {free.get('CPU', 0):g} CPU, {free.get('GPU', 0):g} GPU"
    )
