"""Typed, validated configuration of the data side of an experiment."""

from __future__ import annotations

import math
from dataclasses import dataclass

from dfml.errors import ConfigError

PARTITIONS = ("iid", "dirichlet", "pathological", "label-group", "quantity")


@dataclass(frozen=True)
class DataConfig:
    """Which dataset to load and from where.

    ``data_root`` is the directory real loaders read; ``download`` lets torchvision /
    medmnist fetch missing files (off by default: runs never touch the network
    unless asked).

    Attributes:
        dataset: the dataset name; ``medmnist:<name>`` for a MedMNIST task.
        data_root: directory the file-based datasets are read from (and downloaded to).
        download: let torchvision / medmnist fetch missing files.
        synthetic_samples: ``synthetic`` only: the number of samples.
        synthetic_classes: ``synthetic`` only: the number of classes.
        synthetic_shape: ``synthetic`` only: the shape of one sample (``1x28x28``).
    """

    dataset: str = "digits"
    data_root: str | None = None
    download: bool = False
    synthetic_samples: int = 2000
    synthetic_classes: int = 10
    synthetic_shape: tuple[int, ...] = (1, 28, 28)

    def __post_init__(self) -> None:
        if self.synthetic_samples < 1:
            raise ConfigError(f"synthetic_samples must be >= 1, got {self.synthetic_samples}")
        if self.synthetic_classes < 2:
            raise ConfigError(f"synthetic_classes must be >= 2, got {self.synthetic_classes}")
        if not self.synthetic_shape or any(int(s) < 1 for s in self.synthetic_shape):
            raise ConfigError(f"synthetic_shape must be positive ints, got {self.synthetic_shape}")


@dataclass(frozen=True)
class PartitionConfig:
    """How samples are spread over clients, and each client's local splits.

    Attributes:
        partition: one of :data:`PARTITIONS`.
        alpha: Dirichlet concentration (label skew; small = more skewed).
        classes_per_client: pathological partition, ``c`` classes per client.
        groups: label-group shift, number of disjoint label groups (ℒ′, ℒ″, ...).
        group_overlap: label-group shift, fraction of each group's labels that a
            client also draws from the next group.
        quantity_alpha: quantity skew, Dirichlet concentration over client sizes.
        query_fraction: share of a client's training samples that forms the
            label-balanced query set D^Q (disjoint from the meta-train set D^M).
        test_fraction: share of a client's samples held out as its local test set.
        min_samples: every client gets at least this many samples.
        zeta: AFML's ζ, the share of clients that keep the true labels; the other
            1 − ζ relabel their classes by a client-specific permutation
            (mutually exclusive tasks). 1 means no relabelling.
        partition_file: a ``partition.parquet`` (as a run writes it) or a JSON
            file to use instead of drawing a partition, so that runs can share
            exact clients (:mod:`dfml.data.partition_file`). ``partition`` and
            its knobs, ``test_fraction`` and ``min_samples`` are then unused;
            ``query_fraction`` splits a JSON client's ``train`` when it gives
            no ``query``; ``zeta`` still applies.
    """

    partition: str = "iid"
    alpha: float = 0.5
    classes_per_client: int = 2
    groups: int = 2
    group_overlap: float = 0.0
    quantity_alpha: float = 1.0
    query_fraction: float = 0.2
    test_fraction: float = 0.2
    min_samples: int = 10
    zeta: float = 1.0
    partition_file: str | None = None

    def __post_init__(self) -> None:
        if self.partition not in PARTITIONS:
            raise ConfigError(
                f"unknown partition {self.partition!r}; allowed: {', '.join(PARTITIONS)}"
            )
        for name in ("alpha", "quantity_alpha"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive finite number, got {value}")
        if self.classes_per_client < 1:
            raise ConfigError(f"classes_per_client must be >= 1, got {self.classes_per_client}")
        if self.groups < 1:
            raise ConfigError(f"groups must be >= 1, got {self.groups}")
        if not 0.0 <= self.group_overlap < 1.0:
            raise ConfigError(f"group_overlap must be in [0, 1), got {self.group_overlap}")
        for name in ("query_fraction", "test_fraction"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ConfigError(f"{name} must be in (0, 1), got {value}")
        if self.query_fraction + self.test_fraction >= 1.0:
            raise ConfigError("query_fraction + test_fraction must be < 1")
        if self.min_samples < 3:
            raise ConfigError(f"min_samples must be >= 3, got {self.min_samples}")
        if not 0.0 <= self.zeta <= 1.0:
            raise ConfigError(f"zeta must be in [0, 1], got {self.zeta}")
        if self.partition_file is not None and not str(self.partition_file).strip():
            raise ConfigError("partition_file must be a path, got an empty string")
