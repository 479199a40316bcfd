"""Communication topologies, gossip mixing, and the elastic service that rewires them."""

from dfml.topology.config import (
    DYNAMIC_TOPOLOGIES,
    EPIDEMIC_VARIANTS,
    MIXINGS,
    TOPOLOGIES,
    TopologyConfig,
)
from dfml.topology.epidemic import epidemic_graph
from dfml.topology.graphs import (
    build_topology,
    chain_components,
    grouped_subgraph,
    link_cost,
    link_cost_graph,
    minimum_spanning_tree,
    neighbors,
    read_edge_list,
    ring_successor,
    validate_topology,
)
from dfml.topology.mixing import (
    data_size_weights,
    metropolis_hastings_weights,
    mixing_matrix,
    senders,
    spectral_gap,
    uniform_weights,
)
from dfml.topology.service import (
    Change,
    FixedTopology,
    TopologyService,
    sparse_mixing_row,
    validate_changes,
)

__all__ = [
    "DYNAMIC_TOPOLOGIES",
    "EPIDEMIC_VARIANTS",
    "MIXINGS",
    "TOPOLOGIES",
    "Change",
    "FixedTopology",
    "TopologyConfig",
    "TopologyService",
    "build_topology",
    "chain_components",
    "data_size_weights",
    "epidemic_graph",
    "grouped_subgraph",
    "link_cost",
    "link_cost_graph",
    "metropolis_hastings_weights",
    "minimum_spanning_tree",
    "mixing_matrix",
    "neighbors",
    "read_edge_list",
    "ring_successor",
    "senders",
    "sparse_mixing_row",
    "spectral_gap",
    "uniform_weights",
    "validate_changes",
    "validate_topology",
]
