"""The vectorised seeding against numpy's own SeedSequence and default_rng."""

from __future__ import annotations

import numpy as np
import pytest

from dfml.algorithms.seeds import generators, round_seeds, seed_states


@pytest.mark.parametrize("words", [1, 2, 4, 5, 7])
@pytest.mark.parametrize("dtype", [np.uint32, np.uint64])
def test_seed_states_are_numpys_seed_sequence(words, dtype):
    entropy = np.random.default_rng(words).integers(0, 2**32, (40, words))
    entropy[0] = 0
    entropy[1] = 2**32 - 1
    got = seed_states(entropy, 3, dtype)
    want = np.array(
        [np.random.SeedSequence([int(v) for v in row]).generate_state(3, dtype) for row in entropy]
    )
    assert got.dtype == want.dtype and np.array_equal(got, want)


def test_round_seeds_are_the_client_contexts_seeds():
    entropy = [
        (0, c, r, salt) for c in (0, 1, 9_999, 2**32 - 1) for r in (0, 7) for salt in (0, 3477)
    ]
    want = [int(np.random.SeedSequence(list(e)).generate_state(1)[0]) for e in entropy]
    assert round_seeds(entropy) == want
    # Outside uint32 (a large run seed): numpy's own call.
    big = [(2**40, 3, 1, 0), (5, 3, 1, 0)]
    assert round_seeds(big) == [
        int(np.random.SeedSequence(list(e)).generate_state(1)[0]) for e in big
    ]
    assert round_seeds([]) == []


def test_generators_draw_default_rngs_streams():
    seeds = [0, 1, 12345, 2**32 - 1]
    for rng, seed in zip(generators(seeds), seeds, strict=True):
        ref = np.random.default_rng(seed)
        assert np.array_equal(rng.permutation(50), ref.permutation(50))
        assert rng.random() == ref.random()
    big = generators([2**33])[0]
    assert np.array_equal(big.permutation(9), np.random.default_rng(2**33).permutation(9))
