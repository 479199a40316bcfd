"""Replicas: bit-exact round trip of a ClientState, checksums, the durable copy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import xxhash

from dfml.actors.state import ClientState
from dfml.errors import ConfigError
from dfml.fault import replica as replica_module
from dfml.fault.config import FaultConfig
from dfml.fault.durable import check_uri, list_versions, read_replica, write_replica
from dfml.fault.replica import (
    PARAMS,
    Replica,
    ReplicaError,
    digest,
    from_bytes,
    pack_state,
    to_bytes,
    unpack_state,
    verify,
)


def _state(loss: float = 0.25) -> ClientState:
    gen = torch.Generator().manual_seed(0)
    return ClientState(
        client_id=3,
        params=torch.randn(37, generator=gen),
        round=5,
        extras={"alpha": torch.rand(37, generator=gen), "steps": torch.tensor([7, 9])},
        last_loss=loss,
        labels=(1, 4, 7),
    )


def _bits(t: torch.Tensor) -> bytes:
    return t.detach().cpu().numpy().tobytes()


def test_pack_unpack_is_bit_exact_including_extras_and_metadata():
    state = _state()
    back = unpack_state(pack_state(state, version=11))
    assert _bits(back.params) == _bits(state.params)
    assert back.params.dtype == torch.float32
    assert set(back.extras) == {"alpha", "steps"}
    assert _bits(back.extras["alpha"]) == _bits(state.extras["alpha"])
    assert back.extras["steps"].dtype == torch.int64
    assert back.extras["steps"].tolist() == [7, 9]
    assert (back.client_id, back.round, back.last_loss) == (3, 5, 0.25)
    assert back.labels == (1, 4, 7)


def test_a_known_params_digest_seals_the_same_replica_without_rehashing(monkeypatch):
    state = _state()
    fresh = pack_state(state, version=4)
    known = digest(state.params.numpy())
    hashed = []
    real = replica_module.digest
    monkeypatch.setattr(replica_module, "digest", lambda a: hashed.append(a.size) or real(a))
    reused = pack_state(state, version=4, params_digest=known)
    assert len(hashed) == 2  # the two extras; not the params (fresh: 3 + the params again)
    assert (reused.checksum, reused.params_digest) == (fresh.checksum, fresh.params_digest)
    assert verify(reused) is reused


def test_unpacked_tensors_are_writable_copies():
    replica = pack_state(_state(), 0)
    replica.arrays[PARAMS].setflags(write=False)  # as after ray.get (zero-copy view)
    back = unpack_state(replica)
    back.params.add_(1.0)  # would fail or corrupt the replica if it were a view
    assert not np.shares_memory(back.params.numpy(), replica.arrays[PARAMS])


def test_nan_loss_survives_the_round_trip():
    assert math.isnan(unpack_state(pack_state(_state(float("nan")), 0)).last_loss)


def test_digest_is_xxh3_128_of_dtype_shape_and_bytes():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert digest(a) == xxhash.xxh3_128_hexdigest(b"<f4(2, 3)" + a.tobytes())
    # a strided view hashes its values, not its memory
    wide = np.arange(12, dtype=np.float32).reshape(2, 6)
    assert digest(wide[:, ::2]) == digest(np.ascontiguousarray(wide[:, ::2]))


def test_checksum_covers_every_bit_and_the_identity():
    base = pack_state(_state(), 1)
    flipped = _state()
    raw = flipped.params.numpy().view(np.uint32)
    raw[5] ^= 1  # one bit of one parameter
    assert pack_state(flipped, 1).checksum != base.checksum
    assert pack_state(_state(), 2).checksum != base.checksum  # version
    relabelled = _state()
    relabelled.labels = (1, 4)
    assert pack_state(relabelled, 1).checksum != base.checksum
    assert pack_state(_state(), 1).checksum == base.checksum  # deterministic


def test_verify_rejects_tampered_content_and_unexpected_checksums():
    replica = pack_state(_state(), 1)
    assert verify(replica, replica.checksum) is replica
    tampered = Replica(
        replica.client_id,
        replica.version,
        replica.round,
        {**replica.arrays, PARAMS: replica.arrays[PARAMS] + 1e-7},
        replica.meta,
        replica.checksum,
        replica.params_digest,
    )
    with pytest.raises(ReplicaError, match="content checksum"):
        verify(tampered)
    with pytest.raises(ReplicaError, match="not the acknowledged"):
        verify(replica, "0" * 32)


def test_bytes_round_trip_and_damage_detection():
    replica = pack_state(_state(), 4)
    back = verify(from_bytes(to_bytes(replica)), replica.checksum)
    assert _bits(unpack_state(back).params) == _bits(_state().params)
    with pytest.raises(ReplicaError, match="damaged"):
        from_bytes(to_bytes(replica)[:-40])


@pytest.mark.parametrize("scheme", ["", "file://"])
def test_durable_copy_keeps_the_newest_versions(tmp_path, scheme):
    uri = f"{scheme}{tmp_path}/ckpt"
    for version in (1, 2, 3):
        write_replica(uri, pack_state(_state(), version), keep=2)
    assert list_versions(uri, 3) == [3, 2]
    assert list_versions(uri, 99) == []
    back = read_replica(uri, 3, 3)
    assert verify(back).version == 3
    assert _bits(unpack_state(back).params) == _bits(_state().params)
    with pytest.raises(FileNotFoundError):
        read_replica(uri, 3, 1)


@pytest.mark.parametrize(
    ("uri", "message"),
    [
        ("foo://bar", "unknown scheme 'foo'"),
        ("FILE:///tmp/x", "unknown scheme 'FILE'"),
        ("http://host/x", "unknown scheme 'http'"),
        ("://x", "is malformed (no scheme)"),
        ("s3:bucket/x", "is malformed"),
        ("s3://[::1/x", "is malformed (Invalid IPv6 URL)"),
        ("file://host/tmp/x", "a file:// URI names no host"),
        ("file://", "a file:// URI names no host and an absolute path"),
        ("s3://", "names no bucket"),
        ("gs:///prefix", "names no bucket"),
    ],
)
def test_a_malformed_checkpoint_uri_is_one_line(uri, message):
    with pytest.raises(ConfigError) as err:
        FaultConfig(checkpoint_uri=uri)
    assert message in str(err.value) and repr(uri) in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("uri", ["runs/ckpt", "/abs/a:b", "file:///tmp/x", "s3://b/p", "gs://b"])
def test_well_formed_checkpoint_uris_pass(uri):
    check_uri(uri)
