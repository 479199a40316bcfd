"""The actor's device and its share of a GPU.

Ray's fractional GPUs (``--num-gpus-per-actor 0.25``) only *schedule* four
actors onto one GPU; nothing stops one of them from filling the card and
starving its neighbours. So each CUDA actor caps its own caching allocator
at its share of the device's memory before it allocates anything, hands
cached blocks back after every step (so a neighbour can grow into memory
this actor no longer uses), and turns an out-of-memory error into a
message that names the client, its share and what it tried to use.
Whole GPUs (a share ≥ 1) are not capped. CPU actors do none of this.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

import ray
import torch

log = logging.getLogger(__name__)

GIB = 1024**3

#: The per-actor keys :func:`memory_report` may produce (what summary.json keeps).
REPORT_KEYS = (
    "device",
    "gpu_ids",
    "gpu_index",
    "memory_share",
    "memory_limit_bytes",
    "peak_memory_bytes",
)


def pick_device() -> torch.device:
    """CUDA when Ray gave this worker a GPU and CUDA works, CPU otherwise."""
    gpu_ids = ray.get_gpu_ids() if ray.is_initialized() else []
    if gpu_ids and torch.cuda.is_available():
        return torch.device("cuda")
    if gpu_ids:
        log.warning("Ray assigned GPU %s but CUDA is unavailable here; using CPU", gpu_ids)
    return torch.device("cpu")


def device_share(fraction: float) -> float:
    """The share of its CUDA device an actor may use: its fraction, or all of a whole GPU."""
    return fraction if 0 < fraction < 1 else 1.0


def gpu_index(device: torch.device) -> int:
    """The CUDA device's index in this process (``cuda`` means the current device)."""
    return device.index if device.index is not None else torch.cuda.current_device()


def memory_limit(fraction: float, device: torch.device) -> int:
    """Bytes this actor may hold on ``device``: its share of the device's total memory."""
    total = torch.cuda.get_device_properties(gpu_index(device)).total_memory
    return int(device_share(fraction) * total)


def apply_memory_share(fraction: float, device: torch.device) -> None:
    """Cap this process's CUDA allocator at ``fraction`` of ``device``.

    Called before the actor allocates anything, so the cap holds for every
    tensor it ever makes. A fractional share is enforced; whole GPUs
    (fraction ≥ 1) and CPU devices are left alone.
    """
    if device.type != "cuda" or not 0 < fraction < 1:
        return
    index = gpu_index(device)
    torch.cuda.set_per_process_memory_fraction(fraction, index)
    log.info(
        "GPU memory capped at %g of cuda:%d (%.1f GiB)",
        fraction,
        index,
        memory_limit(fraction, device) / GIB,
    )


def _malloc_trim() -> Any:
    """glibc's ``malloc_trim``, or ``None`` where the C library has none (macOS, musl)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    return getattr(ctypes.CDLL(name), "malloc_trim", None)


_MALLOC_TRIM = _malloc_trim()


def release_cached(device: torch.device) -> None:
    """Hand memory freed by a step back, so neighbours can use it.

    On CUDA, the cached unused blocks (for actors sharing the GPU). On the
    host, the heap pages glibc keeps after a step frees the clients' old
    vectors: they are ~36 kB each, below glibc's mmap threshold, so they
    live on the heap, and the next step's vectors do not fit exactly into
    the holes; measured at 10,000 clients in one process, 0.65 GB of the
    2.65 GB resident after three steps was free heap, returned by
    ``malloc_trim`` in 0.1 s. At 50,000 clients per actor that was ~3 GB
    per actor, the difference between fitting N = 100,000 in 24 GB or not.
    """
    if device.type == "cuda":
        torch.cuda.empty_cache()
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


def memory_report(device: torch.device, fraction: float) -> dict[str, Any]:
    """Where this actor runs and, on CUDA, its share, limit and peak memory.

    CPU actors report only ``device`` and Ray's ``gpu_ids`` (non-empty when
    Ray assigned a GPU but CUDA is unavailable, which explains the CPU).
    """
    gpu_ids = [str(g) for g in ray.get_gpu_ids()] if ray.is_initialized() else []
    if device.type != "cuda":
        return {"device": "cpu", "gpu_ids": gpu_ids}
    index = gpu_index(device)
    return {
        "device": "cuda",
        "gpu_ids": gpu_ids,
        "gpu_index": index,
        "memory_share": device_share(fraction),
        "memory_limit_bytes": memory_limit(fraction, device),
        "peak_memory_bytes": int(torch.cuda.max_memory_allocated(index)),
    }


def device_summary(infos: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per actor, for summary.json: its client count and the :func:`memory_report` keys it has."""
    return [
        {"clients": len(info["clients"]), **{k: info[k] for k in REPORT_KEYS if k in info}}
        for info in infos
    ]


def out_of_memory_message(
    error: BaseException, client_id: int, fraction: float, device: torch.device
) -> str | None:
    """What to tell the user when ``client_id``'s step ran out of its GPU share.

    ``None`` when ``error`` is not a CUDA out-of-memory error on a CUDA
    actor: the caller reports it as it is.
    """
    if device.type != "cuda" or not isinstance(error, torch.cuda.OutOfMemoryError):
        return None
    index = gpu_index(device)
    asked = re.search(r"Tried to allocate ([\d.]+ \w+)", str(error))
    tried = f"tried to allocate {asked[1]}" if asked else str(error).splitlines()[0]
    in_use = torch.cuda.memory_allocated(index) / GIB
    return (
        f"client {client_id} exceeded its GPU memory share {device_share(fraction):g} of "
        f"cuda:{index} (limit {memory_limit(fraction, device) / GIB:.1f} GiB): {tried} "
        f"with {in_use:.1f} GiB allocated; use a larger --num-gpus-per-actor or a smaller "
        "model/batch"
    )
