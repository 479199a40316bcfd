"""The in-process store: what a reader gets is what Ray's zero-copy get gives."""

from __future__ import annotations

import numpy as np
import pytest

from dfml.actors.client_actor import LocalStore


def test_local_store_publishes_a_read_only_view_not_a_copy():
    vector = np.arange(6, dtype=np.float32)
    ref = LocalStore.put(vector)
    assert np.shares_memory(ref, vector) and np.array_equal(ref, vector)
    with pytest.raises(ValueError, match="read-only"):
        ref[0] = 1.0
    assert LocalStore.get([ref])[0] is ref
