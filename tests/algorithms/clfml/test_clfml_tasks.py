"""CL-FML phase 4: tasks, the primary cluster k* and the Case I / Case II cover."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dfml.algorithms.clfml.labels import TIE_TOL, hellinger, label_vector, task_distribution
from dfml.algorithms.clfml.tasks import (
    Task,
    load_tasks,
    missing_labels,
    primary_cluster,
    random_tasks,
    select_clusters,
)
from dfml.errors import ConfigError

# --- Task -------------------------------------------------------------------------------


def test_task_validation():
    assert Task((3, 1)).labels == (3, 1)
    assert Task([np.int64(2)]).labels == (2,)
    assert Task((1, 2), q=np.array([1.0, 3.0])).q == (0.25, 0.75)
    assert Task((1, 2)) == Task((1, 2)) and len({Task((1, 2)), Task((1, 2))}) == 1


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"labels": ()}, r"^task has no labels$"),
        ({"labels": (1, 3, 1)}, r"^task lists label 1 twice$"),
        ({"labels": (1, "x")}, r"^task label 'x' is not an integer$"),
        ({"labels": (1, True)}, r"^task label True is not an integer$"),
        ({"labels": (1, 2), "q": [1.0]}, r"^task q needs one weight per label \(2\), got 1$"),
        ({"labels": (1, 2), "q": [0.0, 0.0]}, r"non-negative and not all zero"),
        ({"labels": (1, 2), "q": [1.0, -1.0]}, r"non-negative and not all zero"),
    ],
)
def test_bad_tasks(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Task(**kwargs)


def test_unknown_label_and_distribution():
    task = Task((4, 0), q=(1, 3))
    with pytest.raises(ConfigError, match=r"^task label 4 is held by no client$"):
        task.check([0, 1, 2])
    np.testing.assert_allclose(task.distribution([0, 2, 4]), [0.75, 0, 0.25])
    np.testing.assert_allclose(Task((4, 0)).distribution([0, 2, 4]), [0.5, 0, 0.5])


# --- k* and Case I / II -----------------------------------------------------------------


def test_primary_cluster_hand_example_and_tie():
    w = np.array([[1, 1, 0, 0], [0, 0, 1, 1], [0, 1, 1, 0]], dtype=float)
    assert primary_cluster(np.array([0.5, 0.5, 0, 0]), w) == 0
    assert primary_cluster(np.array([0, 0.2, 0.4, 0.4]), w) == 1
    assert primary_cluster(np.array([0, 0, 0.5, 0.5]), w) == 1
    # (0, 1/2, 1/2, 0) is w_2 exactly; (0, 0, 1, 0) is equally far from w_1 and w_2 → 1.
    assert primary_cluster(np.array([0, 0.5, 0.5, 0]), w) == 2
    assert primary_cluster(np.array([0, 0, 1.0, 0]), w) == 1


def _setup(cluster_sets, universe):
    labels = dict(enumerate(cluster_sets))
    w = np.stack([label_vector(s, universe) for s in cluster_sets])
    return labels, w


def test_case_one():
    universe = list(range(6))
    labels, w = _setup([{0, 1, 2}, {3, 4}, {5}], universe)
    q = task_distribution([0, 2], universe)
    k = primary_cluster(q, w)
    assert k == 0
    assert select_clusters([0, 2], k, labels, w, q) == (1, [0])


def test_case_two_is_minimal_where_greedy_is_not():
    # Missing {1..6}: greedy by contribution takes A = {1,2,3,4} then needs B and C (3 more);
    # the minimum is B ∪ C = {1,2,5} ∪ {3,4,6} (2 more).
    universe = list(range(7))
    labels, w = _setup([{0}, {1, 2, 3, 4}, {1, 2, 5}, {3, 4, 6}], universe)
    task = list(range(7))
    q = task_distribution(task, universe)
    case, engaged = select_clusters(task, 0, labels, w, q)
    assert case == 2
    assert engaged[0] == 0 and sorted(engaged[1:]) == [2, 3]
    # Both add 3 missing labels; ℋ(w_2, q) = ℋ(w_3, q) (same size, all inside 𝒯) → lower id.
    assert engaged == [0, 2, 3]


def test_case_two_tie_between_covers_goes_to_smaller_hellinger():
    # Missing {3}: cluster 1 = {3, 9} and cluster 2 = {3, 4} both cover it alone;
    # 4 ∈ 𝒯 and 9 ∉ 𝒯 makes w_2 closer to q, so cluster 2 wins despite its higher id.
    universe = [0, 1, 3, 4, 9]
    labels, w = _setup([{0, 1, 4}, {3, 9}, {3, 4}], universe)
    task = [0, 1, 3, 4]
    q = task_distribution(task, universe)
    assert hellinger(w[2], q) < hellinger(w[1], q)
    assert select_clusters(task, 0, labels, w, q) == (2, [0, 2])


def test_engagement_order_by_contribution():
    universe = list(range(8))
    labels, w = _setup([{0}, {1}, {2, 3, 4}, {5, 6}, {7}], universe)
    task = list(range(8))
    q = task_distribution(task, universe)
    assert select_clusters(task, 0, labels, w, q) == (2, [0, 2, 3, 1, 4])


def test_unknown_label_and_bad_primary():
    universe = list(range(4))
    labels, w = _setup([{0, 1}, {2}], universe)
    q = task_distribution([0, 3], universe)
    with pytest.raises(ConfigError, match=r"^task label 3 is held by no cluster$"):
        select_clusters([0, 3], 0, labels, w, q)
    with pytest.raises(ConfigError, match="primary cluster 5 is not one of the clusters"):
        select_clusters([0], 5, labels, w, q)
    with pytest.raises(ConfigError, match="one row per cluster"):
        select_clusters([0], 0, labels, w[:1], q)


def brute_force(task, primary, labels, w, q):
    """Every subset of the other clusters (bitmasks), smallest cover, then ℋ sum, then ids."""
    others = sorted(k for k in labels if k != primary)
    dist = {k: hellinger(w[k], q) for k in labels}
    best = None
    for mask in range(1 << len(others)):
        subset = tuple(k for i, k in enumerate(others) if mask >> i & 1)
        covered = set(labels[primary]).union(*(labels[k] for k in subset))
        if not set(task) <= covered:
            continue
        key = (len(subset), sum(dist[k] for k in subset), subset)
        if (
            best is None
            or key[0] < best[0]
            or (key[0] == best[0] and key[1] < best[1] - TIE_TOL)
            or (key[0] == best[0] and abs(key[1] - best[1]) <= TIE_TOL and key[2] < best[2])
        ):
            best = key
    return best[2]


@pytest.mark.parametrize("seed", range(60))
def test_cover_equals_brute_force(seed):
    rng = np.random.default_rng(seed)
    universe = list(range(8))
    k = int(rng.integers(2, 7))
    sets = [
        {int(v) for v in rng.choice(8, size=rng.integers(1, 5), replace=False)} for _ in range(k)
    ]
    labels, w = _setup(sets, universe)
    held = sorted(set().union(*sets))
    task = sorted(
        int(v) for v in rng.choice(held, size=rng.integers(1, len(held) + 1), replace=False)
    )
    q = task_distribution(task, universe)
    primary = primary_cluster(q, w)
    case, engaged = select_clusters(task, primary, labels, w, q)
    assert engaged[0] == primary and len(set(engaged)) == len(engaged)
    assert set(task) <= set().union(*(labels[c] for c in engaged))
    if set(task) <= labels[primary]:
        assert (case, engaged) == (1, [primary])
        return
    assert case == 2
    assert tuple(sorted(engaged[1:])) == brute_force(task, primary, labels, w, q)
    # Order: each next cluster adds the most still-missing labels among those left.
    missing = set(task) - labels[primary]
    for i, c in enumerate(engaged[1:], start=1):
        gains = [len(labels[o] & missing) for o in engaged[i:]]
        assert len(labels[c] & missing) == max(gains)
        missing -= labels[c]
    assert missing_labels(task, labels[primary]) == tuple(sorted(set(task) - labels[primary]))


# --- random and loaded tasks ------------------------------------------------------------


def test_random_tasks():
    universe = [2, 4, 6, 8, 10, 12]
    tasks = random_tasks(universe, 50, seed=3, min_size=2, max_size=4)
    assert tasks == random_tasks(universe, 50, seed=3, min_size=2, max_size=4)
    assert tasks != random_tasks(universe, 50, seed=4, min_size=2, max_size=4)
    sizes = {len(t.labels) for t in tasks}
    assert sizes == {2, 3, 4}
    for t in tasks:
        assert list(t.labels) == sorted(set(t.labels)) and set(t.labels) <= set(universe)
        assert t.q is None
    assert all(
        len(t.labels) == 3 for t in random_tasks([1, 2, 3], 5, seed=0, max_size=9, min_size=3)
    )
    assert random_tasks(universe, 0, seed=0) == []
    with pytest.raises(ConfigError, match=r"^task min size 4 > 3 labels held by the clients$"):
        random_tasks([1, 2, 3], 5, seed=0, min_size=4)
    with pytest.raises(ConfigError, match="min_size <= max_size"):
        random_tasks(universe, 5, seed=0, min_size=3, max_size=2)
    with pytest.raises(ConfigError, match="number of tasks must be >= 0"):
        random_tasks(universe, -1, seed=0)


def test_load_tasks_yaml_and_json(tmp_path):
    yml = tmp_path / "tasks.yaml"
    yml.write_text("- [1, 2]\n- labels: [3, 0]\n  q: [1, 3]\n")
    assert load_tasks(yml) == [Task((1, 2)), Task((3, 0), q=(0.25, 0.75))]
    js = tmp_path / "tasks.json"
    js.write_text(json.dumps({"tasks": [[5], {"labels": [1, 2]}]}))
    assert load_tasks(js, universe=range(6)) == [Task((5,)), Task((1, 2))]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("- [1, 2]\n- [3, 3]\n", r"tasks\.yaml, entry 1: task lists label 3 twice$"),
        ("- []\n", r"tasks\.yaml, entry 0: task has no labels$"),
        ("- [1, 9]\n", r"tasks\.yaml, entry 0: task label 9 is held by no client$"),
        ("- {labels: [1], weights: [1]}\n", r"entry 0: unknown keys \['weights'\]"),
        ("- {q: [1]}\n", r"entry 0: missing 'labels'$"),
        ("- 3\n", r"entry 0: labels must be a list of integers, got 3$"),
        ("- [1, 2.5]\n", r"entry 0: task label 2\.5 is not an integer$"),
        ("- {labels: [1, 2], q: [1, x]}\n", r"entry 0: q must be a list of numbers"),
        ("[]\n", r"tasks\.yaml: expected a non-empty list of tasks$"),
        ("a: b\n", r"tasks\.yaml: expected a non-empty list of tasks$"),
        ("- [1, 2\n", r"tasks\.yaml: not valid YAML/JSON"),
    ],
)
def test_bad_tasks_file(tmp_path, text, message):
    path = tmp_path / "tasks.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        load_tasks(path, universe=range(5))
    assert "\n" not in str(info.value)
    assert str(path) in str(info.value)


def test_missing_or_bad_json_file(tmp_path):
    with pytest.raises(ConfigError, match=r"tasks file .*nope\.yaml does not exist$"):
        load_tasks(tmp_path / "nope.yaml")
    bad = tmp_path / "t.json"
    bad.write_text("[[1, 2],")
    with pytest.raises(ConfigError, match=r"t\.json: not valid YAML/JSON") as info:
        load_tasks(bad)
    assert "\n" not in str(info.value)
