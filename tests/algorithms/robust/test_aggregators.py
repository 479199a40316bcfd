"""Robust aggregation rules against plain-numpy references and their breakdown
properties on hand examples."""

from __future__ import annotations

import numpy as np
import pytest

from dfml.algorithms.robust.aggregators import (
    adaptive_radius,
    clip,
    clipped_gossip,
    coordinate_median,
    krum,
    krum_scores,
    krum_selection,
    trim_count,
    trimmed_mean,
)


def honest_and_outliers(
    honest: int, outliers: int, size: int = 5, seed: int = 0
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    good = [rng.normal(1.0, 0.1, size).astype(np.float32) for _ in range(honest)]
    bad = [np.full(size, 1e6 * (-1) ** k, dtype=np.float32) for k in range(outliers)]
    return good, bad


def test_median_equals_numpy_per_coordinate():
    rng = np.random.default_rng(1)
    vectors = [rng.normal(size=7).astype(np.float32) for _ in range(6)]
    expected = [np.median([v[c] for v in vectors]) for c in range(7)]
    np.testing.assert_allclose(coordinate_median(vectors), expected, rtol=1e-6)


def test_median_stays_within_the_honest_range_below_half_outliers():
    good, bad = honest_and_outliers(honest=4, outliers=3)
    result = coordinate_median(good + bad)
    assert (result >= np.min(good, axis=0)).all() and (result <= np.max(good, axis=0)).all()


def test_median_breaks_at_half_outliers():
    good, _ = honest_and_outliers(honest=3, outliers=0)
    bad = [np.full(5, 1e6, dtype=np.float32)] * 3  # half of the inputs, all on one side
    assert (coordinate_median(good + bad) > np.max(good, axis=0)).all()


def test_trimmed_mean_equals_a_sort_and_slice_reference():
    rng = np.random.default_rng(2)
    vectors = [rng.normal(size=4).astype(np.float32) for _ in range(10)]
    k = 2  # ⌈0.2 · 10⌉
    expected = [np.mean(sorted(v[c] for v in vectors)[k:-k]) for c in range(4)]
    np.testing.assert_allclose(trimmed_mean(vectors, 0.2), expected, rtol=1e-5, atol=1e-7)
    assert trim_count(10, 0.2) == 2 and trim_count(7, 0.2) == 2 and trim_count(3, 0.45) == 1


def test_trimmed_mean_with_b_at_least_the_attacker_fraction_is_bounded_by_honest_values():
    good, bad = honest_and_outliers(honest=8, outliers=2)  # 20 % attackers, b = 0.2
    result = trimmed_mean(good + bad, 0.2)
    assert (result >= np.min(good, axis=0)).all() and (result <= np.max(good, axis=0)).all()
    # b below the attacker fraction: an outlier survives the trim and drags the mean out.
    one_sided = [np.full(5, 1e6, dtype=np.float32)] * 2
    assert (trimmed_mean(good + one_sided, 0.1) > np.max(good, axis=0)).all()


def test_trimmed_fraction_must_be_below_half():
    with pytest.raises(ValueError, match=r"\[0, 0.5\)"):
        trimmed_mean([np.zeros(2, np.float32)] * 4, 0.5)


def reference_krum_scores(vectors: list[np.ndarray], f: int) -> list[float]:
    n = len(vectors)
    scores = []
    for i in range(n):
        dist = sorted(
            float(np.sum((vectors[i].astype(np.float64) - vectors[j]) ** 2))
            for j in range(n)
            if j != i
        )
        scores.append(sum(dist[: n - f - 2]))
    return scores


def test_krum_scores_equal_a_loop_reference():
    rng = np.random.default_rng(3)
    vectors = [rng.normal(size=6).astype(np.float32) for _ in range(7)]
    np.testing.assert_allclose(
        krum_scores(vectors, 2), reference_krum_scores(vectors, 2), rtol=1e-9
    )


def test_krum_picks_an_honest_vector_when_n_exceeds_2f_plus_2():
    good, bad = honest_and_outliers(honest=5, outliers=2)  # n = 7 > 2·2 + 2
    bad = [np.full(5, 50.0, dtype=np.float32), np.full(5, 50.1, dtype=np.float32)]  # colluding
    vectors = bad + good
    chosen = krum_selection(vectors, f=2)
    assert chosen[0] >= 2  # an honest index
    np.testing.assert_array_equal(krum(vectors, f=2), vectors[chosen[0]])


def test_multi_krum_averages_the_m_best_scored():
    good, bad = honest_and_outliers(honest=5, outliers=2)
    vectors = good + bad
    scores = reference_krum_scores(vectors, 2)
    best = sorted(np.argsort(scores, kind="stable")[:3].tolist())
    assert krum_selection(vectors, f=2, m=3) == best and max(best) < 5
    np.testing.assert_allclose(krum(vectors, 2, 3), np.mean([vectors[i] for i in best], axis=0))


def test_krum_refuses_too_few_inputs():
    with pytest.raises(ValueError, match="n > 2f \\+ 2"):
        krum([np.zeros(3, np.float32)] * 6, f=2)
    with pytest.raises(ValueError, match="m <= n - f"):
        krum([np.zeros(3, np.float32)] * 7, f=2, m=6)


def test_clip_scales_only_longer_vectors():
    np.testing.assert_array_equal(clip(np.array([3.0, 4.0], np.float32), 10.0), [3.0, 4.0])
    np.testing.assert_allclose(clip(np.array([3.0, 4.0], np.float32), 1.0), [0.6, 0.8])


def test_clipped_gossip_equals_the_formula_and_plain_gossip_without_clipping():
    rng = np.random.default_rng(4)
    own = rng.normal(size=5).astype(np.float32)
    nbrs = [rng.normal(size=5).astype(np.float32) for _ in range(3)]
    weights = [0.2, 0.3, 0.25]
    tau = 0.7
    expected = own.astype(np.float64).copy()
    for x, w in zip(nbrs, weights, strict=True):
        z = x.astype(np.float64) - own
        expected += w * z * min(1.0, tau / np.linalg.norm(z))
    np.testing.assert_allclose(clipped_gossip(own, nbrs, weights, tau), expected, rtol=1e-5)
    plain = (1 - sum(weights)) * own + sum(w * x for w, x in zip(weights, nbrs, strict=True))
    np.testing.assert_allclose(clipped_gossip(own, nbrs, weights, np.inf), plain, rtol=1e-5)


def test_clipped_gossip_bounds_what_an_attacker_moves_whatever_it_sends():
    own = np.zeros(4, np.float32)
    honest = [np.full(4, 0.1, np.float32)] * 4
    for attack in (np.full(4, 1e6, np.float32), np.full(4, -1e9, np.float32)):
        out = clipped_gossip(own, [*honest, attack], [0.15] * 5, 0.5)
        plain_honest = clipped_gossip(own, honest, [0.15] * 4, 0.5)
        assert np.linalg.norm(out - plain_honest) <= 0.15 * 0.5 + 1e-6


def test_adaptive_radius_clips_the_farthest_neighbours_holding_the_budget():
    distances = [1.0, 5.0, 2.0, 9.0, 3.0]
    weights = [0.15] * 5
    assert adaptive_radius(distances, weights, 0.0) == 9.0  # nothing clipped
    assert adaptive_radius(distances, weights, 0.15) == 5.0  # the farthest one
    assert adaptive_radius(distances, weights, 0.2) == 3.0  # two hold >= 0.2
    assert adaptive_radius(distances, weights, 0.9) == 0.0  # every one
