"""Compressed messages: pure functions from a float32 vector to the exact bytes that travel.

* :mod:`~dfml.compression.wire` — the shared layout (header, packed bits);
* :mod:`~dfml.compression.sparse` — top-k and random-k (and the dense message);
* :mod:`~dfml.compression.quantize` — QSGD-style quantization and sign with a scale;
* :mod:`~dfml.compression.methods` — the compressors by name, and the
  :class:`~dfml.compression.methods.Payload` a client publishes;
* :mod:`~dfml.compression.config` — the ``--compressor`` knobs.

Every compressor is a δ-contraction (Koloskova, Stich and Jaggi, ICML
2019), so each one fits CHOCO-SGD (:mod:`dfml.algorithms.choco`). The
package knows no algorithm; algorithms import it.
"""

from dfml.compression.config import CompressionConfig, check_compressor
from dfml.compression.methods import (
    COMPRESSORS,
    QUANTIZERS,
    SPARSIFIERS,
    Compressor,
    Payload,
    decode,
)

__all__ = [
    "COMPRESSORS",
    "QUANTIZERS",
    "SPARSIFIERS",
    "CompressionConfig",
    "Compressor",
    "Payload",
    "check_compressor",
    "decode",
]
