"""The classifier head inside a flat vector: the last linear layer and what feeds it.

Every zoo model is an ``nn.Sequential`` whose last layer is ``nn.Linear``
(the head); the layers before it are the body f, whose output is the
penultimate-layer embedding f(x). A prototype-style head (Proto-MAML,
Triantafillou et al. 2020) rewrites the head's rows from embeddings, so it
needs to know where the rows sit in the flat vector and how to run the body
alone; :class:`HeadLayout` says both, without copying the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from dfml.errors import ConfigError
from dfml.models.flat import FlatModel


@dataclass(frozen=True)
class HeadLayout:
    """Where the head's weight W (C × d) and bias b (C) sit in a flat vector.

    The flat vector ends with W row by row, then b (``named_parameters``
    order of a Sequential whose last layer is the head), so W_c is
    ``flat[weight + c·d : weight + (c+1)·d]`` and b_c is ``flat[bias + c]``.
    """

    model: FlatModel
    body: nn.Module
    classes: int
    dim: int

    @property
    def weight(self) -> int:
        """Offset of W_0 in the flat vector."""
        return self.model.size - self.classes * self.dim - self.classes

    @property
    def bias(self) -> int:
        """Offset of b_0 in the flat vector."""
        return self.model.size - self.classes

    def embed(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """f(x): the body's output under ``flat`` (gradients reach ``flat``)."""
        names = self.model.names[:-2]
        pieces = torch.split(flat[: self.weight], self.model.numels[:-2])
        shapes = self.model.shapes[:-2]
        params = {n: p.view(s) for n, p, s in zip(names, pieces, shapes, strict=True)}
        return functional_call(self.body, params, (x,))

    def rows(self, flat: torch.Tensor, labels: list[int]) -> torch.Tensor:
        """[W_c ‖ b_c] for each label c of ``labels``: a (len(labels), d + 1) tensor."""
        w = flat[self.weight : self.bias].view(self.classes, self.dim)
        b = flat[self.bias :]
        index = torch.as_tensor(labels, dtype=torch.long, device=flat.device)
        return torch.cat([w[index], b[index].unsqueeze(1)], dim=1)

    def with_rows(self, flat: torch.Tensor, labels: list[int], rows: torch.Tensor) -> torch.Tensor:
        """``flat`` with [W_c ‖ b_c] of each label replaced by ``rows`` (out of place,
        differentiable in both ``flat`` and ``rows``)."""
        if not labels:
            return flat
        d = self.dim
        index = torch.as_tensor(labels, dtype=torch.long, device=flat.device)
        w_pos = (self.weight + index.unsqueeze(1) * d + torch.arange(d, device=flat.device)).view(
            -1
        )
        positions = torch.cat([w_pos, self.bias + index])
        values = torch.cat([rows[:, :d].reshape(-1), rows[:, d]]).to(flat.dtype)
        return flat.index_put((positions,), values)


def head_layout(model: FlatModel) -> HeadLayout:
    """The head of ``model``; one line if its module does not end with a linear layer."""
    module = model.module
    if not isinstance(module, nn.Sequential) or not isinstance(module[-1], nn.Linear):
        got = type(module).__name__
        if isinstance(module, nn.Sequential):
            got += f" ending with {type(module[-1]).__name__}"
        raise ConfigError(
            f"a prototype head needs a model that is an nn.Sequential ending with nn.Linear, "
            f"got {got}"
        )
    head = module[-1]
    if head.bias is None:
        raise ConfigError("a prototype head needs a last linear layer with a bias")
    return HeadLayout(model, module[:-1], head.out_features, head.in_features)
