"""The in-process store: what a reader gets is what Ray's zero-copy get gives."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dfml.actors.client_actor import LocalStore, stacked


def test_local_store_publishes_a_read_only_view_not_a_copy():
    vector = np.arange(6, dtype=np.float32)
    ref = LocalStore.put(vector)
    assert np.shares_memory(ref, vector) and np.array_equal(ref, vector)
    with pytest.raises(ValueError, match="read-only"):
        ref[0] = 1.0
    assert LocalStore.get([ref])[0] is ref


def test_stacked_views_consecutive_rows_of_one_tensor_and_copies_anything_else():
    """A batched step's vectors (rows of one matrix) are packed without a copy;
    rows out of order, gaps, other tensors' or plain arrays are stacked."""
    matrix = torch.arange(12.0).view(4, 3)
    rows = [matrix[i].detach().numpy() for i in range(4)]
    view = stacked(rows[1:3])
    assert np.shares_memory(view, matrix.numpy()) and not view.flags.writeable
    assert view.tolist() == matrix[1:3].tolist()
    other = torch.arange(3.0).numpy()
    for values in ([rows[0], rows[2]], [rows[1], rows[0]], [rows[0], other], [np.ones(3)] * 2):
        copy = stacked(values)
        assert not np.shares_memory(copy, matrix.numpy())
        assert copy.tolist() == [v.tolist() for v in values]
