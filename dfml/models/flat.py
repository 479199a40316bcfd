"""One flat float32 parameter vector per client, driven through torch.func.

The vector is the unit that is sent, averaged, replicated and checkpointed.
:class:`FlatModel` remembers how to cut it into the module's named tensors
(views, no copies) and calls the module with ``torch.func.functional_call``,
so gradients w.r.t. the flat vector flow through autograd and ``torch.func``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call


class FlatModel:
    """A stateless ``nn.Module`` skeleton plus the layout of its flat vector.

    The module must not carry buffers (use GroupNorm, not BatchNorm): a
    buffer would be hidden state outside the vector that clients exchange.
    """

    def __init__(self, module: nn.Module) -> None:
        if any(True for _ in module.buffers()):
            raise ValueError("FlatModel needs a module without buffers (use GroupNorm)")
        self.module = module
        self.names: list[str] = []
        self.shapes: list[torch.Size] = []
        self.numels: list[int] = []
        for name, p in module.named_parameters():
            self.names.append(name)
            self.shapes.append(p.shape)
            self.numels.append(p.numel())
        self.size = sum(self.numels)
        #: Whether train/eval mode changes the output (dropout); if not,
        #: evaluation skips switching modes, a recursive walk per call.
        self.mode_dependent = any(
            isinstance(m, nn.modules.dropout._DropoutNd) for m in module.modules()
        )

    def init_flat(self, seed: int) -> torch.Tensor:
        """The module's own initialisation, reproducible from ``seed``."""
        gen_state = torch.random.get_rng_state()
        try:
            torch.manual_seed(seed)
            for m in self.module.modules():
                if hasattr(m, "reset_parameters") and m is not self.module:
                    m.reset_parameters()
            return torch.cat([p.detach().reshape(-1) for p in self.module.parameters()]).clone()
        finally:
            torch.random.set_rng_state(gen_state)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Named views into ``flat`` (gradients reach ``flat``)."""
        pieces = torch.split(flat, self.numels)
        return {n: p.view(s) for n, p, s in zip(self.names, pieces, self.shapes, strict=True)}

    def __call__(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.module, self.unflatten(flat), (x,))

    def to(self, device: torch.device | str) -> FlatModel:
        self.module.to(device)
        return self

    def train(self, mode: bool = True) -> FlatModel:
        self.module.train(mode)
        return self

    @property
    def nbytes(self) -> int:
        return self.size * 4

    def __repr__(self) -> str:
        return f"FlatModel({type(self.module).__name__}, {self.size:,} params)"
