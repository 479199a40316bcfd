"""QSGD-style quantization and sign with a scale against plain-numpy references."""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from dfml.compression import Compressor


def reference_qsgd(x: np.ndarray, s: int, seed: int) -> np.ndarray:
    """The quantizer written coordinate by coordinate (one uniform each, in order)."""
    d = x.size
    uniform = np.random.default_rng(seed).random(d)
    norm = float(np.float32(math.sqrt(sum(float(v) ** 2 for v in x))))
    tau = 1 + min(d / s**2, math.sqrt(d) / s)
    out = np.zeros(d)
    for i, v in enumerate(x.tolist()):
        if norm == 0:
            continue
        r = min(abs(v) / norm * s, s)
        level = math.floor(r) + (1 if uniform[i] < r - math.floor(r) else 0)
        out[i] = math.copysign(norm * level / (s * tau), v) if v != 0 else 0.0
    return out


@pytest.mark.parametrize(("d", "s"), [(1, 1), (9, 1), (100, 4), (1000, 16), (8970, 255)])
def test_qsgd_matches_the_reference_and_its_byte_count(d, s):
    x = np.random.default_rng(d).standard_normal(d).astype(np.float32)
    c = Compressor("qsgd", levels=s)
    payload = c.encode(x, seed=42)
    np.testing.assert_allclose(payload.decode(), reference_qsgd(x, s, 42), rtol=1e-6, atol=1e-7)
    bits = d * (1 + s.bit_length())  # a sign bit and bit_length(s) level bits per coordinate
    assert payload.nbytes == 5 + 4 + 4 + math.ceil(bits / 8) == c.message_bytes(d)
    assert struct.unpack_from("<BII", payload.data) == (3, d, s)


def test_qsgd_hand_example():
    # x = (3, -4): ‖x‖ = 5, s = 1: r = (0.6, 0.8); uniforms of seed 0 decide the levels
    x = np.array([3.0, -4.0], np.float32)
    u = np.random.default_rng(0).random(2)
    levels = [int(u[0] < 0.6), int(u[1] < 0.8)]
    tau = 1 + min(2 / 1, math.sqrt(2) / 1)
    expected = [5 * levels[0] / tau, -5 * levels[1] / tau]
    np.testing.assert_allclose(Compressor("qsgd", levels=1).encode(x, 0).decode(), expected)


def test_qsgd_times_tau_is_unbiased():
    d, s = 50, 4
    x = np.random.default_rng(7).standard_normal(d).astype(np.float32)
    tau = 1 + min(d / s**2, math.sqrt(d) / s)
    c = Compressor("qsgd", levels=s)
    mean = np.mean([c.encode(x, seed).decode() for seed in range(1000)], axis=0) * tau
    # each level's variance is at most 1/4, so a mean's std is at most ‖x‖/(2s√1000) ≈ 0.028
    np.testing.assert_allclose(mean, x, atol=0.12)


def test_qsgd_of_zero_is_zero():
    payload = Compressor("qsgd", levels=8).encode(np.zeros(10, np.float32), 3)
    np.testing.assert_array_equal(payload.decode(), np.zeros(10))


def test_sign_sends_signs_and_the_mean_magnitude():
    x = np.array([0.5, -1.5, 0.0, 2.0, -1.0, 3.0, -0.25, 0.25, 1.0], np.float32)
    payload = Compressor("sign").encode(x, 0)
    scale = np.float32(np.abs(x.astype(np.float64)).sum() / x.size)
    np.testing.assert_array_equal(payload.decode(), np.where(x < 0, -scale, scale))
    assert payload.nbytes == 5 + 4 + 2  # 9 sign bits take 2 bytes
    # bits least significant first: negative at 1, 4, 6 → 0b01010010; 9th bit (index 8) positive
    assert payload.data[9:] == bytes([0b01010010, 0])


@pytest.mark.parametrize("method", ["qsgd", "sign"])
def test_quantizers_are_contractions(method):
    d = 400
    x = np.random.default_rng(9).standard_normal(d).astype(np.float32)
    x64 = x.astype(np.float64)
    norm2 = float(np.sum(x64**2))
    if method == "sign":
        delta = float(np.sum(np.abs(x64))) ** 2 / (d * norm2)
        error = float(np.sum((Compressor("sign").encode(x, 0).decode() - x64) ** 2))
        assert math.isclose(error, (1 - delta) * norm2, rel_tol=1e-5)
    else:
        s = 4
        delta = 1 / (1 + min(d / s**2, math.sqrt(d) / s))
        c = Compressor("qsgd", levels=s)
        errors = [float(np.sum((c.encode(x, k).decode() - x64) ** 2)) for k in range(300)]
        assert np.mean(errors) <= (1 - delta) * norm2
