"""A compressed payload is a channel value: it travels as its bytes and is read decoded."""

from __future__ import annotations

import numpy as np

from dfml.actors.client_actor import LocalStore
from dfml.channels import fetch
from dfml.compression import Compressor, Payload


def test_fetch_hands_readers_the_decoded_vector():
    x = np.array([1.0, -4.0, 3.0, 0.0, 2.0], np.float32)
    payload = Compressor("topk", 0.4).encode(x, 0)
    dense = np.ones(3, np.float32)
    stored = [LocalStore.put(payload), LocalStore.put(dense)]
    got = fetch(LocalStore.get, stored)
    np.testing.assert_array_equal(got[0], [0.0, -4.0, 3.0, 0.0, 0.0])
    np.testing.assert_array_equal(got[1], dense)


def test_a_payload_is_immutable_and_counts_its_bytes():
    payload = Payload(b"\x00\x01\x00\x00\x00\x00\x00\x80\x3f")
    assert payload.copy() is payload
    assert payload.nbytes == 9
    np.testing.assert_array_equal(payload.decode(), [1.0])
