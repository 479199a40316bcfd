"""CL-FML phase 2: convergecast order, online k-means, single linkage, cluster summaries."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest

from dfml.algorithms.clfml.clustering import (
    OnlineKMeans,
    arrival_order,
    centralized_online_kmeans,
    cluster_distribution,
    cluster_labels,
    convergecast_levels,
    single_linkage,
    tree_parents,
)
from dfml.algorithms.clfml.labels import hellinger, label_vector
from dfml.errors import ConfigError

# --- convergecast -----------------------------------------------------------------------


def _hand_tree():
    #        0
    #      /   \
    #     1     4
    #    / \     \
    #   2   3     5
    #              \
    #               6
    return nx.Graph([(0, 1), (1, 2), (1, 3), (0, 4), (4, 5), (5, 6)])


def test_levels_hand_example():
    tree = _hand_tree()
    assert convergecast_levels(tree, 0) == [[6], [2, 3, 5], [1, 4], [0]]
    assert arrival_order(tree, 0) == [6, 2, 3, 5, 1, 4, 0]
    assert tree_parents(tree, 0) == {1: 0, 4: 0, 2: 1, 3: 1, 5: 4, 6: 5}
    # Another leader: the same tree hangs differently.
    assert convergecast_levels(tree, 6) == [[2, 3], [1], [0], [4], [5], [6]]
    single = nx.Graph()
    single.add_node(3)
    assert convergecast_levels(single, 3) == [[3]] and tree_parents(single, 3) == {}


def test_convergecast_errors():
    with pytest.raises(ConfigError, match="leader 9 is not a node"):
        convergecast_levels(_hand_tree(), 9)
    with pytest.raises(ConfigError, match="spanning tree"):
        convergecast_levels(nx.cycle_graph(4), 0)
    with pytest.raises(ConfigError, match="spanning tree"):
        convergecast_levels(nx.Graph([(0, 1), (2, 3)]), 0)
    with pytest.raises(ConfigError, match="spanning tree"):
        convergecast_levels(nx.Graph(), 0)


def simulate_convergecast(tree, leader, vectors):
    """Independent message-passing simulation: bags of (client, depth, P_i) move up a level per step.

    Returns what the leader ends up holding, sorted the way the leader folds it
    (depth descending, then id), and the number of messages sent.
    """
    depth = nx.shortest_path_length(tree, leader)
    parent = {v: u for u, v in nx.dfs_edges(tree, leader)}
    bags = {c: [(c, depth[c], np.asarray(vectors[c]))] for c in tree}
    messages = 0
    for d in range(max(depth.values()), 0, -1):
        for c in [c for c in tree if depth[c] == d]:
            bags[parent[c]].extend(bags.pop(c))
            messages += 1
    received = bags.pop(leader)
    assert not bags  # everything reached the leader
    received.sort(key=lambda item: (-item[1], item[0]))
    return [(c, p) for c, _, p in received], messages


def _random_instance(seed, mode="multi-hot"):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(4, 30))
    universe = list(range(6))
    # A few label "types" so profiles repeat, as they do under label-skewed partitions.
    types = [
        frozenset(int(v) for v in rng.choice(6, size=rng.integers(1, 4), replace=False))
        for _ in range(int(rng.integers(2, 6)))
    ]
    vectors = {}
    for c in range(n):
        labels = types[int(rng.integers(len(types)))]
        if mode == "multi-hot":
            vectors[c] = label_vector(labels, universe)
        else:
            counts = {label: int(rng.integers(1, 50)) for label in labels}
            vectors[c] = label_vector(counts, universe, "histogram")
    tree = nx.random_labeled_tree(n, seed=seed)
    leader = int(rng.integers(n))
    distinct = len({v.tobytes() for v in vectors.values()})
    k = int(rng.integers(1, distinct + 1))
    return tree, leader, vectors, k


@pytest.mark.parametrize("seed", range(30))
def test_convergecast_kmeans_equals_centralized(seed):
    tree, leader, vectors, k = _random_instance(seed)
    arrivals, messages = simulate_convergecast(tree, leader, vectors)
    assert messages == len(vectors) - 1  # one message per tree edge
    assert [c for c, _ in arrivals] == arrival_order(tree, leader)
    km = OnlineKMeans(k)
    for client, p in arrivals:  # incrementally, as the leader folds them in
        km.observe(client, p)
    online = km.finish()
    central = centralized_online_kmeans(vectors, arrival_order(tree, leader), k)
    assert online.assignment == central.assignment
    np.testing.assert_array_equal(online.centres, central.centres)
    assert online.clusters == k
    # Every cluster non-empty; each w_k is the mean of its members' P_i.
    assert sorted(set(online.assignment.values())) == list(range(k))
    np.testing.assert_allclose(
        cluster_distribution(online.assignment, vectors), online.centres, atol=1e-12
    )
    assert km.fit(arrivals).assignment == online.assignment  # fit == observe loop


@pytest.mark.parametrize("seed", range(10))
def test_convergecast_kmeans_equals_centralized_histograms(seed):
    tree, leader, vectors, k = _random_instance(100 + seed, mode="histogram")
    k = min(k, 3)
    arrivals, _ = simulate_convergecast(tree, leader, vectors)
    online = OnlineKMeans(k).fit(arrivals)
    central = centralized_online_kmeans(vectors, arrival_order(tree, leader), k)
    assert online.assignment == central.assignment
    np.testing.assert_allclose(online.centres, central.centres, atol=1e-12)


def test_online_kmeans_hand_example():
    arrivals = [
        ("a", [1, 1, 0, 0]),
        ("b", [0, 0, 1, 1]),
        ("c", [1, 1, 0, 0]),  # distance 0 to w_0
        ("d", [1, 1, 1, 0]),  # ℋ to w_0 = √(1 − 2/√6) ≈ 0.43 < ℋ to w_1 = √(1 − 1/√6) ≈ 0.77
    ]
    out = OnlineKMeans(2).fit(arrivals)
    assert out.assignment == {"a": 0, "b": 1, "c": 0, "d": 0}
    np.testing.assert_allclose(out.centres, [[1, 1, 1 / 3, 0], [0, 0, 1, 1]])
    assert hellinger([1, 1, 1, 0], [1, 1, 0, 0]) == pytest.approx(np.sqrt(1 - 2 / np.sqrt(6)))


def test_repeated_profile_does_not_seed_a_centre():
    out = OnlineKMeans(2).fit([(0, [1, 0]), (1, [1, 0]), (2, [0, 1]), (3, [0, 1])])
    assert out.assignment == {0: 0, 1: 0, 2: 1, 3: 1}


def test_ties_go_to_the_lower_cluster():
    out = OnlineKMeans(2).fit([(0, [1, 0, 0]), (1, [0, 1, 0]), (2, [1, 1, 0])])
    assert out.assignment[2] == 0
    np.testing.assert_allclose(out.centres[0], [1, 0.5, 0])


def test_assignment_is_fixed_on_arrival():
    # Client 2 joins w_0 = (1, 0, 0) (ℋ ≈ 0.47 < 0.61 to w_1 = (0, 1, 0)); six (0, 0, 1) then
    # tie at ℋ = 1 and join w_0, pulling it away: client 2 ends nearer w_1 but is not moved.
    arrivals = [(0, [1, 0, 0]), (1, [0, 1, 0]), (2, [0.6, 0.4, 0])]
    arrivals += [(3 + i, [0, 0, 1]) for i in range(6)]
    out = OnlineKMeans(2).fit(arrivals)
    assert out.assignment == {0: 0, 1: 1, 2: 0, **{3 + i: 0 for i in range(6)}}
    np.testing.assert_allclose(out.centres[0], [0.2, 0.05, 0.75])
    assert hellinger(out.centres[1], [0.6, 0.4, 0]) < hellinger(out.centres[0], [0.6, 0.4, 0])


@pytest.mark.parametrize(
    ("k", "vectors", "message"),
    [
        (0, [[1, 0]], r"clusters must be an integer >= 1, got 0"),
        (5, [[1, 0], [0, 1], [1, 1]], r"^clusters 5 > 3 clients$"),
        (
            4,
            [[1, 0, 0], [0, 1, 0], [0, 0, 1]] * 10,
            r"^clusters 4 > 3 distinct label profiles among 30 clients$",
        ),
    ],
)
def test_kmeans_errors(k, vectors, message):
    with pytest.raises(ConfigError, match=message):
        OnlineKMeans(k).fit(list(enumerate(vectors)))
    if k >= 1:
        with pytest.raises(ConfigError, match=message):
            centralized_online_kmeans(dict(enumerate(vectors)), list(range(len(vectors))), k)


def test_kmeans_bad_vectors():
    km = OnlineKMeans(2)
    km.observe(0, [1, 0])
    with pytest.raises(ConfigError, match="client 1 has shape"):
        km.observe(1, [1, 0, 0])
    with pytest.raises(ConfigError, match="client 0 arrived twice"):
        km.observe(0, [1, 0])
    with pytest.raises(ConfigError, match="label vector of client 2 is the zero vector"):
        km.observe(2, [0, 0])


# --- single linkage ---------------------------------------------------------------------


def brute_force_components(vectors, threshold):
    """Union-find over all pairs with ℋ ≤ threshold, numbered by lowest id."""
    ids = sorted(vectors)
    root = {c: c for c in ids}

    def find(c):
        while root[c] != c:
            c = root[c]
        return c

    for i, a in enumerate(ids):
        for b in ids[i + 1 :]:
            if hellinger(vectors[a], vectors[b]) <= threshold:
                root[find(b)] = find(a)
    groups = {}
    for c in ids:
        groups.setdefault(find(c), []).append(c)
    ordered = sorted(groups.values(), key=min)
    return {c: k for k, g in enumerate(ordered) for c in g}


@pytest.mark.parametrize("seed", range(20))
def test_single_linkage_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 25))
    ids = [int(c) for c in rng.choice(200, size=n, replace=False)]
    vectors = {c: rng.random(5) * (rng.random(5) < 0.6) for c in ids}  # sparse profiles
    vectors = {c: v if v.sum() > 0 else np.ones(5) for c, v in vectors.items()}
    threshold = float(rng.uniform(0.05, 0.6))
    got = single_linkage(vectors, threshold)
    assert got == brute_force_components(vectors, threshold)


def test_single_linkage_matches_scipy_dendrogram_cut():
    hierarchy = pytest.importorskip("scipy.cluster.hierarchy")
    rng = np.random.default_rng(7)
    vectors = {c: rng.random(6) for c in range(30)}
    x = np.stack([vectors[c] for c in range(30)])
    condensed = [hellinger(x[a], x[b]) for a in range(30) for b in range(a + 1, 30)]
    flat = hierarchy.fcluster(hierarchy.linkage(condensed, "single"), t=0.2, criterion="distance")
    got = single_linkage(vectors, 0.2)
    same_ours = {(a, b): got[a] == got[b] for a in range(30) for b in range(30)}
    same_scipy = {(a, b): flat[a] == flat[b] for a in range(30) for b in range(30)}
    assert same_ours == same_scipy


def test_single_linkage_hand_examples():
    vectors = {5: [1, 0, 0], 2: [0, 1, 0], 9: [1, 0, 0], 4: [0, 0, 1]}
    assert single_linkage(vectors, 0.0) == {2: 0, 4: 1, 5: 2, 9: 2}
    assert single_linkage(vectors, 1.0) == {2: 0, 4: 0, 5: 0, 9: 0}
    with pytest.raises(ConfigError, match=r"threshold must be in \[0, 1\]"):
        single_linkage(vectors, 1.5)
    with pytest.raises(ConfigError, match="at least one client"):
        single_linkage({}, 0.5)


# --- cluster summaries ------------------------------------------------------------------


def test_cluster_labels_and_distribution():
    assignment = {0: 1, 1: 0, 2: 1}
    label_sets = {0: {3, 1}, 1: {2}, 2: {1, 4}}
    assert cluster_labels(assignment, label_sets) == {0: (2,), 1: (1, 3, 4)}
    vectors = {0: [1.0, 0.0], 1: [0.0, 1.0], 2: [0.0, 1.0]}
    np.testing.assert_allclose(cluster_distribution(assignment, vectors), [[0, 1], [0.5, 0.5]])
    with pytest.raises(ConfigError, match=r"cluster ids must be 0..K-1, got \[0, 2\]"):
        cluster_labels({0: 0, 1: 2}, label_sets)
    with pytest.raises(ConfigError, match="client 5 has a cluster but no label set"):
        cluster_labels({5: 0}, label_sets)
