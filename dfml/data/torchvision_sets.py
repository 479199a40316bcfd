"""MNIST, Fashion-MNIST, EMNIST (balanced) and CIFAR-10/100 from torchvision's on-disk layout.

Files are found where torchvision puts them under ``root`` (so a directory that
torchvision already populated is reused as is):

* ``<root>/MNIST/raw/``, ``<root>/FashionMNIST/raw/``, ``<root>/EMNIST/raw/``:
  the *decompressed* idx files. torchvision 0.29 only tests that they exist and
  reads them with a plain ``open`` (no md5, no gzip); the ``.gz`` archives are
  only what ``download`` fetches and extracts.
* ``<root>/cifar-10-batches-py/``, ``<root>/cifar-100-python/``: the python
  pickle batches.

Arrays are taken from the datasets' ``.data`` / ``.targets`` (or the pickle
batches) in one piece, never through per-sample transforms, so loading the
70,000 MNIST images takes well under a second.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from torchvision.datasets import CIFAR10, CIFAR100, EMNIST, MNIST, FashionMNIST
from torchvision.datasets.utils import download_and_extract_archive

from dfml.data.dataset import ArrayDataset
from dfml.data.files import DOWNLOAD_ERRORS, check_idx_file, download_failed
from dfml.errors import DataNotFoundError
from dfml.untrusted import NUMPY_ARRAYS, safe_loads

logger = logging.getLogger(__name__)

_EMNIST_SPLIT = "balanced"


@dataclass(frozen=True)
class _IdxSet:
    """An MNIST-family dataset: torchvision class, its idx files, its classes."""

    cls: type[MNIST]
    files: tuple[str, ...]
    num_classes: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    # EMNIST's idx files store every image transposed (column-major).
    transpose: bool = False


def _mnist_files(cls: type[MNIST]) -> tuple[str, ...]:
    # torchvision checks for the resource names without ".gz" (MNIST._check_exists).
    return tuple(name.removesuffix(".gz") for name, _ in cls.resources)


def _emnist_files(split: str) -> tuple[str, ...]:
    # Mirrors EMNIST._file_prefix / images_file / labels_file.
    return tuple(
        f"emnist-{split}-{part}-{kind}-ubyte"
        for part in ("train", "test")
        for kind in ("images-idx3", "labels-idx1")
    )


_IDX_SETS: dict[str, _IdxSet] = {
    "mnist": _IdxSet(MNIST, _mnist_files(MNIST), len(MNIST.classes)),
    "fashion-mnist": _IdxSet(FashionMNIST, _mnist_files(FashionMNIST), len(FashionMNIST.classes)),
    "emnist": _IdxSet(
        EMNIST,
        _emnist_files(_EMNIST_SPLIT),
        len(EMNIST.classes_split_dict[_EMNIST_SPLIT]),
        kwargs={"split": _EMNIST_SPLIT},
        transpose=True,
    ),
}

_CIFAR_SETS: dict[str, tuple[type[CIFAR10], int]] = {
    "cifar10": (CIFAR10, 10),
    "cifar100": (CIFAR100, 100),
}

TORCHVISION_DATASETS: tuple[str, ...] = (*_IDX_SETS, *_CIFAR_SETS)


def load_torchvision(name: str, root: str | Path, download: bool) -> ArrayDataset:
    """Load ``name`` (one of :data:`TORCHVISION_DATASETS`) with train and test pooled.

    Returns uint8 images ``(n, 1, 28, 28)`` (MNIST family) or ``(n, 3, 32, 32)``
    (CIFAR) with ``scale=255``; training samples come first.

    Raises:
        DataNotFoundError: files missing under ``root`` and ``download`` is False,
            a download that failed, or a damaged file (each one line naming it).
        KeyError: ``name`` is not a torchvision dataset (the registry checks names).
    """
    root = Path(root).expanduser()
    if name in _IDX_SETS:
        x, y, num_classes = _load_idx_set(name, root, download)
    else:
        x, y, num_classes = _load_cifar(name, root, download)
    _check_labels(name, y, num_classes)
    logger.info("loaded %s: %d samples of shape %s from %s", name, len(y), x.shape[1:], root)
    return ArrayDataset(name, x, y, num_classes, scale=255.0)


def _load_idx_set(name: str, root: Path, download: bool) -> tuple[np.ndarray, np.ndarray, int]:
    spec = _IDX_SETS[name]
    raw = root / spec.cls.__name__ / "raw"
    if download and not all((raw / f).is_file() for f in spec.files):
        try:
            spec.cls(str(root), train=True, download=True, **spec.kwargs)
        except DOWNLOAD_ERRORS as err:
            raise download_failed(name, _idx_urls(spec), err, raw) from None
        except (AssertionError, ValueError, TypeError):
            pass  # the files arrived but do not read: _check_idx_files names the bad one
    _check_idx_files(name, raw, spec.files)
    xs, ys = [], []
    for train in (True, False):
        try:
            ds = spec.cls(str(root), train=train, download=False, **spec.kwargs)
        except RuntimeError as err:
            # Only torchvision's "Dataset not found. You can use download=True ..."
            # is a missing-files error; anything else propagates untouched.
            if not str(err).startswith("Dataset not found"):
                raise
            raise _not_found(name, raw, spec.files) from err
        except (AssertionError, ValueError, TypeError, OSError) as err:
            raise DataNotFoundError(
                f"dataset {name!r}: the files in {raw}/ cannot be read ({type(err).__name__}: "
                f"{err}); replace them, or delete them and pass --download"
            ) from None
        xs.append(ds.data.numpy())
        ys.append(ds.targets.numpy())
    x = np.concatenate(xs)
    if spec.transpose:
        # EMNIST images are stored transposed relative to MNIST; swap H and W so
        # that characters are upright (the usual fix, equal to flip + rotate).
        x = np.ascontiguousarray(x.transpose(0, 2, 1))
    return x[:, None, :, :], np.concatenate(ys).astype(np.int64), spec.num_classes


def _idx_urls(spec: _IdxSet) -> list[str]:
    """Where torchvision downloads ``spec`` from (MNIST's mirrors, EMNIST's one URL)."""
    url = getattr(spec.cls, "url", None)  # EMNIST: one zip (it inherits MNIST's mirrors)
    if url:
        return [url]
    return [f"{m}{f}" for m in spec.cls.mirrors for f, _ in spec.cls.resources]


def _check_idx_files(name: str, raw: Path, files: tuple[str, ...]) -> None:
    """Each idx file present: a sound header and size; images and labels agree in number.

    torchvision reads these files with bare ``assert``s (an AssertionError
    naming no file); this names the file and what is wrong.
    """
    for images in (f for f in files if "images-idx3" in f):
        labels = images.replace("images-idx3", "labels-idx1")
        if not ((raw / images).is_file() and (raw / labels).is_file()):
            continue  # missing files: _not_found lists them
        n_images = check_idx_file(name, raw / images, 3, (28, 28))
        n_labels = check_idx_file(name, raw / labels, 1)
        if n_images != n_labels:
            raise DataNotFoundError(
                f"dataset {name!r}: {raw / images} holds {n_images} images but "
                f"{raw / labels} {n_labels} labels; replace them, or delete them and pass --download"
            )


def _load_cifar(name: str, root: Path, download: bool) -> tuple[np.ndarray, np.ndarray, int]:
    """Read the CIFAR pickle batches directly, in exactly torchvision's format.

    torchvision's ``CIFAR10(...)`` refuses any batch whose md5 differs from the
    official archive's (``_check_integrity``), so it could only ever be tested
    against the full 170 MB download. Reading the batches here keeps the same
    files, keys (``data``; ``labels`` or ``fine_labels``) and row layout, and
    leaves integrity to the md5-checked download of the archive.
    """
    cls, num_classes = _CIFAR_SETS[name]
    folder = root / cls.base_folder
    files = tuple(filename for filename, _ in cls.train_list + cls.test_list)
    if download and not all((folder / f).is_file() for f in files):
        # What CIFAR10.download() does: fetch (md5-checked) and extract the tarball.
        try:
            download_and_extract_archive(cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5)
        except DOWNLOAD_ERRORS as err:
            raise download_failed(name, [cls.url], err, folder) from None
    if not all((folder / f).is_file() for f in files):
        raise _not_found(name, folder, files)
    batches = [_read_cifar_batch(folder / f) for f in files]
    x = np.concatenate([b[0] for b in batches])
    y = np.concatenate([b[1] for b in batches])
    return x, y, num_classes


#: What a CIFAR python batch may build: a dict of numpy arrays, lists and
#: strings (``_codecs.encode`` is how protocol 2 writes bytes from Python 3).
CIFAR_TYPES = NUMPY_ARRAYS | {("_codecs", "encode")}


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch: rows of 3072 bytes (R, G, B planes of 32×32) are already CHW.

    The batch is a pickle from ``--data-root``: it is read with a restricted
    unpickler (:func:`~dfml.untrusted.safe_loads`) that builds only
    :data:`CIFAR_TYPES`, so a crafted file is refused without running anything.
    """
    try:
        entry = safe_loads(path.read_bytes(), CIFAR_TYPES, encoding="latin1")
    except Exception as err:  # a damaged pickle can raise almost anything
        raise DataNotFoundError(
            f"{path} is not a CIFAR python batch ({type(err).__name__}: {err})"
        ) from None
    # Same keys as CIFAR10.__init__: CIFAR-10 has "labels", CIFAR-100 "fine_labels".
    label_key = "labels" if isinstance(entry, dict) and "labels" in entry else "fine_labels"
    if not isinstance(entry, dict) or "data" not in entry or label_key not in entry:
        raise DataNotFoundError(f"{path} is not a CIFAR python batch (needs 'data' and labels)")
    data = np.asarray(entry["data"])
    labels = np.asarray(entry[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DataNotFoundError(
            f"{path}: 'data' must be uint8 rows of 3072 bytes, got {data.dtype} {data.shape}"
        )
    if len(labels) != len(data):
        raise DataNotFoundError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32), labels


def _not_found(name: str, folder: Path, files: tuple[str, ...]) -> DataNotFoundError:
    """One line naming the dataset, the files and the directory searched."""
    missing = [f for f in files if not (folder / f).is_file()]
    hint = "pass --download to fetch them"
    if missing and all((folder / f"{f}.gz").is_file() for f in missing):
        hint = "only the .gz archives are there: gunzip them or pass --download to extract them"
    partial = f" (missing: {', '.join(missing)})" if 0 < len(missing) < len(files) else ""
    return DataNotFoundError(
        f"dataset {name!r} not found: expected {', '.join(files)} in {folder}/{partial}; {hint}"
    )


def _check_labels(name: str, y: np.ndarray, num_classes: int) -> None:
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        raise DataNotFoundError(
            f"dataset {name!r}: labels span [{y.min()}, {y.max()}], expected [0, {num_classes}); "
            "the files are not this dataset"
        )
