"""Typed, validated configuration of the communication graph and its mixing weights."""

from __future__ import annotations

from dataclasses import dataclass

from dfml.errors import ConfigError

TOPOLOGIES = (
    "ring",
    "star",
    "complete",
    "k-regular",
    "erdos-renyi",
    "small-world",
    "mst",
    "edge-list",
)
MIXINGS = ("data-size", "metropolis-hastings", "uniform")


@dataclass(frozen=True)
class TopologyConfig:
    """Which graph links the clients and how a client weighs its neighbours' models.

    Checks that need the number of clients N (``degree < N``, ``degree * N``
    even, N >= 2, a connected result) run in :func:`dfml.topology.build_topology`.

    Attributes:
        topology: one of :data:`TOPOLOGIES`.
        degree: k of the k-regular and small-world (Watts–Strogatz) graphs.
        edge_probability: p of the Erdős–Rényi G(N, p) graph, in (0, 1].
        rewire_probability: Watts–Strogatz rewiring probability, in [0, 1].
        edge_list: path of a user file with lines ``u v`` or ``u v weight``;
            required by, and only read for, ``topology="edge-list"``.
        mixing: one of :data:`MIXINGS`; ``data-size`` is CL-FML's
            w_ij = |D_j| / Σ_{k ∈ N(i) ∪ {i}} |D_k|.
    """

    topology: str = "ring"
    degree: int = 4
    edge_probability: float = 0.3
    rewire_probability: float = 0.1
    edge_list: str | None = None
    mixing: str = "data-size"

    def __post_init__(self) -> None:
        if self.topology not in TOPOLOGIES:
            raise ConfigError(
                f"unknown topology {self.topology!r}; allowed: {', '.join(TOPOLOGIES)}"
            )
        if self.mixing not in MIXINGS:
            raise ConfigError(f"unknown mixing {self.mixing!r}; allowed: {', '.join(MIXINGS)}")
        if isinstance(self.degree, bool) or not isinstance(self.degree, int):
            raise ConfigError(f"degree must be an int, got {self.degree!r}")
        if self.degree < 1:
            raise ConfigError(f"degree must be >= 1, got {self.degree}")
        if not 0.0 < self.edge_probability <= 1.0:
            raise ConfigError(f"edge_probability must be in (0, 1], got {self.edge_probability}")
        if not 0.0 <= self.rewire_probability <= 1.0:
            raise ConfigError(
                f"rewire_probability must be in [0, 1], got {self.rewire_probability}"
            )
        if self.topology == "edge-list" and not self.edge_list:
            raise ConfigError("topology 'edge-list' needs edge_list, the path of an edge file")
        if self.topology != "edge-list" and self.edge_list is not None:
            raise ConfigError(
                f"edge_list is only read with topology 'edge-list', got topology {self.topology!r}"
            )
