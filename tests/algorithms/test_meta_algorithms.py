"""The meta-learning family: smoke runs (in-process, and one on Ray), and server ≡ gossip\non a complete graph."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import assert_test_accuracy

from dfml.actors.config import ResourceConfig
from dfml.actors.inprocess import InProcessFederation
from dfml.algorithms.evaluation import EvalConfig, PersonalizedEvaluation
from dfml.data.config import DataConfig, PartitionConfig
from dfml.errors import ConfigError
from dfml.experiment import ExperimentConfig, RunConfig, prepare, run_experiment
from dfml.launch.options import build_config
from dfml.launch.registry import META_LEARNING, algorithm_class
from dfml.models.zoo import ModelConfig
from dfml.records import Callback
from dfml.runtime.loop import run
from dfml.topology.config import TopologyConfig

FAST = {"local_steps": 2, "local_epochs": 1, "batch_size": 16}


class CaptureStates(Callback):
    def on_run_start(self, algorithm, federation):
        self.federation = federation

    def on_run_end(self, history):
        self.states = self.federation.get_states()


def experiment(name: str, rounds: int = 3, **overrides) -> ExperimentConfig:
    cls = algorithm_class(name)
    fields = cls.Config.__dataclass_fields__
    algo = cls.Config(**{k: v for k, v in {**FAST, **overrides}.items() if k in fields})
    return ExperimentConfig(
        run=RunConfig(algorithm=name, clients=4, rounds=rounds, seed=3),
        data=DataConfig(dataset="digits"),
        partition=PartitionConfig(partition="dirichlet", alpha=0.5),
        model=ModelConfig(model="mlp", hidden=16),
        topology=TopologyConfig(topology="ring", mixing="data-size"),
        resources=ResourceConfig(clients_per_actor=2, num_cpus_per_actor=0.5),
        algorithm=algo,
    )


# Each algorithm once; both modes are covered (MEFL also by the agreement test).
SMOKE = {
    "fedmeta-maml": "server",
    "fedmeta-metasgd": "gossip",
    "reptile": "gossip",
    "perfedavg": "server",
    "gfml": "gossip",
    "mefl": "server",
    "afml": "gossip",
}


def test_smoke_list_covers_the_family():
    assert sorted(SMOKE) == sorted(cls.name for cls in META_LEARNING)


def smoke_run(name: str, aggregation: str, on_ray: bool) -> None:
    """Three rounds with personalized evaluation; every client's metrics and
    its published vector checked."""
    cfg = experiment(name, aggregation=aggregation)
    prepared = prepare(cfg)
    algorithm = algorithm_class(name)(cfg.algorithm)
    evaluation = PersonalizedEvaluation(EvalConfig(pers_steps=(0, 1, 5)), cfg.run.rounds)
    capture = CaptureStates()
    if on_ray:
        history = run_experiment(cfg, algorithm, [evaluation, capture], prepared).history
    else:
        federation = InProcessFederation(
            cfg.data, cfg.model, prepared.splits, cfg.run.seed, cfg.resources
        )
        history = run(
            algorithm,
            federation,
            cfg.run.rounds,
            [evaluation, capture],
            topology=prepared.topology,
        )
    assert [r.round for r in history] == [0, 1, 2]
    for record in history:
        assert sorted(record.metrics) == [0, 1, 2, 3]
        for cid, m in record.metrics.items():
            assert math.isfinite(m["train_loss"]) and math.isfinite(m["test_loss"])
            assert_test_accuracy(m["accuracy"], len(prepared.splits[cid].test))
        assert record.bytes_sent > 0
    final = history[-1].metrics
    for cid, m in final.items():
        for key in ("global_accuracy", "pers0_accuracy", "pers1_accuracy", "pers5_accuracy"):
            assert_test_accuracy(m[key], len(prepared.splits[cid].test))
        assert math.isfinite(m["qoi"])
    # Every client published one vector, of the algorithm's own layout.
    sizes = {s.params.numel() for s in capture.states.values()}
    assert len(sizes) == 1 and all(s.round == 3 for s in capture.states.values())
    factor = {"fedmeta-metasgd": 2, "mefl": 2}.get(name, 1)
    if name == "afml":
        assert sizes.pop() > prepared.param_count
    else:
        assert sizes.pop() == factor * prepared.param_count
    vector_bytes = 4 * capture.states[0].params.numel()
    per_round = history[-1].bytes_sent
    assert per_round % vector_bytes == 0  # bytes are counted in published vectors


@pytest.mark.parametrize(("name", "aggregation"), sorted(SMOKE.items()))
def test_algorithm_runs_three_rounds_on_digits(name, aggregation):
    # In-process: the same client programs, arrays instead of object refs.
    smoke_run(name, aggregation, on_ray=False)


def test_the_family_runs_on_ray_actors(ray_session):
    # One Ray run for the family: MEFL's server step is a Ray task there, its
    # θ‖α vectors cross the object store, and two actors host the clients.
    smoke_run("mefl", "server", on_ray=True)


def equal_sizes_experiment(name: str, aggregation: str) -> ExperimentConfig:
    # 200 samples / 4 clients (IID) → 50 each, so data-size weights are uniform too.
    cfg = experiment(name, aggregation=aggregation)
    return ExperimentConfig(
        run=cfg.run,
        data=DataConfig(dataset="synthetic", synthetic_samples=200, synthetic_shape=(1, 4, 4)),
        partition=PartitionConfig(partition="iid"),
        model=cfg.model,
        topology=TopologyConfig(topology="complete", mixing="uniform"),
        resources=cfg.resources,
        algorithm=cfg.algorithm,
    )


def test_server_and_gossip_agree_on_a_complete_graph_with_uniform_weights():
    # In-process (same client code, arrays instead of refs); the Ray server task
    # of MEFL is exercised by the Ray run above.
    name = "mefl"  # Meta-SGD's θ‖α vector and EOA, the most stateful aggregation
    runs = {}
    for aggregation in ("server", "gossip"):
        cfg = equal_sizes_experiment(name, aggregation)
        prepared = prepare(cfg)
        assert len(set(prepared.train_sizes)) == 1
        assert all(
            np.allclose([w_ii, *row.values()], 0.25)
            for w_ii, row in map(prepared.topology.mixing_row, range(4))
        )
        algorithm = algorithm_class(name)(cfg.algorithm)
        federation = InProcessFederation(
            cfg.data, cfg.model, prepared.splits, cfg.run.seed, cfg.resources
        )
        runs[aggregation] = run(algorithm, federation, cfg.run.rounds, topology=prepared.topology)
    for server, gossip in zip(runs["server"], runs["gossip"], strict=True):
        for cid in range(4):
            s, g = server.metrics[cid], gossip.metrics[cid]
            # Round r trains from the same point in both modes: the server's x^r
            # equals every client's own aggregate of the same vectors.
            assert s["train_loss"] == pytest.approx(g["train_loss"], abs=1e-5), (server.round, cid)
            if server.round < 2:
                # The server weighs round r's updates; gossip clients weigh them in round r + 1.
                nxt = runs["gossip"][server.round + 1].metrics[cid]
                assert s["eoa_weight"] == pytest.approx(nxt["eoa_weight"], abs=1e-6)
    # The runs did move: later rounds differ from the first.
    losses = [h.mean("train_loss") for h in runs["server"]]
    assert losses[0] != losses[-1]


def test_meta_configs_reject_bad_values_with_one_line():
    with pytest.raises(ConfigError, match="inner_steps"):
        build_config({"algorithm": "perfedavg", "inner_steps": 2})
    with pytest.raises(ConfigError, match="meta_lr"):
        build_config({"algorithm": "reptile", "meta_lr": 1.5})
    with pytest.raises(ConfigError, match="direction_decay"):
        build_config({"algorithm": "mefl", "direction_decay": 1.0})
    with pytest.raises(ConfigError, match="aggregation"):
        build_config({"algorithm": "fedmeta-maml", "aggregation": "mesh"})
    with pytest.raises(ConfigError, match="tradeoff_weight"):
        build_config({"algorithm": "afml", "tradeoff_weight": -1})
    cfg, _ = build_config({"algorithm": "mefl", "global_lr": "0.5", "first_order": "true"})
    assert cfg.algorithm.global_lr == 0.5 and cfg.algorithm.first_order is True
