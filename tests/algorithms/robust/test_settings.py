"""What a run's Robustness computes for a client and for the server, on hand vectors."""

from __future__ import annotations

import numpy as np

from dfml.algorithms.aggregate import weighted_average
from dfml.algorithms.robust.aggregators import clipped_gossip, krum, trimmed_mean
from dfml.algorithms.robust.attacks import gaussian
from dfml.algorithms.robust.settings import Robustness

OWN = np.zeros(3, np.float32)
NBRS = [np.full(3, v, np.float32) for v in (0.1, 0.2, -0.1, 40.0)]
WEIGHTS = [0.2, 0.2, 0.2, 0.2]


def test_each_rule_over_the_client_and_its_neighbours():
    assert np.array_equal(
        Robustness().aggregate(OWN, NBRS, 0.2, WEIGHTS),
        weighted_average([OWN, *NBRS], [0.2, *WEIGHTS]),
    )
    median = Robustness(rule="median").aggregate(OWN, NBRS, 0.2, WEIGHTS)
    np.testing.assert_allclose(median, 0.1)
    trimmed = Robustness(rule="trimmed-mean", trim_fraction=0.2).aggregate(OWN, NBRS, 0.2, WEIGHTS)
    np.testing.assert_array_equal(trimmed, trimmed_mean([OWN, *NBRS], 0.2))
    rob = Robustness(rule="krum", byzantine=0.2)  # f = ⌈0.2 · 5⌉ = 1: n = 5 > 4
    assert rob.krum_f(5) == 1
    np.testing.assert_array_equal(rob.aggregate(OWN, NBRS, 0.2, WEIGHTS), krum([OWN, *NBRS], 1))


def test_clipped_gossip_clips_the_attackers_share_with_the_adaptive_radius():
    rob = Robustness(rule="clipped-gossip", byzantine=0.2)
    # The farthest neighbour (40.0) holds 0.2 of the weight: it is clipped to the next
    # distance, ‖0.2·1‖, and the rest are mixed as in plain gossip.
    tau = float(np.linalg.norm(NBRS[1]))
    expected = clipped_gossip(OWN, NBRS, WEIGHTS, tau)
    np.testing.assert_allclose(rob.aggregate(OWN, NBRS, 0.2, WEIGHTS), expected)
    fixed = Robustness(rule="clipped-gossip", clip_radius=0.05)
    np.testing.assert_allclose(
        fixed.aggregate(OWN, NBRS, 0.2, WEIGHTS), clipped_gossip(OWN, NBRS, WEIGHTS, 0.05)
    )


def test_the_server_clips_around_the_last_global_model():
    rob = Robustness(rule="clipped-gossip", clip_radius=0.5)
    center = np.ones(3, np.float32)
    vectors = [np.full(3, 1.1, np.float32), np.full(3, -100.0, np.float32)]
    got = rob.server_aggregate(vectors, [0.5, 0.5], center)
    np.testing.assert_allclose(got, clipped_gossip(center, vectors, [0.5, 0.5], 0.5))
    assert np.linalg.norm(got - center) <= 0.5 + 1e-6


def test_what_an_attacker_publishes():
    x = np.array([1.0, -1.0], np.float32)
    np.testing.assert_array_equal(Robustness(attack_scale=3.0).attacked(x, [], 7), [-3.0, 3.0])
    noisy = Robustness(attack="gaussian", attack_scale=2.0).attacked(x, [], 7)
    np.testing.assert_array_equal(noisy, gaussian(2, 2.0, 7))
    assert Robustness(attack="label-flip").attacked(x, [], 7) is None
    alie = Robustness(attack="alie", alie_z=1.0).attacked(x, [np.zeros(2), np.full(2, 2.0)], 7)
    np.testing.assert_allclose(alie, [0.0, 0.0])  # μ = 1, σ = 1
