"""The byte layout every compressed message shares: a header, then packed fields.

A message starts with a 5-byte header — the method's code (uint8) and the
vector's length d (uint32) — so it says itself how to decode it. Every
field after it is little-endian: indices as uint16 when d ≤ 65,536 (the
smallest type that holds every index) and uint32 above, values as float32,
bits packed eight to a byte, least significant first. A message's length
is therefore a function of d and the method's parameters alone, which
:meth:`dfml.compression.methods.Compressor.message_bytes` states exactly.
"""

from __future__ import annotations

import math
import struct

import numpy as np

#: Method code (uint8) and vector length d (uint32).
HEADER = struct.Struct("<BI")
#: float32 values, little-endian.
VALUE = np.dtype("<f4")
#: The largest d a message can carry (d is a uint32).
MAX_LENGTH = 2**32 - 1


def header(code: int, d: int) -> bytes:
    """The 5 header bytes of a message of method ``code`` for a length-``d`` vector."""
    if not 0 < d <= MAX_LENGTH:
        raise ValueError(f"a compressed vector has 1..{MAX_LENGTH} entries, got {d}")
    return HEADER.pack(code, d)


def read_header(data: bytes) -> tuple[int, int]:
    """(method code, d) of a message."""
    return HEADER.unpack_from(data, 0)


def index_dtype(d: int) -> np.dtype:
    """uint16 where every index of a length-``d`` vector fits, else uint32."""
    return np.dtype("<u2") if d <= 2**16 else np.dtype("<u4")


def bit_bytes(count: int) -> int:
    """Bytes that hold ``count`` packed bits."""
    return math.ceil(count / 8)


def pack_bits(bits: np.ndarray) -> bytes:
    """Booleans packed eight to a byte, least significant bit first."""
    return np.packbits(bits.astype(bool), bitorder="little").tobytes()


def unpack_bits(data: bytes, offset: int, count: int) -> np.ndarray:
    """``count`` booleans packed by :func:`pack_bits`, starting at byte ``offset``."""
    raw = np.frombuffer(data, np.uint8, bit_bytes(count), offset)
    return np.unpackbits(raw, count=count, bitorder="little").astype(bool)
