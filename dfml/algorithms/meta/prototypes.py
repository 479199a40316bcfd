"""A prototype-initialised head (Proto-MAML, Triantafillou et al. 2020).

A label-subset task is a new |𝒯|-way classifier: the meta-model's head rows
for 𝒯 were trained for other tasks (or never, for a label its cluster
lacks). Proto-MAML starts the head from the support set instead: with μ_c the
mean embedding f(x) of label c's support samples,

    W_c = 2 μ_c,   b_c = −‖μ_c‖²,

so the logit W_c·f(x) + b_c = −‖f(x) − μ_c‖² + ‖f(x)‖², the negative
squared distance to the prototype up to a per-sample constant: the
softmax over 𝒯 is a prototypical network's, and the adaptation steps that
follow start from it. The rows are functions of θ's body, so a
meta-gradient taken through them teaches the body embeddings whose
prototypes classify well — the step the meta-model will take at task time.

Labels without a support sample keep the rows they had.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dfml.models.head import HeadLayout


def prototype_rows(mu: torch.Tensor) -> torch.Tensor:
    """[2 μ_c ‖ −‖μ_c‖²] for each row μ_c of ``mu``: shape (n, d + 1)."""
    return torch.cat([2.0 * mu, -(mu * mu).sum(dim=1, keepdim=True)], dim=1)


def class_means(
    embeddings: torch.Tensor, y: torch.Tensor, labels: Sequence[int]
) -> tuple[list[int], torch.Tensor]:
    """(the labels of ``labels`` that occur in ``y``, their mean embeddings μ_c)."""
    present = [int(c) for c in labels if bool((y == c).any())]
    if not present:
        return [], embeddings.new_zeros(0, embeddings.shape[1])
    mu = torch.stack([embeddings[y == c].mean(dim=0) for c in present])
    return present, mu


def prototype_head(
    layout: HeadLayout, flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, labels: Sequence[int]
) -> torch.Tensor:
    """``flat`` with the head rows of every label of ``labels`` that has a sample
    in (x, y) set to its prototype row; differentiable in ``flat``."""
    if len(y) == 0:
        return flat
    embeddings = layout.embed(flat, x)
    present, mu = class_means(embeddings, y, labels)
    return layout.with_rows(flat, present, prototype_rows(mu))
