"""CL-FML's label phases, cluster meta-training and tasks through real Ray actors (the
scenario), and the task service on the in-process backend."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from helpers.clfml import SCENARIO
from helpers.fault import BASE, run

from dfml.actors.state import ClientData
from dfml.algorithms.clfml.augment import ConditionalVAE
from dfml.algorithms.clfml.clustering import (
    arrival_order,
    centralized_online_kmeans,
)
from dfml.algorithms.clfml.labels import label_vector, ring_dissemination
from dfml.algorithms.clfml.state import SLOT
from dfml.algorithms.clfml.task_client import TASK, TASK_ADAPTED, TASK_PLAIN
from dfml.algorithms.clfml.tasks import Task, primary_cluster, select_clusters
from dfml.channels import get_value
from dfml.data.registry import load_dataset
from dfml.errors import ConfigError
from dfml.experiment import Experiment, prepare
from dfml.launch.cli import main
from dfml.launch.options import build_config
from dfml.launch.registry import algorithm_class
from dfml.launch.services import task_service
from dfml.models.zoo import build_model
from dfml.records import Callback
from dfml.topology.graphs import link_cost_graph, minimum_spanning_tree

#: The task models' channels: with / without the generated samples, and at T′ = 0.
TASK_MODELS = (TASK, TASK_PLAIN, TASK_ADAPTED)


class Published(Callback):
    """Every object clients published on every channel, fetched at the end."""

    def on_start(self, runtime):
        self.runtime = runtime

    def on_run_end(self, history):
        self.objects = {
            name: {c: get_value(ref) for c, ref in refs.items()}
            for name, refs in self.runtime.state.channels.items()
        }


@pytest.fixture(scope="module")
def clfml_run(ray_session, tmp_path_factory) -> dict:
    """The CL-FML scenario, run once for the module and checked as it is built."""
    return run_clfml(tmp_path_factory.mktemp("clfml"))


def test_label_phases_and_cluster_training(clfml_run):
    assert clfml_run["status"] == "completed"


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
            if name in ("params", *TASK_MODELS):
                assert arr.shape == (summary["param_count"],)
            elif name == "generator":
                assert arr.ndim == 1 and arr.size == generator_size
            elif name in ("known_labels", "own_labels"):
                assert arr.ndim == 1 and set(arr.tolist()) <= set(universe)
            else:
                assert arr.ndim == 2 and arr.shape[1] == 2 + m, (name, arr.shape)
    assert summary["final_accuracy"] > 0.2
    # The task service: one record per task, Case I/II, tasks.parquet.
    assert len(summary["tasks"]) == 4 and (tmp_path / "tasks.parquet").exists()
    for record in summary["tasks"]:
        assert record["case"] in (1, 2) and record["clusters"][0] == record["primary_cluster"]
        engaged = {c for c, k in summary["client_cluster"].items() if k in record["clusters"]}
        assert {str(c) for c in record["clients"]} == engaged
        assert (record["accuracy_no_augmentation"] is None) == (record["case"] == 1)
        augmented = record["accuracy_no_augmentation"] is not None
        assert (record["generator_recognition"] is not None) == augmented
    check_task_predictions(tmp_path, summary, labels)
    return summary


def check_task_predictions(out, summary, client_labels) -> None:
    """Every task figure recomputed from task_predictions.parquet and partition.parquet.

    The requester's test samples cover every label of each task, for every
    engaged client; none of them is in any client's D^M or D^Q; per-task
    accuracy is the share of correct rows, present / missing split by the
    client's cluster labels, and the summary's means follow.
    """
    rows = pq.read_table(out / "task_predictions.parquet").to_pandas()
    part = pq.read_table(out / "partition.parquet").to_pandas()
    trained = set(part[part["split"] != "test"]["index"])
    tested = set(part[part["split"] == "test"]["index"])
    assert set(rows["index"]) <= tested and not set(rows["index"]) & trained
    cluster_of = {int(c): k for c, k in summary["client_cluster"].items()}
    held = {int(k): set(v) for k, v in summary["cluster_labels"].items()}
    for t, record in enumerate(summary["tasks"]):
        mine = rows[rows["task"] == t]
        assert sorted(set(mine["client"])) == record["clients"]
        for _, per_client in mine.groupby("client"):
            assert set(per_client["label"]) == set(record["labels"])  # every label of 𝒯
        assert mine["present"].tolist() == [
            label in held[cluster_of[c]]
            for c, label in zip(mine["client"], mine["label"], strict=True)
        ]
        hit = mine["predicted"] == mine["label"]
        assert record["accuracy"] == pytest.approx(hit.mean())
        by_client = [hit[mine["client"] == c] for c in record["clients"]]
        present = [
            h[mine.loc[h.index, "present"]].mean()
            for h in by_client
            if mine.loc[h.index, "present"].any()
        ]
        assert record["accuracy_present"] == pytest.approx(np.mean(present))
        if record["missing"]:
            missing = [
                h[~mine.loc[h.index, "present"]].mean()
                for h in by_client
                if (~mine.loc[h.index, "present"]).any()
            ]
            assert record["accuracy_missing"] == pytest.approx(np.mean(missing))
        else:
            assert record["accuracy_missing"] is None
        assert record["curve"][str(SCENARIO["finetune_rounds"])] == record["accuracy"]
    per_task = rows.assign(hit=rows["predicted"] == rows["label"]).groupby("task")["hit"].mean()
    assert summary["task_accuracy"] == pytest.approx(per_task.mean())
    # Every engaged client's own labels are a subset of its cluster's.
    assert all(set(client_labels[c]) <= held[k] for c, k in cluster_of.items())


def test_baselines_serve_the_same_tasks_on_the_same_clients(clfml_run, tmp_path):
    clfml = clfml_run
    for name in ("dfedavg", "cdfedavg"):  # which clients a task engages needs no fine-tuning
        options = {
            **SCENARIO,
            "algorithm": name,
            "finetune_rounds": 1,
            "augment": False,
            "backend": "local",
        }
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
        (["tasks_file", "MISSING"], "tasks file"),
        (["shots", "-1"], "shots must be >= 0"),
        (["zeta", "0.5"], "use --zeta 1 with --tasks"),
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


def _requester_accuracy(prep, cfg, vectors, labels) -> tuple[float, float]:
    """(all-label, own-label) accuracy recomputed with plain torch on the driver.

    All-label: each client's task model on every client's test samples of 𝒯,
    averaged over clients; own-label: on its own test samples, pooled.
    """
    dataset = load_dataset(cfg.data)
    model = build_model(cfg.model, dataset.input_shape, dataset.num_classes)
    cpu = torch.device("cpu")
    data = [ClientData.from_split(dataset, split, cpu) for split in prep.splits]
    x = torch.cat([d.x_test for d in data])
    y = torch.cat([d.y_test for d in data])
    keep = torch.isin(y, torch.tensor(labels))
    x, y = x[keep], y[keep]

    def predict(vector, inputs):
        with torch.no_grad():
            logits = model(torch.from_numpy(np.array(vector)), inputs)
        masked = torch.full_like(logits, float("-inf"))
        masked[:, labels] = logits[:, labels]
        return masked.argmax(1)

    pooled = np.mean([float((predict(v, x) == y).float().mean()) for v in vectors.values()])
    correct = total = 0
    for c, vector in vectors.items():
        own = torch.isin(data[c].y_test, torch.tensor(labels))
        correct += int((predict(vector, data[c].x_test[own]) == data[c].y_test[own]).sum())
        total += int(own.sum())
    return float(pooled), correct / total


def test_submit_serves_tasks_on_the_live_trained_system():
    # In-process: the same service and client programs; the scenario above serves on Ray.
    cfg, _ = build_config({**BASE, **{**SCENARIO, "tasks": 0, "backend": "local"}})
    prep = prepare(cfg)
    algorithm = algorithm_class("clfml")(cfg.algorithm)
    with Experiment(cfg, algorithm, prepared=prep) as exp:
        with pytest.raises(ConfigError, match="call run"):
            task_service(exp)
        exp.run()
        service = task_service(exp)
        meta = {c: get_value(r) for c, r in exp.runtime.published().items()}
        info = exp.runtime.state.sources[SLOT]
        universe = info.universe
        for bad, message in [
            ([], "task has no labels"),
            ([universe[0], universe[0]], "twice"),
            ([universe[0], 99], "99"),
        ]:
            with pytest.raises(ConfigError, match=message):
                service.submit(bad)
        held = {k: set(v) for k, v in info.cluster_labels.items()}
        one = sorted(held[0])[:2]  # inside cluster 0: Case I
        spread = next(  # two labels no single cluster holds: Case II
            [a, b]
            for a, b in itertools.combinations(universe, 2)
            if not any({a, b} <= h for h in held.values())
        )
        results = [service.submit(one)]
        task_models = {c: get_value(r) for c, r in exp.runtime.published("task").items()}
        results.append(service.submit(spread, q=[3.0, 1.0]))
        for labels, q, result in zip([one, spread], [None, [3.0, 1.0]], results, strict=True):
            task = Task(tuple(labels), None if q is None else tuple(q))
            w = np.asarray(info.w)
            dist = task.distribution(universe)
            k_star = primary_cluster(dist, w)
            case, engaged = select_clusters(task.labels, k_star, info.cluster_labels, w, dist)
            assert (result.case, result.primary_cluster, result.clusters) == (case, k_star, engaged)
            members = sorted(c for c, k in info.assignment.items() if k in engaged)
            assert result.clients == members
            assert result.seconds > 0
        # The Case I task's models, scored independently: on every label of 𝒯.
        members = results[0].clients
        pooled, own = _requester_accuracy(prep, cfg, {c: task_models[c] for c in members}, one)
        assert results[0].accuracy == pytest.approx(pooled)
        assert results[0].accuracy_own == pytest.approx(own)
        assert results[0].accuracy > 0.5  # two labels its cluster holds: well above chance
        assert results[1].case == 2 and results[1].accuracy_no_augmentation is not None
        # Serving does not retrain: every meta-model is the same vector as before.
        after = {c: get_value(r) for c, r in exp.runtime.published().items()}
        assert all(np.array_equal(meta[c], after[c]) for c in meta)
        assert [r["labels"] for r in service.records] == [one, spread]


def test_any_algorithm_that_trained_models_serves_tasks():
    cfg, _ = build_config({**BASE, "algorithm": "fedavg", "rounds": 1, "backend": "local"})
    with Experiment(cfg, algorithm_class("fedavg")(cfg.algorithm)) as exp:
        exp.run()
        service = task_service(exp)
        labels = sorted(service.universe)[:2]
        result = service.submit(labels)
        assert result.labels == labels and 0.0 <= result.accuracy <= 1.0
