"""Elastic membership through real Ray actors; partial participation in-process."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
from helpers.fault import BASE, faults, metrics, run

from dfml.actors.inprocess import InProcessFederation
from dfml.experiment import prepare
from dfml.launch.options import build_config
from dfml.launch.registry import algorithm_class
from dfml.records import Callback
from dfml.runtime.loop import Runtime
from dfml.topology.epidemic import epidemic_graph

ELASTIC = {"rounds": 6, "clients_per_actor": 2, "topology": "ring"}


def live_per_round(table) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for row in table.select(["round", "client"]).to_pylist():
        out.setdefault(row["round"], []).append(row["client"])
    return {r: sorted(c) for r, c in sorted(out.items())}


def test_schedule_joins_and_leaves_and_rows_follow_membership(tmp_path):
    """Loop semantics, in process; joins and leaves on Ray actors are the chaos tests below."""
    summary = run(tmp_path, schedule="2:+3,4:-2", backend="local", **ELASTIC)
    table = metrics(tmp_path)
    live = live_per_round(table)
    assert [len(live[r]) for r in range(6)] == [4, 4, 7, 7, 5, 5]
    assert summary["final_clients"] == 5
    assert summary["membership"] == {"0": 4, "1": 4, "2": 7, "3": 7, "4": 5, "5": 5}
    assert summary["joins"] == {"2": [4, 5, 6]}
    left = summary["leaves"]["4"]
    assert len(left) == 2
    for r in (4, 5):  # removed clients stop appearing
        assert not set(left) & set(live[r])
    # Epochs: one per change (the join, then the leave).
    epochs = {row["round"]: row["epoch"] for row in table.select(["round", "epoch"]).to_pylist()}
    assert epochs[0] == epochs[1] == 0 and epochs[2] == epochs[3] == 1 and epochs[4] == 2
    # Joined clients train, and their accuracy rises from their first round.
    joined = [c for c in (4, 5, 6) if c not in left]
    by_round = {}
    for row in table.select(["round", "client", "accuracy", "trained"]).to_pylist():
        if row["client"] not in joined:
            continue
        assert row["trained"]
        by_round.setdefault(row["round"], []).append(row["accuracy"])
    assert np.mean(by_round[5]) > np.mean(by_round[2])
    assert summary["status"] == "completed"


class Grow(Callback):
    """Uses the Python API of the running experiment."""

    def on_start(self, runtime):
        self.runtime = runtime

    def on_round_end(self, record):
        if record.round == 0:
            self.runtime.add_clients(2)
        if record.round == 1:
            self.runtime.remove_clients([0, 4])


def test_python_api_adds_and_removes_clients_between_rounds(tmp_path):
    # In-process: membership is loop semantics; joins onto new actors are the test above.
    grow = Grow()
    summary = run(tmp_path, [grow], reserve_clients=2, rounds=3, backend="local")
    live = live_per_round(metrics(tmp_path))
    assert live == {0: [0, 1, 2, 3], 1: [0, 1, 2, 3, 4, 5], 2: [1, 2, 3, 5]}
    assert summary["joins"] == {"1": [4, 5]} and summary["leaves"] == {"2": [0, 4]}
    with pytest.raises(Exception, match="only 0 reserved data shares"):
        grow.runtime.add_clients(1)
    # The algorithm shipped to actors holds its config (and the --vectorize and
    # DP-SGD switches), no driver-side state.
    shipped = vars(pickle.loads(pickle.dumps(grow.runtime.algorithm)))
    assert set(shipped) == {"config", "vectorize", "privacy"} and shipped["vectorize"] is True
    assert shipped["privacy"] is None


@pytest.mark.parametrize("aggregation", ["gossip", "server"])
def test_partial_participation_trains_a_seeded_cohort(aggregation):
    """Sampling is loop semantics: tested on the in-process federation."""
    options = {"algorithm": "fedprox", "aggregation": aggregation, "clients": 6, "rounds": 3}
    cfg, _ = build_config({**BASE, **options, "clients_per_round": 3})
    prepared = prepare(cfg)
    fed = InProcessFederation(cfg.data, cfg.model, prepared.splits, cfg.run.seed, cfg.resources)
    algorithm = algorithm_class("fedprox")(cfg.algorithm)
    history = Runtime(
        algorithm, fed, prepared.topology, 3, clients_per_round=3, seed=cfg.run.seed
    ).run()
    for record in history:
        assert sorted(record.metrics) == list(range(6))  # one row per live client
        assert len(record.trained) == 3
        for cid, m in record.metrics.items():
            assert math.isfinite(m["accuracy"])  # everyone is evaluated
            assert math.isfinite(m.get("train_loss", math.nan)) == (cid in record.trained)
    assert len({record.trained for record in history}) > 1  # a fresh cohort each round
    # The cohort is the seeded sample of the live clients, the same in every run.
    again = Runtime(
        algorithm_class("fedprox")(cfg.algorithm),
        InProcessFederation(cfg.data, cfg.model, prepared.splits, cfg.run.seed, cfg.resources),
        prepare(cfg).topology,
        3,
        clients_per_round=3,
        seed=cfg.run.seed,
    ).run()
    assert [r.trained for r in again] == [r.trained for r in history]
    assert history[-1].mean("accuracy") > history[0].mean("accuracy")


def test_a_chaos_kill_right_after_a_join_restores_the_new_clients(ray_session, tmp_path):
    options = {"schedule": "2:+2", "rounds": 4, "clients_per_actor": 2, "recovery": True}
    clean = run(tmp_path / "clean", backend="local", **{**options, "recovery": False})
    chaos = run(tmp_path / "chaos", chaos_rounds=(2,), chaos_fraction=1.0, **options)
    restored = {e["client"] for e in faults(tmp_path / "chaos") if e["kind"] == "restored"}
    assert {4, 5} <= restored
    assert chaos["clients_lost"] == 0
    assert chaos["per_client_accuracy"] == clean["per_client_accuracy"]


def test_epidemic_peers_follow_joins_leaves_and_a_chaos_kill(ray_session, tmp_path):
    """``--topology epidemic --epidemic local``: each round's graph is the sampler's over
    that round's live clients, and a kill mid-run loses nobody and changes no bit
    (replicas sit on the static leaf set, not on the round's peers): the Ray run
    with the kill ends as the in-process run without one."""
    options = {
        "topology": "epidemic",
        "peers": 2,
        "epidemic": "local",
        "mixing": "uniform",
        "schedule": "1:+2,2:-1",
        "rounds": 3,
    }
    clean = run(tmp_path / "clean", backend="local", **options)
    chaos = run(
        tmp_path / "chaos",
        clients_per_actor=2,
        recovery=True,
        chaos_rounds=(2,),
        chaos_fraction=1.0,
        **options,
    )
    assert chaos["clients_lost"] == 0 and chaos["status"] == clean["status"] == "completed"
    assert any(e["kind"] == "restored" for e in faults(tmp_path / "chaos"))
    assert chaos["per_client_accuracy"] == clean["per_client_accuracy"]
    live = live_per_round(metrics(tmp_path / "clean"))
    assert [len(live[r]) for r in range(3)] == [4, 6, 5]
    # Bytes, recounted from the sampler: every client fetches each model it receives.
    cfg, _ = build_config({**BASE, **options})
    vector = prepare(cfg).param_count * 4
    received = sum(
        epidemic_graph(cfg.topology, live[r], cfg.run.seed, r).number_of_edges() for r in range(3)
    )
    assert clean["bytes_sent"] == chaos["bytes_sent"] == received * vector
