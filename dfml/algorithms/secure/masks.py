"""Pairwise additive masks in a ring of fixed-point integers (Bonawitz et al., CCS 2017).

Pure functions, no Ray: everything secure aggregation computes is here.

**The ring.** A weighted vector w·x is encoded as fixed-point integers with
:data:`FRACTION_BITS` fractional bits in Z_{2^64} (numpy ``uint64``, whose
arithmetic wraps modulo 2^64). Masks are uniform elements of the same ring,
so a masked value is uniform whatever x is, and masks cancel *exactly*: the
decoded sum differs from Σ w_k x_k only by the rounding of each term to
2^-32, at most n · 2^-33 per coordinate for n terms (2.3e-9 at n = 20),
whatever the masks. The decoded sum is right as long as it lies in
(−2^31, 2^31) coordinate by coordinate; single terms may wrap.

**The masks.** A mask *group* is a receiver (the server, :data:`SERVER`, or
a gossiping client) and the members whose weighted vectors it sums. For
each pair a < b of members, a adds PRG(s_ab) and b subtracts it, so the
group's masks sum to zero. The seed s_ab of the pair comes from a
``SeedSequence`` of (run secret, round, receiver, a, b): a fresh mask per
round, pair and receiver. This *simulates* the key agreement: in a real
deployment a and b would agree on s_ab by Diffie–Hellman (each publishing
a public key, the server relaying them) and secret-share their keys
(Shamir, t of n) so that the server can rebuild the seeds of a member that
drops out; here every client derives s_ab from the run's secret, so the
simulation shows the arithmetic and the bytes, not the cryptography.

**Dropouts.** A member that never sends leaves its pairs' masks in the
survivors' vectors. The server asks the survivors for their seeds with the
dropped members (Bonawitz's recovery round) and subtracts those masks:
:func:`dropout_correction`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

#: Fractional bits of the fixed-point encoding (rounding error 2^-33 per term).
FRACTION_BITS = 32
#: 2^FRACTION_BITS: one unit of the fixed-point encoding.
SCALE = float(2**FRACTION_BITS)
#: The largest magnitude a decoded sum may have (it must fit int64 after scaling).
LIMIT = float(2 ** (63 - FRACTION_BITS))
#: The largest scaled magnitude that casts to int64 (a float64 just below 2^63).
_BOUND = float(2**63 - 2**11)
#: The receiver id of the server's mask group (client ids are >= 0).
SERVER = -1
#: Salt of the pairwise seeds, so they share no stream with training or noise seeds.
MASK_SALT = 0x5EC_A66


def encode(values: np.ndarray) -> np.ndarray:
    """Real values → ring elements (round to the nearest 2^-32, modulo 2^64).

    Values beyond ±:data:`LIMIT` are clamped, and NaN encodes as 0: a vector
    that diverged gives a finite encoding instead of an undefined cast, and
    the run stops on that client's NaN loss at the end of the round anyway.
    """
    scaled = np.asarray(values, dtype=np.float64) * SCALE
    scaled = np.nan_to_num(np.clip(scaled, -_BOUND, _BOUND), nan=0.0)
    return np.rint(scaled).astype(np.int64).view(np.uint64)


def decode(ring: np.ndarray) -> np.ndarray:
    """Ring elements → real values (the two's-complement reading of each element)."""
    return np.asarray(ring, dtype=np.uint64).view(np.int64).astype(np.float64) / SCALE


def pair_seed(secret: int, round_index: int, receiver: int, a: int, b: int) -> int:
    """s_ab of the pair {a, b} in ``receiver``'s group for one round (order-free)."""
    lo, hi = min(a, b), max(a, b)
    entropy = [secret, MASK_SALT, round_index, receiver + 1, lo, hi]
    return int(np.random.SeedSequence(entropy).generate_state(1, np.uint64)[0])


def prg(seed: int, size: int) -> np.ndarray:
    """PRG(s): ``size`` uniform ring elements from a PCG64 stream seeded by s."""
    return np.random.Generator(np.random.PCG64(seed)).bit_generator.random_raw(size)


def pairwise_mask(
    secret: int, round_index: int, receiver: int, member: int, group: Iterable[int], size: int
) -> np.ndarray:
    """Σ_{j in group, j ≠ member} ±PRG(s_{member,j}): + where member < j, − where member > j.

    Over every member of a group these masks sum to zero in the ring.
    """
    mask = np.zeros(size, dtype=np.uint64)
    for other in group:
        if other == member:
            continue
        stream = prg(pair_seed(secret, round_index, receiver, member, other), size)
        if member < other:
            mask += stream
        else:
            mask -= stream
    return mask


def mask(
    vector: np.ndarray,
    weight: float,
    secret: int,
    round_index: int,
    receiver: int,
    member: int,
    group: Sequence[int],
) -> np.ndarray:
    """What ``member`` sends ``receiver``: encode(weight · vector) + its pairwise mask.

    A group of one member gets no mask: its sum *is* its vector, which is
    why the setup refuses groups smaller than two.
    """
    weighted = np.asarray(vector, dtype=np.float64) * float(weight)
    return encode(weighted) + pairwise_mask(
        secret, round_index, receiver, member, group, len(weighted)
    )


def ring_sum(masked: Sequence[np.ndarray]) -> np.ndarray:
    """Σ_k masked_k in the ring (the receiver's only arithmetic on what it receives)."""
    if not masked:
        raise ValueError("nothing to sum")
    total = np.array(masked[0], dtype=np.uint64, copy=True)
    for value in masked[1:]:
        total += np.asarray(value, dtype=np.uint64)
    return total


def dropout_correction(
    secret: int,
    round_index: int,
    receiver: int,
    survivors: Iterable[int],
    dropped: Iterable[int],
    size: int,
) -> np.ndarray:
    """The masks the survivors' vectors still hold with the ``dropped`` members.

    Each survivor k added ±PRG(s_kd) for every dropped d; subtracting this
    sum from the survivors' ring sum leaves Σ_{k survives} encode(w_k x_k).
    The seeds are the ones the survivors reveal in the recovery round.
    """
    gone = sorted(set(dropped))
    correction = np.zeros(size, dtype=np.uint64)
    for k in survivors:
        correction += pairwise_mask(secret, round_index, receiver, k, gone, size)
    return correction


def unmasked_sum(
    masked: Sequence[np.ndarray],
    secret: int,
    round_index: int,
    receiver: int,
    survivors: Sequence[int],
    dropped: Sequence[int] = (),
) -> np.ndarray:
    """Σ_{k in survivors} w_k x_k (float64) from the survivors' masked vectors,
    removing the masks they share with ``dropped`` members."""
    total = ring_sum(masked)
    if dropped:
        total -= dropout_correction(secret, round_index, receiver, survivors, dropped, len(total))
    return decode(total)
