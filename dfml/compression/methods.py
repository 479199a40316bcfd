"""The compressors by name: encode a vector into a :class:`Payload`, decode one back.

A :class:`Compressor` is a method (:data:`COMPRESSORS`) with its parameter —
the kept fraction of top-k and random-k, the levels of qsgd — and encodes
a float32 vector into the exact bytes that travel. A :class:`Payload` is
those bytes; it is a :class:`~dfml.channels.Encoded` channel value, so a
neighbour that reads it through :func:`dfml.channels.fetch` receives the
decoded vector, and its ``nbytes`` is what the fetch moved. Decoding needs
only the bytes (the header names the method), so a payload carries no
Python object besides them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dfml.channels import Encoded
from dfml.compression import quantize, sparse
from dfml.compression.wire import read_header

#: Every compressor, by the name ``--compressor`` takes (``none``: the dense vector).
COMPRESSORS = ("none", "topk", "randk", "qsgd", "sign")
#: The compressors that keep a fraction of the coordinates (``--compression``).
SPARSIFIERS = ("topk", "randk")
#: The compressors that quantize with levels (``--levels``).
QUANTIZERS = ("qsgd",)

_DECODERS: dict[int, Callable[[bytes], np.ndarray]] = {
    sparse.DENSE: sparse.decode_dense,
    sparse.TOPK: sparse.decode_topk,
    sparse.RANDK: sparse.decode_randk,
    quantize.QSGD: quantize.decode_qsgd,
    quantize.SIGN: quantize.decode_sign,
}


def decode(data: bytes) -> np.ndarray:
    """The float32 vector a message carries (its header names the method)."""
    code, _ = read_header(data)
    return _DECODERS[code](data)


@dataclass(frozen=True, eq=False)
class Payload(Encoded):
    """The bytes of one compressed vector, as published and fetched."""

    data: bytes

    @property
    def nbytes(self) -> int:
        return len(self.data)

    def decode(self) -> np.ndarray:
        return decode(self.data)


@dataclass(frozen=True)
class Compressor:
    """One method with its parameter.

    Attributes:
        method: one of :data:`COMPRESSORS`.
        ratio: the fraction of coordinates top-k and random-k keep, in (0, 1].
        levels: s, the quantization levels of qsgd, >= 1.
    """

    method: str
    ratio: float = 1.0
    levels: int = 1

    def encode(self, x: np.ndarray, seed: int) -> Payload:
        """``x`` (a 1-D float32 vector) compressed; ``seed`` draws random-k's
        indices and qsgd's levels (the other methods are deterministic)."""
        x = np.ascontiguousarray(x, dtype=np.float32).ravel()
        d = x.size
        if self.method == "none":
            return Payload(sparse.encode_dense(x))
        if self.method == "topk":
            return Payload(sparse.encode_topk(x, sparse.kept(self.ratio, d)))
        if self.method == "randk":
            return Payload(sparse.encode_randk(x, sparse.kept(self.ratio, d), seed))
        if self.method == "qsgd":
            return Payload(quantize.encode_qsgd(x, self.levels, seed))
        if self.method == "sign":
            return Payload(quantize.encode_sign(x))
        raise ValueError(f"unknown compressor {self.method!r}; allowed: {', '.join(COMPRESSORS)}")

    def message_bytes(self, d: int) -> int:
        """The exact length of a message for a length-``d`` vector."""
        if self.method == "none":
            return sparse.dense_bytes(d)
        if self.method == "topk":
            return sparse.topk_bytes(d, sparse.kept(self.ratio, d))
        if self.method == "randk":
            return sparse.randk_bytes(d, sparse.kept(self.ratio, d))
        if self.method == "qsgd":
            return quantize.qsgd_bytes(d, self.levels)
        if self.method == "sign":
            return quantize.sign_bytes(d)
        raise ValueError(f"unknown compressor {self.method!r}; allowed: {', '.join(COMPRESSORS)}")
