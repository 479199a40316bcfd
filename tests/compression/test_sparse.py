"""Top-k, random-k and the dense message against plain-numpy references: the
decoded vector, the exact bytes, and the contraction CHOCO-SGD relies on."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from dfml.compression import Compressor, decode
from dfml.compression.sparse import kept


def reference_topk(x: np.ndarray, k: int) -> np.ndarray:
    """Brute force: rank coordinates by (−|x_i|, i), keep the first k, zero the rest."""
    ranked = sorted(range(x.size), key=lambda i: (-abs(float(x[i])), i))[:k]
    out = np.zeros_like(x)
    out[ranked] = x[ranked]
    return out


def test_topk_hand_example_bytes_and_values():
    x = np.array([1.0, -4.0, 3.0, 0.0, 2.0], np.float32)
    payload = Compressor("topk", ratio=0.4).encode(x, seed=0)
    # header (code 1, d 5), k 2, uint16 indices 1 2, float32 values -4 3
    expected = struct.pack("<BI", 1, 5) + struct.pack("<I", 2) + struct.pack("<HH", 1, 2)
    expected += struct.pack("<ff", -4.0, 3.0)
    assert payload.data == expected
    assert payload.nbytes == 21
    np.testing.assert_array_equal(payload.decode(), [0.0, -4.0, 3.0, 0.0, 0.0])


def test_topk_ties_go_to_the_lower_index():
    x = np.array([2.0, -2.0, 2.0, 1.0], np.float32)
    np.testing.assert_array_equal(Compressor("topk", 0.5).encode(x, 0).decode(), [2, -2, 0, 0])


#: (d, ratio); 2**16 is the largest d with uint16 indices, 2**16 + 1 the smallest with uint32.
TOPK_CASES = [
    *((7, r) for r in (0.01, 0.5, 1.0)),
    *((1000, r) for r in (0.01, 0.1, 0.5, 1.0)),
    (2**16, 0.01),
    (2**16 + 1, 0.1),
]


@pytest.mark.parametrize(("d", "ratio"), TOPK_CASES)
def test_topk_matches_the_brute_force_reference(d, ratio):
    rng = np.random.default_rng(d)
    x = rng.standard_normal(d).astype(np.float32)
    x[rng.integers(0, d, d // 10)] = 0.5  # ties
    c = Compressor("topk", ratio)
    payload = c.encode(x, seed=0)
    k = max(1, round(ratio * d))
    np.testing.assert_array_equal(payload.decode(), reference_topk(x, k))
    width = 2 if d <= 65536 else 4
    assert payload.nbytes == 5 + 4 + k * (width + 4) == c.message_bytes(d)


@pytest.mark.parametrize("d", [10, 8970, 70000])
def test_randk_sends_values_at_indices_drawn_from_the_seed(d):
    x = np.random.default_rng(1).standard_normal(d).astype(np.float32)
    c = Compressor("randk", 0.1)
    payload = c.encode(x, seed=1234)
    k = max(1, round(0.1 * d))
    idx = np.sort(np.random.default_rng(1234).choice(d, size=k, replace=False))
    expected = np.zeros(d, np.float32)
    expected[idx] = x[idx]
    np.testing.assert_array_equal(payload.decode(), expected)
    assert payload.nbytes == 5 + 4 + 8 + 4 * k == c.message_bytes(d)  # no indices travel
    # the layout: header, k, seed, then the values
    assert struct.unpack_from("<BIIQ", payload.data) == (2, d, k, 1234)
    np.testing.assert_array_equal(np.frombuffer(payload.data, "<f4", k, 17), x[idx])


def test_randk_draws_differ_between_seeds_and_repeat_within_one():
    x = np.arange(1, 101, dtype=np.float32)
    c = Compressor("randk", 0.1)
    assert c.encode(x, 5).data == c.encode(x, 5).data
    assert not np.array_equal(c.encode(x, 5).decode(), c.encode(x, 6).decode())


def test_dense_is_the_vector_itself():
    x = np.random.default_rng(2).standard_normal(33).astype(np.float32)
    payload = Compressor("none").encode(x, 0)
    np.testing.assert_array_equal(decode(payload.data), x)
    assert payload.nbytes == 5 + 4 * 33


@pytest.mark.parametrize("method", ["topk", "randk"])
def test_sparsifiers_are_contractions_with_delta_k_over_d(method):
    d, ratio = 500, 0.1
    k = kept(ratio, d)
    x = np.random.default_rng(3).standard_normal(d).astype(np.float32)
    errors = [
        float(np.sum((Compressor(method, ratio).encode(x, s).decode() - x) ** 2))
        for s in range(200)
    ]
    bound = (1 - k / d) * float(np.sum(x.astype(np.float64) ** 2))
    if method == "topk":  # every draw
        assert max(errors) <= bound + 1e-9
    else:  # in expectation: E‖C(x) − x‖² = (1 − k/d)‖x‖² exactly
        assert math.isclose(np.mean(errors), bound, rel_tol=0.03)


def test_kept_rounds_and_keeps_at_least_one():
    assert kept(0.1, 8970) == 897
    assert kept(0.01, 8970) == 90
    assert kept(1e-9, 10) == 1
    assert kept(1.0, 10) == 10
