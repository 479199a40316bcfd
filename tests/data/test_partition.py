from __future__ import annotations

import numpy as np
import pytest

from dfml.data.builtin import load_digits, make_synthetic
from dfml.data.config import DataConfig, PartitionConfig
from dfml.data.partition import (
    make_partition,
    make_splits,
    partition,
    partition_with_repairs,
    repair_min_samples,
)
from dfml.data.split import split_client
from dfml.errors import ConfigError

LABELS = load_digits().y
SCHEMES = ["iid", "dirichlet", "pathological", "label-group", "quantity"]


@pytest.mark.parametrize("scheme", SCHEMES)
def test_partition_is_deterministic_disjoint_and_covering(scheme):
    cfg = PartitionConfig(partition=scheme, alpha=0.3)
    a = partition(LABELS, 10, cfg, seed=3)
    b = partition(LABELS, 10, cfg, seed=3)
    c = partition(LABELS, 10, cfg, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert any(not np.array_equal(x, y) for x, y in zip(a, c, strict=True))
    joined = np.concatenate(a)
    assert len(np.unique(joined)) == len(joined), "a sample went to two clients"
    assert len(joined) == len(LABELS), "a sample went to no client"
    assert min(len(p) for p in a) >= cfg.min_samples


@pytest.mark.parametrize(
    ("scheme", "knob", "values"),
    [("pathological", "classes_per_client", range(1, 4)), ("label-group", "groups", range(1, 7))],
)
def test_a_partition_either_places_every_sample_or_is_refused(scheme, knob, values):
    """Brute force over client counts: no partition may drop data silently (it dropped
    up to 70 % of digits when clients x classes_per_client < 10 or groups > clients)."""
    refused = 0
    for n in range(2, 13):
        for value in values:
            cfg = PartitionConfig(partition=scheme, **{knob: value}, min_samples=3)
            dealt = n * value if scheme == "pathological" else 10 if value <= n else 0
            try:
                parts = partition(LABELS, n, cfg, seed=n)
            except ConfigError as err:
                refused += 1
                assert dealt < 10 and "would be dropped" in str(err)
                continue
            assert dealt >= 10
            joined = np.concatenate(parts)
            assert np.array_equal(np.sort(joined), np.arange(len(LABELS)))
    assert refused > 0


def test_pathological_gives_exactly_c_classes():
    parts = partition(
        LABELS, 10, PartitionConfig(partition="pathological", classes_per_client=2), 0
    )
    assert [len(np.unique(LABELS[p])) for p in parts] == [2] * 10


def test_label_group_clients_draw_from_disjoint_groups():
    parts = partition(LABELS, 6, PartitionConfig(partition="label-group", groups=2), 0)
    sets = [set(np.unique(LABELS[p]).tolist()) for p in parts]
    assert sets[0] == sets[2] == sets[4] and sets[1] == sets[3] == sets[5]
    assert sets[0].isdisjoint(sets[1]) and len(sets[0] | sets[1]) == 10
    overlap = partition(
        LABELS, 6, PartitionConfig(partition="label-group", groups=2, group_overlap=0.4), 0
    )
    shared = set(np.unique(LABELS[overlap[0]])) & set(np.unique(LABELS[overlap[1]]))
    assert len(shared) == 4  # 40 % of the other group's 5 labels, both ways


def test_dirichlet_small_alpha_is_more_skewed():
    def skew(alpha):
        parts = partition(LABELS, 10, PartitionConfig(partition="dirichlet", alpha=alpha), 0)
        return np.mean([np.bincount(LABELS[p], minlength=10).max() / len(p) for p in parts])

    assert skew(0.1) > skew(100.0) + 0.2


def test_quantity_skew_varies_sizes_not_labels():
    parts = partition(LABELS, 10, PartitionConfig(partition="quantity", quantity_alpha=0.5), 0)
    sizes = [len(p) for p in parts]
    assert max(sizes) > 2 * min(sizes)


def test_split_is_disjoint_and_query_label_balanced():
    cfg = PartitionConfig(partition="dirichlet", alpha=0.5, query_fraction=0.2, test_fraction=0.2)
    for split, part in zip(
        make_splits(LABELS, 8, cfg, 1), partition(LABELS, 8, cfg, 1), strict=True
    ):
        m, q, t = set(split.meta_train), set(split.query), set(split.test)
        assert not (m & q or m & t or q & t)
        assert m | q | t == set(part.tolist())
        counts = np.bincount(LABELS[split.query], minlength=10)
        assert len(set(counts[counts > 0])) == 1, "D^Q must hold the same count per label"
        assert set(np.unique(LABELS[split.query])) <= set(np.unique(LABELS[split.meta_train]))


def test_split_query_size_follows_fraction():
    idx = np.arange(1000)
    labels = np.arange(1000) % 4
    s = split_client(idx, labels, PartitionConfig(query_fraction=0.2, test_fraction=0.2), 0)
    assert len(s.test) == 200
    assert len(s.query) == 4 * int(0.2 * 800 / 4)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"partition": "weird"}, "unknown partition 'weird'"),
        ({"alpha": 0.0}, "alpha must be a positive finite number"),
        ({"query_fraction": 0.6, "test_fraction": 0.5}, "must be < 1"),
        ({"group_overlap": 1.0}, "group_overlap"),
    ],
)
def test_bad_partition_config(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        PartitionConfig(**kwargs)


def test_too_many_clients_is_a_user_error():
    with pytest.raises(ConfigError, match="too few"):
        partition(LABELS, 500, PartitionConfig(), 0)
    with pytest.raises(ConfigError, match="clients must be >= 2"):
        partition(LABELS, 1, PartitionConfig(), 0)
    with pytest.raises(ConfigError, match="exceeds"):
        partition(LABELS, 4, PartitionConfig(partition="pathological", classes_per_client=11), 0)


def test_synthetic_is_class_conditional_and_seeded():
    a = make_synthetic(200, 4, (3,), seed=1)
    b = make_synthetic(200, 4, (3,), seed=1)
    np.testing.assert_array_equal(a.x, b.x)
    means = np.stack([a.x[a.y == c].mean(0) for c in range(4)])
    assert np.linalg.norm(means[0] - means[1]) > 0.5
    with pytest.raises(ConfigError):
        DataConfig(synthetic_classes=1)


def test_dirichlet_that_no_draw_satisfies_is_repaired():
    """100 clients at α=0.5 on 1,797 digits: no draw gives all 10 samples."""
    cfg = PartitionConfig(partition="dirichlet", alpha=0.5)
    result = make_partition(LABELS, 100, cfg, seed=0)
    again = make_partition(LABELS, 100, cfg, seed=0)
    assert result.repair_moves > 0 and result.repair_moves == again.repair_moves
    for s, t in zip(result.splits, again.splits, strict=True):
        assert np.array_equal(s.meta_train, t.meta_train) and np.array_equal(s.test, t.test)
    parts, moves = partition_with_repairs(LABELS, 100, cfg, seed=0)
    assert moves == result.repair_moves
    assert min(len(p) for p in parts) >= cfg.min_samples
    joined = np.concatenate(parts)
    assert sorted(joined.tolist()) == list(range(len(LABELS))), "not a partition of all samples"
    assert [len(s.train) + len(s.test) for s in result.splits] == [len(p) for p in parts]
    assert make_splits(LABELS, 100, cfg, seed=0)[7].test.tolist() == result.splits[7].test.tolist()
    other = [make_partition(LABELS, 100, cfg, seed=s).repair_moves for s in (1, 2)]
    assert all(m >= 0 for m in other)


def test_draws_that_succeed_need_no_repair():
    assert make_partition(LABELS, 10, PartitionConfig(partition="dirichlet"), 0).repair_moves == 0


def test_repair_moves_the_largest_clients_most_frequent_label_last_index():
    labels = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    parts = [np.array([0, 1, 2, 3, 4, 5]), np.array([6]), np.array([7])]
    repaired, moves = repair_min_samples(parts, labels, 2)
    # Move 1: client 0 (largest) gives its last label-0 sample, 2, to client 1 (smallest,
    # lowest id). Move 2: labels 0 and 1 now tie at two each in client 0, so label 0
    # (the lower) gives its last sample, 1, to client 2.
    assert moves == 2
    assert [p.tolist() for p in repaired] == [[0, 3, 4, 5], [2, 6], [1, 7]]
    assert [p.tolist() for p in parts] == [[0, 1, 2, 3, 4, 5], [6], [7]], "input was modified"
    with pytest.raises(ConfigError, match="too few"):
        repair_min_samples(parts, labels, 3)


def test_impossible_dirichlet_request_is_one_line():
    # 180 × 10 = 1,800 > 1,797 samples: no repair can help.
    with pytest.raises(ConfigError, match="1797 samples are too few for 180 clients") as err:
        make_partition(LABELS, 180, PartitionConfig(partition="dirichlet"), 0)
    assert "\n" not in str(err.value)


def test_synthetic_noise_drawn_in_blocks_has_the_bits_of_one_draw(monkeypatch):
    """``make_synthetic`` draws its noise in row blocks (no float64 copy of the
    whole matrix); the stream, so every value, is the one-draw stream's."""
    import dfml.data.builtin as builtin

    rng = np.random.default_rng(3)
    means = rng.normal(0.0, 1.0, size=(10, 12)).astype(np.float32)
    y = np.arange(100) % 10
    rng.shuffle(y)
    whole = means[y] + rng.normal(0.0, 1.0, size=(100, 12)).astype(np.float32)
    monkeypatch.setattr(builtin, "_DRAW_ROWS", 7)  # 15 blocks, the last one short
    data = make_synthetic(100, 10, (12,), seed=3)
    assert np.array_equal(data.x, whole) and np.array_equal(data.y, y)
