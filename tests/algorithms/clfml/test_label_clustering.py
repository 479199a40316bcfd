"""Label clustering composed with any gossip learner (``--cluster-by labels``).

In-process runs of clustered Per-FedAvg, Ditto and Reptile on CL-FML's
label-group scenario: the same clusters as CL-FML's, every training message
inside the client's cluster, its mixing row the |D^M|-weighted row over the
reconnected cluster sub-graph (recomputed here with networkx alone). Then
the end-to-end run through the runner with tasks, bad input, and the
clustered classes crossing process boundaries.
"""

from __future__ import annotations

import itertools
import json
import pickle

import networkx as nx
import pyarrow.parquet as pq
import pytest
from helpers.fault import BASE

from dfml.actors.config import ResourceConfig
from dfml.actors.inprocess import InProcessFederation
from dfml.algorithms.clfml.algorithm import CLFML
from dfml.algorithms.clfml.label_clustering import LabelClustering, clustered
from dfml.algorithms.clfml.state import SLOT
from dfml.algorithms.ditto import Ditto
from dfml.algorithms.fedavg import FedAvg
from dfml.algorithms.gfml import GFML
from dfml.algorithms.privacy.dpsgd import DPSGD
from dfml.errors import ConfigError
from dfml.experiment import prepare
from dfml.launch.cli import main
from dfml.launch.options import LaunchConfig, build_config, config_to_options
from dfml.launch.registry import algorithm_class
from dfml.launch.runner import execute
from dfml.records import Callback
from dfml.runtime.loop import Runtime
from dfml.steps import Phase

#: CL-FML's scenario (tests/algorithms/clfml/test_clfml_ray.py): three label
#: groups on a sparse small-world graph, so some cluster sub-graphs split.
SCENARIO = {
    **{k: v for k, v in BASE.items() if k != "local_epochs"},  # not a knob of every learner
    "partition": "label-group",
    "groups": 3,
    "group_overlap": 0.2,
    "clients": 9,
    "rounds": 2,
    "topology": "small-world",
    "degree": 2,
}


class TrainMessages(Callback):
    """Every training message, its neighbours named by client id.

    In-process a neighbour is the very array a client published; the ids are
    read from the published arrays as they were before the step ran.
    """

    def __init__(self) -> None:
        self.messages: list[dict[int, tuple[list[int], tuple[float, ...], float]]] = []
        self._sender: dict[int, int] = {}

    def on_start(self, runtime) -> None:
        self.runtime = runtime

    def on_step_end(self, step, seconds) -> None:
        if step.phase == Phase.TRAIN:
            self.messages.append(
                {
                    c: ([self._sender[id(a)] for a in m.neighbors], m.weights, m.self_weight)
                    for c, m in step.messages.items()
                }
            )
        self._sender = {id(a): c for c, a in self.runtime.state.refs.items()}


def run_in_process(name: str, cluster_by: str = "labels"):
    """SCENARIO with algorithm ``name`` in one process; (runtime, prepared, messages)."""
    cfg, _ = build_config(
        {**SCENARIO, "algorithm": name, "clusters": "3", "cluster_by": cluster_by}
    )
    prep = prepare(cfg)
    algorithm = algorithm_class(name, cfg.run.cluster_by)(cfg.algorithm)
    fed = InProcessFederation(cfg.data, cfg.model, prep.splits, cfg.run.seed, ResourceConfig())
    recorder = TrainMessages()
    runtime = Runtime(
        algorithm, fed, prep.topology.copy(), cfg.run.rounds, callbacks=[recorder], seed=0
    )
    try:
        runtime.run()
    finally:
        fed.shutdown()
    return runtime, prep, recorder.messages


@pytest.fixture(scope="module")
def clfml_assignment():
    runtime, _, _ = run_in_process("clfml")
    return runtime.state.sources[SLOT].assignment


def expected_rows(prep, assignment):
    """Client → (w_ii, {j: w_ij}): |D^M|-weighted rows over each cluster's
    sub-graph of the topology, its components chained lowest id to lowest id."""
    meta = {c: len(prep.splits[c].meta_train) for c in assignment}
    rows = {}
    for k in sorted(set(assignment.values())):
        members = sorted(c for c in assignment if assignment[c] == k)
        graph = nx.Graph()
        graph.add_nodes_from(members)
        graph.add_edges_from(prep.graph.subgraph(members).edges())
        lowest = sorted(min(part) for part in nx.connected_components(graph))
        graph.add_edges_from(itertools.pairwise(lowest))
        for i in members:
            hood = sorted([i, *graph.neighbors(i)])
            total = sum(meta[j] for j in hood)
            rows[i] = (meta[i] / total, {j: meta[j] / total for j in hood if j != i})
    return rows


@pytest.mark.parametrize("name", ["perfedavg", "ditto", "reptile"])
def test_clustered_learner_trains_within_clfmls_clusters(name, clfml_assignment):
    runtime, prep, messages = run_in_process(name)
    info = runtime.state.sources[SLOT]
    assert info.assignment == clfml_assignment
    assert len(set(info.assignment.values())) == 3
    rows = expected_rows(prep, info.assignment)
    assert len(messages) == SCENARIO["rounds"]
    split = False  # the scenario must exercise the reconnection of a split cluster
    for k in set(info.assignment.values()):
        members = [c for c in info.assignment if info.assignment[c] == k]
        split |= not nx.is_connected(prep.graph.subgraph(members))
    assert split
    for round_messages in messages:
        assert sorted(round_messages) == sorted(info.assignment)
        for c, (neighbours, weights, self_weight) in round_messages.items():
            assert all(info.assignment[j] == info.assignment[c] for j in neighbours)
            assert sum(weights) + self_weight == pytest.approx(1.0, abs=1e-12)
            own, row = rows[c]
            assert neighbours == sorted(row)
            assert self_weight == pytest.approx(own, rel=1e-15)
            assert weights == pytest.approx(tuple(row[j] for j in neighbours), rel=1e-15)
    summary = runtime.algorithm.summary(runtime.state)
    assert summary["client_cluster"] == {str(c): k for c, k in sorted(clfml_assignment.items())}
    assert all(m["accuracy"] >= 0.0 for m in runtime.history[-1].metrics.values())


def test_clfml_is_the_clustering_in_front_of_gfml():
    assert issubclass(CLFML, LabelClustering) and issubclass(CLFML, GFML)
    assert clustered(CLFML) is CLFML
    assert clustered(Ditto) is clustered(Ditto)  # one class per learner
    cfg = clustered(Ditto).Config()
    assert cfg.aggregation == "gossip" and cfg.clusters == "3"
    with pytest.raises(ConfigError, match="aggregation must be gossip"):
        clustered(Ditto).Config(aggregation="server")
    with pytest.raises(ConfigError, match="'fedavg' aggregates at a server"):
        clustered(FedAvg)


def test_clustered_algorithm_pickles_to_its_config_and_switches():
    """Shipped to an actor (and rebuilt there) it is its config, the vectorise
    switch and the DP-SGD settings only."""
    algorithm = algorithm_class("perfedavg", "labels")(
        clustered(algorithm_class("perfedavg")).Config(
            clusters="2", inner_lr=0.05, first_order=True
        ),
        vectorize=False,
        privacy=DPSGD(clip=1.5, noise=0.7),
    )
    back = pickle.loads(pickle.dumps(algorithm))
    assert type(back) is type(algorithm) and vars(back) == vars(algorithm)
    assert set(vars(back)) == {"config", "vectorize", "privacy"}
    assert back.privacy == DPSGD(clip=1.5, noise=0.7)


def test_recorded_options_rebuild_the_clustered_config():
    """``--resume`` rebuilds the config from run.json's options: the same class and values."""
    cfg, _ = build_config({**SCENARIO, "algorithm": "ditto", "cluster_by": "labels", "lam": 0.3})
    again, _ = build_config(config_to_options(cfg), allow_unused=config_to_options(cfg))
    assert again == cfg and type(again.algorithm) is type(cfg.algorithm)
    assert again.run.cluster_by == "labels" and again.algorithm.lam == 0.3
    assert build_config({"algorithm": "clfml"})[0].run.cluster_by == "labels"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["--algorithm", "fedavg", "--cluster-by", "labels"],
            "'fedavg' aggregates at a server; allowed: afml, cdfedavg, choco-sgd, clfml, dfedavg",
        ),
        (["--cluster-by", "kmeans"], "unknown cluster_by 'kmeans'; allowed: none, labels"),
        (["--algorithm", "clfml", "--cluster-by", "none"], "always clusters by labels"),
        (["--algorithm", "ditto", "--clusters", "2"], "without --cluster-by labels"),
        (
            ["--algorithm", "perfedavg", "--cluster-by", "labels", "--aggregation", "server"],
            "aggregation must be gossip",
        ),
        (["--algorithm", "reptile", "--cluster-by", "labels", "--clusters", "0"], ">= 1"),
    ],
)
def test_bad_clustering_input_is_one_line(capsys, argv, message):
    code = main(["run", "--dataset", "digits", *argv, "--out", "/nonexistent/never"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_clustered_perfedavg_serves_tasks_end_to_end(tmp_path):
    """``--cluster-by labels --algorithm perfedavg --tasks 2`` through the runner
    (in-process: the label phases and tasks on Ray are test_clfml_ray's)."""
    options = {
        **SCENARIO,
        "algorithm": "perfedavg",
        "cluster_by": "labels",
        "clusters": "3",
        "local_steps": 2,
        "tasks": 2,
        "finetune_rounds": 1,
        "augment": False,
        "backend": "local",
    }
    cfg, _ = build_config(options)
    execute(cfg, LaunchConfig(out=str(tmp_path), progress=False, dashboard=False))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["clusters"] == 3
    recorded = summary["config"]
    assert recorded["run"]["cluster_by"] == "labels"
    assert recorded["algorithm"]["aggregation"] == "gossip"
    tasks = pq.read_table(tmp_path / "tasks.parquet").to_pylist()
    assert len(tasks) == 2 and len(summary["tasks"]) == 2
    cluster_of = {int(c): k for c, k in summary["client_cluster"].items()}
    predictions = pq.read_table(tmp_path / "task_predictions.parquet").to_pylist()
    for i, task in enumerate(tasks):  # the task engages the clients of the run's own clusters
        assert task["clients"] == sorted(c for c, k in cluster_of.items() if k in task["clusters"])
        rows = [r for r in predictions if r["task"] == i]  # every client scores the same samples
        assert {r["client"] for r in rows} == set(task["clients"])
        hits = sum(r["label"] == r["predicted"] for r in rows)
        assert task["accuracy"] == pytest.approx(hits / len(rows))
