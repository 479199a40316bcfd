"""Two single-process floors for Workload W, sharing no code with dfml's training path.

Both compute one round of ring DFedAvg (or FedAvg's server step) for N
clients: mix each client's vector with its ring neighbours' (data-size
weights w_ij = n_j / (n_{i-1} + n_i + n_{i+1}), float32, three rolled
copies, no N × N matrix), train one or more local epochs of mini-batch SGD,
and score every client on its test set. Each client's mini-batch order is
drawn from ``default_rng(SeedSequence([seed, client, round, 0]))``, the seed
contract dfml documents, so a tiny case gives dfml's numbers
(``tests/benchmarks/test_floors.py``).

- :func:`plain_floor`: one ``nn.Module`` and ``torch.optim.SGD``, client by
  client: what a researcher writes first.
- :func:`vectorised_floor`: the same math on stacked client vectors with
  ``torch.func`` (``functional_call`` + ``vmap`` + ``grad``), blocks of
  :data:`BLOCK` clients per call: every client's step of a block is one
  computation. On one thread it is the physical reference for a CPU: no
  actors, no object store, no per-client Python beyond the batch order.

Callers set ``torch.set_num_threads(1)``; both return per-round seconds.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap
from torch.nn.utils import parameters_to_vector, vector_to_parameters
from torch.nn.utils.rnn import pad_sequence

from dfml.data.registry import load_dataset
from dfml.models.zoo import build_model

#: Clients per vectorised call: bounds the stacked copies (θ, gradient, batch).
BLOCK = 4096


@dataclass
class Problem:
    """One Workload W instance, as plain tensors.

    Attributes:
        module: the model skeleton (its parameters are overwritten).
        init: the common initial flat vector, float32 [P].
        train: each client's training samples (x, y).
        test: each client's test samples (x, y).
        lr, batch_size, epochs, seed: local SGD and the run's seed.
        server: FedAvg (a size-weighted server average each round) instead
            of ring gossip.
    """

    module: nn.Module
    init: torch.Tensor
    train: list[tuple[torch.Tensor, torch.Tensor]]
    test: list[tuple[torch.Tensor, torch.Tensor]]
    lr: float
    batch_size: int
    epochs: int
    seed: int
    server: bool = False

    @property
    def sizes(self) -> torch.Tensor:
        return torch.tensor([len(y) for _, y in self.train], dtype=torch.float32)


def problem_of(cfg: Any, prepared: Any) -> Problem:
    """The floors' input for a dfml ``ExperimentConfig`` and its ``prepare``:
    the same data shares, initial vector and SGD knobs (dfml is used only to
    load the data and draw the initial model, not to train)."""
    dataset = load_dataset(cfg.data)
    flat = build_model(cfg.model, dataset.input_shape, dataset.num_classes)
    n, alg = cfg.run.clients, cfg.algorithm

    def pair(idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.from_numpy(dataset.features(idx)), torch.from_numpy(dataset.y[idx])

    return Problem(
        module=copy.deepcopy(flat.module),
        init=flat.init_flat(cfg.run.seed),
        train=[pair(np.concatenate([s.meta_train, s.query])) for s in prepared.splits[:n]],
        test=[pair(s.test) for s in prepared.splits[:n]],
        lr=alg.lr,
        batch_size=alg.batch_size,
        epochs=alg.local_epochs,
        seed=cfg.run.seed,
        server=cfg.run.algorithm == "fedavg",
    )


def ring_mix(vectors: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """Data-size ring mixing of [N, P] float32 vectors (N ≥ 3)."""
    left, right = torch.roll(sizes, 1), torch.roll(sizes, -1)
    total = sizes + left + right
    return (
        (sizes / total)[:, None] * vectors
        + (left / total)[:, None] * torch.roll(vectors, 1, 0)
        + (right / total)[:, None] * torch.roll(vectors, -1, 0)
    )


def server_average(vectors: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
    """FedAvg's n_k / Σ n weighted average, handed to every client."""
    p = sizes / sizes.sum()
    return (p[:, None] * vectors).sum(0).expand_as(vectors).clone()


def batch_order(seed: int, client: int, rnd: int, n: int, epochs: int) -> list[np.ndarray]:
    """Client ``client``'s shuffled index order of each epoch of round ``rnd``."""
    state = np.random.SeedSequence([seed, client, rnd, 0]).generate_state(1)[0]
    rng = np.random.default_rng(int(state))
    return [rng.permutation(n) for _ in range(epochs)]


def plain_floor(p: Problem, rounds: int) -> tuple[torch.Tensor, list[float], list[float]]:
    """Client-by-client plain PyTorch: final vectors, last accuracies, seconds per round."""
    module = copy.deepcopy(p.module)
    n, sizes = len(p.train), p.sizes
    vectors = p.init.repeat(n, 1)
    times, accs = [], []
    for r in range(rounds):
        t0 = time.perf_counter()
        mixed = vectors if p.server else ring_mix(vectors, sizes)
        new = torch.empty_like(vectors)
        accs = []
        for i in range(n):
            vector_to_parameters(mixed[i].clone(), module.parameters())
            opt = torch.optim.SGD(module.parameters(), lr=p.lr)
            x, y = p.train[i]
            for order in batch_order(p.seed, i, r, len(y), p.epochs):
                for start in range(0, len(y), p.batch_size):
                    b = torch.from_numpy(order[start : start + p.batch_size])
                    opt.zero_grad()
                    nn.functional.cross_entropy(module(x[b]), y[b]).backward()
                    opt.step()
            new[i] = parameters_to_vector(module.parameters()).detach()
            if not p.server:
                accs.append(_accuracy(module, *p.test[i]))
        vectors = new
        if p.server:
            vectors = server_average(vectors, sizes)
            for i in range(n):
                vector_to_parameters(vectors[i].clone(), module.parameters())
                accs.append(_accuracy(module, *p.test[i]))
        times.append(time.perf_counter() - t0)
    return vectors, accs, times


@torch.no_grad()
def _accuracy(module: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    return float(module(x).argmax(1).eq(y).float().mean())


class _Stacked:
    """Workload W's data padded per client, and the vmapped torch.func maps."""

    def __init__(self, p: Problem) -> None:
        self.p = p
        self.names, self.shapes, self.numels = [], [], []
        for name, t in p.module.named_parameters():
            self.names.append(name)
            self.shapes.append(t.shape)
            self.numels.append(t.numel())
        self.x, self.y = _pad(p.train)
        self.xt, self.yt = _pad(p.test)
        self.nt = torch.tensor([len(y) for _, y in p.test])
        self.grad = vmap(grad(self._loss))
        self.logits = vmap(self._forward)

    def _forward(self, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        pieces = torch.split(theta, self.numels)
        params = {n: t.view(s) for n, t, s in zip(self.names, pieces, self.shapes, strict=True)}
        return functional_call(self.p.module, params, (x,))

    def _loss(
        self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor
    ) -> torch.Tensor:
        """Mean cross-entropy over the unmasked samples (0 for an empty batch)."""
        logp = torch.log_softmax(self._forward(theta, x), -1)
        nll = -torch.gather(logp, 1, y[:, None])[:, 0]
        return (nll * mask).sum() / mask.sum().clamp_min(1.0)

    def train(self, theta: torch.Tensor, rnd: int, clients: range) -> torch.Tensor:
        """Local SGD of ``clients`` (rows of ``theta``) in place; returns ``theta``."""
        p = self.p
        plan = _plan(p, rnd, clients)  # [c, S, bs], -1 where no sample
        x, y = self.x[clients.start : clients.stop], self.y[clients.start : clients.stop]
        rows = torch.arange(len(clients))[:, None]
        for s in range(plan.shape[1]):
            idx = plan[:, s]
            mask = (idx >= 0).float()
            take = idx.clamp_min(0)
            theta.sub_(self.grad(theta, x[rows, take], y[rows, take], mask), alpha=p.lr)
        return theta

    @torch.no_grad()
    def accuracy(self, vectors: torch.Tensor, clients: range) -> torch.Tensor:
        """Test accuracy of ``clients`` with their rows of ``vectors``."""
        sel = slice(clients.start, clients.stop)
        logits = self.logits(vectors[sel], self.xt[sel])
        nt, yt = self.nt[sel], self.yt[sel]
        mask = torch.arange(yt.shape[1])[None, :] < nt[:, None]
        correct = ((logits.argmax(2) == yt) & mask).sum(1)
        return correct / nt.clamp_min(1)


def _pad(pairs: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    return (
        pad_sequence([x for x, _ in pairs], batch_first=True),
        pad_sequence([y for _, y in pairs], batch_first=True),
    )


def _plan(p: Problem, rnd: int, clients: range) -> torch.Tensor:
    """Each client's batch indices per step: int64 [c, S, batch_size], -1 padded."""
    bs = p.batch_size
    per = []
    for i in clients:
        n = len(p.train[i][1])
        per.append(
            [
                o[s : s + bs]
                for o in batch_order(p.seed, i, rnd, n, p.epochs)
                for s in range(0, n, bs)
            ]
        )
    steps = max(len(b) for b in per)
    plan = np.full((len(per), steps, bs), -1, dtype=np.int64)
    for c, batches in enumerate(per):
        for s, b in enumerate(batches):
            plan[c, s, : len(b)] = b
    return torch.from_numpy(plan)


def vectorised_floor(
    p: Problem, rounds: int, block: int = BLOCK
) -> tuple[torch.Tensor, list[float], list[float]]:
    """The same rounds with torch.func over stacked vectors: final vectors, last
    accuracies, seconds per round."""
    data = _Stacked(p)
    n, sizes = len(p.train), p.sizes
    vectors = p.init.repeat(n, 1)
    times: list[float] = []
    accs = torch.zeros(n)
    for r in range(rounds):
        t0 = time.perf_counter()
        vectors = vectors if p.server else ring_mix(vectors, sizes)
        for start in range(0, n, block):
            clients = range(start, min(n, start + block))
            data.train(vectors[clients.start : clients.stop], r, clients)
        if p.server:
            vectors = server_average(vectors, sizes)
        accs = torch.cat(
            [data.accuracy(vectors, range(s, min(n, s + block))) for s in range(0, n, block)]
        )
        times.append(time.perf_counter() - t0)
    return vectors, accs.tolist(), times
