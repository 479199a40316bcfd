"""Byzantine clients and robust mixing in front of a learner, in process: what attackers
publish and what honest clients mix, against numpy plus a plain SGD loop. No Ray."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from helpers.reference import PlainClients

from dfml.actors.inprocess import InProcessFederation
from dfml.algorithms.robust.aggregators import coordinate_median
from dfml.algorithms.robust.attacks import alie
from dfml.algorithms.robust.mixing import ATTACKED, RobustMixing
from dfml.algorithms.robust.settings import Robustness
from dfml.errors import ConfigError
from dfml.experiment import prepare
from dfml.launch.options import build_config
from dfml.launch.registry import algorithm_class
from dfml.records import Callback
from dfml.runtime.loop import run
from dfml.topology.mixing import mixing_matrix

TINY = {
    "dataset": "digits",
    "clients": 5,
    "rounds": 2,
    "seed": 3,
    "model": "mlp",
    "hidden": 16,
    "local_epochs": 1,
    "batch_size": 16,
    "topology": "complete",
}


class Capture(Callback):
    def on_run_start(self, algorithm, federation):
        self.federation = federation

    def on_run_end(self, history):
        self.states = self.federation.get_states()


def train(robustness: Robustness, **options):
    cfg, _ = build_config({**TINY, **options})
    cls = algorithm_class(cfg.run.algorithm, robust_mixing=True)
    algorithm = cls(cfg.algorithm, robustness=robustness)
    prepared = prepare(cfg)
    fed = InProcessFederation(cfg.data, cfg.model, prepared.splits, cfg.run.seed, cfg.resources)
    capture = Capture()
    history = run(algorithm, fed, cfg.run.rounds, [capture], topology=prepared.topology)
    return cfg, prepared, capture.states, history


def final(states, n):
    return np.stack([states[i].params.numpy() for i in range(n)])


def test_sign_flippers_publish_minus_x_and_honest_clients_take_the_median():
    rob = Robustness(rule="median", attackers=frozenset({1}), attack="sign-flip", attack_scale=2.0)
    cfg, prepared, states, _ = train(rob)
    plain = PlainClients(cfg, prepared)
    published = plain.vectors()  # before round 0 every client publishes the initial vector
    for r in range(cfg.run.rounds):
        x = plain.vectors()
        for i in range(5):  # complete graph: everyone else's published vector
            plain.set(i, coordinate_median([x[i], *(published[j] for j in range(5) if j != i)]))
            plain.train(i, r)
        published = plain.vectors().copy()
        published[1] = -2.0 * published[1]
    np.testing.assert_allclose(final(states, 5), plain.vectors(), rtol=0, atol=2e-5)
    np.testing.assert_allclose(states[1].extras[ATTACKED].numpy(), published[1], atol=4e-5)
    assert all(ATTACKED not in states[i].extras for i in (0, 2, 3, 4))


def test_label_flippers_train_on_flipped_labels_and_publish_honestly():
    rob = Robustness(attackers=frozenset({2}), attack="label-flip", num_classes=10)
    cfg, prepared, states, _ = train(rob)
    plain = PlainClients(cfg, prepared)
    x2, y2 = plain.data[2]
    plain.data[2] = (x2, 9 - y2)
    w = mixing_matrix(prepared.graph, cfg.topology.mixing, prepared.train_sizes)
    for r in range(cfg.run.rounds):
        x = plain.vectors().astype(np.float64)
        for i in range(5):
            plain.set(i, w[i] @ x)
            plain.train(i, r)
    np.testing.assert_allclose(final(states, 5), plain.vectors(), rtol=0, atol=2e-5)
    assert ATTACKED not in states[2].extras


def test_alie_publishes_mean_minus_z_std_of_what_it_received():
    rob = Robustness(rule="trimmed-mean", attackers=frozenset({0}), attack="alie", alie_z=0.5)
    cfg, prepared, states, _ = train(rob, rounds=1)
    plain = PlainClients(cfg, prepared)
    received = [plain.vectors()[j] for j in range(1, 5)]  # round 0: the initial vectors
    np.testing.assert_allclose(
        states[0].extras[ATTACKED].numpy(), alie(received, 0.5), rtol=0, atol=1e-6
    )


def test_server_mode_aggregates_the_trained_clients_with_the_rule():
    rob = Robustness(rule="median", attackers=frozenset({4}), attack="sign-flip")
    cfg, prepared, states, _ = train(rob, algorithm="fedavg", rounds=1)
    plain = PlainClients(cfg, prepared)
    for i in range(5):
        plain.train(i, 0)
    sent = plain.vectors().copy()
    sent[4] = -sent[4]
    expected = coordinate_median(list(sent))
    for i in range(5):  # every client adopted the server's median
        np.testing.assert_allclose(states[i].params.numpy(), expected, rtol=0, atol=2e-5)


def test_the_robust_algorithm_pickles_with_its_settings():
    cfg, _ = build_config(TINY)
    rob = Robustness(rule="krum", attackers=frozenset({0, 3}), krum_select=2)
    algorithm = algorithm_class("dfedavg", robust_mixing=True)(cfg.algorithm, robustness=rob)
    back = pickle.loads(pickle.dumps(algorithm))
    assert type(back) is type(algorithm) and vars(back) == vars(algorithm)
    assert set(vars(back)) == {"config", "vectorize", "privacy", "robustness"}
    cfg, _ = build_config({**TINY, "cluster_by": "labels"})
    clustered = algorithm_class("dfedavg", "labels", robust_mixing=True)
    algorithm = clustered(cfg.algorithm, robustness=rob)
    assert isinstance(algorithm, RobustMixing) and hasattr(algorithm, "within_clusters")
    rebuild, args = algorithm.__reduce__()  # what Ray's cloudpickle calls in an actor
    back = rebuild(*args)
    assert type(back) is type(algorithm) and vars(back) == vars(algorithm)
    assert back.robustness == rob


def test_a_learner_that_does_not_send_its_vector_is_refused():
    with pytest.raises(ConfigError, match="'choco-sgd' gossips its 'choco' channel"):
        algorithm_class("choco-sgd", robust_mixing=True)
    with pytest.raises(ConfigError, match="no --compressor"):
        algorithm_class("dfedavg", compressor="topk", robust_mixing=True)
