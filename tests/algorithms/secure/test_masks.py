"""The masks' arithmetic against numpy: sums equal the plain weighted sums, a
published object says nothing about its vector, dropped members' masks are removed.
Pure numpy, no Ray."""

from __future__ import annotations

import numpy as np
import pytest

from dfml.algorithms.secure.masks import (
    SERVER,
    decode,
    encode,
    mask,
    pairwise_mask,
    ring_sum,
    unmasked_sum,
)

SECRET = 11


def vectors(n: int, size: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.normal(scale=3.0, size=size).astype(np.float32) for _ in range(n)]


def plain_sum(xs, weights) -> np.ndarray:
    return sum(np.float64(w) * x.astype(np.float64) for x, w in zip(xs, weights, strict=True))


def test_server_sum_of_masked_vectors_equals_the_plain_weighted_sum():
    xs = vectors(7, 500)
    weights = np.random.default_rng(1).dirichlet(np.ones(7))
    group = [2, 3, 5, 8, 13, 21, 34]  # client ids need not be 0..n-1
    masked = [
        mask(x, w, SECRET, 4, SERVER, k, group) for x, w, k in zip(xs, weights, group, strict=True)
    ]
    got = unmasked_sum(masked, SECRET, 4, SERVER, group)
    np.testing.assert_allclose(got, plain_sum(xs, weights), rtol=0, atol=7 * 2.0**-33)
    # each object alone decodes to noise, far from its weighted vector
    assert np.abs(decode(masked[0]) - weights[0] * xs[0]).min() > 1.0


def test_gossip_objects_sum_to_the_neighbourhood_sum_for_each_receiver():
    """Receiver i sums the objects its neighbours masked for it; w_ii x_i stays plain."""
    n, size = 6, 300
    xs = vectors(n, size, seed=2)
    neighbours = {i: sorted({(i - 1) % n, (i + 1) % n, (i + 2) % n}) for i in range(n)}
    rng = np.random.default_rng(3)
    for i, group in neighbours.items():
        row = rng.dirichlet(np.ones(len(group) + 1))  # w_ii, then w_ij
        objects = [
            mask(xs[j], w, SECRET, 0, i, j, group) for j, w in zip(group, row[1:], strict=True)
        ]
        mixed = row[0] * xs[i].astype(np.float64) + decode(ring_sum(objects))
        plain = row[0] * xs[i].astype(np.float64) + plain_sum([xs[j] for j in group], row[1:])
        np.testing.assert_allclose(mixed, plain, rtol=0, atol=1e-8)


def test_masks_differ_per_receiver_and_round_and_sum_to_zero():
    group = [0, 4, 9]
    total = ring_sum([pairwise_mask(SECRET, 1, 7, k, group, 50) for k in group])
    assert not total.any()
    a = pairwise_mask(SECRET, 1, 7, 4, group, 50)
    assert not np.array_equal(a, pairwise_mask(SECRET, 2, 7, 4, group, 50))
    assert not np.array_equal(a, pairwise_mask(SECRET, 1, 8, 4, group, 50))


def test_dropped_members_masks_are_removed_from_the_survivors_sum():
    xs = vectors(5, 200, seed=4)
    weights = [0.1, 0.2, 0.3, 0.15, 0.25]
    group = [0, 1, 2, 3, 4]
    masked = [
        mask(x, w, SECRET, 9, SERVER, k, group) for x, w, k in zip(xs, weights, group, strict=True)
    ]
    survivors, dropped = [0, 2, 4], [1, 3]
    kept = [masked[k] for k in survivors]
    got = unmasked_sum(kept, SECRET, 9, SERVER, survivors, dropped)
    expected = plain_sum([xs[k] for k in survivors], [weights[k] for k in survivors])
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-8)
    # without the recovery the survivors' sum is garbage
    assert np.abs(decode(ring_sum(kept)) - expected).max() > 1e3


def correlation_with_vector(publish, draws: int = 1000) -> float:
    """Pearson r between a coordinate of the published object (read as a number in
    [0, 1)) and the same coordinate of the client's vector, over many rounds."""
    rng = np.random.default_rng(5)
    own, published = [], []
    for r in range(draws):
        x = rng.normal(size=4).astype(np.float32)
        own.append(x[0])
        published.append(float(publish(x, r)[0]) / 2.0**64)
    return float(np.corrcoef(own, published)[0, 1])


def leaks(publish) -> bool:
    """The check the masked objects must pass: a published object equals the
    client's encoded vector, or correlates with it across draws."""
    x = np.linspace(-1, 1, 4, dtype=np.float32)
    return (
        np.array_equal(publish(x, 0), encode(0.5 * x))
        or abs(correlation_with_vector(publish)) > 0.1
    )


def test_a_published_object_is_independent_of_the_clients_vector():
    def masked(x, r):
        return mask(x, 0.5, SECRET, r, SERVER, 1, [0, 1, 2])

    assert abs(correlation_with_vector(masked)) < 0.1
    assert not leaks(masked)


@pytest.mark.parametrize("group", [[1], []])
def test_the_leak_check_catches_an_unmasked_object(group):
    """With no pair to mask with (masks off), the object is the vector: caught."""

    def unmasked(x, r):
        return mask(x, 0.5, SECRET, r, SERVER, 1, group)

    assert leaks(unmasked)
    assert abs(correlation_with_vector(unmasked)) > 0.5


def test_encoding_is_exact_to_its_resolution_and_wraps_in_the_ring():
    x = np.array([0.0, 1.5, -2.25, 1e-9, -3e4])
    np.testing.assert_allclose(decode(encode(x)), x, rtol=0, atol=2.0**-33)
    # each term fits, the running sum wraps past 2^31, the final sum is right
    terms = [encode(np.array([v])) for v in (2.0e9, 2.0e9, -2.0e9, -1.0e9)]
    assert decode(ring_sum(terms))[0] == pytest.approx(1e9, abs=1e-6)
    assert decode(encode(np.array([np.nan])))[0] == 0.0
    assert decode(encode(np.array([1e30])))[0] == pytest.approx(2.0**31, rel=1e-9)
