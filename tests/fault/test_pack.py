"""Packed replicas: a cohort in one buffer, cut back out bit for bit, as views."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dfml.actors.state import ClientState
from dfml.fault.pack import ALIGN, pack
from dfml.fault.replica import PARAMS, ReplicaError, pack_state, unpack_state, verify


def _state(cid: int, n: int) -> ClientState:
    gen = torch.Generator().manual_seed(cid)
    return ClientState(
        client_id=cid,
        params=torch.randn(n, generator=gen),
        round=cid + 1,
        extras={"alpha": torch.rand(n, generator=gen), "steps": torch.tensor([cid, 9])},
        last_loss=0.5 * cid,
        labels=(cid, cid + 2),
    )


def test_every_replica_comes_out_of_the_pack_bit_for_bit_and_verified():
    replicas = [pack_state(_state(c, n), version=7) for c, n in ((3, 37), (5, 1), (8, 0))]
    packed = pack(replicas)
    assert packed.clients() == [3, 5, 8]
    for original in replicas:
        back = verify(packed.replica(original.client_id), original.checksum)
        assert back.arrays.keys() == original.arrays.keys()
        for name, array in original.arrays.items():
            assert back.arrays[name].dtype == array.dtype
            assert back.arrays[name].shape == array.shape
            assert back.arrays[name].tobytes() == array.tobytes()
        assert (back.version, back.round, back.meta) == (7, original.round, original.meta)
        assert back.params_digest == original.params_digest
        state = unpack_state(back)
        assert torch.equal(state.params, _state(original.client_id, state.params.numel()).params)


def test_replicas_are_aligned_read_only_views_of_one_buffer():
    packed = pack(pack_state(_state(c, 37), 1) for c in (0, 1))
    for c in (0, 1):
        for array in packed.replica(c).arrays.values():
            assert np.shares_memory(array, packed.buffer)
            assert not array.flags.writeable
            assert (array.ctypes.data - packed.buffer.ctypes.data) % ALIGN == 0
    owned = packed.copy()
    assert not np.shares_memory(owned.buffer, packed.buffer)
    assert owned.replica(1).arrays[PARAMS].tobytes() == packed.replica(1).arrays[PARAMS].tobytes()


def test_damage_inside_the_pack_fails_the_checksum_and_a_missing_client_is_an_error():
    replica = pack_state(_state(2, 37), 4)
    packed = pack([replica])
    packed.buffer[5] ^= 1  # one bit of the first array
    with pytest.raises(ReplicaError, match="content checksum"):
        verify(packed.replica(2), replica.checksum)
    with pytest.raises(ReplicaError, match="no replica of client 9"):
        packed.replica(9)
