"""The live topology of an elastic run: neighbours and sparse mixing rows per membership
epoch (and, for a dynamic topology, per round).

Client ids are opaque non-negative ints, never reused; clients join and leave
between steps. Each successful change bumps the membership epoch and rewires
the graph so that it stays simple, of its kind and (but for a dynamic kind's
round graph) connected:

- ring: the cycle through the live ids in sorted order (a joiner goes between
  its id neighbours; a leaver's two neighbours are linked).
- star: the hub is the lowest live id; a new lowest id takes over as hub.
- complete: every pair of live clients is linked.
- k-regular, small-world: redrawn over the live ids (sorted) with a seed derived
  from (seed, epoch); the k-regular and small-world limits of N still apply.
- erdos-renyi: a joiner links to each live client with probability p, drawn from
  ``SeedSequence([seed, epoch, id])``, and to the client of its smallest draw if
  none came up; when leavers split the graph, its components, ordered by lowest
  id, are chained by linking each one's lowest id to the previous one's.
- mst: the minimum spanning tree of the live ids under the pair costs of
  :func:`~dfml.topology.graphs.link_cost`, which do not depend on who else is live.
- edge-list: the user file's edges among the live ids; every live id must be in
  the file and the live subgraph must stay connected.
- epidemic (dynamic): a fresh graph every round, drawn by the peer sampler
  (:func:`~dfml.topology.epidemic.epidemic_graph`) over the live ids from
  (seed, round) when the round begins (:meth:`TopologyService.begin_round`),
  and redrawn for the same round over the new ids when clients join or
  leave; a client's neighbours are the clients it receives from.

Epoch 0 over ids 0..N-1 is exactly :func:`~dfml.topology.graphs.build_topology`;
other initial ids get that graph relabelled to the sorted ids (mst and edge-list
use the ids themselves). Mixing rows are computed one at a time from a client's
neighbourhood, never as an N×N matrix, with the float operations of
:mod:`dfml.topology.mixing`, so each row is bitwise the dense matrix's row.
"""

from __future__ import annotations

import math
import numbers
from bisect import bisect_left, insort
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import networkx as nx
import numpy as np

from dfml.errors import ConfigError
from dfml.topology.config import MIXINGS, TopologyConfig
from dfml.topology.epidemic import epidemic_graph
from dfml.topology.graphs import (
    _check_seed,
    _derived_seed,
    build_topology,
    chain_components,
    grouped_subgraph,
    link_cost,
    link_cost_graph,
    minimum_spanning_tree,
    read_edge_list,
)
from dfml.topology.mixing import senders

# One membership change: the joining ids with their |D|, and the leaving ids.
Change = tuple[Mapping[int, float], Iterable[int]]

MIN_CLIENTS = 2

# numpy's pairwise summation: below this length a plain loop, up to PW_BLOCKSIZE
# eight interleaved accumulators, above it the halves (cut at a multiple of 8).
_PW_UNROLL = 8
_PW_BLOCKSIZE = 128


def _check_id(cid: object) -> int:
    if isinstance(cid, bool) or not isinstance(cid, numbers.Integral) or cid < 0:
        raise ConfigError(f"client ids must be non-negative ints, got {cid!r}")
    return int(cid)


def _check_size(cid: int, size: object) -> float:
    try:
        value = float(size)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"data size of client {cid} must be a number, got {size!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"data sizes must be positive, client {cid} has {value:g}")
    return value


def _check_sizes(sizes: Mapping[int, float]) -> dict[int, float]:
    """Validated id -> |D| in increasing id order."""
    checked = {}
    for raw, size in sizes.items():
        cid = _check_id(raw)
        checked[cid] = _check_size(cid, size)
    return dict(sorted(checked.items()))


def _fmt_ids(ids: Sequence[int]) -> str:
    """Ids for a one-line error, shortened so a 100k-client change stays readable."""
    if len(ids) <= 10:
        return str(list(ids))
    return f"[{', '.join(map(str, ids[:5]))}, ..., {ids[-1]}] ({len(ids)} ids)"


def _pairwise_sum(positions: Sequence[int], values: Sequence[float], lo: int, n: int) -> float:
    """numpy's pairwise sum of a[lo:lo+n], a being zero except a[positions[k]] = values[k]."""
    if not positions:
        return 0.0
    if n < _PW_UNROLL:
        res = -0.0
        for v in values:
            res += v
        return res
    if n <= _PW_BLOCKSIZE:
        acc = [0.0] * _PW_UNROLL
        full = n - n % _PW_UNROLL
        res_tail: list[float] = []
        for p, v in zip(positions, values, strict=True):
            if p - lo < full:
                acc[(p - lo) % _PW_UNROLL] += v
            else:
                res_tail.append(v)
        res = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]))
        for v in res_tail:
            res += v
        return res
    half = n // 2
    half -= half % _PW_UNROLL
    cut = bisect_left(positions, lo + half)
    return _pairwise_sum(positions[:cut], values[:cut], lo, half) + _pairwise_sum(
        positions[cut:], values[cut:], lo + half, n - half
    )


def _dense_row_sum(n: int, positions: Sequence[int], values: Sequence[float]) -> float:
    """``np.sum`` of a length-``n`` float64 row that is zero except at sorted ``positions``.

    The Metropolis–Hastings self weight is 1 minus the dense row sum, whose
    rounding depends on where numpy's pairwise summation puts the nonzeros.
    Replaying that order over the nonzeros only (O(deg · log N)) keeps sparse rows
    bitwise equal to :func:`~dfml.topology.mixing.metropolis_hastings_weights`,
    so runs keep their numbers when they move from the dense matrix to this service.
    """
    return 0.0 + _pairwise_sum(positions, values, 0, n)  # numpy starts from the identity 0


def sparse_mixing_row(
    graph: nx.Graph,
    ids: Sequence[int],
    sizes: Mapping[int, float],
    cid: int,
    nbrs: Sequence[int],
    scheme: str,
) -> tuple[float, dict[int, float]]:
    """(w_ii, {j: w_ij for j in ``nbrs``}) of ``scheme``: row ``cid`` of the dense
    ``mixing_matrix`` of ``graph`` over the sorted ``ids``, bit for bit.

    The one place a mixing row is computed: the live topology
    (:class:`TopologyService`) and every fixed sub-graph a group of clients
    gossips over (:class:`FixedTopology`) both ask here.
    """
    if scheme == "uniform":
        w = 1.0 / (len(nbrs) + 1)
        return w, dict.fromkeys(nbrs, w)
    if scheme == "data-size":
        hood = sorted([cid, *nbrs])
        d = np.array([sizes[k] for k in hood], dtype=np.float64)
        weights = dict(zip(hood, (d / d.sum()).tolist(), strict=True))
        return weights.pop(cid), weights
    deg_i = len(nbrs)
    degree = graph.degree
    weights = {j: 1.0 / (1.0 + max(deg_i, degree[j])) for j in nbrs}
    positions = [bisect_left(ids, j) for j in nbrs]
    return 1.0 - _dense_row_sum(len(ids), positions, list(weights.values())), weights


def _positional(cfg: TopologyConfig, ids: list[int], seed: int) -> nx.Graph:
    """``build_topology`` over positions 0..N-1, relabelled to the sorted ``ids``."""
    graph = build_topology(cfg, len(ids), seed)
    if ids[0] == 0 and ids[-1] == len(ids) - 1:
        return graph
    return nx.relabel_nodes(graph, dict(enumerate(ids)))


def _rebuild_seed(seed: int, epoch: int) -> int:
    """Seed of the graphs redrawn at ``epoch``; epoch 0 is build_topology's own draw."""
    return seed if epoch == 0 else _derived_seed(seed, epoch)


@dataclass(frozen=True)
class _Plan:
    """A validated membership change, not yet applied."""

    joined: dict[int, float]  # in increasing id order
    left: list[int]  # sorted
    gone: frozenset[int]  # the same ids, for membership tests
    ids: list[int]  # sorted live ids after the change
    epoch: int  # the epoch the change creates
    what: str  # "joining [...] and leaving [...]", for error messages


class TopologyService:
    """Neighbours and sparse mixing rows of the live clients, per membership epoch.

    The driver owns one service, asks each client's row after every change, and
    checkpoints it with :meth:`state_dict`. A failed change raises
    :class:`ConfigError` and leaves the service as it was, so a whole schedule
    can be validated on a :meth:`copy` (see :func:`validate_changes`).

    Attributes:
        cfg: the topology and mixing scheme.
        seed: the topology seed; every random choice derives from it.
        epoch: 0 at start, +1 per change that joined or removed someone.
        round: the round begun last (:meth:`begin_round`); a dynamic
            topology's graph is this round's.
        graph: the current graph over the live ids. Read it, never mutate it;
            a change may update it in place or replace it. Directed (an
            ``nx.DiGraph``, edge j → i: i receives from j) for epidemic
            ``local``.
    """

    cfg: TopologyConfig
    seed: int
    epoch: int
    round: int
    graph: nx.Graph

    def __init__(
        self,
        cfg: TopologyConfig,
        sizes: Mapping[int, float],
        seed: int,
        id_limit: int | None = None,
    ) -> None:
        """Build epoch 0 over the clients in ``sizes`` (id -> |D_i|).

        ``id_limit``: the run's clients will only ever have ids below it
        (initial + reserve); an edge list naming a larger id is refused
        instead of wiring a client that can never exist.
        """
        _check_seed(seed)
        live = _check_sizes(sizes)
        if len(live) < MIN_CLIENTS:
            raise ConfigError(f"a topology needs at least {MIN_CLIENTS} clients, got {len(live)}")
        ids = list(live)
        edge_file = read_edge_list(cfg.edge_list) if cfg.edge_list is not None else None
        if edge_file and id_limit is not None and max(edge_file) >= id_limit:
            raise ConfigError(
                f"edge list {cfg.edge_list} names client {max(edge_file)}, but this run's "
                f"clients are 0..{id_limit - 1} (initial and reserve)"
            )
        if edge_file is not None:
            graph = _edge_list_graph(cfg, edge_file, ids, ids)
        elif cfg.topology == "mst":
            graph = minimum_spanning_tree(link_cost_graph(ids, seed))
        else:
            graph = _positional(cfg, ids, seed)
        self._set(
            cfg, seed, live, graph, epoch=0, retired=set(), edge_file=edge_file, round_index=0
        )

    def _set(
        self,
        cfg: TopologyConfig,
        seed: int,
        sizes: dict[int, float],
        graph: nx.Graph,
        *,
        epoch: int,
        retired: set[int],
        edge_file: nx.Graph | None,
        round_index: int,
    ) -> None:
        self.cfg = cfg
        self.seed = seed
        self.epoch = epoch
        self.round = round_index
        self.graph = graph
        self.graph.graph["kind"] = cfg.topology
        self._sizes = sizes
        self._ids = sorted(sizes)
        self._retired = retired
        self._edge_file = edge_file  # the whole user graph, for joiners; never mutated
        self._rows: dict[int, tuple[float, dict[int, float]]] = {}

    # ---- queries --------------------------------------------------------------------

    def ids(self) -> list[int]:
        """The live client ids, sorted."""
        return list(self._ids)

    def _check_live(self, cid: int) -> None:
        if cid not in self._sizes:
            raise ValueError(f"client {cid} is not live at epoch {self.epoch}")

    def neighbors(self, cid: int) -> list[int]:
        """N(cid), the clients whose models ``cid`` receives, sorted so that
        iteration order (and float summation) is reproducible."""
        self._check_live(cid)
        return senders(self.graph, cid)

    def mixing_row(self, cid: int) -> tuple[float, dict[int, float]]:
        """(w_ii, {j: w_ij for j in N(i)}) of the configured mixing scheme.

        Equal to row i of ``mixing_matrix`` over the current graph with the live
        ids in sorted order, at O(deg) cost (O(deg · log N) for metropolis-hastings).
        """
        row = self._rows.get(cid)
        if row is None:  # kept until the graph or the sizes change: ~23 µs a row a round
            row = sparse_mixing_row(
                self.graph, self._ids, self._sizes, cid, self.neighbors(cid), self.cfg.mixing
            )
            self._rows[cid] = row
        return row[0], dict(row[1])

    # ---- rounds and changes -----------------------------------------------------------

    def begin_round(self, round_index: int) -> None:
        """Round ``round_index`` begins: a dynamic topology draws its graph.

        The runtime calls this before the round's membership changes, which
        then redraw the same round's graph over the new ids. A static
        topology only records the round. The graph depends on (seed, round,
        live ids) alone, so calling this again for the same round, or after
        a resume, gives the same graph.
        """
        self.round = round_index
        if self.cfg.dynamic:
            self.graph = self._draw(self._ids)
            self._rows = {}

    def _draw(self, ids: list[int]) -> nx.Graph:
        """The dynamic topology's graph of the current round over ``ids``."""
        graph = epidemic_graph(self.cfg, ids, self.seed, self.round)
        graph.graph["kind"] = self.cfg.topology
        return graph

    def join(self, sizes: Mapping[int, float]) -> None:
        """Add the clients in ``sizes`` (new id -> |D|) as one change."""
        self.apply(joined=sizes)

    def leave(self, ids: Iterable[int]) -> None:
        """Remove the live clients ``ids`` as one change."""
        self.apply(left=ids)

    def apply(self, joined: Mapping[int, float] | None = None, left: Iterable[int] = ()) -> None:
        """Apply one membership change (leavers go first, then joiners) as one epoch.

        Swapping clients in one change matters where an intermediate membership
        is not allowed (k-regular with odd k needs an even N). A change that
        names nobody is a no-op and keeps the epoch.
        """
        plan = self._plan(joined or {}, left)
        if plan is None:
            return
        try:
            graph = self._rewire(plan)
        except ConfigError as exc:
            raise ConfigError(f"epoch {plan.epoch} ({plan.what}): {exc}") from None
        sizes = {cid: size for cid, size in self._sizes.items() if cid not in plan.gone}
        sizes.update(plan.joined)
        self._retired.update(plan.left)
        self.graph = graph
        self.graph.graph["kind"] = self.cfg.topology
        self._sizes = sizes
        self._ids = plan.ids
        self.epoch = plan.epoch
        self._rows = {}

    def _plan(self, joined: Mapping[int, float], left: Iterable[int]) -> _Plan | None:
        new = _check_sizes(joined)
        for cid in new:
            if cid in self._sizes:
                raise ConfigError(f"cannot join client {cid}: it is already live")
            if cid in self._retired:
                raise ConfigError(
                    f"cannot join client {cid}: it left before and client ids are never reused"
                )
        gone = sorted({_check_id(cid) for cid in left})
        for cid in gone:
            if cid not in self._sizes:
                why = "it already left" if cid in self._retired else "it is not live"
                raise ConfigError(f"cannot remove client {cid}: {why}")
        if not new and not gone:
            return None
        parts = [f"joining {_fmt_ids(list(new))}"] if new else []
        parts += [f"leaving {_fmt_ids(gone)}"] if gone else []
        what = " and ".join(parts)
        gone_set = frozenset(gone)
        ids = sorted([cid for cid in self._ids if cid not in gone_set] + list(new))
        if len(ids) < MIN_CLIENTS:
            raise ConfigError(
                f"{what} would leave {len(ids)} live client(s); "
                f"a topology needs at least {MIN_CLIENTS}"
            )
        return _Plan(new, gone, gone_set, ids, epoch=self.epoch + 1, what=what)

    def _rewire(self, plan: _Plan) -> nx.Graph:
        """The graph after ``plan``.

        Kinds that can fail build a new graph; the others cannot fail and update
        :attr:`graph` in place, so a failed change never leaves a half-rewired graph.
        """
        kind = self.cfg.topology
        if self.cfg.dynamic:
            return self._draw(plan.ids)
        if kind in ("k-regular", "small-world"):
            return _positional(self.cfg, plan.ids, _rebuild_seed(self.seed, plan.epoch))
        if kind == "edge-list":
            assert self._edge_file is not None  # read in __init__/from_state for this kind
            return _edge_list_graph(self.cfg, self._edge_file, plan.ids, list(plan.joined))
        if kind == "mst":
            return self._rewire_mst(plan)
        if kind == "star":
            return self._rewire_star(plan)
        graph = self.graph
        live = [cid for cid in self._ids if cid not in plan.gone]
        if kind == "ring":
            _ring_leave(graph, self._ids, plan.left)
            _ring_join(graph, live, list(plan.joined))
        elif kind == "complete":
            graph.remove_nodes_from(plan.left)
            for cid in plan.joined:
                graph.add_edges_from((other, cid) for other in list(graph))
                graph.add_node(cid)
        else:  # erdos-renyi
            graph.remove_nodes_from(plan.left)
            if plan.left:
                chain_components(graph)
            for cid in plan.joined:
                self._er_join(graph, live, cid, plan.epoch)
                insort(live, cid)
        return graph

    def _er_join(self, graph: nx.Graph, live: list[int], cid: int, epoch: int) -> None:
        """Link ``cid`` to each of ``live`` with probability p, and to at least one."""
        graph.add_node(cid)
        if not live:
            return
        rng = np.random.default_rng(np.random.SeedSequence([self.seed, epoch, cid]))
        draws = rng.random(len(live))
        linked = [
            other for other, u in zip(live, draws, strict=True) if u < self.cfg.edge_probability
        ]
        graph.add_edges_from((other, cid) for other in linked or [live[int(np.argmin(draws))]])

    def _rewire_star(self, plan: _Plan) -> nx.Graph:
        hub = plan.ids[0]
        if hub != self._ids[0]:
            return nx.star_graph(plan.ids)
        self.graph.remove_nodes_from(plan.left)
        self.graph.add_edges_from((hub, cid) for cid in plan.joined)
        return self.graph

    def _rewire_mst(self, plan: _Plan) -> nx.Graph:
        """Kruskal over the surviving tree edges plus every edge the change can add.

        Survivors' tree edges stay in the new MST (a cheapest link never becomes
        the dearest on a cycle by removing nodes), so the candidates are those
        edges, the links between the pieces the leavers cut apart, and all links
        of the joiners: cost O(pieces' pairs + N·joiners), not O(N²) per change.
        """
        seed = self.seed
        candidates = self.graph.subgraph(set(self._ids) - plan.gone).copy()
        for a, b in combinations(list(nx.connected_components(candidates)), 2):
            candidates.add_weighted_edges_from((u, v, link_cost(seed, u, v)) for u in a for v in b)
        candidates.add_nodes_from(plan.joined)
        for cid in plan.joined:
            candidates.add_weighted_edges_from(
                (other, cid, link_cost(seed, other, cid))
                for other in plan.ids
                if other != cid and (other not in plan.joined or other < cid)
            )
        return minimum_spanning_tree(candidates)

    # ---- copies and checkpoints -----------------------------------------------------

    def copy(self) -> TopologyService:
        """An independent service in the same state, e.g. to try changes on."""
        other = type(self).__new__(type(self))
        other._set(
            self.cfg,
            self.seed,
            dict(self._sizes),
            self.graph.copy(),
            epoch=self.epoch,
            retired=set(self._retired),
            edge_file=self._edge_file,
            round_index=self.round,
        )
        return other

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state; :meth:`from_state` with the same cfg resumes it exactly.

        A directed graph's edges keep their direction ([sender, receiver]).
        """
        directed = self.graph.is_directed()
        edges = []
        for u, v, w in self.graph.edges(data="weight"):
            edge = [u, v] if directed else [min(u, v), max(u, v)]
            edges.append(edge if w is None else [*edge, w])
        return {
            "topology": self.cfg.topology,
            "seed": self.seed,
            "epoch": self.epoch,
            "round": self.round,
            "directed": directed,
            "sizes": [[cid, self._sizes[cid]] for cid in self._ids],
            "edges": sorted(edges),
            "retired": sorted(self._retired),
        }

    @classmethod
    def from_state(cls, cfg: TopologyConfig, state: Mapping[str, Any]) -> TopologyService:
        """Resume a :meth:`state_dict`; later changes rewire exactly as the original would."""
        missing = {"topology", "seed", "epoch", "sizes", "edges", "retired"} - set(state)
        if missing:
            raise ConfigError(f"topology state lacks {sorted(missing)}")
        if state["topology"] != cfg.topology:
            raise ConfigError(
                f"topology state was saved for {state['topology']!r}, "
                f"but the config says {cfg.topology!r}"
            )
        _check_seed(state["seed"])
        sizes = {_check_id(cid): _check_size(cid, size) for cid, size in state["sizes"]}
        # "round" and "directed" are absent from states saved before dynamic
        # topologies existed; those were undirected and read no round.
        graph = nx.DiGraph() if state.get("directed", False) else nx.Graph()
        graph.add_nodes_from(sorted(sizes))
        for u, v, *weight in state["edges"]:
            if u not in sizes or v not in sizes:
                raise ConfigError(f"topology state has edge {u}-{v} to a client that is not live")
            graph.add_edge(u, v, **({"weight": weight[0]} if weight else {}))
        edge_file = read_edge_list(cfg.edge_list) if cfg.edge_list is not None else None
        service = cls.__new__(cls)
        service._set(
            cfg,
            state["seed"],
            sizes,
            graph,
            epoch=int(state["epoch"]),
            retired={_check_id(cid) for cid in state["retired"]},
            edge_file=edge_file,
            round_index=int(state.get("round", 0)),
        )
        return service


class FixedTopology:
    """Neighbours and sparse mixing rows over a graph that never rewires.

    What clients that gossip in groups read instead of the live topology —
    CL-FML's clusters while they train, the clients a task engages — so the
    algorithms write no mixing row of their own: the rows are
    :func:`sparse_mixing_row`'s, as the live topology's are. It answers the
    queries an algorithm's driver half makes of :class:`TopologyService`
    (:meth:`ids`, :meth:`neighbors`, :meth:`mixing_row`, :attr:`graph`).

    Attributes:
        graph: the fixed graph; every client it holds is a node.
        mixing: one of :data:`~dfml.topology.config.MIXINGS`.
    """

    def __init__(
        self, graph: nx.Graph, mixing: str, sizes: Mapping[int, float] | None = None
    ) -> None:
        """``sizes``: client → the data size its ``data-size`` weight is (CL-FML
        weighs by |D^M|), needed by ``data-size`` only; a zero size is a zero weight."""
        if mixing not in MIXINGS:
            raise ConfigError(f"unknown mixing {mixing!r}; allowed: {', '.join(MIXINGS)}")
        if mixing == "data-size" and sizes is None:
            raise ValueError("data-size mixing over a fixed graph needs the clients' sizes")
        self.graph, self.mixing = graph, mixing
        self._ids = sorted(graph)
        self._sizes = dict(sizes or {})

    @classmethod
    def of_groups(
        cls,
        graph: nx.Graph,
        groups: Iterable[Iterable[int]],
        mixing: str,
        sizes: Mapping[int, float] | None = None,
    ) -> FixedTopology:
        """Gossip within each group over its reconnected sub-graph of ``graph``
        (:func:`~dfml.topology.graphs.grouped_subgraph`)."""
        return cls(grouped_subgraph(graph, groups), mixing, sizes)

    def ids(self) -> list[int]:
        """The clients of the graph, sorted."""
        return list(self._ids)

    def neighbors(self, cid: int) -> list[int]:
        """N(cid) in the fixed graph, sorted."""
        if cid not in self.graph:
            raise ValueError(f"client {cid} is not in this fixed topology")
        return sorted(self.graph.adj[cid])

    def mixing_row(self, cid: int) -> tuple[float, dict[int, float]]:
        """(w_ii, {j: w_ij for j in N(i)}): :func:`sparse_mixing_row` over the fixed graph."""
        return sparse_mixing_row(
            self.graph, self._ids, self._sizes, cid, self.neighbors(cid), self.mixing
        )


def _ring_leave(graph: nx.Graph, ids: list[int], left: list[int]) -> None:
    """Remove ``left`` from the ring over sorted ``ids``, linking each leaver's neighbours."""
    live = list(ids)
    for cid in left:
        k = bisect_left(live, cid)
        if len(live) > 3:  # with 3 the neighbours are already linked
            graph.add_edge(live[k - 1], live[(k + 1) % len(live)])
        graph.remove_node(cid)
        live.pop(k)


def _ring_join(graph: nx.Graph, live: list[int], joined: list[int]) -> None:
    """Insert ``joined`` into the ring over sorted ``live`` at their id positions."""
    for cid in joined:
        k = bisect_left(live, cid)
        graph.add_node(cid)
        if len(live) <= 2:  # 1 → an edge, 2 → a triangle: every pair is on the cycle
            graph.add_edges_from((other, cid) for other in live)
        else:
            before, after = live[k - 1], live[k % len(live)]
            graph.remove_edge(before, after)
            graph.add_edges_from([(before, cid), (cid, after)])
        live.insert(k, cid)


def _edge_list_graph(
    cfg: TopologyConfig, edge_file: nx.Graph, ids: list[int], new: Iterable[int]
) -> nx.Graph:
    """The user file's graph induced on ``ids``; ``new`` ids must appear in the file."""
    for cid in new:
        if cid not in edge_file:
            raise ConfigError(
                f"client {cid} has no edge in edge list {cfg.edge_list}; "
                "every client id must appear in the file"
            )
    graph = edge_file.subgraph(ids).copy()
    if not nx.is_connected(graph):
        components = sorted(nx.connected_components(graph), key=lambda c: (len(c), min(c)))
        raise ConfigError(
            f"edge list {cfg.edge_list} leaves the live clients disconnected: "
            f"{len(components)} components (e.g. clients {_fmt_ids(sorted(components[0]))} "
            "cannot reach the rest)"
        )
    return graph


def validate_changes(
    cfg: TopologyConfig, initial_sizes: Mapping[int, float], seed: int, changes: Iterable[Change]
) -> None:
    """Raise ConfigError (one line, naming the change) if any change of a schedule fails.

    Run before any actor starts, so a bad join/leave schedule fails in seconds
    instead of mid-run. To check changes against a running service instead, apply
    them to its :meth:`TopologyService.copy`.
    """
    service = TopologyService(cfg, initial_sizes, seed)
    for step, (joined, left) in enumerate(changes):
        try:
            service.apply(joined, left)
        except ConfigError as exc:
            raise ConfigError(f"membership change {step}: {exc}") from None
