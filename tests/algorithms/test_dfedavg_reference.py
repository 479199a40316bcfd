"""The Ray runtime computes exactly DFedAvg: compare with a plain-torch loop
(:func:`helpers.reference.reference_dfedavg`)."""

from __future__ import annotations

import numpy as np
import pytest
import ray
from helpers.reference import reference_dfedavg

from dfml.actors.config import ResourceConfig
from dfml.actors.inprocess import InProcessFederation
from dfml.algorithms.base import LocalSGDConfig
from dfml.algorithms.dfedavg import DFedAvg
from dfml.channels import Row
from dfml.data.config import DataConfig, PartitionConfig
from dfml.experiment import ExperimentConfig, RunConfig, prepare, run_experiment
from dfml.launch.options import build_config
from dfml.models.zoo import ModelConfig
from dfml.records import Callback
from dfml.runtime.loop import run
from dfml.topology.config import TopologyConfig
from dfml.topology.epidemic import epidemic_graph


class CaptureStates(Callback):
    def on_run_start(self, algorithm, federation):
        self.federation = federation

    def on_run_end(self, history):
        self.states = self.federation.get_states()
        if getattr(self.federation, "actors", None):  # how the first Ray actor publishes
            self.published = ray.get(self.federation.actors[0].publish_all.remote())


@pytest.mark.parametrize("clients_per_actor, pack", [(1, "auto"), (3, "always"), (3, "never")])
def test_ray_dfedavg_equals_single_process_reference(ray_session, clients_per_actor, pack):
    cfg = ExperimentConfig(
        run=RunConfig(algorithm="dfedavg", clients=5, rounds=3, seed=7),
        data=DataConfig(dataset="digits"),
        partition=PartitionConfig(partition="dirichlet", alpha=0.5),
        model=ModelConfig(model="mlp", hidden=16),
        topology=TopologyConfig(topology="ring", mixing="data-size"),
        resources=ResourceConfig(
            clients_per_actor=clients_per_actor, num_cpus_per_actor=0.5, pack_params=pack
        ),
        algorithm=LocalSGDConfig(local_epochs=2, lr=0.1, batch_size=16),
    )
    prepared = prepare(cfg)
    capture = CaptureStates()
    result = run_experiment(cfg, DFedAvg(cfg.algorithm), [capture], prepared)

    expected, expected_acc = reference_dfedavg(cfg, prepared)
    got = np.stack([capture.states[i].params.numpy() for i in range(cfg.run.clients)])
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5)
    last = result.history[-1].metrics
    np.testing.assert_allclose([last[i]["accuracy"] for i in range(5)], expected_acc, atol=1e-9)
    assert all(s.round == cfg.run.rounds for s in capture.states.values())
    # Packed: the first actor's clients publish rows of one object (a cohort of one never packs).
    packed = [isinstance(r.ref, Row) for r in capture.published.values()]
    assert packed == [pack == "always"] * len(packed)
    assert len({r.ref.ref for r in capture.published.values()} if pack == "always" else ()) <= 1
    # Bytes: every client fetches each ring neighbour's vector once per round.
    per_round = 2 * cfg.run.clients * prepared.param_count * 4
    assert [h.bytes_sent for h in result.history] == [per_round] * cfg.run.rounds


def test_in_process_federation_runs_the_same_client_code(monkeypatch):
    cfg = ExperimentConfig(
        run=RunConfig(algorithm="dfedavg", clients=4, rounds=2, seed=1),
        data=DataConfig(dataset="digits"),
        model=ModelConfig(model="mlp", hidden=8),
        topology=TopologyConfig(topology="ring"),
        algorithm=LocalSGDConfig(local_epochs=1, lr=0.1, batch_size=16),
    )
    prepared = prepare(cfg)
    algorithm = DFedAvg(cfg.algorithm)
    fed = InProcessFederation(cfg.data, cfg.model, prepared.splits, cfg.run.seed, cfg.resources)

    def no_ray(*_, **__):
        raise AssertionError("the in-process federation called into Ray")

    monkeypatch.setattr(ray, "get", no_ray)  # ray.get([]) alone would start a Ray instance
    capture = CaptureStates()
    run(algorithm, fed, cfg.run.rounds, [capture], topology=prepared.topology)
    expected, _ = reference_dfedavg(cfg, prepared)
    got = np.stack([capture.states[i].params.numpy() for i in range(4)])
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5)


@pytest.mark.parametrize("sampler", ["oracle", "local"])
def test_epidemic_dfedavg_mixes_over_a_fresh_graph_every_round(sampler):
    """``--topology epidemic --peers 2``: the run equals the plain-torch loop whose
    round r mixes with the dense W of round r's sampled graph (in-process)."""
    cfg, _ = build_config(
        {
            "algorithm": "dfedavg",
            "dataset": "digits",
            "clients": 6,
            "rounds": 4,
            "seed": 3,
            "model": "mlp",
            "hidden": "8",
            "local_epochs": 1,
            "batch_size": 16,
            "topology": "epidemic",
            "peers": 2,
            "epidemic": sampler,
            "mixing": "uniform",
            "personalized_eval": False,
        }
    )
    prepared = prepare(cfg)
    fed = InProcessFederation(cfg.data, cfg.model, prepared.splits, cfg.run.seed, cfg.resources)
    capture = CaptureStates()
    history = run(DFedAvg(cfg.algorithm), fed, 4, [capture], topology=prepared.topology.copy())

    graphs = [epidemic_graph(cfg.topology, range(6), cfg.run.seed, r) for r in range(4)]
    links = [frozenset(g.edges() if g.is_directed() else map(frozenset, g.edges())) for g in graphs]
    assert len(set(links)) > 1  # not one graph four times
    expected, expected_acc = reference_dfedavg(cfg, prepared, lambda r: graphs[r])
    got = np.stack([capture.states[i].params.numpy() for i in range(6)])
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-5)
    np.testing.assert_allclose(
        [history[-1].metrics[i]["accuracy"] for i in range(6)], expected_acc, atol=1e-9
    )
    # Bytes: each client fetches the vectors it receives, 2 per client every round.
    assert [h.bytes_sent for h in history] == [6 * 2 * prepared.param_count * 4] * 4
