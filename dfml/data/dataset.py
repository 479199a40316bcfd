"""The in-memory dataset every loader returns.

Images stay in their stored dtype (uint8 for image datasets) so that an actor
holding a large dataset pays one byte per pixel; :meth:`ArrayDataset.features`
converts only the rows a client asks for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class ArrayDataset:
    """All samples of a dataset (train and test splits pooled).

    Federated experiments partition the pooled samples across clients and each
    client keeps its own meta-train / query / test split, so the library's own
    train/test division is not used.

    Attributes:
        name: registry name, e.g. ``"mnist"`` or ``"medmnist:pathmnist"``.
        x: samples, shape ``(n, *input_shape)``; uint8 images or float32 features.
        y: int64 labels in ``[0, num_classes)``.
        num_classes: number of classes.
        scale: ``features`` divides by this (255 for uint8 images).
    """

    name: str
    x: np.ndarray
    y: np.ndarray
    num_classes: int
    scale: float = 1.0

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"{self.name}: {len(self.x)} samples but {len(self.y)} labels")
        if self.y.ndim != 1:
            raise ValueError(f"{self.name}: labels must be 1-D, got shape {self.y.shape}")

    def __len__(self) -> int:
        return len(self.y)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x.shape[1:])

    def features(self, indices: np.ndarray) -> np.ndarray:
        """Float32 features of ``indices`` scaled to roughly [0, 1]."""
        rows = self.x[indices].astype(np.float32, copy=False)  # indexing has copied already
        if self.scale != 1.0:
            rows /= np.float32(self.scale)
        return rows

    def labels(self, indices: np.ndarray) -> np.ndarray:
        return self.y[indices]
