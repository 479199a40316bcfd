"""CHOCO-SGD against the paper's dense matrix form, computed with numpy.

One round of the client math (receive, consensus, compress) is checked
against X ← X + γ (W X̂ − X̂), Q = top-k(X − X̂), X̂ ← X̂ + Q on random
vectors; whole runs on the in-process federation against the same form with
a plain ``torch.optim.SGD`` loop for local training. No Ray.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers.reference import PlainClients, topk_reference

from dfml.actors.inprocess import InProcessFederation
from dfml.algorithms.choco import (
    MESSAGE,
    PUBLIC,
    PUBLIC_SUM,
    ChocoSGD,
    compress,
    consensus,
    receive,
)
from dfml.compression import Compressor
from dfml.experiment import prepare
from dfml.launch.options import build_config
from dfml.launch.registry import algorithm_class
from dfml.records import Callback
from dfml.runtime.loop import run
from dfml.topology.mixing import mixing_matrix


def ring_matrix(n: int, rng: np.random.Generator) -> np.ndarray:
    """A doubly stochastic ring matrix with unequal weights."""
    w = np.zeros((n, n))
    for i in range(n):
        a = rng.uniform(0.1, 0.3)
        w[i, (i + 1) % n] += a
        w[(i + 1) % n, i] += a
    w += np.diag(1 - w.sum(axis=1))
    return w


def test_one_round_equals_the_dense_matrix_form():
    rng = np.random.default_rng(0)
    n, d, gamma, k = 5, 40, 0.3, 6
    w = ring_matrix(n, rng)
    x = rng.standard_normal((n, d)).astype(np.float32)
    hat_old = rng.standard_normal((n, d)).astype(np.float32)
    q_prev = rng.standard_normal((n, d)).astype(np.float32)  # last round's messages
    hat = hat_old + q_prev  # every copy of x̂_j after receiving q_j
    step = rng.standard_normal((n, d)).astype(np.float32) * 0.1  # stands in for local SGD
    c = Compressor("topk", ratio=k / d)

    # the paper's form, in float64
    h64 = hat.astype(np.float64)
    y = x + gamma * (w @ h64 - h64) + step
    q = np.stack([topk_reference(y[i] - h64[i], k) for i in range(n)])
    hat_next = h64 + q

    for i in range(n):
        nbrs = [j for j in range(n) if j != i and w[i, j] > 0]
        # s_i before the round: the neighbours' old copies, its own updated one
        s = sum(w[i, j] * hat_old[j] for j in nbrs) + w[i, i] * hat[i]
        s = receive(s.astype(np.float32), [q_prev[j] for j in nbrs], [w[i, j] for j in nbrs])
        np.testing.assert_allclose(s, w[i] @ h64, atol=1e-5)
        xi = consensus(x[i], hat[i], s, gamma) + step[i]
        np.testing.assert_allclose(xi, y[i], atol=1e-5)
        message, hat_i, s_i = compress(xi, hat[i], s, w[i, i], c, seed=0)
        np.testing.assert_allclose(message.decode(), q[i], atol=1e-5)
        np.testing.assert_allclose(hat_i, hat_next[i], atol=1e-5)
        np.testing.assert_allclose(s_i, s + w[i, i] * q[i], atol=1e-5)
        assert message.nbytes == 5 + 4 + k * (2 + 4)


class Capture(Callback):
    def on_run_start(self, algorithm, federation):
        self.federation = federation

    def on_run_end(self, history):
        self.states = self.federation.get_states()


def run_in_process(**options):
    cfg, _ = build_config(
        {
            "dataset": "digits",
            "clients": 4,
            "rounds": 3,
            "seed": 3,
            "model": "mlp",
            "hidden": 16,
            "local_epochs": 1,
            "batch_size": 16,
            "topology": "ring",
            **options,
        }
    )
    prepared = prepare(cfg)
    compressor = getattr(cfg.algorithm, "compressor", "none")
    cls = algorithm_class(cfg.run.algorithm, compressor=compressor)
    fed = InProcessFederation(cfg.data, cfg.model, prepared.splits, cfg.run.seed, cfg.resources)
    capture = Capture()
    history = run(cls(cfg.algorithm), fed, cfg.run.rounds, [capture], topology=prepared.topology)
    return cfg, prepared, history, capture.states


@pytest.mark.parametrize("vectorize", [True, False])
def test_a_run_equals_the_dense_form_with_plain_sgd(vectorize):
    gamma, ratio = 0.4, 0.1
    cfg, prepared, history, states = run_in_process(
        algorithm="choco-sgd", consensus_lr=gamma, compression=ratio, vectorize=vectorize
    )
    plain = PlainClients(cfg, prepared)
    w = mixing_matrix(prepared.graph, cfg.topology.mixing, prepared.train_sizes)
    x = plain.vectors().astype(np.float64)
    hat = x.copy()  # public copies start at the common initial model
    d = x.shape[1]
    k = round(ratio * d)
    for r in range(cfg.run.rounds):
        if r > 0:
            x = x + gamma * (w @ hat - hat)
        for i in range(4):
            plain.set(i, x[i])
            plain.train(i, r)
        x = plain.vectors().astype(np.float64)
        hat = hat + np.stack([topk_reference(x[i] - hat[i], k) for i in range(4)])

    got = np.stack([states[i].params.numpy() for i in range(4)])
    np.testing.assert_allclose(got, x, rtol=0, atol=2e-5)
    np.testing.assert_allclose(
        np.stack([states[i].extras[PUBLIC].numpy() for i in range(4)]), hat, atol=2e-5
    )
    for i in range(4):  # s_i holds w_ii x̂_i and the copies of the messages received so far
        assert states[i].extras[PUBLIC_SUM].shape == (d,)
        assert states[i].extras[MESSAGE].numel() == 5 + 4 + k * 6
    last = history[-1].metrics
    np.testing.assert_allclose([last[i]["accuracy"] for i in range(4)], plain.accuracies())
    # nothing is sent in round 0; then every client fetches both ring neighbours' messages
    message = 5 + 4 + k * (2 + 4)
    assert [h.bytes_sent for h in history] == [0] + [2 * 4 * message] * (cfg.run.rounds - 1)


def test_without_compression_and_with_step_1_it_is_dfedavg():
    _, _, choco, choco_states = run_in_process(
        algorithm="choco-sgd", compressor="none", consensus_lr=1.0
    )
    _, _, dfedavg, dfedavg_states = run_in_process(algorithm="dfedavg")
    for i in range(4):
        np.testing.assert_allclose(
            choco_states[i].params.numpy(), dfedavg_states[i].params.numpy(), atol=1e-5
        )
    assert [h.mean("accuracy") for h in choco] == [h.mean("accuracy") for h in dfedavg]


def test_the_state_it_needs_is_client_state():
    """The public copies and the last message are extras: the fault layer's
    replicas and the whole-run checkpoints carry them with the vector."""
    _, _, _, states = run_in_process(algorithm="choco-sgd", compressor="sign", rounds=1)
    assert set(states[0].extras) == {PUBLIC, PUBLIC_SUM, MESSAGE}
    assert ChocoSGD.elastic is False and ChocoSGD.fixed_neighbours is True
