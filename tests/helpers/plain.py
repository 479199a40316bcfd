"""Clients as plain ``nn.Module``s trained with ``torch.optim.SGD``: a reference
that shares no code with dfml's training path (only the documented seed
contract, mini-batch order from ``SeedSequence([seed, client, round, 0])``,
and the data split)."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from dfml.data.registry import load_dataset
from dfml.models.zoo import build_model


class PlainClients:
    """One module and one training set per client of ``prepared``."""

    def __init__(self, cfg: Any, prepared: Any) -> None:
        self.dataset = load_dataset(cfg.data)
        model = build_model(cfg.model, self.dataset.input_shape, self.dataset.num_classes)
        init = model.init_flat(cfg.run.seed)
        self.seed, self.alg = cfg.run.seed, cfg.algorithm
        self.splits = prepared.splits[: cfg.run.clients]
        self.modules = []
        for _ in self.splits:
            m = copy.deepcopy(model.module)
            vector_to_parameters(init.clone(), m.parameters())
            self.modules.append(m)
        self.data = []
        for s in self.splits:
            idx = np.concatenate([s.meta_train, s.query])
            x, y = self.dataset.features(idx), self.dataset.y[idx]
            self.data.append((torch.from_numpy(x), torch.from_numpy(y)))

    def vectors(self) -> np.ndarray:
        """[N × d] float32: every client's parameters."""
        return np.stack(
            [parameters_to_vector(m.parameters()).detach().numpy() for m in self.modules]
        )

    def set(self, i: int, vector: np.ndarray) -> None:
        vector_to_parameters(
            torch.from_numpy(np.asarray(vector, np.float32)).clone(), self.modules[i].parameters()
        )

    def train(self, i: int, rnd: int) -> None:
        """E epochs of mini-batch SGD of client i in round ``rnd``."""
        m, (x, y), alg = self.modules[i], self.data[i], self.alg
        opt = torch.optim.SGD(m.parameters(), lr=alg.lr)
        seed = int(np.random.SeedSequence([self.seed, i, rnd, 0]).generate_state(1)[0])
        rng = np.random.default_rng(seed)
        for _ in range(alg.local_epochs):
            order = rng.permutation(len(y))
            for start in range(0, len(y), alg.batch_size):
                b = torch.from_numpy(order[start : start + alg.batch_size])
                opt.zero_grad()
                torch.nn.functional.cross_entropy(m(x[b]), y[b]).backward()
                opt.step()

    def accuracies(self) -> list[float]:
        out = []
        for m, s in zip(self.modules, self.splits, strict=True):
            with torch.no_grad():
                logits = m(torch.from_numpy(self.dataset.features(s.test)))
            out.append(float((logits.argmax(1).numpy() == self.dataset.y[s.test]).mean()))
        return out


def topk_reference(v: np.ndarray, k: int) -> np.ndarray:
    """The k largest |v_i| kept (ties to the lower index), the rest zero."""
    order = np.lexsort((np.arange(v.size), -np.abs(v)))[:k]
    out = np.zeros_like(v)
    out[order] = v[order]
    return out
