"""CL-FML phase 1: ring dissemination, label vectors, Hellinger, task distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dfml.algorithms.clfml.labels import (
    LABEL_BYTES,
    hellinger,
    label_vector,
    merge_labels,
    nearest,
    pairwise_hellinger,
    ring_dissemination,
    task_distribution,
    universe_of,
)
from dfml.errors import ConfigError

# --- ring dissemination ---------------------------------------------------------------


def test_merge_labels_reports_growth():
    assert merge_labels({1, 2}, {2, 3}) == (frozenset({1, 2, 3}), True)
    assert merge_labels({1, 2}, {2}) == (frozenset({1, 2}), False)
    assert merge_labels(set(), set()) == (frozenset(), False)


def test_hand_example_four_clients():
    # Each client holds one label; after h hops a client holds its own and h predecessors'.
    out = ring_dissemination({c: frozenset({c}) for c in range(4)}, [0, 1, 2, 3])
    assert out.label_sets == {c: frozenset(range(4)) for c in range(4)}
    assert out.hops == 3  # N − 1 changing hops
    assert out.rounds == 4  # plus the quiet hop that detects the end
    assert out.messages == 16  # 4 clients × 4 rounds
    assert out.bytes == LABEL_BYTES * 4 * (1 + 2 + 3 + 4)  # sets of size 1, 2, 3, 4 sent


def test_hand_example_follows_the_ring_order_not_the_ids():
    # Only client 2 holds anything; ring 2 → 0 → 3 → 1: label 5 reaches 1 after 3 hops.
    sets = {0: frozenset(), 1: frozenset(), 2: frozenset({5}), 3: frozenset()}
    out = ring_dissemination(sets, [2, 0, 3, 1])
    assert out.hops == 3 and out.rounds == 4
    assert all(s == {5} for s in out.label_sets.values())
    # Holders per round: {2}, {2, 0}, {2, 0, 3}, all 4 → 1 + 2 + 3 + 4 one-label messages.
    assert out.bytes == LABEL_BYTES * 10
    # Another ring order: client 1 now gets the label first and client 0 last; still 3 hops.
    back = ring_dissemination(sets, [2, 1, 3, 0])
    assert back.hops == 3


def test_complete_labels_stop_after_one_quiet_hop():
    sets = {c: frozenset({1, 2, 3}) for c in range(5)}
    out = ring_dissemination(sets, [4, 2, 0, 1, 3])
    assert out.hops == 0 and out.rounds == 1 and out.messages == 5
    assert out.bytes == LABEL_BYTES * 3 * 5
    assert out.label_sets == sets


def test_single_client_sends_nothing():
    out = ring_dissemination({7: frozenset({1})}, [7])
    assert (out.hops, out.rounds, out.messages, out.bytes) == (0, 0, 0, 0)
    assert out.label_sets == {7: frozenset({1})}


@pytest.mark.parametrize("ring", [[0, 1], [0, 1, 2, 2], [0, 1, 5], []])
def test_bad_ring(ring):
    with pytest.raises(ConfigError, match="ring must list each of the 3 clients once"):
        ring_dissemination({0: {1}, 1: {2}, 2: {3}}, ring)


def _expected_hops(sets, ring):
    """Independent: the farthest any label has to travel to reach a client that lacks it."""
    n = len(ring)
    worst = 0
    for pos in range(n):
        for label in set().union(*sets.values()):
            dist = next(d for d in range(n) if label in sets[ring[(pos - d) % n]])
            worst = max(worst, dist)
    return worst


@pytest.mark.parametrize("seed", range(25))
def test_random_rings_reach_the_union(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(2, 12))
    sets = {
        int(c): frozenset(int(v) for v in rng.choice(10, size=rng.integers(0, 4), replace=False))
        for c in rng.choice(100, size=n, replace=False)
    }
    ring = [int(c) for c in rng.permutation(list(sets))]
    out = ring_dissemination(sets, ring)
    union = frozenset().union(*sets.values())
    assert all(s == union for s in out.label_sets.values())
    assert out.hops <= n - 1
    assert out.hops == _expected_hops(sets, ring)
    assert out.rounds == out.hops + 1
    assert out.messages == n * out.rounds
    # After r hops the client at position p holds the union of positions p − r .. p.
    expected_bytes = 0
    for r in range(out.rounds):
        for pos in range(n):
            window = frozenset().union(*(sets[ring[(pos - d) % n]] for d in range(r + 1)))
            expected_bytes += LABEL_BYTES * len(window)
    assert out.bytes == expected_bytes
    assert universe_of(out.label_sets.values()) == tuple(sorted(union))


# --- label vectors ----------------------------------------------------------------------


def test_multi_hot_and_histogram():
    universe = [3, 5, 7, 9]
    np.testing.assert_array_equal(label_vector({5, 9}, universe), [0, 1, 0, 1])
    np.testing.assert_array_equal(label_vector({5: 2, 7: 0, 9: 6}, universe), [0, 1, 0, 1])
    np.testing.assert_allclose(
        label_vector({5: 2, 9: 6}, universe, mode="histogram"), [0, 0.25, 0, 0.75]
    )
    # A bare set (or a list of samples' labels) counts occurrences.
    np.testing.assert_allclose(label_vector({5, 9}, universe, "histogram"), [0, 0.5, 0, 0.5])
    np.testing.assert_allclose(
        label_vector([5, 5, 9, 5], universe, "histogram"), [0, 0.75, 0, 0.25]
    )


@pytest.mark.parametrize(
    ("arg", "universe", "mode", "message"),
    [
        ({4}, [3, 5], "multi-hot", "label 4 is not in the label universe"),
        (set(), [3, 5], "multi-hot", "at least one label"),
        ({3: 0}, [3, 5], "histogram", "at least one label"),
        ({3: -1}, [3, 5], "histogram", "label 3 has count -1"),
        ({3}, [3, 3], "multi-hot", "lists label 3 twice"),
        ({3}, [], "multi-hot", "universe is empty"),
        ({3}, [3], "one-hot", "multi-hot or histogram"),
    ],
)
def test_label_vector_errors(arg, universe, mode, message):
    with pytest.raises(ConfigError, match=message):
        label_vector(arg, universe, mode)


# --- Hellinger -------------------------------------------------------------------------


def test_hellinger_hand_examples():
    assert hellinger([1, 0], [0, 1]) == 1.0
    assert hellinger([0.3, 0.7], [0.3, 0.7]) == 0.0
    assert hellinger([1, 3], [2, 6]) == pytest.approx(0.0, abs=1e-15)  # normalised first
    # p = (1/2, 1/2), q = (1, 0): (1/√2)·√((√½ − 1)² + ½) = √(1 − 1/√2)
    assert hellinger([1, 1], [1, 0]) == pytest.approx(math.sqrt(1 - 1 / math.sqrt(2)), rel=1e-14)
    # p = (1/4, 3/4), q = (3/4, 1/4): 1 − BC = 1 − 2·√(3/16) = 1 − √3/2
    assert hellinger([1, 3], [3, 1]) == pytest.approx(math.sqrt(1 - math.sqrt(3) / 2), rel=1e-14)


@pytest.mark.parametrize(
    ("p", "q", "message"),
    [
        ([0, 0], [1, 0], "p is the zero vector"),
        ([1, 0], [0, 0], "q is the zero vector"),
        ([1, -1], [1, 0], "p must be finite and non-negative"),
        ([1, float("nan")], [1, 0], "p must be finite and non-negative"),
        ([1, 0], [1, 0, 0], "equal length"),
        ([], [], "non-empty"),
    ],
)
def test_hellinger_errors(p, q, message):
    with pytest.raises(ConfigError, match=message):
        hellinger(p, q)


_vec = st.lists(st.floats(0.0, 10.0, allow_nan=False), min_size=4, max_size=4).filter(
    lambda v: sum(v) > 1e-6
)


@settings(max_examples=150, deadline=None)
@given(_vec, _vec)
def test_hellinger_bounds_symmetry_and_closed_form(p, q):
    h = hellinger(p, q)
    assert 0.0 <= h <= 1.0
    assert h == pytest.approx(hellinger(q, p), abs=1e-12)
    pn, qn = np.array(p) / sum(p), np.array(q) / sum(q)
    bc = float(np.sum(np.sqrt(pn * qn)))  # Bhattacharyya coefficient: H² = 1 − BC
    assert h == pytest.approx(math.sqrt(max(0.0, 1.0 - bc)), abs=1e-7)


def test_pairwise_matches_scalar_and_nearest_breaks_ties_low():
    rng = np.random.default_rng(0)
    x, y = rng.random((5, 6)), rng.random((3, 6))
    d = pairwise_hellinger(x, y)
    for a in range(5):
        for b in range(3):
            assert d[a, b] == pytest.approx(hellinger(x[a], y[b]), abs=1e-14)
    np.testing.assert_allclose(np.diag(pairwise_hellinger(x)), 0.0, atol=1e-7)
    # (1, 1, 0) is equally far from (1, 0, 0) and (0, 1, 0): the lower index wins.
    assert nearest(np.array([1.0, 1.0, 0.0]), np.array([[0, 1.0, 0], [1.0, 0, 0]])) == 0
    assert nearest(np.array([1.0, 0.9, 0.0]), np.array([[0, 1.0, 0], [1.0, 0, 0]])) == 1


# --- task distributions -----------------------------------------------------------------


def test_task_distribution():
    universe = [0, 2, 4, 6]
    np.testing.assert_allclose(task_distribution([4, 0], universe), [0.5, 0, 0.5, 0])
    np.testing.assert_allclose(task_distribution([4, 0], universe, [3, 1]), [0.25, 0, 0.75, 0])
    with pytest.raises(ConfigError, match="task label 5 is held by no client"):
        task_distribution([5], universe)
    with pytest.raises(ConfigError, match="task lists label 2 twice"):
        task_distribution([2, 2], universe, [1, 0])
    with pytest.raises(ConfigError, match="task has no labels"):
        task_distribution([], universe)
    with pytest.raises(ConfigError, match="one value per label"):
        task_distribution([0, 2], universe, [1])
    with pytest.raises(ConfigError, match="zero vector"):
        task_distribution([0, 2], universe, [0, 0])
