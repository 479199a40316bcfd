"""MedMNIST v3 datasets from the ``medmnist`` package's npz files.

medmnist 3.0 keeps one file per dataset and size in its root: ``<flag>.npz``
for 28 px and ``<flag>_<size>.npz`` otherwise, holding ``{train,val,test}_images``
(uint8; ``(n, H, W)`` grayscale, ``(n, H, W, 3)`` RGB, ``(n, D, H, W)`` 3-D) and
``{train,val,test}_labels`` (``(n, 1)`` for single-label tasks). It only tests
that the file exists; ``download=True`` fetches it md5-checked.
"""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import numpy as np
from medmnist import dataset as medmnist_dataset
from medmnist.info import INFO

from dfml.data.dataset import ArrayDataset
from dfml.data.files import DOWNLOAD_ERRORS, download_failed
from dfml.errors import ConfigError, DataNotFoundError

logger = logging.getLogger(__name__)

MEDMNIST_FLAGS: tuple[str, ...] = tuple(INFO)
_SPLITS = ("train", "val", "test")


def medmnist_filename(flag: str, size: int = 28) -> str:
    """The npz name medmnist reads (``MedMNIST.__init__``: ``f"{flag}{size_flag}.npz"``)."""
    return f"{flag}.npz" if size == 28 else f"{flag}_{size}.npz"


def load_medmnist(flag: str, root: str | Path, download: bool, size: int = 28) -> ArrayDataset:
    """Load MedMNIST ``flag`` with train, val and test pooled (in that order).

    Images stay uint8 (``scale=255``), channels first: ``(n, 1, H, W)`` grayscale,
    ``(n, 3, H, W)`` RGB, ``(n, 1, D, H, W)`` for the 3-D volumes.

    Raises:
        ConfigError: unknown flag, unsupported size, or a multi-label task (not
            single-label classification).
        DataNotFoundError: the npz file is missing and ``download`` is False, its
            download failed, or it cannot be read (each one line naming it).
    """
    if flag not in INFO:
        allowed = ", ".join(MEDMNIST_FLAGS)
        raise ConfigError(f"unknown MedMNIST dataset {flag!r}; allowed: {allowed}")
    info = INFO[flag]
    if info["task"].startswith("multi-label"):
        raise ConfigError(
            f"medmnist:{flag} is a {info['task']} task (several labels per image), "
            "not single-label classification"
        )
    cls = getattr(medmnist_dataset, info["python_class"])
    if size not in cls.available_sizes:
        raise ConfigError(
            f"medmnist:{flag} comes in sizes {', '.join(map(str, cls.available_sizes))}, not {size}"
        )
    root = Path(root).expanduser()
    path = root / medmnist_filename(flag, size)
    if download:
        try:
            root.mkdir(parents=True, exist_ok=True)  # medmnist refuses a missing root
        except OSError as err:
            raise DataNotFoundError(
                f"--data-root {str(root)!r} cannot be created ({err})"
            ) from None
    elif not path.is_file():
        raise DataNotFoundError(
            f"dataset 'medmnist:{flag}' not found: expected {path}; pass --download to fetch it"
        )

    if download and not path.is_file():
        url = info[f"url{'' if size == 28 else f'_{size}'}"]
        try:
            # medmnist wraps any failure in its own many-line RuntimeError.
            cls(split="train", root=str(root), download=True, size=size)
        except (*DOWNLOAD_ERRORS, ValueError, KeyError) as err:
            if isinstance(err.__context__, KeyboardInterrupt):
                raise KeyboardInterrupt from None  # medmnist's bare except wraps Ctrl-C too
            cause = err.__context__ if isinstance(err.__context__, DOWNLOAD_ERRORS) else err
            raise download_failed(f"medmnist:{flag}", [url], cause, root) from None
    xs, ys = [], []
    for split in _SPLITS:
        try:
            ds = cls(split=split, root=str(root), download=False, size=size)
            xs.append(np.asarray(ds.imgs))
            ys.append(np.asarray(ds.labels))
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile) as err:
            raise DataNotFoundError(
                f"dataset 'medmnist:{flag}': {path} cannot be read ({type(err).__name__}: "
                f"{err}); replace it, or delete it and pass --download"
            ) from None
    x, y = np.concatenate(xs), np.concatenate(ys)

    num_classes = len(info["label"])
    if y.ndim != 2 or y.shape[1] != 1:
        raise DataNotFoundError(f"{path}: expected labels of shape (n, 1), got {y.shape}")
    y = y.reshape(-1).astype(np.int64)
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DataNotFoundError(
            f"{path}: labels span [{y.min()}, {y.max()}], expected [0, {num_classes})"
        )
    x = _channels_first(x, info["n_channels"], path)
    logger.info(
        "loaded medmnist:%s: %d samples, shape %s, from %s", flag, len(y), x.shape[1:], path
    )
    return ArrayDataset(f"medmnist:{flag}", x, y, num_classes, scale=255.0)


def _channels_first(x: np.ndarray, n_channels: int, path: Path) -> np.ndarray:
    """Grayscale gains a channel axis; RGB moves its trailing channel axis first."""
    if x.dtype != np.uint8:
        raise DataNotFoundError(f"{path}: expected uint8 images, got {x.dtype}")
    if n_channels == 1:
        return x[:, None]
    if x.shape[-1] != n_channels:
        raise DataNotFoundError(f"{path}: expected {n_channels} trailing channels, got {x.shape}")
    return np.ascontiguousarray(np.moveaxis(x, -1, 1))
