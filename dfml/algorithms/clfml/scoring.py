"""Scoring a task as its requester would: every label of 𝒯, on held-out samples.

A task 𝒯 asks for a classifier over all of its labels, including the ones
the engaged cluster never held (Case II). Scoring the task model on the
engaged clients' own test samples only tests labels they already hold —
exactly the labels that need no help — so the requester scores it on a
validation set of its own with samples of **every** label of 𝒯:

* in simulation, :class:`TaskTestSet` pools the test splits of all clients
  (initial and reserve). No client trains, meta-trains or fine-tunes on a
  test split (the partition keeps D^M, D^Q and test disjoint; tested), so
  every pooled sample is held out from every model;
* in a deployment, the requester's own labelled validation set plays this
  role (build a :class:`TaskTestSet` from it).

Each engaged client's task model is scored on the whole set (prediction
restricted to 𝒯, a |𝒯|-way classifier). Per task the accuracies are
averaged over the engaged clients; since every client scores the same
samples, this equals Σ correct / Σ scored over the rows written to
``task_predictions.parquet``. The labels of 𝒯 are split per client into
*present* (held by the client's cluster) and *missing* (not held: what
Case II and augmentation are for).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

from dfml.errors import ConfigError
from dfml.models.flat import FlatModel


@dataclass(frozen=True)
class TaskTestSet:
    """The requester's held-out samples: features, labels and dataset indices.

    Attributes:
        x: features, ``(n, *input_shape)``, float32 as the clients see them.
        y: true labels, int64.
        index: each sample's index in the dataset (for the predictions file).
    """

    x: torch.Tensor
    y: np.ndarray
    index: np.ndarray

    @classmethod
    def from_indices(cls, dataset, indices: np.ndarray) -> TaskTestSet:
        """The samples ``indices`` of ``dataset`` (an :class:`~dfml.data.dataset.ArrayDataset`)."""
        idx = np.sort(np.asarray(indices, dtype=np.int64))
        x = torch.from_numpy(dataset.features(idx))
        return cls(x, dataset.labels(idx).astype(np.int64), idx)

    def check(self, labels: Sequence[int]) -> None:
        """One ConfigError line naming the first of ``labels`` without a test sample."""
        held = set(np.unique(self.y).tolist())
        for label in labels:
            if label not in held:
                raise ConfigError(
                    f"label {label} has no held-out test sample, so tasks asking for it "
                    "cannot be scored; raise --test-fraction"
                )

    def select(self, labels: Sequence[int]) -> np.ndarray:
        """Positions of the samples whose label is in ``labels``."""
        return np.flatnonzero(np.isin(self.y, np.asarray(list(labels), dtype=np.int64)))


def restricted_predictions(
    model: FlatModel, vector: torch.Tensor, x: torch.Tensor, labels: Sequence[int]
) -> np.ndarray:
    """argmax over the logits of ``labels`` only (the task is a |𝒯|-way classifier)."""
    allowed = torch.as_tensor(sorted(labels), dtype=torch.long)
    with torch.no_grad():
        if model.mode_dependent:
            model.module.eval()
        logits = model(vector, x)[:, allowed]
    return allowed[logits.argmax(1)].numpy()


@contextmanager
def one_thread() -> Iterator[None]:
    """Torch on one CPU thread inside the block, as the client actors run it.

    The requester's forward passes are tiny (one small model on a few
    hundred samples); on more threads they spent their time in the thread
    pool: 20 ms per client instead of 0.25 ms on the 2-core box with other
    jobs running, which made scoring a task's models most of its seconds.
    """
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass(frozen=True)
class TaskScore:
    """One scoring of a task's models: accuracies and the rows behind them.

    ``accuracy`` is over all labels of 𝒯; ``present`` / ``missing`` over
    each client's present / missing labels (``None`` when no client has
    any); ``rows`` are (client, test position, predicted, present) tuples.
    """

    accuracy: float
    present: float | None
    missing: float | None
    rows: list[tuple[int, int, int, bool]]


def score_task(
    model: FlatModel,
    vectors: Mapping[int, torch.Tensor],
    test: TaskTestSet,
    labels: Sequence[int],
    held: Mapping[int, Sequence[int]],
) -> TaskScore:
    """Score each client's task model in ``vectors`` on ``test``'s samples of ``labels``.

    ``held``: client → the labels its cluster holds (what counts as present).
    Per-client accuracies are averaged with equal weight; for *present* and
    *missing* only over the clients that have such labels.
    """
    pos = test.select(labels)
    x, y = test.x[pos], test.y[pos]
    rows: list[tuple[int, int, int, bool]] = []
    overall, present, missing = [], [], []
    with one_thread():
        predictions = {
            cid: restricted_predictions(model, vectors[cid], x, labels) for cid in vectors
        }
    for cid in sorted(vectors):
        pred = predictions[cid]
        hit = pred == y
        is_present = np.isin(y, np.asarray(list(held[cid]), dtype=np.int64))
        overall.append(hit.mean())
        if is_present.any():
            present.append(hit[is_present].mean())
        if (~is_present).any():
            missing.append(hit[~is_present].mean())
        rows.extend(
            (cid, int(p), int(v), bool(h))
            for p, v, h in zip(pos.tolist(), pred.tolist(), is_present.tolist(), strict=True)
        )
    return TaskScore(
        float(np.mean(overall)),
        float(np.mean(present)) if present else None,
        float(np.mean(missing)) if missing else None,
        rows,
    )


class ReferenceClassifier:
    """A classifier trained on real samples, to tell whether generated ones look real.

    Multinomial logistic regression (scikit-learn) on flattened features
    clamped to [0, 1] — the space the label-conditional VAE generates in.
    A generator that supplies label c should produce samples it calls c.
    It measures; it never takes part in training or scoring a task.
    """

    def __init__(self, x: np.ndarray, y: np.ndarray) -> None:
        from sklearn.linear_model import LogisticRegression

        self.model = LogisticRegression(max_iter=300)
        self.model.fit(self._inputs(x), y)

    @staticmethod
    def _inputs(x: np.ndarray | torch.Tensor) -> np.ndarray:
        arr = np.asarray(x, dtype=np.float32)
        return np.clip(arr.reshape(len(arr), -1), 0.0, 1.0)

    def recognition(self, x: np.ndarray | torch.Tensor, y: np.ndarray) -> float:
        """The share of samples ``x`` it classifies as their intended label ``y``."""
        return float(np.mean(self.model.predict(self._inputs(x)) == np.asarray(y)))


@dataclass(frozen=True)
class TaskRequester:
    """Who asks for tasks: the model it scores with, its test set, and (in
    simulation) a reference classifier that measures generated samples."""

    model: FlatModel
    test: TaskTestSet
    reference: ReferenceClassifier | None = None
