"""Communication graphs over clients 0..N-1, built from networkx generators.

Every graph :func:`build_topology` returns is simple, has exactly the nodes
0..N-1 and is connected: gossip over a disconnected graph never reaches
consensus, so that is a user error raised before any actor starts. The one
exception is a dynamic topology (``epidemic``), whose graph is drawn afresh
every round: one round's graph may be disconnected, the rounds together are
not, and :func:`build_topology` returns round 0's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from itertools import pairwise
from pathlib import Path

import networkx as nx
import numpy as np

from dfml.errors import ConfigError
from dfml.topology.config import TopologyConfig
from dfml.topology.epidemic import epidemic_graph

# Random kinds redraw with derived seeds until the graph is connected.
MAX_TRIES = 100


def _derived_seed(seed: int, attempt: int) -> int:
    """A 32-bit seed for draw ``attempt``, independent across attempts and seeds."""
    return int(np.random.SeedSequence([seed, attempt]).generate_state(1)[0])


def _ring(cfg: TopologyConfig, n: int, seed: int) -> nx.Graph:
    return nx.cycle_graph(n)  # N=2 collapses to the single edge 0-1


def _star(cfg: TopologyConfig, n: int, seed: int) -> nx.Graph:
    return nx.star_graph(n - 1)  # node 0 is the hub


def _complete(cfg: TopologyConfig, n: int, seed: int) -> nx.Graph:
    return nx.complete_graph(n)


def _k_regular(cfg: TopologyConfig, n: int, seed: int) -> nx.Graph:
    k = cfg.degree
    if k >= n:
        raise ConfigError(f"k-regular degree must be < number of clients ({n}), got {k}")
    if (k * n) % 2:
        raise ConfigError(
            f"k-regular needs degree * clients even, got {k} * {n}; change degree or clients"
        )
    if k == 1 and n > 2:
        raise ConfigError(
            f"k-regular with degree 1 is a perfect matching, disconnected for {n} clients; "
            "use degree >= 2"
        )
    for attempt in range(MAX_TRIES):
        graph = nx.random_regular_graph(k, n, seed=_derived_seed(seed, attempt))
        if nx.is_connected(graph):
            return graph
    raise ConfigError(
        f"k-regular graph of degree {k} over {n} clients stayed disconnected after "
        f"{MAX_TRIES} draws; use a larger degree"
    )


def _erdos_renyi(cfg: TopologyConfig, n: int, seed: int) -> nx.Graph:
    p = cfg.edge_probability
    for attempt in range(MAX_TRIES):
        graph = nx.gnp_random_graph(n, p, seed=_derived_seed(seed, attempt))
        if nx.is_connected(graph):
            return graph
    raise ConfigError(
        f"erdos-renyi graph with edge_probability={p} over {n} clients stayed disconnected "
        f"after {MAX_TRIES} draws; use a higher edge_probability "
        f"(connectivity threshold ln(N)/N = {math.log(n) / n:.3f})"
    )


def _small_world(cfg: TopologyConfig, n: int, seed: int) -> nx.Graph:
    k, p = cfg.degree, cfg.rewire_probability
    if k < 2 or k % 2:
        raise ConfigError(
            f"small-world degree must be even and >= 2 (k/2 ring neighbours per side), got {k}"
        )
    if k >= n:
        raise ConfigError(f"small-world degree must be < number of clients ({n}), got {k}")
    try:
        return nx.connected_watts_strogatz_graph(n, k, p, tries=MAX_TRIES, seed=seed)
    except nx.NetworkXError as exc:
        raise ConfigError(
            f"small-world graph (degree {k}, rewire_probability {p}) over {n} clients stayed "
            f"disconnected after {MAX_TRIES} draws; use a larger degree or lower "
            "rewire_probability"
        ) from exc


def link_cost(seed: int, i: int, j: int) -> float:
    """Seeded Uniform[0, 1) cost of the link i-j, a pure function of (seed, {i, j}).

    Hashing the pair (rather than drawing all N(N-1)/2 costs from one stream) keeps
    a link's cost fixed while clients join and leave, so the ``mst`` topology of an
    elastic run only rewires what the membership change forces.
    """
    lo, hi = min(i, j), max(i, j)
    state = np.random.SeedSequence([seed, lo, hi]).generate_state(1, np.uint64)
    return float(int(state[0]) >> 11) * 2.0**-53  # top 53 bits: exact, uniform on [0, 1)


def link_cost_graph(clients: int | Iterable[int], seed: int) -> nx.Graph:
    """Complete graph whose edge attribute ``weight`` is :func:`link_cost`.

    ``clients`` is N (ids 0..N-1) or the ids themselves. This is the graph the
    ``mst`` topology spans; exposed so users and tests can compare the MST against
    other spanning trees of the same costs.
    """
    if isinstance(clients, int):
        _check_clients(clients)
        clients = range(clients)
    graph = nx.complete_graph(sorted(clients))
    for u, v in graph.edges():
        graph[u][v]["weight"] = link_cost(seed, u, v)
    return graph


def minimum_spanning_tree(graph: nx.Graph) -> nx.Graph:
    """Minimum-total-``weight`` spanning tree of a connected weighted graph.

    CL-FML gossips over the MST of its link graph: N-1 cheapest links that still
    reach every client. Edges without a ``weight`` count as weight 1.
    """
    if graph.number_of_nodes() == 0:
        raise ConfigError("cannot span an empty graph")
    if not nx.is_connected(graph):
        raise ConfigError(
            f"graph has no spanning tree: it is disconnected "
            f"({nx.number_connected_components(graph)} components)"
        )
    return nx.minimum_spanning_tree(graph, weight="weight")


def _mst(cfg: TopologyConfig, n: int, seed: int) -> nx.Graph:
    return minimum_spanning_tree(link_cost_graph(n, seed))


def read_edge_list(path: str | Path, num_clients: int | None = None) -> nx.Graph:
    """Read a user graph: lines ``u v`` or ``u v weight``, ``#`` comments, blank lines.

    With ``num_clients`` N the nodes are the client ids 0..N-1 (a static run).
    Without it any non-negative id may appear and the nodes are the ids the file
    names, so an elastic run's file can already wire clients that join later.
    Repeating an edge (either direction) is allowed only with the same weight.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"edge list file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read edge list {path}: {exc}") from None

    graph = nx.Graph()
    if num_clients is not None:
        graph.add_nodes_from(range(num_clients))
    first_seen: dict[frozenset[int], int] = {}
    for lineno, raw in enumerate(text.splitlines(), start=1):
        fields = raw.split("#", 1)[0].split()
        if not fields:
            continue
        where = f"{path}:{lineno}"
        if len(fields) not in (2, 3):
            raise ConfigError(f"{where}: expected 'u v' or 'u v weight', got {raw.strip()!r}")
        try:
            u, v = int(fields[0]), int(fields[1])
        except ValueError:
            raise ConfigError(f"{where}: node ids must be ints, got {raw.strip()!r}") from None
        weight: float | None = None
        if len(fields) == 3:
            try:
                weight = float(fields[2])
            except ValueError:
                raise ConfigError(f"{where}: weight must be a number, got {fields[2]!r}") from None
            if not math.isfinite(weight):
                raise ConfigError(f"{where}: weight must be finite, got {fields[2]!r}")
        for node in (u, v):
            if num_clients is not None and not 0 <= node < num_clients:
                raise ConfigError(
                    f"{where}: node {node} out of range; clients are 0..{num_clients - 1}"
                )
            if node < 0:
                raise ConfigError(f"{where}: node {node} out of range; client ids are >= 0")
        if u == v:
            raise ConfigError(f"{where}: self loop on node {u}")
        key = frozenset((u, v))
        if key in first_seen:
            old = graph[u][v].get("weight")
            if old != weight:
                raise ConfigError(
                    f"{where}: edge {u}-{v} repeats line {first_seen[key]} "
                    f"with a different weight ({weight} vs {old})"
                )
            continue
        first_seen[key] = lineno
        if weight is None:
            graph.add_edge(u, v)
        else:
            graph.add_edge(u, v, weight=weight)
    return graph


def _edge_list(cfg: TopologyConfig, n: int, seed: int) -> nx.Graph:
    assert cfg.edge_list is not None  # TopologyConfig guarantees it for this kind
    return read_edge_list(cfg.edge_list, n)


def _epidemic(cfg: TopologyConfig, n: int, seed: int) -> nx.Graph:
    return epidemic_graph(cfg, range(n), seed, 0)


_BUILDERS: dict[str, Callable[[TopologyConfig, int, int], nx.Graph]] = {
    "ring": _ring,
    "star": _star,
    "complete": _complete,
    "k-regular": _k_regular,
    "erdos-renyi": _erdos_renyi,
    "small-world": _small_world,
    "mst": _mst,
    "edge-list": _edge_list,
    "epidemic": _epidemic,
}


def _check_clients(num_clients: int) -> None:
    if isinstance(num_clients, bool) or not isinstance(num_clients, int):
        raise ConfigError(f"number of clients must be an int, got {num_clients!r}")
    if num_clients < 2:
        raise ConfigError(f"a topology needs at least 2 clients, got {num_clients}")


def _check_seed(seed: int) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"topology seed must be a non-negative int, got {seed!r}")


def validate_topology(graph: nx.Graph, num_clients: int, kind: str = "graph") -> None:
    """Raise ConfigError unless ``graph`` has nodes 0..N-1, no self loops, and is connected."""
    if set(graph.nodes) != set(range(num_clients)):
        raise ConfigError(f"{kind} topology must have nodes 0..{num_clients - 1}")
    loops = list(nx.nodes_with_selfloops(graph))
    if loops:
        raise ConfigError(f"{kind} topology has self loops on nodes {sorted(loops)}")
    if not nx.is_connected(graph):
        components = sorted(nx.connected_components(graph), key=len)
        cut_off = sorted(components[0])[:10]
        raise ConfigError(
            f"{kind} topology over {num_clients} clients is disconnected: "
            f"{len(components)} components (e.g. nodes {cut_off} cannot reach the rest)"
        )


def build_topology(cfg: TopologyConfig, num_clients: int, seed: int) -> nx.Graph:
    """The communication graph G = (V, E) over clients V = {0, ..., N-1}.

    Random kinds (k-regular, erdos-renyi, small-world, mst) are a pure function
    of ``seed``; the result is validated connected and loop-free. For a
    dynamic kind it is round 0's graph (:func:`~dfml.topology.epidemic.epidemic_graph`),
    loop-free by construction and not necessarily connected.
    """
    _check_clients(num_clients)
    _check_seed(seed)
    graph = _BUILDERS[cfg.topology](cfg, num_clients, seed)
    if not cfg.dynamic:
        validate_topology(graph, num_clients, cfg.topology)
    graph.graph["kind"] = cfg.topology
    return graph


def chain_components(graph: nx.Graph) -> None:
    """Reconnect a split graph in place: link consecutive components' lowest ids, in id order.

    The one rule for a graph that lost its connectivity: an erdos-renyi
    topology after clients left, and every sub-graph a group of clients
    gossips over (:func:`grouped_subgraph`).
    """
    lowest = sorted(min(component) for component in nx.connected_components(graph))
    graph.add_edges_from(pairwise(lowest))


def grouped_subgraph(graph: nx.Graph, groups: Iterable[Iterable[int]]) -> nx.Graph:
    """The union of each group's sub-graph of ``graph``, each reconnected by
    :func:`chain_components`; no edge joins two groups.

    Who talks to whom when clients gossip in groups: CL-FML's clusters, the
    clients a task engages. A group member without an edge in ``graph``
    (``graph`` need not hold it) is still a node, linked by the chaining.
    """
    out = nx.Graph()
    for group in groups:
        members = sorted(group)
        sub = nx.Graph(graph.subgraph(members).edges())
        sub.add_nodes_from(members)
        chain_components(sub)
        out.update(sub)
    return out


def neighbors(graph: nx.Graph, i: int) -> list[int]:
    """N(i), sorted so that iteration order (and float summation) is reproducible."""
    return sorted(graph.neighbors(i))


def ring_successor(i: int, n: int) -> int:
    """Next client on the ring 0 → 1 → ... → N-1 → 0 (e.g. for token passing)."""
    if not 0 <= i < n:
        raise ValueError(f"client {i} not in 0..{n - 1}")
    return (i + 1) % n
