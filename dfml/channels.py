"""What a published channel value is: an object ref, or one row of a packed object.

An actor hosting C clients publishes their C parameter vectors either as C
objects (one ``ray.put`` each) or, packed, as one [C × P] object of which each
client's vector is a :class:`Row`. Packing turns C puts into one (at 5,000
clients per actor the puts alone took 7.5–9 s a round on the 2-core box; one
put of the stacked array 0.02–0.3 s) and a neighbour's C fetches into one per
cohort object. Its cost: a reader pulls the whole cohort object to read one
row, which is free on one node (zero-copy shared memory) and expensive across
nodes, hence ``--pack-params auto`` packs only on a one-node cluster.

Every reader of published vectors goes through :func:`fetch`, so the rest of
dfml treats the two kinds alike (both are hashable handles, compared and
swapped by the fault layer without being read).

A published value may also be :class:`Encoded`: the bytes of a compressed
vector (:mod:`dfml.compression`). It travels as those bytes — its ``nbytes``
is what a reader fetches — and :func:`fetch` hands readers the decoded
vector, so client code that mixes neighbours' vectors needs no change to
read compressed ones.
"""

from __future__ import annotations

import abc
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray

#: When actors publish their clients' parameter vectors packed.
PACK_MODES = ("auto", "always", "never")

#: The dtypes parameter vectors may travel in (``--publish-dtype``); a reader
#: always gets float32 (:func:`fetch` widens a float16 vector exactly).
PUBLISH_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class Row:
    """Row ``index`` of the packed object ``ref``: one client's published vector."""

    ref: Any
    index: int


class Encoded(abc.ABC):
    """A published value that travels encoded and is read decoded.

    Immutable: the in-process store's ``put`` copies a value with
    :meth:`copy`, which may return the value itself.
    """

    @property
    @abc.abstractmethod
    def nbytes(self) -> int:
        """The bytes that travel when a reader fetches the value."""

    @abc.abstractmethod
    def decode(self) -> np.ndarray:
        """The vector a reader receives."""

    def copy(self) -> Encoded:
        return self


def is_handle(value: Any) -> bool:
    """True for a published-channel handle (an object ref or a :class:`Row`)."""
    return isinstance(value, ray.ObjectRef | Row)


def fetch(
    get: Callable[[list[Any]], list[Any]], handles: Sequence[Any], *, widen: bool = True
) -> list[Any]:
    """The values of ``handles``, reading each underlying object once.

    ``get`` reads a list of object refs (``ray.get``, or an actor's store;
    in-process the "refs" are the arrays themselves); a :class:`Row` is
    sliced out of its object (a read-only view, no copy); an
    :class:`Encoded` value is decoded; a float16 array (``--publish-dtype
    float16``) is widened to float32, so no reader computes in half precision
    — or, with ``widen=False``, left as the view it is, for a reader that
    widens a few at a time (:func:`widened`): an actor's whole step widened
    at once held two float32 copies of every client's neighbours.
    """
    bases = [h.ref if isinstance(h, Row) else h for h in handles]
    keys = [b if isinstance(b, ray.ObjectRef) else id(b) for b in bases]  # arrays in-process
    first = dict(zip(keys, bases, strict=True))
    values = dict(zip(first, get(list(first.values())), strict=True))
    raw = [
        values[key][h.index] if isinstance(h, Row) else _decoded(values[key])
        for h, key in zip(handles, keys, strict=True)
    ]
    return widened(raw) if widen else raw


def widened(values: Sequence[Any]) -> list[Any]:
    """``values`` with every float16 array widened to float32 (what :func:`fetch` does)."""
    return [_widened(v) for v in values]


def _decoded(value: Any) -> Any:
    return value.decode() if isinstance(value, Encoded) else value


def _widened(value: Any) -> Any:
    if isinstance(value, np.ndarray) and value.dtype == np.float16:
        return value.astype(np.float32)
    return value


def get_value(handle: Any, timeout: float | None = None) -> Any:
    """One handle's value through ``ray.get`` (the driver's and the fault layer's read;
    in-process the handle holds the value)."""
    base = handle.ref if isinstance(handle, Row) else handle
    if not isinstance(base, ray.ObjectRef):
        return fetch(list, [handle])[0]
    return fetch(lambda refs: ray.get(refs, timeout=timeout), [handle])[0]


def row_runs(
    vectors: Sequence[np.ndarray], max_runs: int | None = None
) -> list[tuple[int, int, np.ndarray]] | None:
    """``vectors`` as maximal runs of vectors that lie back to back in memory
    (consecutive rows of a packed object, or of the cohort matrix a batched
    step trained): (start, stop, a read-only [stop − start, P] view of them)
    each. ``None`` when they are not float32 or float16 vectors of one shape
    and dtype, or fall into more than ``max_runs`` runs (default: one run
    per 8 vectors; a random graph's neighbours, which stacking copies as
    cheaply).

    A view spans only bytes of the vectors themselves, which ``vectors``
    keeps alive while the caller reads it.
    """
    if not vectors:
        return None
    first = vectors[0]
    shape, dtype, size = first.shape, first.dtype, first.nbytes
    if first.ndim != 1 or dtype not in (np.float32, np.float16):
        return None
    if any(v.shape != shape or v.dtype != dtype or not v.flags.c_contiguous for v in vectors):
        return None
    address = np.fromiter((v.ctypes.data for v in vectors), dtype=np.int64, count=len(vectors))
    breaks = (np.flatnonzero(np.diff(address) != size) + 1).tolist()
    if len(breaks) + 1 > (len(vectors) // 8 if max_runs is None else max_runs):
        return None
    bounds = [0, *breaks, len(vectors)]
    return [
        (
            start,
            stop,
            np.lib.stride_tricks.as_strided(
                vectors[start],
                shape=(stop - start, *shape),
                strides=(size, dtype.itemsize),
                writeable=False,
            ),
        )
        for start, stop in itertools.pairwise(bounds)
    ]
