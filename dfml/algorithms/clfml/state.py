"""The label clustering's driver state: where its phases stand and what they found.

It is the clustering's slot of :attr:`dfml.steps.DriverState.sources` (key
:data:`SLOT`), whatever learner trains within the clusters, so a whole-run
checkpoint holds it; the task service reads the clustering from it when the
run's algorithm clustered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dfml.algorithms.clfml.phases import Phase
from dfml.topology.service import FixedTopology

#: The label clustering's key in ``DriverState.sources`` (CL-FML, C-DFedAvg,
#: any algorithm run with ``--cluster-by labels``).
SLOT = "clustering"


@dataclass
class ClusterState:
    """The label phases' progress (dissemination, tree, clustering) and results.

    Attributes:
        phase: the phase of the next step (``train`` once clusters exist).
        hops: dissemination hops in which some label set grew.
        bytes: label bytes sent while disseminating (every hop).
        meta_sizes: client → |D^M|, the weights of gossip within a cluster.
        level: the tree level the convergecast or broadcast is at.
        universe: ℒ, the global label universe, once disseminated.
        leader: the tree's root, which clusters (the lowest id).
        up: the tree's levels below the leader, deepest first (convergecast).
        down: the same levels from the top (broadcast).
        parents: client → its parent in the tree.
        children: client → its children in the tree (sorted).
        depth: client → its depth in the tree.
        tree_edges: the minimum spanning tree's edges.
        assignment: client → cluster k; ``None`` until the leader clustered.
        cluster_labels: cluster k → ℒ_k, the labels its clients hold.
        w: the cluster label distributions w_k, one row per cluster.
        topology: who talks to whom while the clusters train: every
            cluster's reconnected sub-graph with its |D^M| rows; ``None``
            until the leader clustered.
    """

    phase: str = Phase.DISSEMINATE
    hops: int = 0
    bytes: int = 0
    meta_sizes: dict[int, int] = field(default_factory=dict)
    level: int = 0
    universe: list[int] = field(default_factory=list)
    leader: int = 0
    up: list[list[int]] = field(default_factory=list)
    down: list[list[int]] = field(default_factory=list)
    parents: dict[int, int] = field(default_factory=dict)
    children: dict[int, list[int]] = field(default_factory=dict)
    depth: dict[int, int] = field(default_factory=dict)
    tree_edges: list[tuple[int, int]] = field(default_factory=list)
    assignment: dict[int, int] | None = None
    cluster_labels: dict[int, list[int]] = field(default_factory=dict)
    w: list[list[float]] = field(default_factory=list)
    topology: FixedTopology | None = None
