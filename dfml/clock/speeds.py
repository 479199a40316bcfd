"""Each client's seconds per local step and per message: drawn from the seed or read
from a trace.

``--speeds lognormal:σ`` and ``--stragglers F:xK`` scale ``--step-seconds``
per client; the draws are pure functions of (seed, client id), so a client
keeps its speed whoever else runs, and a run repeats bit for bit.
``--speed-trace FILE`` gives every client's seconds outright.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dfml.errors import ConfigError
from dfml.untrusted import read_limited

if TYPE_CHECKING:
    from dfml.clock.config import ClockConfig

#: Salts of the speed draws, so they share no stream with the partition or SGD.
LOGNORMAL_SALT, STRAGGLER_SALT = 0x5BEED, 0x51017
#: The largest trace file read (a million clients fit in it).
MAX_TRACE_BYTES = 64 << 20
TRACE_COLUMNS = ("client", "step_seconds", "latency")


@dataclass(frozen=True)
class Speed:
    """One client's virtual cost: seconds per local SGD step and per neighbour vector fetched."""

    step_seconds: float
    latency: float = 0.0


def _number(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(text)
    return value


def parse_lognormal(text: str) -> float:
    """σ of ``lognormal:σ`` (finite, >= 0); one ConfigError line otherwise."""
    kind, _, sigma = str(text).partition(":")
    try:
        value = _number(sigma)
    except ValueError:
        value = -1.0
    if kind.strip() != "lognormal" or value < 0:
        raise ConfigError(f"--speeds must be lognormal:SIGMA with SIGMA >= 0, got {text!r}")
    return value


def parse_stragglers(text: str) -> tuple[float, float]:
    """(F, K) of ``F:xK`` (``F:K`` and ``F:×K`` too): F in [0, 1), K >= 1."""
    fraction, sep, factor = str(text).partition(":")
    try:
        f = _number(fraction)
        k = _number(factor.strip().removeprefix("x").removeprefix("×"))
    except ValueError:
        raise ConfigError(
            f"--stragglers must be FRACTION:xFACTOR (e.g. 0.2:x10), got {text!r}"
        ) from None
    if not sep:
        raise ConfigError(f"--stragglers must be FRACTION:xFACTOR (e.g. 0.2:x10), got {text!r}")
    if not 0 <= f < 1:
        raise ConfigError(f"--stragglers fraction must be in [0, 1), got {fraction.strip()}")
    if k < 1:
        raise ConfigError(f"--stragglers slowdown must be >= 1 (times slower), got {k:g}")
    return f, k


def lognormal_factors(sigma: float, ids: Sequence[int], seed: int) -> dict[int, float]:
    """exp(σ z_i) per client, z_i standard normal from SeedSequence([seed, salt, i])."""
    out = {}
    for cid in ids:
        z = np.random.default_rng(np.random.SeedSequence([seed, LOGNORMAL_SALT, cid]))
        out[cid] = float(np.exp(sigma * z.standard_normal()))
    return out


def straggler_factors(fraction: float, k: float, ids: Sequence[int], seed: int) -> dict[int, float]:
    """K for ⌊F·n + ½⌋ clients drawn from the seed (a permutation of the sorted ids), 1 for the rest."""
    ordered = sorted(ids)
    count = math.floor(fraction * len(ordered) + 0.5)
    rng = np.random.default_rng(np.random.SeedSequence([seed, STRAGGLER_SALT]))
    slow = {ordered[i] for i in rng.permutation(len(ordered))[:count]}
    return {cid: (k if cid in slow else 1.0) for cid in ordered}


def _cell(row: dict[str, str], name: str, what: str, line: int) -> float:
    text = (row.get(name) or "").strip()
    if not text:
        raise ConfigError(f"{what} line {line}: missing {name}")
    try:
        return _number(text)
    except ValueError:
        raise ConfigError(f"{what} line {line}: {name} {text!r} is not a number") from None


def read_trace(path: str, ids: Sequence[int], latency: float = 0.0) -> dict[int, Speed]:
    """Every client's :class:`Speed` from a ``client,step_seconds[,latency]`` CSV.

    Exactly one row per client of ``ids``; seconds per step > 0, latency >= 0
    (``latency`` where the file has no such column). One ConfigError line
    naming the file, the line and the value otherwise.
    """
    what = f"--speed-trace {path!r}"
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{what} is not a file")
    try:
        text = read_limited(p, what, MAX_TRACE_BYTES).decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{what} is not UTF-8 text") from None
    reader = csv.DictReader(io.StringIO(text))
    header = [h.strip() for h in reader.fieldnames or []]
    if header[:2] != list(TRACE_COLUMNS[:2]) or not set(header) <= set(TRACE_COLUMNS):
        raise ConfigError(
            f"{what} must start with the header client,step_seconds (and may add latency), "
            f"got {','.join(header)!r}"
        )
    reader.fieldnames = header
    wanted = set(ids)
    out: dict[int, Speed] = {}
    for row in reader:
        line = reader.line_num
        if None in row:
            raise ConfigError(f"{what} line {line}: more cells than the header names")
        raw = (row.get("client") or "").strip()
        if not raw:
            raise ConfigError(f"{what} line {line}: missing client")
        if not raw.isdigit() or int(raw) not in wanted:
            raise ConfigError(
                f"{what} line {line}: client {raw!r} is not one of the run's clients "
                f"{min(wanted)}..{max(wanted)}"
            )
        cid = int(raw)
        if cid in out:
            raise ConfigError(f"{what} line {line}: client {cid} appears twice")
        step = _cell(row, "step_seconds", what, line)
        if step <= 0:
            raise ConfigError(f"{what} line {line}: step_seconds must be > 0, got {step:g}")
        lat = _cell(row, "latency", what, line) if "latency" in header else latency
        if lat < 0:
            raise ConfigError(f"{what} line {line}: latency must be >= 0, got {lat:g}")
        out[cid] = Speed(step, lat)
    if len(out) != len(wanted):
        missing = sorted(wanted - set(out))
        raise ConfigError(
            f"{what} has {len(out)} clients; the run has {len(wanted)} (--clients plus "
            f"--reserve): no row for client{'s' if len(missing) > 1 else ''} "
            f"{', '.join(map(str, missing[:5]))}{' ...' if len(missing) > 5 else ''}"
        )
    return out


def client_speeds(cfg: ClockConfig, ids: Sequence[int], seed: int) -> dict[int, Speed]:
    """Every client's :class:`Speed` under ``cfg`` (the trace's, or --step-seconds scaled)."""
    if cfg.speed_trace is not None:
        return read_trace(cfg.speed_trace, ids, cfg.latency)
    if cfg.speeds is not None:
        factors = lognormal_factors(parse_lognormal(cfg.speeds), ids, seed)
    elif cfg.stragglers is not None:
        factors = straggler_factors(*parse_stragglers(cfg.stragglers), ids, seed)
    else:
        factors = dict.fromkeys(ids, 1.0)
    return {cid: Speed(cfg.step_seconds * factors[cid], cfg.latency) for cid in ids}
