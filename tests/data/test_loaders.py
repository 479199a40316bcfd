"""Real loaders on tiny datasets written in each library's own on-disk format."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import subprocess
from pathlib import Path

import numpy as np
import pytest

from dfml.data.config import DataConfig
from dfml.data.registry import load_dataset
from dfml.errors import ConfigError, DataNotFoundError


# torchvision and medmnist take ~4 s to import; imported when a test first loads,
# not when every pytest worker collects this module.
def load_torchvision(*args, **kwargs):
    from dfml.data.torchvision_sets import load_torchvision as load

    return load(*args, **kwargs)


def load_medmnist(*args, **kwargs):
    from dfml.data.medmnist_sets import load_medmnist as load

    return load(*args, **kwargs)


N_TRAIN, N_TEST = 6, 4
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


def _idx_bytes(array: np.ndarray) -> bytes:
    """idx format: big-endian magic (0, 0, type 0x08 = ubyte, ndim), dims, data."""
    header = struct.pack(">I", 0x0800 | array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def _images_labels(rng: np.random.Generator, n: int, shape: tuple[int, ...], classes: int):
    return rng.integers(0, 256, (n, *shape), dtype=np.uint8), rng.integers(0, classes, n)


def _write_idx_set(raw: Path, names: dict[str, str], seed: int, classes: int, gz: bool = False):
    """Write train/test idx files; ``names`` maps train/test prefix → file prefix."""
    raw.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    out = {}
    for part, n in (("train", N_TRAIN), ("test", N_TEST)):
        x, y = _images_labels(rng, n, (28, 28), classes)
        for suffix, array in (("images-idx3-ubyte", x), ("labels-idx1-ubyte", y)):
            path = raw / f"{names[part]}-{suffix}"
            if gz:
                path.with_name(path.name + ".gz").write_bytes(gzip.compress(_idx_bytes(array)))
            else:
                path.write_bytes(_idx_bytes(array))
        out[part] = (x, y)
    return out


@pytest.mark.parametrize(
    ("name", "folder"), [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST")]
)
def test_mnist_family_round_trips(tmp_path: Path, name: str, folder: str) -> None:
    written = _write_idx_set(tmp_path / folder / "raw", {"train": "train", "test": "t10k"}, 0, 10)
    ds = load_torchvision(name, tmp_path, download=False)
    assert ds.name == name and ds.num_classes == 10 and ds.scale == 255.0
    assert ds.x.dtype == np.uint8 and ds.x.shape == (N_TRAIN + N_TEST, 1, 28, 28)
    assert ds.y.dtype == np.int64
    x_written = np.concatenate([written["train"][0], written["test"][0]])
    np.testing.assert_array_equal(ds.x[:, 0], x_written)
    np.testing.assert_array_equal(ds.y, np.concatenate([written["train"][1], written["test"][1]]))


def test_emnist_balanced_is_transposed_upright(tmp_path: Path) -> None:
    prefixes = {"train": "emnist-balanced-train", "test": "emnist-balanced-test"}
    written = _write_idx_set(tmp_path / "EMNIST" / "raw", prefixes, 1, 47)
    ds = load_torchvision("emnist", tmp_path, download=False)
    assert ds.num_classes == 47 and ds.x.shape == (N_TRAIN + N_TEST, 1, 28, 28)
    stored = np.concatenate([written["train"][0], written["test"][0]])
    # The files hold each image transposed; the loader swaps H and W back.
    np.testing.assert_array_equal(ds.x[:, 0], stored.transpose(0, 2, 1))
    assert ds.x.flags.c_contiguous
    np.testing.assert_array_equal(ds.y, np.concatenate([written["train"][1], written["test"][1]]))


def test_mnist_missing_files_names_files_and_directory(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as info:
        load_torchvision("mnist", tmp_path, download=False)
    message = str(info.value)
    assert "\n" not in message and "'mnist'" in message and "--download" in message
    assert all(f in message for f in MNIST_FILES)
    assert str(tmp_path / "MNIST" / "raw") in message
    assert isinstance(info.value.__cause__, RuntimeError)


def test_mnist_gz_archives_alone_are_not_read(tmp_path: Path) -> None:
    # torchvision opens the decompressed files only; the .gz are download artifacts.
    _write_idx_set(tmp_path / "MNIST" / "raw", {"train": "train", "test": "t10k"}, 0, 10, gz=True)
    with pytest.raises(DataNotFoundError, match="gunzip"):
        load_torchvision("mnist", tmp_path, download=False)


def test_emnist_missing_test_split(tmp_path: Path) -> None:
    raw = tmp_path / "EMNIST" / "raw"
    _write_idx_set(raw, {"train": "emnist-balanced-train", "test": "emnist-balanced-test"}, 1, 47)
    (raw / "emnist-balanced-test-labels-idx1-ubyte").unlink()
    missing = r"missing: emnist-balanced-test-labels-idx1-ubyte\)"
    with pytest.raises(DataNotFoundError, match=missing):
        load_torchvision("emnist", tmp_path, download=False)


def _write_cifar(
    folder: Path, batches: list[str], meta: str, label_key: str, classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Pickle batches like the official archive: ``data`` rows of 3072 bytes, labels list."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for batch in batches:
        x, y = _images_labels(rng, 2, (3, 32, 32), classes)
        entry = {"batch_label": batch, "data": x.reshape(2, -1), label_key: [int(v) for v in y]}
        (folder / batch).write_bytes(pickle.dumps(entry, protocol=2))
        xs.append(x)
        ys.append(y)
    names = [f"class{i}" for i in range(classes)]
    (folder / meta).write_bytes(pickle.dumps({"label_names": names, "fine_label_names": names}))
    return np.concatenate(xs), np.concatenate(ys)


CIFAR_CASES = [
    (
        "cifar10",
        "cifar-10-batches-py",
        [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
        "batches.meta",
        "labels",
        10,
    ),
    ("cifar100", "cifar-100-python", ["train", "test"], "meta", "fine_labels", 100),
]


@pytest.mark.parametrize(("name", "folder", "batches", "meta", "label_key", "classes"), CIFAR_CASES)
def test_cifar_round_trips(tmp_path, name, folder, batches, meta, label_key, classes) -> None:
    x, y = _write_cifar(tmp_path / folder, batches, meta, label_key, classes, 2)
    ds = load_torchvision(name, tmp_path, download=False)
    assert ds.num_classes == classes and ds.scale == 255.0
    assert ds.x.dtype == np.uint8 and ds.x.shape == (len(x), 3, 32, 32)
    assert ds.y.dtype == np.int64
    np.testing.assert_array_equal(ds.x, x)
    np.testing.assert_array_equal(ds.y, y)


def test_torchvision_cifar_rejects_files_without_official_md5(tmp_path: Path) -> None:
    # Why load_torchvision reads the batches itself: torchvision md5-checks them.
    _write_cifar(tmp_path / CIFAR_CASES[0][1], *CIFAR_CASES[0][2:], 2)
    from torchvision.datasets import CIFAR10

    with pytest.raises(RuntimeError, match="not found or corrupted"):
        CIFAR10(str(tmp_path), train=True, download=False)


@pytest.mark.parametrize(
    ("name", "folder", "first"),
    [
        ("cifar10", "cifar-10-batches-py", "data_batch_1"),
        ("cifar100", "cifar-100-python", "train"),
    ],
)
def test_cifar_missing_files(tmp_path: Path, name: str, folder: str, first: str) -> None:
    with pytest.raises(DataNotFoundError) as info:
        load_torchvision(name, tmp_path, download=False)
    message = str(info.value)
    assert "\n" not in message and first in message and "--download" in message
    assert str(tmp_path / folder) in message


def test_cifar_rejects_a_file_that_is_not_a_batch(tmp_path: Path) -> None:
    _write_cifar(tmp_path / "cifar-100-python", ["train", "test"], "meta", "fine_labels", 100, 3)
    (tmp_path / "cifar-100-python" / "test").write_bytes(b"not a pickle")
    with pytest.raises(DataNotFoundError, match="not a CIFAR python batch"):
        load_torchvision("cifar100", tmp_path, download=False)


def _write_medmnist(path: Path, shape: tuple[int, ...], classes: int, seed: int):
    rng = np.random.default_rng(seed)
    arrays, xs, ys = {}, [], []
    for split, n in (("train", 5), ("val", 2), ("test", 3)):
        x = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
        y = rng.integers(0, classes, (n, 1)).astype(np.uint8)
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = x, y
        xs.append(x)
        ys.append(y)
    np.savez_compressed(path, **arrays)
    return np.concatenate(xs), np.concatenate(ys)


def test_medmnist_rgb_round_trips(tmp_path: Path) -> None:
    x, y = _write_medmnist(tmp_path / "pathmnist.npz", (28, 28, 3), 9, 4)
    ds = load_medmnist("pathmnist", tmp_path, download=False)
    assert ds.name == "medmnist:pathmnist" and ds.num_classes == 9 and ds.scale == 255.0
    assert ds.x.dtype == np.uint8 and ds.x.shape == (10, 3, 28, 28)
    assert ds.y.dtype == np.int64 and ds.y.shape == (10,)
    np.testing.assert_array_equal(ds.x, x.transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(ds.y, y[:, 0])


def test_medmnist_grayscale_other_size_round_trips(tmp_path: Path) -> None:
    x, y = _write_medmnist(tmp_path / "octmnist_64.npz", (64, 64), 4, 5)
    ds = load_medmnist("octmnist", tmp_path, download=False, size=64)
    assert ds.num_classes == 4 and ds.x.shape == (10, 1, 64, 64)
    np.testing.assert_array_equal(ds.x[:, 0], x)
    np.testing.assert_array_equal(ds.y, y[:, 0])


def test_medmnist_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError) as info:
        load_medmnist("octmnist", tmp_path, download=False)
    message = str(info.value)
    assert str(tmp_path / "octmnist.npz") in message and "--download" in message


def test_medmnist_rejects_bad_flags_sizes_and_multi_label(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown MedMNIST dataset 'nope'; allowed: .*pathmnist"):
        load_medmnist("nope", tmp_path, download=False)
    with pytest.raises(ConfigError, match="not single-label"):
        load_medmnist("chestmnist", tmp_path, download=False)
    with pytest.raises(ConfigError, match="sizes 28, 64, 128, 224, not 32"):
        load_medmnist("pathmnist", tmp_path, download=False, size=32)


def test_registry_dispatches_to_the_real_loaders(tmp_path: Path) -> None:
    _write_idx_set(tmp_path / "MNIST" / "raw", {"train": "train", "test": "t10k"}, 0, 10)
    _write_medmnist(tmp_path / "pathmnist.npz", (28, 28, 3), 9, 4)
    mnist = load_dataset(DataConfig(dataset="mnist", data_root=str(tmp_path)))
    path = load_dataset(DataConfig(dataset="medmnist:pathmnist", data_root=str(tmp_path)))
    assert (mnist.name, len(mnist)) == ("mnist", N_TRAIN + N_TEST)
    assert (path.name, path.input_shape) == ("medmnist:pathmnist", (3, 28, 28))
    with pytest.raises(ConfigError, match="--data-root"):
        load_dataset(DataConfig(dataset="cifar10"))


class _Payload:
    """What a crafted batch pickles: unpickling it would run ``command``."""

    def __init__(self, call, command) -> None:
        self.call, self.command = call, command

    def __reduce__(self):
        return (self.call, self.command)


@pytest.mark.parametrize(
    "payload",
    [
        lambda m: _Payload(os.system, (f"touch {m}",)),
        lambda m: _Payload(subprocess.Popen, (["touch", str(m)],)),
        lambda m: {"data": _Payload(os.system, (f"touch {m}",)), "labels": [0]},
    ],
)
def test_a_crafted_cifar_batch_is_refused_without_running_it(capsys, tmp_path, payload) -> None:
    """The batches are pickles from --data-root: read by the CLI, none may run code."""
    from dfml.launch.cli import main

    folder = tmp_path / "cifar-10-batches-py"
    _write_cifar(folder, *CIFAR_CASES[0][2:], 2)
    marker = tmp_path / "pwned"
    (folder / "data_batch_3").write_bytes(pickle.dumps(payload(marker), protocol=2))
    argv = [
        "run",
        "--dataset",
        "cifar10",
        "--data-root",
        str(tmp_path),
        "--out",
        str(tmp_path / "o"),
    ]
    assert main([*argv, "--progress", "false", "--dashboard", "false"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{folder / 'data_batch_3'} is not a CIFAR python batch" in err[0]
    assert "refused to build" in err[0]
    assert not marker.exists(), "reading the batch ran the file's code"
