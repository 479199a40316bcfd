"""A client's share of the data, split into D^M, a label-balanced D^Q and a test set.

Shared by the drawn partitions (:mod:`dfml.data.partition`) and the imported
ones (:mod:`dfml.data.partition_file`): the same random stream and rule, so
a share splits alike whichever way it was made.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dfml.data.config import PartitionConfig


@dataclass(frozen=True)
class ClientSplit:
    """A client's local data: meta-train D^M, label-balanced query D^Q, test.

    ``label_permutation`` (AFML's ζ-diversity), when set, maps every true
    label y of this client to ``label_permutation[y]`` (a bijection).
    """

    meta_train: np.ndarray
    query: np.ndarray
    test: np.ndarray
    label_permutation: np.ndarray | None = None

    @property
    def train(self) -> np.ndarray:
        """D^M ∪ D^Q: everything a non-meta algorithm may train on."""
        return np.sort(np.concatenate([self.meta_train, self.query]))

    def relabel(self, labels: np.ndarray) -> np.ndarray:
        """The labels this client sees for true ``labels`` (identity if unpermuted)."""
        return labels if self.label_permutation is None else self.label_permutation[labels]


def split_client(
    indices: np.ndarray, labels: np.ndarray, cfg: PartitionConfig, seed: int
) -> ClientSplit:
    """Split one client's samples into D^M, a label-balanced D^Q and a test set.

    The test set takes ``test_fraction`` of the samples at random; the rest is
    split by :func:`_meta_and_query`.
    """
    rng = np.random.default_rng([seed, 0x5E1])
    idx = rng.permutation(np.asarray(indices))
    n_test = max(1, round(cfg.test_fraction * len(idx)))
    return _meta_and_query(idx[n_test:], np.sort(idx[:n_test]), labels, cfg)


def split_train(
    train: np.ndarray, test: np.ndarray, labels: np.ndarray, cfg: PartitionConfig, seed: int
) -> ClientSplit:
    """A client whose test set is given: split ``train`` into D^M and D^Q.

    Same random stream and rule as :func:`split_client`, for partitions
    imported without a query set.
    """
    rng = np.random.default_rng([seed, 0x5E1])
    return _meta_and_query(
        rng.permutation(np.asarray(train)), np.sort(np.asarray(test)), labels, cfg
    )


def _meta_and_query(
    rest: np.ndarray, test: np.ndarray, labels: np.ndarray, cfg: PartitionConfig
) -> ClientSplit:
    """D^Q takes the first ``k`` samples (in ``rest``'s shuffled order) of every
    label that has at least two samples in ``rest`` (so D^M keeps every such
    label too), with ``k = max(1, min(⌊query_fraction·n / L⌋, min_l count_l − 1))``;
    D^M is the remainder.
    """
    rest_labels = labels[rest]
    values, counts = np.unique(rest_labels, return_counts=True)
    eligible = values[counts >= 2]
    query: list[np.ndarray] = []
    if len(eligible):
        k_target = int(cfg.query_fraction * len(rest) / len(eligible))
        k = max(1, min(k_target, int(counts[counts >= 2].min()) - 1))
        query = [rest[rest_labels == label][:k] for label in eligible]
    q = np.concatenate(query) if query else np.empty(0, np.int64)
    meta_train = np.setdiff1d(rest, q)
    return ClientSplit(meta_train=meta_train, query=np.sort(q), test=test)


def client_seed(seed: int, client: int) -> int:
    """The seed of client ``client``'s local split, derived from the run seed."""
    return seed * 100_003 + client
