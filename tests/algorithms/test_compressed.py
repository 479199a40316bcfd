"""Compressed gossip (``--compressor`` on a gossip algorithm): neighbours mix the
decoded compressed vectors, checked against numpy plus a plain SGD loop; the
composed algorithm pickles to its config. No Ray."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from helpers.reference import PlainClients, topk_reference
from ray import cloudpickle

from dfml.actors.inprocess import InProcessFederation
from dfml.algorithms.compressed import COMPRESSED, CompressedGossip
from dfml.algorithms.privacy.dpsgd import DPSGD
from dfml.errors import ConfigError
from dfml.experiment import prepare
from dfml.launch.options import build_config
from dfml.launch.registry import algorithm_class
from dfml.records import Callback
from dfml.runtime.loop import run
from dfml.topology.mixing import mixing_matrix

TINY = {
    "dataset": "digits",
    "clients": 4,
    "rounds": 2,
    "seed": 5,
    "model": "mlp",
    "hidden": 16,
    "local_epochs": 1,
    "batch_size": 16,
    "topology": "ring",
}


class Capture(Callback):
    def on_run_start(self, algorithm, federation):
        self.federation = federation

    def on_run_end(self, history):
        self.states = self.federation.get_states()


def build(**options):
    cfg, _ = build_config({**TINY, **options})
    cls = algorithm_class(cfg.run.algorithm, cfg.run.cluster_by, options.get("compressor", "none"))
    return cfg, cls(cfg.algorithm, vectorize=cfg.run.vectorize)


def test_neighbours_mix_the_decoded_top_k_vectors():
    cfg, algorithm = build(algorithm="dfedavg", compressor="topk", compression=0.25)
    assert isinstance(algorithm, CompressedGossip) and algorithm.gossip_channel == COMPRESSED
    prepared = prepare(cfg)
    fed = InProcessFederation(cfg.data, cfg.model, prepared.splits, cfg.run.seed, cfg.resources)
    capture = Capture()
    history = run(algorithm, fed, cfg.run.rounds, [capture], topology=prepared.topology)

    plain = PlainClients(cfg, prepared)
    w = mixing_matrix(prepared.graph, cfg.topology.mixing, prepared.train_sizes)
    d = plain.vectors().shape[1]
    k = round(0.25 * d)
    for r in range(cfg.run.rounds):
        x = plain.vectors().astype(np.float64)
        sent = np.stack([topk_reference(x[i], k) for i in range(4)])
        for i in range(4):  # own vector exactly, the neighbours' compressed
            mixed = w[i, i] * x[i] + sum(w[i, j] * sent[j] for j in range(4) if j != i)
            plain.set(i, mixed)
            plain.train(i, r)
    got = np.stack([capture.states[i].params.numpy() for i in range(4)])
    np.testing.assert_allclose(got, plain.vectors(), rtol=0, atol=2e-5)
    np.testing.assert_allclose(
        [history[-1].metrics[i]["accuracy"] for i in range(4)], plain.accuracies()
    )
    message = 5 + 4 + k * (2 + 4)  # what each of the two ring neighbours fetches
    assert [h.bytes_sent for h in history] == [2 * 4 * message] * cfg.run.rounds


def test_the_composed_algorithm_pickles_to_its_config_and_switch():
    cfg, algorithm = build(algorithm="fedprox", compressor="qsgd", levels=4, mu=0.1)
    assert cfg.algorithm.aggregation == "gossip" and cfg.algorithm.levels == 4
    back = pickle.loads(pickle.dumps(algorithm))
    assert type(back) is type(algorithm) and vars(back) == vars(algorithm)
    assert set(vars(back)) == {"config", "vectorize", "privacy"}
    private = type(algorithm)(cfg.algorithm, privacy=DPSGD(clip=1.0, noise=0.5))
    assert pickle.loads(pickle.dumps(private)).privacy == private.privacy


def test_it_composes_with_label_clustering():
    cfg, algorithm = build(algorithm="dfedavg", cluster_by="labels", compressor="sign")
    assert algorithm.gossip_channel == COMPRESSED and hasattr(algorithm, "within_clusters")
    assert cfg.algorithm.clusters == "3" and cfg.algorithm.compressor == "sign"
    back = cloudpickle.loads(cloudpickle.dumps(algorithm))  # how Ray ships it to the actors
    assert vars(back) == vars(algorithm) and back.gossip_channel == COMPRESSED


def test_a_server_algorithm_has_no_gossip_to_compress():
    with pytest.raises(ConfigError, match="'fedavg' aggregates at a server"):
        build(algorithm="fedavg", compressor="topk")
    with pytest.raises(ConfigError, match="aggregation must be gossip, got 'server'"):
        build(algorithm="fedprox", compressor="topk", aggregation="server")
