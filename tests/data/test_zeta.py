"""AFML's ζ-diversity: a fraction 1 − ζ of clients relabel their classes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dfml.actors.state import ClientData
from dfml.data.builtin import load_digits
from dfml.data.config import PartitionConfig
from dfml.data.partition import label_permutations, make_splits
from dfml.errors import ConfigError

DIGITS = load_digits()


@pytest.mark.parametrize("zeta, expected", [(1.0, 0), (0.9, 2), (0.6, 8), (0.25, 15), (0.0, 20)])
def test_the_right_number_of_clients_is_permuted(zeta, expected):
    perms = label_permutations(20, 10, zeta, seed=3)
    assert len(perms) == 20
    assert sum(p is not None for p in perms) == expected


def test_permutations_are_deterministic_derangements():
    a = label_permutations(12, 10, 0.5, seed=7)
    b = label_permutations(12, 10, 0.5, seed=7)
    c = label_permutations(12, 10, 0.5, seed=8)
    assert [None if p is None else p.tolist() for p in a] == [
        None if p is None else p.tolist() for p in b
    ]
    assert [None if p is None else p.tolist() for p in a] != [
        None if p is None else p.tolist() for p in c
    ]
    permuted = [p for p in a if p is not None]
    for p in permuted:
        assert sorted(p.tolist()) == list(range(10)), "not a bijection"
        assert (p != np.arange(10)).all(), "a class kept its label"
    # client-specific: the permuted clients do not all share one relabelling
    assert len({tuple(p.tolist()) for p in permuted}) == len(permuted)


def test_two_classes_swap():
    (p,) = label_permutations(1, 2, 0.0, seed=0)
    assert p.tolist() == [1, 0]


def test_splits_carry_permutations_and_client_data_applies_them():
    cfg = PartitionConfig(partition="dirichlet", alpha=0.5, zeta=0.5)
    splits = make_splits(DIGITS.y, 6, cfg, seed=1)
    plain = make_splits(DIGITS.y, 6, PartitionConfig(partition="dirichlet", alpha=0.5), seed=1)
    assert sum(s.label_permutation is not None for s in splits) == 3
    for s, q in zip(splits, plain, strict=True):
        # same samples: ζ changes labels only
        assert np.array_equal(s.meta_train, q.meta_train) and np.array_equal(s.test, q.test)
        data = ClientData.from_split(DIGITS, s, torch.device("cpu"))
        true_meta, true_test = DIGITS.y[s.meta_train], DIGITS.y[s.test]
        if s.label_permutation is None:
            assert data.y_meta.tolist() == true_meta.tolist()
        else:
            expected = s.label_permutation[true_meta]
            assert data.y_meta.tolist() == expected.tolist()
            assert data.y_test.tolist() == s.label_permutation[true_test].tolist()
            assert (data.y_meta.numpy() != true_meta).all(), "a label was not changed"


def test_zeta_is_validated():
    with pytest.raises(ConfigError, match="zeta"):
        PartitionConfig(zeta=1.5)
    with pytest.raises(ConfigError, match="zeta"):
        PartitionConfig(zeta=-0.1)
    with pytest.raises(ConfigError, match="2 classes"):
        label_permutations(3, 1, 0.0, seed=0)
