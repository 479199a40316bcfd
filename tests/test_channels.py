"""Published-channel handles: a plain object ref or one row of a packed object."""

from __future__ import annotations

import numpy as np
import ray

from dfml.channels import Encoded, Row, fetch, get_value, is_handle, row_runs


def test_fetch_reads_each_packed_object_once_and_slices_rows():
    packed = np.arange(12.0).reshape(3, 4)
    single = np.full(4, -1.0)
    calls = []

    def get(refs):
        calls.append(list(refs))
        return list(refs)  # in-process "refs" are the arrays

    got = fetch(get, [Row(packed, 2), single, Row(packed, 0), Row(packed, 2)])
    assert len(calls) == 1 and len(calls[0]) == 2  # the packed array once, the single once
    np.testing.assert_array_equal(got[0], [8, 9, 10, 11])
    np.testing.assert_array_equal(got[1], single)
    np.testing.assert_array_equal(got[2], [0, 1, 2, 3])
    np.testing.assert_array_equal(got[3], got[0])
    assert fetch(get, []) == []


def test_a_float16_vector_is_read_as_float32():
    """``--publish-dtype float16``: a row of a packed object and a plain array
    both read back widened (exactly); float32 and other dtypes pass as they are."""
    packed = np.array([[0.1, 65504.0], [1 / 3, -2.0]], dtype=np.float16)
    single = np.array([0.5, 1e-4], dtype=np.float16)
    other = np.array([1, 2], dtype=np.int64)
    got = fetch(lambda refs: list(refs), [Row(packed, 1), single, other])
    assert [g.dtype for g in got] == [np.float32, np.float32, np.int64]
    assert got[0].tolist() == packed[1].astype(np.float64).tolist()
    assert got[1].tolist() == single.astype(np.float64).tolist()
    assert got[2] is other


class Halves(Encoded):
    """Travels as half of its vector; reads as the vector repeated twice."""

    def __init__(self, half: np.ndarray) -> None:
        self.half = half

    @property
    def nbytes(self) -> int:
        return self.half.nbytes

    def decode(self) -> np.ndarray:
        return np.concatenate([self.half, self.half])


def test_an_encoded_value_is_read_decoded():
    value = Halves(np.array([1.0, 2.0]))
    got = fetch(lambda refs: list(refs), [value, np.zeros(2)])
    np.testing.assert_array_equal(got[0], [1, 2, 1, 2])
    np.testing.assert_array_equal(got[1], [0, 0])
    assert value.copy() is value and value.nbytes == 16


def test_handles_through_the_object_store(ray_session):
    packed = ray.put(np.arange(6, dtype=np.float32).reshape(2, 3))
    plain = ray.put(np.ones(3, dtype=np.float32))
    assert is_handle(packed) and is_handle(Row(packed, 1)) and not is_handle(np.ones(3))
    assert Row(packed, 1) == Row(packed, 1) and len({Row(packed, 1), Row(packed, 1)}) == 1
    np.testing.assert_array_equal(get_value(Row(packed, 1)), [3, 4, 5])
    np.testing.assert_array_equal(get_value(plain), [1, 1, 1])


def test_get_value_in_process_reads_the_handle_itself_without_ray(monkeypatch):
    def no_ray(*_, **__):
        raise AssertionError("an in-process handle went through ray.get")

    monkeypatch.setattr(ray, "get", no_ray)
    stacked = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert get_value(stacked) is stacked
    np.testing.assert_array_equal(get_value(Row(stacked, 1)), [3.0, 4.0, 5.0])


def test_row_runs_leave_scattered_rows_to_stacking():
    block = np.zeros((16, 3), np.float32)
    assert row_runs([block[i] for i in range(0, 16, 2)]) is None  # no two rows adjacent
    assert row_runs([block[i].astype(np.float64) for i in range(16)]) is None
    assert len(row_runs([block[i] for i in range(16)])) == 1
