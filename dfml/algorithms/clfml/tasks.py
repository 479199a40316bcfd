"""Phase 4 of CL-FML: on-demand tasks 𝒯 and the clusters that serve them.

A task asks for a classifier over labels 𝒯 ⊆ ℒ with label distribution q
(uniform over 𝒯 unless the task says otherwise). It goes first to the
cluster whose label distribution is closest:

    k* = argmin_k ℋ(w_k, q)      (ties → the lower k)

* **Case I** — 𝒯 ⊆ ℒ_k*: cluster k* alone trains the classifier.
* **Case II** — otherwise k* handles 𝒯 ∩ ℒ_k* and the *fewest* further
  clusters that, with k*, cover 𝒯 are engaged. The slides rank clusters by
  label contribution and engage "the minimum number"; a greedy ranking is
  not always minimal, so the cover is exact: subsets of the other clusters
  are enumerated by increasing size (K is small), ties between covers of the
  same size are broken by the smaller total ℋ(w_k, q), then by the
  lexicographically smaller sorted ids. Only clusters that hold a missing
  label are candidates (a minimum cover never needs another one).
* **Engagement order** — k* first, then repeatedly the chosen cluster that
  contributes the most still-missing labels, ties → smaller ℋ(w_k, q), then
  the lower id. The missing labels 𝒯 ∖ ℒ_k of each engaged cluster are what
  augmentation (phase 5) has to generate there.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from dfml.algorithms.clfml.labels import TIE_TOL, hellinger, nearest, task_distribution
from dfml.errors import ConfigError
from dfml.untrusted import load_json, load_yaml, read_limited


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


@dataclass(frozen=True)
class Task:
    """An on-demand task: its labels 𝒯 and optional weights q over them.

    ``q`` is aligned with ``labels`` (one non-negative weight per label, not
    all zero; normalised on construction) and stored as a tuple so tasks
    compare and hash; ``None`` means uniform over 𝒯. :meth:`distribution`
    spreads it over the whole universe ℒ.
    """

    labels: tuple[int, ...]
    q: tuple[float, ...] | None = field(default=None)

    def __post_init__(self) -> None:
        labels = tuple(self.labels)
        if not labels:
            raise ConfigError("task has no labels")
        seen: set[int] = set()
        for label in labels:
            if not _is_int(label):
                raise ConfigError(f"task label {label!r} is not an integer")
            if label in seen:
                raise ConfigError(f"task lists label {label} twice")
            seen.add(label)
        object.__setattr__(self, "labels", tuple(int(label) for label in labels))
        if self.q is not None:
            try:
                q = np.asarray(self.q, dtype=np.float64)
            except (TypeError, ValueError):
                raise ConfigError(f"task q must be numbers, got {self.q!r}") from None
            if q.shape != (len(labels),):
                raise ConfigError(
                    f"task q needs one weight per label ({len(labels)}), got {q.size}"
                )
            if not np.all(np.isfinite(q)) or np.any(q < 0) or q.sum() <= 0:
                raise ConfigError(f"task q must be non-negative and not all zero, got {q.tolist()}")
            object.__setattr__(self, "q", tuple(float(v) for v in q / q.sum()))

    def check(self, universe: Iterable[int]) -> None:
        """ConfigError naming the first label of 𝒯 that no client holds (not in ℒ)."""
        known = set(universe)
        for label in self.labels:
            if label not in known:
                raise ConfigError(f"task label {label} is held by no client")

    def distribution(self, universe: Sequence[int]) -> np.ndarray:
        """q over ``universe`` (M entries, zero outside 𝒯)."""
        self.check(universe)
        return task_distribution(self.labels, universe, self.q)


def primary_cluster(q: np.ndarray, w: np.ndarray) -> int:
    """k* = argmin_k ℋ(w_k, q), ties → the lower k."""
    return nearest(np.asarray(q, dtype=np.float64), np.asarray(w, dtype=np.float64))


def _min_with_tol(items: Sequence[tuple[float, Any]]) -> Any:
    """The payload of the first item whose score is within TIE_TOL of the smallest."""
    best = min(score for score, _ in items)
    return next(payload for score, payload in items if score <= best + TIE_TOL)


def select_clusters(
    task_labels: Iterable[int],
    primary: int,
    cluster_labels: Mapping[int, Iterable[int]],
    w: np.ndarray,
    q: np.ndarray,
) -> tuple[int, list[int]]:
    """(case, engaged clusters with k* first) for task labels 𝒯 (rules in the module docstring).

    ``cluster_labels`` maps k → ℒ_k; row k of ``w`` is w_k; q is the task's
    distribution over the same universe.
    """
    task = set(task_labels)
    labels = {k: frozenset(v) for k, v in cluster_labels.items()}
    if primary not in labels:
        raise ConfigError(f"primary cluster {primary} is not one of the clusters {sorted(labels)}")
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2 or any(not 0 <= k < w.shape[0] for k in labels):
        raise ConfigError(f"w needs one row per cluster id {sorted(labels)}, got shape {w.shape}")
    missing = task - labels[primary]
    if not missing:
        return 1, [primary]
    held = frozenset().union(*labels.values())
    for label in sorted(missing):
        if label not in held:
            raise ConfigError(f"task label {label} is held by no cluster")
    dist = {k: hellinger(w[k], q) for k in labels}
    candidates = sorted(k for k in labels if k != primary and labels[k] & missing)
    chosen: tuple[int, ...] = ()
    for size in range(1, len(candidates) + 1):
        covers = [
            (sum(dist[k] for k in subset), subset)
            for subset in combinations(candidates, size)
            if missing <= frozenset().union(*(labels[k] for k in subset))
        ]
        if covers:
            chosen = _min_with_tol(covers)
            break
    engaged = [primary]
    still_missing = set(missing)
    remaining = list(chosen)
    while remaining:
        gain = {k: len(labels[k] & still_missing) for k in remaining}
        top = max(gain.values())
        k = _min_with_tol([(dist[k], k) for k in sorted(remaining) if gain[k] == top])
        engaged.append(k)
        remaining.remove(k)
        still_missing -= labels[k]
    return 2, engaged


def random_tasks(
    universe: Sequence[int], n: int, seed: int, min_size: int = 2, max_size: int = 5
) -> list[Task]:
    """``n`` tasks with uniform q, each a uniform random subset of ℒ (sorted labels).

    A task's size is uniform on [min_size, min(max_size, M)]; one
    ``numpy`` generator seeded with ``seed`` draws all of them.
    """
    pool = sorted(set(universe))
    if n < 0:
        raise ConfigError(f"number of tasks must be >= 0, got {n}")
    if min_size < 1 or max_size < min_size:
        raise ConfigError(f"task sizes need 1 <= min_size <= max_size, got {min_size}, {max_size}")
    if min_size > len(pool):
        raise ConfigError(f"task min size {min_size} > {len(pool)} labels held by the clients")
    rng = np.random.default_rng(seed)
    hi = min(max_size, len(pool))
    tasks = []
    for _ in range(n):
        size = int(rng.integers(min_size, hi + 1))
        picked = rng.choice(len(pool), size=size, replace=False)
        tasks.append(Task(tuple(sorted(pool[i] for i in picked))))
    return tasks


def _parse_entry(entry: Any) -> Task:
    if isinstance(entry, Mapping):
        unknown = set(entry) - {"labels", "q"}
        if unknown:
            raise ConfigError(f"unknown keys {sorted(unknown)} (allowed: labels, q)")
        if "labels" not in entry:
            raise ConfigError("missing 'labels'")
        labels, q = entry["labels"], entry.get("q")
    else:
        labels, q = entry, None
    if not isinstance(labels, list):
        raise ConfigError(f"labels must be a list of integers, got {labels!r}")
    if q is not None and (
        not isinstance(q, list)
        or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in q)
    ):
        raise ConfigError(f"q must be a list of numbers, got {q!r}")
    return Task(tuple(labels), None if q is None else tuple(float(v) for v in q))


#: The largest tasks file read (MAX_TASKS tasks fit in far less).
MAX_TASKS_BYTES = 16 << 20
#: The most tasks one run serves (each fine-tunes for T′ rounds: 10,000 take days).
MAX_TASKS = 10_000


def load_tasks(path: str | Path, universe: Iterable[int] | None = None) -> list[Task]:
    """Tasks from a YAML or JSON file: a list (or ``{tasks: [...]}``) of entries.

    The file is read as untrusted (:mod:`dfml.untrusted`): at most
    :data:`MAX_TASKS_BYTES`, no YAML alias, no nesting deeper than its limit.

    An entry is a list of labels, or ``{labels: [...], q: [...]}`` with q
    aligned with the labels. With ``universe``, every label must be in ℒ.
    Errors name the file and the entry (0-based).
    """
    path = Path(path)
    what = f"tasks file {path}"
    try:
        text = read_limited(path, what, MAX_TASKS_BYTES).decode("utf-8")
        data = load_json(text, what) if path.suffix == ".json" else load_yaml(text, what)
    except (json.JSONDecodeError, yaml.YAMLError, UnicodeDecodeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"tasks file {path}: not valid YAML/JSON ({first[:200]})") from None
    if isinstance(data, Mapping) and set(data) == {"tasks"}:
        data = data["tasks"]
    if not isinstance(data, list) or not data:
        raise ConfigError(f"tasks file {path}: expected a non-empty list of tasks")
    if len(data) > MAX_TASKS:
        raise ConfigError(f"tasks file {path} lists {len(data):,} tasks; at most {MAX_TASKS:,}")
    known = None if universe is None else list(universe)
    tasks = []
    for i, entry in enumerate(data):
        try:
            task = _parse_entry(entry)
            if known is not None:
                task.check(known)
        except ConfigError as exc:
            raise ConfigError(f"tasks file {path}, entry {i}: {exc}") from None
        tasks.append(task)
    return tasks


def missing_labels(task_labels: Iterable[int], cluster_label_set: Iterable[int]) -> tuple[int, ...]:
    """𝒯 ∖ ℒ_k, sorted: the labels cluster k must get by augmentation (phase 5)."""
    return tuple(sorted(set(task_labels) - set(cluster_label_set)))
