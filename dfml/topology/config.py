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
    "epidemic",
)
#: Topologies whose graph is drawn afresh every round (the others change only
#: when clients join or leave).
DYNAMIC_TOPOLOGIES = ("epidemic",)
MIXINGS = ("data-size", "metropolis-hastings", "uniform")
#: Epidemic Learning's two peer samplers (de Vos et al., NeurIPS 2023).
EPIDEMIC_VARIANTS = ("oracle", "local")


@dataclass(frozen=True)
class TopologyConfig:
    """Which graph links the clients and how a client weighs its neighbours' models.

    Checks that need the number of clients N (``degree < N``, ``degree * N``
    even, N >= 2, a connected result; ``peers < N``, ``peers * N`` even for
    the epidemic oracle) run in :func:`dfml.topology.build_topology` and again
    at every membership change.

    Attributes:
        topology: one of :data:`TOPOLOGIES`.
        degree: k of the k-regular and small-world (Watts–Strogatz) graphs.
        edge_probability: p of the Erdős–Rényi G(N, p) graph, in (0, 1].
        rewire_probability: Watts–Strogatz rewiring probability, in [0, 1].
        edge_list: path of a user file with lines ``u v`` or ``u v weight``;
            required by, and only read for, ``topology="edge-list"``.
        mixing: one of :data:`MIXINGS`; ``data-size`` is CL-FML's
            w_ij = |D_j| / Σ_{k ∈ N(i) ∪ {i}} |D_k|. Over a directed graph
            (``epidemic`` ``local``) N(i) is the clients that send to i.
        peers: s of the epidemic topology: how many peers each client
            exchanges models with every round, in [1, N).
        epidemic: the peer sampler of the epidemic topology (Epidemic
            Learning, de Vos et al., NeurIPS 2023). ``oracle``: a fresh
            random s-regular graph every round, so every client sends to and
            receives from exactly s peers (``peers * clients`` must be even).
            ``local``: every client pushes its model to s peers it picks at
            random and averages what it receives, so a client receives s
            models on average but any number from 0 to N - 1. Needs a mixing
            that reads only what a client receives (``uniform`` or
            ``data-size``, not ``metropolis-hastings``).
    """

    topology: str = "ring"
    degree: int = 4
    edge_probability: float = 0.3
    rewire_probability: float = 0.1
    edge_list: str | None = None
    mixing: str = "data-size"
    peers: int = 3
    epidemic: str = "oracle"

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
        if isinstance(self.peers, bool) or not isinstance(self.peers, int):
            raise ConfigError(f"peers must be an int, got {self.peers!r}")
        if self.peers < 1:
            raise ConfigError(f"peers must be >= 1, got {self.peers}")
        if self.epidemic not in EPIDEMIC_VARIANTS:
            raise ConfigError(
                f"unknown epidemic sampler {self.epidemic!r}; allowed: "
                f"{', '.join(EPIDEMIC_VARIANTS)}"
            )
        if self.directed and self.mixing == "metropolis-hastings":
            raise ConfigError(
                "mixing 'metropolis-hastings' needs symmetric links, but epidemic 'local' "
                "clients push to peers at random (directed); use mixing uniform or data-size"
            )
        if self.topology == "edge-list" and not self.edge_list:
            raise ConfigError("topology 'edge-list' needs edge_list, the path of an edge file")
        if self.topology != "edge-list" and self.edge_list is not None:
            raise ConfigError(
                f"edge_list is only read with topology 'edge-list', got topology {self.topology!r}"
            )

    @property
    def dynamic(self) -> bool:
        """Whether the graph is drawn afresh every round (:data:`DYNAMIC_TOPOLOGIES`)."""
        return self.topology in DYNAMIC_TOPOLOGIES

    @property
    def directed(self) -> bool:
        """Whether links are one-way: epidemic ``local``, where a client's
        receivers are not its senders."""
        return self.topology == "epidemic" and self.epidemic == "local"
