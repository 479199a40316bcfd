"""Epidemic Learning's per-round peer samplers (de Vos et al., NeurIPS 2023).

Every round each client exchanges models with ``s`` peers drawn afresh, so
over a few rounds a model reaches far more clients than over a fixed graph of
the same degree. Two samplers:

- **oracle** (EL-Oracle): a uniformly random s-regular undirected graph,
  drawn with :func:`networkx.random_regular_graph`. Every client sends to and
  receives from exactly s peers.
- **local** (EL-Local): every client pushes its model to s peers it picks
  uniformly without replacement among the others, with no coordination. The
  graph is directed (an edge j → i: j pushes to i, i receives from j); every
  out-degree is s, in-degrees vary around their mean s.

A round's graph is a pure function of (seed, round, live ids): the same seed
gives the same graphs, and the graph of round r does not depend on how many
rounds ran before it (a resumed run draws what an uninterrupted one draws).
It is drawn over positions 0..N-1 of the sorted live ids and relabelled.
One round's graph need not be connected (s = 1 is a matching); mixing
spreads over the sequence of graphs, which is the method's point.
"""

from __future__ import annotations

from collections.abc import Iterable

import networkx as nx
import numpy as np

from dfml.errors import ConfigError
from dfml.topology.config import TopologyConfig

#: Mixed into every round's seed so the epidemic stream never coincides with the
#: k-regular / small-world redraws, which derive theirs from (seed, epoch).
STREAM = 0x45504944  # "EPID"


def round_seed(seed: int, round_index: int) -> int:
    """The 32-bit seed of round ``round_index``'s draw: independent across rounds and seeds."""
    return int(np.random.SeedSequence([seed, round_index, STREAM]).generate_state(1)[0])


def check_peers(cfg: TopologyConfig, n: int) -> None:
    """Raise ConfigError unless ``cfg``'s sampler can draw a graph over ``n`` live clients."""
    s = cfg.peers
    if s >= n:
        raise ConfigError(
            f"epidemic peers must be < number of live clients ({n}), got {s}; "
            "a client's peers are the other clients"
        )
    if cfg.epidemic == "oracle" and (s * n) % 2:
        raise ConfigError(
            f"epidemic oracle draws a random {s}-regular graph each round, which needs "
            f"peers * live clients even, got {s} * {n}; change peers or clients, "
            "or use epidemic local"
        )


def push_targets(n: int, s: int, rng: np.random.Generator) -> np.ndarray:
    """[n × s] int array: row p holds the s distinct peers (≠ p) position p pushes to.

    Each row is a uniform s-subset of the other n - 1 positions, by Floyd's
    algorithm run for all rows at once (s vectorised draws instead of n calls
    to ``rng.choice``): for j = m-s .. m-1 (m = n - 1 others) draw t uniform
    in [0, j] and keep t, or j when t was already kept.
    """
    m = n - 1
    picks = np.empty((n, s), dtype=np.int64)
    for k, j in enumerate(range(m - s, m)):
        t = rng.integers(0, j + 1, size=n)
        taken = (picks[:, :k] == t[:, None]).any(axis=1)
        picks[:, k] = np.where(taken, j, t)
    own = np.arange(n)[:, None]
    return picks + (picks >= own)  # skip the client itself


def _oracle(ids: np.ndarray, s: int, seed: int) -> nx.Graph:
    positional = nx.random_regular_graph(s, len(ids), seed=seed)
    if ids[-1] == len(ids) - 1:  # sorted distinct ids 0..N-1: already the ids
        return positional
    return nx.relabel_nodes(positional, dict(enumerate(ids.tolist())))


def _local(ids: np.ndarray, s: int, seed: int) -> nx.DiGraph:
    targets = push_targets(len(ids), s, np.random.default_rng(seed))
    graph = nx.DiGraph()
    graph.add_nodes_from(ids.tolist())
    senders = np.repeat(ids, s)
    graph.add_edges_from(zip(senders.tolist(), ids[targets.ravel()].tolist(), strict=True))
    return graph


def epidemic_graph(
    cfg: TopologyConfig, ids: Iterable[int], seed: int, round_index: int
) -> nx.Graph | nx.DiGraph:
    """Round ``round_index``'s graph of ``cfg``'s sampler over the live ``ids``.

    Undirected for ``oracle``; directed for ``local`` (edge j → i: i receives
    j's model). Raises ConfigError when ``cfg.peers`` does not fit len(ids).
    The draw is over positions 0..N-1 of the sorted ids; positions become ids
    as the edges are made (local) or by one relabelling (oracle).
    """
    live = np.array(sorted(ids), dtype=np.int64)
    check_peers(cfg, len(live))
    draw = _oracle if cfg.epidemic == "oracle" else _local
    return draw(live, cfg.peers, round_seed(seed, round_index))
