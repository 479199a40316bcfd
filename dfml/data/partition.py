"""Non-IID partitioners: pure functions over labels.

Every partitioner takes the label vector, the number of clients, the config
and a seed, and returns one sorted index array per client. Same inputs, same
output: the partition is part of an experiment's identity and is saved with
its results. :func:`make_partition` is the entry point an experiment uses: it
draws (or, with ``partition_file``, imports) the partition, splits every
client's share (:mod:`dfml.data.split`) and applies ζ relabelling.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from dfml.data.config import PartitionConfig
from dfml.data.partition_file import load_partition_file
from dfml.data.split import ClientSplit, client_seed, split_client
from dfml.errors import ConfigError

logger = logging.getLogger(__name__)

Partitioner = Callable[[np.ndarray, int, PartitionConfig, np.random.Generator], list[np.ndarray]]


def _split_by_label(
    labels: np.ndarray, owners: dict[int, list[int]], num_clients: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Give each label's samples in equal shares to the clients that own it."""
    parts: list[list[np.ndarray]] = [[] for _ in range(num_clients)]
    for label, clients in owners.items():
        if not clients:
            continue
        idx = rng.permutation(np.flatnonzero(labels == label))
        for client, chunk in zip(clients, np.array_split(idx, len(clients)), strict=True):
            parts[client].append(chunk)
    return [np.sort(np.concatenate(p)) if p else np.empty(0, np.int64) for p in parts]


def _iid(labels, n, cfg, rng):
    return [np.sort(c) for c in np.array_split(rng.permutation(len(labels)), n)]


_DIRICHLET_DRAWS = 100


def _dirichlet(labels, n, cfg, rng):
    """Label skew: for each class, proportions p ~ Dir(α·1_N) over clients.

    Up to :data:`_DIRICHLET_DRAWS` draws are tried; the first that gives every
    client ``min_samples`` is returned (so partitions that always worked stay
    bit-identical). If none does, the draw with the smallest total shortfall
    (the first of equals) is returned and :func:`partition` repairs it. A draw
    is judged by its client sizes alone; only the one returned is cut into
    index arrays (at 100 clients the cutting was 90 % of the time).
    """
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    best, best_shortfall = None, None
    for _ in range(_DIRICHLET_DRAWS):
        draw, sizes = [], np.zeros(n, np.int64)
        for members in by_class:
            idx = rng.permutation(members)
            cuts = (np.cumsum(rng.dirichlet(np.full(n, cfg.alpha)))[:-1] * len(idx)).astype(int)
            draw.append((idx, cuts))
            sizes += np.diff(cuts, prepend=0, append=len(idx))
        shortfall = int(np.maximum(cfg.min_samples - sizes, 0).sum())
        if shortfall == 0:
            return _cut(draw, n)
        if best_shortfall is None or shortfall < best_shortfall:
            best, best_shortfall = draw, shortfall
    return _cut(best, n)


def _cut(draw: list[tuple[np.ndarray, np.ndarray]], n: int) -> list[np.ndarray]:
    """Each client's sorted sample indices from a draw's per-class (order, cut points)."""
    parts: list[list[np.ndarray]] = [[] for _ in range(n)]
    for idx, cuts in draw:
        for client, chunk in enumerate(np.split(idx, cuts)):
            parts[client].append(chunk)
    return [np.sort(np.concatenate(p)) for p in parts]


def _pathological(labels, n, cfg, rng):
    """c classes per client, classes dealt round-robin over a shuffled order."""
    classes = rng.permutation(np.unique(labels))
    if cfg.classes_per_client > len(classes):
        raise ConfigError(
            f"classes_per_client={cfg.classes_per_client} exceeds the {len(classes)} classes"
        )
    dealt = n * cfg.classes_per_client
    if dealt < len(classes):
        raise ConfigError(
            f"--partition pathological deals {n} clients × {cfg.classes_per_client} classes = "
            f"{dealt} of the {len(classes)} classes; the samples of the other "
            f"{len(classes) - dealt} would be dropped: give --classes-per-client >= "
            f"{math.ceil(len(classes) / n)} or at least {math.ceil(len(classes) / cfg.classes_per_client)} clients"
        )
    owners: dict[int, list[int]] = {int(c): [] for c in classes}
    for client in range(n):
        for j in range(cfg.classes_per_client):
            owners[int(classes[(client * cfg.classes_per_client + j) % len(classes)])].append(
                client
            )
    return _split_by_label(labels, owners, n, rng)


def _label_group(labels, n, cfg, rng):
    """Label-group shift (CL-FML's ℒ′ / ℒ″): client i draws from group i mod G.

    With ``group_overlap`` > 0 a client also draws that fraction of the next
    group's labels, so groups share some labels.
    """
    classes = rng.permutation(np.unique(labels))
    if cfg.groups > len(classes):
        raise ConfigError(f"groups={cfg.groups} exceeds the {len(classes)} classes")
    if cfg.groups > n:
        raise ConfigError(
            f"--groups {cfg.groups} > {n} clients: client i draws from group i mod "
            f"{cfg.groups}, so groups {n}..{cfg.groups - 1} would have no client and their "
            f"samples would be dropped: give --groups <= {n}"
        )
    groups = np.array_split(classes, cfg.groups)
    owners: dict[int, list[int]] = {int(c): [] for c in classes}
    for client in range(n):
        g = client % cfg.groups
        held = list(groups[g])
        extra = round(cfg.group_overlap * len(groups[(g + 1) % cfg.groups]))
        if cfg.groups > 1:
            held += list(groups[(g + 1) % cfg.groups][:extra])
        for c in held:
            owners[int(c)].append(client)
    return _split_by_label(labels, owners, n, rng)


def _quantity(labels, n, cfg, rng):
    """Quantity skew: client sizes ~ Dir(quantity_alpha), labels IID."""
    total = len(labels)
    if total < n * cfg.min_samples:
        raise ConfigError(f"{total} samples cannot give {n} clients {cfg.min_samples} each")
    spare = total - n * cfg.min_samples
    sizes = cfg.min_samples + np.floor(rng.dirichlet(np.full(n, cfg.quantity_alpha)) * spare)
    cuts = np.cumsum(sizes.astype(int))[:-1]
    return [np.sort(c) for c in np.split(rng.permutation(total), cuts)]


PARTITIONERS: dict[str, Partitioner] = {
    "iid": _iid,
    "dirichlet": _dirichlet,
    "pathological": _pathological,
    "label-group": _label_group,
    "quantity": _quantity,
}


#: Partitions that :func:`partition` repairs when a client falls short of
#: ``min_samples``. Only Dirichlet: iid and quantity never fall short, and
#: pathological / label-group clients are defined by the classes they hold,
#: which moving samples would break.
REPAIRABLE = ("dirichlet",)


def partition(
    labels: np.ndarray, num_clients: int, cfg: PartitionConfig, seed: int
) -> list[np.ndarray]:
    """Split sample indices over ``num_clients`` clients with ``cfg.partition``."""
    return partition_with_repairs(labels, num_clients, cfg, seed)[0]


def partition_with_repairs(
    labels: np.ndarray, num_clients: int, cfg: PartitionConfig, seed: int
) -> tuple[list[np.ndarray], int]:
    """:func:`partition`, plus how many samples :func:`repair_min_samples` moved.

    Raises:
        ConfigError: fewer than 2 clients, fewer than ``num_clients × min_samples``
            samples, or a partition outside :data:`REPAIRABLE` left a client short.
    """
    if num_clients < 2:
        raise ConfigError(f"clients must be >= 2, got {num_clients}")
    if len(labels) < num_clients * cfg.min_samples:
        raise ConfigError(
            f"{len(labels)} samples are too few for {num_clients} clients "
            f"of at least {cfg.min_samples} samples"
        )
    rng = np.random.default_rng([seed, 0x9A27])
    labels = np.asarray(labels)
    parts = PARTITIONERS[cfg.partition](labels, num_clients, cfg, rng)
    small = [i for i, p in enumerate(parts) if len(p) < cfg.min_samples]
    if not small:
        return parts, 0
    if cfg.partition not in REPAIRABLE:
        raise ConfigError(
            f"partition {cfg.partition!r} left client {small[0]} with {len(parts[small[0]])} samples "
            f"(< {cfg.min_samples}); use fewer clients or another partition"
        )
    parts, moves = repair_min_samples(parts, labels, cfg.min_samples)
    logger.warning(
        "%s partition: no draw gave all %d clients %d samples; moved %d samples to repair it",
        cfg.partition,
        num_clients,
        cfg.min_samples,
        moves,
    )
    return parts, moves


def repair_min_samples(
    parts: list[np.ndarray], labels: np.ndarray, min_samples: int
) -> tuple[list[np.ndarray], int]:
    """Move single samples from the largest client to the smallest until every
    client holds ``min_samples``; return the new parts and the number of moves.

    Each move is deterministic: the donor is the largest client and the
    receiver the smallest (lowest client id among equals); the sample moved is
    the donor's highest index of its most frequent label (lowest label among
    equals), so the donor's dominant class pays and its label skew, which the
    partition is meant to create, changes least. The number of moves is the
    clients' total shortfall. Needs ``sum(len(p)) >= len(parts) × min_samples``
    (then the donor always has more than ``min_samples``).
    """
    if sum(len(p) for p in parts) < len(parts) * min_samples:
        raise ConfigError(
            f"{sum(len(p) for p in parts)} samples are too few for {len(parts)} clients "
            f"of at least {min_samples} samples"
        )
    parts = list(parts)
    sizes = np.array([len(p) for p in parts])
    moves = 0
    while sizes.min() < min_samples:
        donor, receiver = int(np.argmax(sizes)), int(np.argmin(sizes))
        donor_labels = labels[parts[donor]]
        pos = np.flatnonzero(donor_labels == np.argmax(np.bincount(donor_labels)))[-1]
        sample = parts[donor][pos]
        parts[donor] = np.delete(parts[donor], pos)
        at = np.searchsorted(parts[receiver], sample)
        parts[receiver] = np.insert(parts[receiver], at, sample)
        sizes[donor] -= 1
        sizes[receiver] += 1
        moves += 1
    return parts, moves


def label_permutations(
    num_clients: int, num_classes: int, zeta: float, seed: int
) -> list[np.ndarray | None]:
    """AFML's ζ-diversity: round((1 − ζ)·N) clients, drawn at random, get their
    own random derangement of the classes (every class moves, so every label
    the client holds changes); the others get ``None`` (true labels)."""
    if num_classes < 2:
        raise ConfigError(f"zeta < 1 needs at least 2 classes to relabel, got {num_classes}")
    rng = np.random.default_rng([seed, 0x7E7A])
    permuted = rng.choice(num_clients, round((1.0 - zeta) * num_clients), replace=False)
    out: list[np.ndarray | None] = [None] * num_clients
    identity = np.arange(num_classes)
    for client in sorted(permuted.tolist()):
        perm = rng.permutation(num_classes)
        while (perm == identity).any():
            perm = rng.permutation(num_classes)
        out[client] = perm
    return out


@dataclass(frozen=True)
class PartitionResult:
    """Every client's split, plus how the partition came about.

    Attributes:
        splits: one :class:`ClientSplit` per client, in client order.
        repair_moves: samples :func:`repair_min_samples` moved so that every
            client got ``min_samples`` (0 when the draw needed no repair or the
            partition was imported).
    """

    splits: list[ClientSplit]
    repair_moves: int = 0


def make_partition(
    labels: np.ndarray, num_clients: int, cfg: PartitionConfig, seed: int
) -> PartitionResult:
    """Partition (or import ``cfg.partition_file``), split each client's share,
    then relabel; deterministic in ``seed``.

    With ``cfg.zeta < 1`` some splits carry a label permutation
    (:func:`label_permutations`), imported partitions included.

    Raises:
        ConfigError: an impossible partition, a bad partition file, or a file
            whose client count differs from ``num_clients``.
    """
    labels = np.asarray(labels)
    if cfg.partition_file is None:
        parts, moves = partition_with_repairs(labels, num_clients, cfg, seed)
        splits = [split_client(p, labels, cfg, client_seed(seed, i)) for i, p in enumerate(parts)]
    else:
        splits, moves = load_partition_file(cfg.partition_file, labels, cfg, seed), 0
        if len(splits) != num_clients:
            raise ConfigError(
                f"partition file {cfg.partition_file} holds {len(splits)} clients, "
                f"but the run needs {num_clients}"
            )
    if cfg.zeta < 1.0:
        perms = label_permutations(num_clients, int(np.max(labels)) + 1, cfg.zeta, seed)
        splits = [replace(s, label_permutation=p) for s, p in zip(splits, perms, strict=True)]
    return PartitionResult(splits, moves)


def make_splits(
    labels: np.ndarray, num_clients: int, cfg: PartitionConfig, seed: int
) -> list[ClientSplit]:
    """The splits of :func:`make_partition`, for callers that need nothing else."""
    return make_partition(labels, num_clients, cfg, seed).splits
