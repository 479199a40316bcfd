"""Label-subset episodes: meta-training shaped like the tasks a model will serve.

A task asks for a |𝒯|-way classifier over a few labels, adapted from the
meta-model on a few support samples per label. An episode drawn from a
client's D^M has the same shape: a label subset L (2–5 labels, as tasks
have), ``shots`` support samples per label, query samples of the same
labels, and a loss over the logits of L only (as a task is scored). With
``drop`` probability one label of L gets no support samples at all — it is
in the query only, as a label missing from a cluster is in a Case II task —
so the meta-model also learns to keep a label it was not adapted on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from dfml.algorithms.meta.maml import Batch, LossFn
from dfml.models.flat import FlatModel

#: Labels per episode, as the random tasks draw them (2–5).
EPISODE_LABELS = (2, 5)


def restricted_loss(model: FlatModel, labels: Sequence[int]) -> LossFn:
    """Cross-entropy over the logits of ``labels`` only (targets must be in ``labels``)."""
    allowed = torch.as_tensor(sorted(labels), dtype=torch.long)

    def loss(params: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        logits = model(params, x)[:, allowed.to(x.device)]
        target = torch.searchsorted(allowed.to(y.device), y)
        return torch.nn.functional.cross_entropy(logits, target)

    return loss


def label_episode(
    x: torch.Tensor,
    y: torch.Tensor,
    shots: int,
    query: int,
    rng: np.random.Generator,
    drop: float = 0.5,
) -> tuple[list[int], Batch, Batch] | None:
    """(L, support, query) drawn from (x, y), or ``None`` when fewer than two
    labels have two samples each (no episode fits; train on plain batches).

    Support: up to ``shots`` samples of each label of L (none for a dropped
    label); query: up to ``query`` other samples of each label of L.
    """
    ys = y.cpu().numpy()
    labels, counts = np.unique(ys, return_counts=True)
    usable = labels[counts >= 2]
    if len(usable) < 2:
        return None
    low, high = EPISODE_LABELS
    size = int(rng.integers(low, min(high, len(usable)) + 1))
    chosen = sorted(rng.choice(usable, size, replace=False).tolist())
    dropped = int(rng.choice(chosen)) if size > 2 and rng.random() < drop else None
    support, held_out = [], []
    for label in chosen:
        where = rng.permutation(np.flatnonzero(ys == label))
        k = 0 if label == dropped else min(shots, len(where) - 1)
        support.extend(where[:k].tolist())
        held_out.extend(where[k : k + query].tolist())
    s = torch.as_tensor(sorted(support), dtype=torch.long, device=y.device)
    q = torch.as_tensor(sorted(held_out), dtype=torch.long, device=y.device)
    return chosen, (x[s], y[s]), (x[q], y[q])
