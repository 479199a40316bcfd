"""CL-FML's label phases and cluster meta-training through real Ray actors."""

from __future__ import annotations

import numpy as np
import pytest
import ray
from fault_helpers import BASE, run

from dfml.algorithms.callbacks import Callback
from dfml.algorithms.clfml.augment import ConditionalVAE
from dfml.algorithms.clfml.clustering import (
    arrival_order,
    centralized_online_kmeans,
)
from dfml.algorithms.clfml.labels import label_vector, ring_dissemination
from dfml.experiment import prepare
from dfml.launch.cli import main
from dfml.launch.options import build_config
from dfml.topology.graphs import link_cost_graph, minimum_spanning_tree

SCENARIO = {
    "algorithm": "clfml",
    "partition": "label-group",
    "groups": 3,
    "group_overlap": 0.2,
    "clients": 9,
    "clusters": "3",
    "rounds": 2,
    "topology": "small-world",
    "degree": 2,
    "tasks": 4,
    "finetune_rounds": 2,
    "generator_rounds": 2,
}


class Published(Callback):
    """Every object clients published on every channel, fetched at the end."""

    def on_start(self, runtime):
        self.runtime = runtime

    def on_run_end(self, history):
        self.objects = {
            name: {c: ray.get(ref) for c, ref in refs.items()}
            for name, refs in self.runtime.state.channels.items()
        }


def test_label_phases_and_cluster_training(ray_session, tmp_path):
    run_clfml(tmp_path)


def run_clfml(tmp_path):
    """The CL-FML scenario through Ray, checked against independent computations."""
    published = Published()
    summary = run(tmp_path, [published], **SCENARIO)
    assert summary["status"] == "completed"
    for key in (
        "clusters",
        "client_cluster",
        "cluster_labels",
        "cluster_distributions",
        "dissemination_hops",
        "dissemination_bytes",
    ):
        assert key in summary
    cfg, _ = build_config({**BASE, **SCENARIO})
    prep = prepare(cfg)
    labels = prep.client_labels
    ids = sorted(labels)
    # Dissemination: the actors' hop count equals the pure protocol's, ≤ N − 1.
    reference = ring_dissemination(labels, ids)
    assert summary["dissemination_hops"] == reference.hops <= len(ids) - 1
    universe = sorted(set().union(*map(set, labels.values())))
    assert summary["label_universe"] == universe
    # Clustering along the MST equals the centralized computation on the same order.
    tree = minimum_spanning_tree(link_cost_graph(ids, cfg.run.seed))
    vectors = {c: label_vector(labels[c], universe, "multi-hot") for c in ids}
    expected = centralized_online_kmeans(vectors, arrival_order(tree, ids[0]), 3)
    assert {int(c): k for c, k in summary["client_cluster"].items()} == expected.assignment
    np.testing.assert_allclose(
        [summary["cluster_distributions"][str(k)] for k in range(3)], expected.centres
    )
    for k, members in summary["cluster_labels"].items():
        held = set().union(
            *(labels[int(c)] for c, kk in summary["client_cluster"].items() if kk == int(k))
        )
        assert members == sorted(held)
    # Raw samples never leave a client: every published object is a parameter
    # vector, a label set, or rows of [id, depth|cluster, P_i over ℒ].
    m = len(universe)
    generator_size = ConditionalVAE(64, m).num_parameters
    for name, objects in published.objects.items():
        for obj in objects.values():
            arr = np.asarray(obj)
            if name in ("params", "task"):
                assert arr.shape == (summary["param_count"],)
            elif name == "generator":
                assert arr.ndim == 1 and arr.size == generator_size
            elif name in ("known_labels", "own_labels"):
                assert arr.ndim == 1 and set(arr.tolist()) <= set(universe)
            else:
                assert arr.ndim == 2 and arr.shape[1] == 2 + m, (name, arr.shape)
    assert summary["final_accuracy"] > 0.2
    # The task service: one record per task, Case I/II, accuracies, tasks.parquet.
    assert len(summary["tasks"]) == 4 and (tmp_path / "tasks.parquet").exists()
    for record in summary["tasks"]:
        assert record["case"] in (1, 2) and record["clusters"][0] == record["primary_cluster"]
        assert 0.0 <= record["accuracy"] <= 1.0 and 0.0 <= record["accuracy_before"] <= 1.0
        engaged = {c for c, k in summary["client_cluster"].items() if k in record["clusters"]}
        assert {str(c) for c in record["clients"]} == engaged
        assert (record["accuracy_no_augmentation"] is None) == (record["case"] == 1)
    assert summary["task_accuracy"] == pytest.approx(
        np.mean([r["accuracy"] for r in summary["tasks"]])
    )
    return summary


def test_baselines_serve_the_same_tasks_on_the_same_clients(ray_session, tmp_path):
    clfml = run_clfml(tmp_path / "clfml")
    for name in ("dfedavg", "cdfedavg"):
        options = {**SCENARIO, "algorithm": name, "tasks": 4}
        if name == "dfedavg":
            options.pop("clusters")
        summary = run(tmp_path / name, **options)
        assert [t["labels"] for t in summary["tasks"]] == [t["labels"] for t in clfml["tasks"]]
        assert [t["clients"] for t in summary["tasks"]] == [t["clients"] for t in clfml["tasks"]]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["clusters", "0"], "clusters must be >= 1"),
        (["clusters", "many"], "clusters must be a positive integer or 'auto'"),
        (["clusters", "20"], "clusters 20 > 9 clients"),
        (["clusters", "7"], "distinct label profiles"),
        (["schedule", "1:+1"], "does not support clients joining"),
        (["aggregation", "server"], "aggregation must be gossip"),
        (["algorithm", "fedavg"], "tasks are served by"),
        (["tasks_file", "MISSING"], "tasks file"),
    ],
)
def test_bad_clfml_input_is_one_line(capsys, argv, message):
    options = {**SCENARIO, **dict(zip(argv[::2], argv[1::2], strict=True))}
    if options["algorithm"] not in ("clfml", "cdfedavg"):
        options.pop("clusters")
    if "tasks_file" in options:
        options.pop("tasks")
    base = [f"--{k.lstrip('-').replace('_', '-')}={v}" for k, v in options.items()]
    code = main(["run", *base, "--out", "/nonexistent/never"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
