"""Sparsifiers: top-k and random-k, and the dense message they compress.

Both keep k = max(1, round(ratio · d)) of the d coordinates and send them
unscaled, so each is a δ-contraction in the sense of Koloskova, Stich and
Jaggi (ICML 2019, Assumption 1): ‖C(x) − x‖² ≤ (1 − δ)‖x‖², with δ = k/d
(top-k always, random-k in expectation). That is the class CHOCO-SGD's
guarantees are stated for; an unbiased random-k (scaled by d/k) is not in it.

Layouts after the header (:mod:`dfml.compression.wire`):

* dense: d float32 values — 5 + 4d bytes;
* top-k: k (uint32), the k indices in increasing order, their k values —
  9 + k·(w + 4) bytes, with w = 2 for d ≤ 65,536 and 4 above;
* random-k: k (uint32), the seed (uint64) that draws the indices, the k
  values — 17 + 4k bytes; the receiver draws the same indices from the seed,
  so none travel.
"""

from __future__ import annotations

import struct

import numpy as np

from dfml.compression.wire import HEADER, VALUE, header, index_dtype, read_header

#: Method codes (the header's first byte).
DENSE, TOPK, RANDK = 0, 1, 2

_COUNT = struct.Struct("<I")
_COUNT_SEED = struct.Struct("<IQ")
#: Where the fields after the header start.
_TOPK_AT = HEADER.size + _COUNT.size
_RANDK_AT = HEADER.size + _COUNT_SEED.size


def kept(ratio: float, d: int) -> int:
    """k = max(1, round(ratio · d)): how many coordinates a sparsifier sends."""
    return min(d, max(1, round(ratio * d)))


def topk_indices(x: np.ndarray, k: int) -> np.ndarray:
    """The k coordinates of largest |x_i|, ties to the lower index, in increasing order."""
    order = np.argsort(-np.abs(x), kind="stable")[:k]
    return np.sort(order)


def randk_indices(d: int, k: int, seed: int) -> np.ndarray:
    """k distinct coordinates drawn from ``seed``, in increasing order."""
    return np.sort(np.random.default_rng(seed).choice(d, size=k, replace=False))


def encode_dense(x: np.ndarray) -> bytes:
    return header(DENSE, x.size) + x.astype(VALUE).tobytes()


def decode_dense(data: bytes) -> np.ndarray:
    _, d = read_header(data)
    return np.frombuffer(data, VALUE, d, HEADER.size).astype(np.float32)


def encode_topk(x: np.ndarray, k: int) -> bytes:
    idx = topk_indices(x, k)
    return (
        header(TOPK, x.size)
        + _COUNT.pack(k)
        + idx.astype(index_dtype(x.size)).tobytes()
        + x[idx].astype(VALUE).tobytes()
    )


def decode_topk(data: bytes) -> np.ndarray:
    _, d = read_header(data)
    (k,) = _COUNT.unpack_from(data, HEADER.size)
    width = index_dtype(d)
    idx = np.frombuffer(data, width, k, _TOPK_AT).astype(np.int64)
    out = np.zeros(d, np.float32)
    out[idx] = np.frombuffer(data, VALUE, k, _TOPK_AT + k * width.itemsize)
    return out


def encode_randk(x: np.ndarray, k: int, seed: int) -> bytes:
    idx = randk_indices(x.size, k, seed)
    return header(RANDK, x.size) + _COUNT_SEED.pack(k, seed) + x[idx].astype(VALUE).tobytes()


def decode_randk(data: bytes) -> np.ndarray:
    _, d = read_header(data)
    k, seed = _COUNT_SEED.unpack_from(data, HEADER.size)
    out = np.zeros(d, np.float32)
    out[randk_indices(d, k, seed)] = np.frombuffer(data, VALUE, k, _RANDK_AT)
    return out


def dense_bytes(d: int) -> int:
    return HEADER.size + VALUE.itemsize * d


def topk_bytes(d: int, k: int) -> int:
    return _TOPK_AT + k * (index_dtype(d).itemsize + VALUE.itemsize)


def randk_bytes(d: int, k: int) -> int:
    return _RANDK_AT + VALUE.itemsize * k
