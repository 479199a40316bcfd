"""Attacks: who attacks (seeded), and what each publishes."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pytest

from dfml.algorithms.robust.aggregators import coordinate_median
from dfml.algorithms.robust.attacks import (
    alie,
    alie_z,
    attacker_ids,
    flip_labels,
    gaussian,
    sign_flip,
)


def test_attackers_are_floor_f_n_drawn_from_the_seed():
    ids = attacker_ids(0, range(20), 0.2)
    assert len(ids) == 4 and ids == attacker_ids(0, range(20), 0.2)
    assert set(ids) <= set(range(20)) and list(ids) == sorted(ids)
    assert attacker_ids(1, range(20), 0.2) != ids  # another seed, other attackers
    assert len(attacker_ids(0, range(10), 0.25)) == 2 and attacker_ids(0, range(20), 0.0) == ()


def test_sign_flip_and_gaussian():
    x = np.array([1.0, -2.0], np.float32)
    np.testing.assert_array_equal(sign_flip(x, 3.0), [-3.0, 6.0])
    a, b = gaussian(10_000, 2.0, seed=5), gaussian(10_000, 2.0, seed=5)
    np.testing.assert_array_equal(a, b)  # a restored client publishes the same draw
    assert a.dtype == np.float32 and abs(float(a.std()) - 2.0) < 0.05


def test_alie_z_follows_the_paper_formula():
    # n = 50, f = 12 (Baruch et al.'s CIFAR setting): s = 26 − 12 = 14, z = Φ⁻¹(36/50) ≈ 0.58.
    assert alie_z(50, 12) == pytest.approx(NormalDist().inv_cdf(36 / 50))
    assert alie_z(50, 12) == pytest.approx(0.5828, abs=1e-4)
    assert alie_z(20, 4) == pytest.approx(NormalDist().inv_cdf(13 / 20))


def test_alie_is_mean_minus_z_std_and_passes_the_median():
    rng = np.random.default_rng(0)
    honest = [rng.normal(size=8).astype(np.float32) for _ in range(16)]
    z = alie_z(20, 4)
    attack = alie(honest, z)
    stacked = np.stack(honest).astype(np.float64)
    np.testing.assert_allclose(attack, stacked.mean(0) - z * stacked.std(0), rtol=1e-5)
    # Four copies of it move the median of 20 towards the attack on every coordinate
    # while staying within the honest range: the attack hides among honest values.
    median = coordinate_median(honest + [attack] * 4)
    assert (median <= coordinate_median(honest) + 1e-7).all()
    assert (median >= stacked.min(0) - 1e-7).all()


def test_label_flip_maps_c_to_c_minus_1_minus_c():
    np.testing.assert_array_equal(flip_labels(np.arange(10), 10), np.arange(10)[::-1])
