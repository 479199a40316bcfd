"""A cohort's samples: one gather, each client's parts as slices of it."""

from __future__ import annotations

import numpy as np
import torch

from dfml.actors.state import ClientData, cohort_data
from dfml.data.builtin import make_synthetic
from dfml.data.split import ClientSplit


def test_cohort_data_gives_each_client_its_own_rows_as_shared_slices():
    dataset = make_synthetic(60, 5, (4,), seed=2)
    splits = {
        7: ClientSplit(np.array([3, 1, 8]), np.array([20]), np.array([5, 6])),
        2: ClientSplit(np.array([0]), np.array([], np.int64), np.array([9])),
        4: ClientSplit(  # permuted labels (AFML's ζ-diversity)
            np.array([30, 31]),
            np.array([32]),
            np.array([33]),
            label_permutation=np.array([4, 3, 2, 1, 0]),
        ),
    }
    data = cohort_data(dataset, splits, torch.device("cpu"))
    assert sorted(data) == [2, 4, 7]
    for cid, split in splits.items():
        d = data[cid]
        for part, idx in (("meta", split.meta_train), ("query", split.query), ("test", split.test)):
            np.testing.assert_array_equal(getattr(d, f"x_{part}").numpy(), dataset.features(idx))
            want = split.relabel(dataset.labels(idx))
            np.testing.assert_array_equal(getattr(d, f"y_{part}").numpy(), want)
        train = np.concatenate([split.meta_train, split.query])
        np.testing.assert_array_equal(d.x_train.numpy(), dataset.features(train))
        assert d.num_train == len(train)
    # One array for the whole cohort: a client's parts are views of it, not copies.
    base = data[7].x.untyped_storage().data_ptr()
    assert all(d.x_train.untyped_storage().data_ptr() == base for d in data.values())


def test_client_data_from_parts_keeps_the_parts():
    parts = [torch.arange(n * 2, dtype=torch.float32).view(n, 2) for n in (3, 2, 1)]
    labels = [torch.arange(n) for n in (3, 2, 1)]
    d = ClientData(parts[0], labels[0], parts[1], labels[1], parts[2], labels[2])
    assert torch.equal(d.x_meta, parts[0]) and torch.equal(d.y_query, labels[1])
    assert torch.equal(d.x_train, torch.cat(parts[:2])) and torch.equal(d.y_test, labels[2])
