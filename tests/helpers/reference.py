"""DFedAvg as a plain-PyTorch loop, the independent reference of the runtime tests,
and :class:`PlainClients` for composing the references of other algorithms.

It shares no code with dfml's training path: an ``nn.Module`` with
``torch.optim.SGD``, parameters mixed with a float64 matrix product. Only the
documented seed contract (mini-batch order from
``SeedSequence([seed, client, round, 0])``) and the data split are shared.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import networkx as nx
import numpy as np
import torch
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from dfml.data.registry import load_dataset
from dfml.experiment import ExperimentConfig
from dfml.models.zoo import build_model
from dfml.topology.mixing import mixing_matrix


def reference_dfedavg(
    cfg: ExperimentConfig, prepared, graph_of_round: Callable[[int], nx.Graph] | None = None
) -> tuple[np.ndarray, list[float]]:
    """Final parameter vectors and test accuracies; ``graph_of_round(r)`` is round
    r's graph (default: the run's static graph)."""
    dataset = load_dataset(cfg.data)
    flat_model = build_model(cfg.model, dataset.input_shape, dataset.num_classes)
    init = flat_model.init_flat(cfg.run.seed)
    n = cfg.run.clients
    modules = []
    for _ in range(n):
        m = copy.deepcopy(flat_model.module)
        vector_to_parameters(init.clone(), m.parameters())
        modules.append(m)
    data = []
    for s in prepared.splits:
        idx = np.concatenate([s.meta_train, s.query])
        data.append((torch.from_numpy(dataset.features(idx)), torch.from_numpy(dataset.y[idx])))
    alg = cfg.algorithm
    for r in range(cfg.run.rounds):
        # The dense W of the round's graph, built independently of the sparse rows dfml uses.
        graph = prepared.graph if graph_of_round is None else graph_of_round(r)
        w = torch.from_numpy(mixing_matrix(graph, cfg.topology.mixing, prepared.train_sizes))
        stacked = torch.stack(
            [parameters_to_vector(m.parameters()).detach().double() for m in modules]
        )
        mixed = (w @ stacked).float()
        for i, m in enumerate(modules):
            vector_to_parameters(mixed[i].clone(), m.parameters())
            opt = torch.optim.SGD(m.parameters(), lr=alg.lr)
            seed = int(np.random.SeedSequence([cfg.run.seed, i, r, 0]).generate_state(1)[0])
            rng = np.random.default_rng(seed)
            x, y = data[i]
            for _ in range(alg.local_epochs):
                order = rng.permutation(len(y))
                for start in range(0, len(y), alg.batch_size):
                    b = torch.from_numpy(order[start : start + alg.batch_size])
                    opt.zero_grad()
                    torch.nn.functional.cross_entropy(m(x[b]), y[b]).backward()
                    opt.step()
    accs = []
    for m, s in zip(modules, prepared.splits, strict=True):
        with torch.no_grad():
            xt = torch.from_numpy(dataset.features(s.test))
            accs.append(float((m(xt).argmax(1).numpy() == dataset.y[s.test]).mean()))
    return np.stack([parameters_to_vector(m.parameters()).detach().numpy() for m in modules]), accs


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
