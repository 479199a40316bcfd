"""Quantizers: QSGD-style stochastic quantization with s levels, and sign with a scale.

Both are δ-contractions (Koloskova, Stich and Jaggi, ICML 2019), the class
CHOCO-SGD is stated for:

* **qsgd** (Alistarh et al., NeurIPS 2017, as used in the CHOCO paper):
  with r_i = s·|x_i| / ‖x‖₂, coordinate i is sent as level ℓ_i = ⌊r_i⌋ + 1
  with probability r_i − ⌊r_i⌋, else ⌊r_i⌋, and its sign; the receiver
  forms ‖x‖₂ · sign(x_i) · ℓ_i / (s τ) with τ = 1 + min(d/s², √d/s). Without
  the 1/τ the estimate is unbiased but its variance can exceed ‖x‖²; with
  it the operator is a contraction with δ = 1/τ (the paper's ``qsgd_s``).
* **sign**: sign(x_i) times the scale ‖x‖₁ / d (Karimireddy et al., ICML
  2019), δ = ‖x‖₁² / (d ‖x‖₂²); a zero coordinate is sent as +.

Layouts after the header (:mod:`dfml.compression.wire`):

* qsgd: s (uint32), ‖x‖₂ (float32), then d sign bits followed by d levels of
  b = bit_length(s) bits each — 13 + ⌈d (1 + b) / 8⌉ bytes;
* sign: the scale (float32), then d sign bits — 9 + ⌈d / 8⌉ bytes.

Norms and scales are computed in float64 and sent as float32; the levels
are drawn from ``numpy.random.default_rng(seed)``, one uniform per coordinate.
"""

from __future__ import annotations

import math
import struct

import numpy as np

from dfml.compression.wire import HEADER, bit_bytes, header, pack_bits, read_header, unpack_bits

#: Method codes (the header's first byte).
QSGD, SIGN = 3, 4

_LEVELS_NORM = struct.Struct("<If")
_SCALE = struct.Struct("<f")
_QSGD_AT = HEADER.size + _LEVELS_NORM.size
_SIGN_AT = HEADER.size + _SCALE.size


def tau(d: int, s: int) -> float:
    """τ = 1 + min(d/s², √d/s): the qsgd estimate is divided by it."""
    return 1.0 + min(d / s**2, math.sqrt(d) / s)


def qsgd_levels(x: np.ndarray, s: int, seed: int) -> tuple[float, np.ndarray]:
    """(‖x‖₂ as float32, each coordinate's level in 0..s), the levels drawn from ``seed``."""
    x64 = x.astype(np.float64)
    norm = np.float32(np.linalg.norm(x64))
    uniform = np.random.default_rng(seed).random(x.size)
    if norm == 0:
        return float(norm), np.zeros(x.size, np.int64)
    r = np.minimum(np.abs(x64) / float(norm) * s, s)  # ≤ s also where float32 rounded ‖x‖ down
    low = np.floor(r)
    return float(norm), (low + (uniform < r - low)).astype(np.int64)


def encode_qsgd(x: np.ndarray, s: int, seed: int) -> bytes:
    norm, levels = qsgd_levels(x, s, seed)
    width = s.bit_length()
    level_bits = (levels[:, None] >> np.arange(width)) & 1
    bits = np.concatenate([x < 0, level_bits.ravel().astype(bool)])
    return header(QSGD, x.size) + _LEVELS_NORM.pack(s, norm) + pack_bits(bits)


def decode_qsgd(data: bytes) -> np.ndarray:
    _, d = read_header(data)
    s, norm = _LEVELS_NORM.unpack_from(data, HEADER.size)
    width = s.bit_length()
    bits = unpack_bits(data, _QSGD_AT, d * (1 + width))
    negative = bits[:d]
    levels = (bits[d:].reshape(d, width) << np.arange(width)).sum(axis=1)
    values = norm * levels / (s * tau(d, s))
    return np.where(negative, -values, values).astype(np.float32)


def encode_sign(x: np.ndarray) -> bytes:
    scale = np.float32(np.abs(x.astype(np.float64)).sum() / x.size)
    return header(SIGN, x.size) + _SCALE.pack(scale) + pack_bits(x < 0)


def decode_sign(data: bytes) -> np.ndarray:
    _, d = read_header(data)
    (scale,) = _SCALE.unpack_from(data, HEADER.size)
    negative = unpack_bits(data, _SIGN_AT, d)
    return np.where(negative, -scale, scale).astype(np.float32)


def qsgd_bytes(d: int, s: int) -> int:
    return _QSGD_AT + bit_bytes(d * (1 + s.bit_length()))


def sign_bytes(d: int) -> int:
    return _SIGN_AT + bit_bytes(d)
