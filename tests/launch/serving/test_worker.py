"""The driver-side worker, over the plain board and a stand-in task service."""

from __future__ import annotations

import numpy as np
import pytest

from dfml.algorithms.clfml.service import TaskResult
from dfml.algorithms.clfml.tasks import Task
from dfml.launch.serving.board import TaskBoard
from dfml.launch.serving.worker import average, cluster_models, cluster_views, result_view


def result(labels, accuracy=0.8) -> TaskResult:
    return TaskResult(
        labels=list(labels),
        case=2,
        primary_cluster=1,
        clusters=[1, 0],
        clients=[0, 3],
        missing=[4],
        accuracy_before=float("nan"),
        accuracy_before_missing=None,
        accuracy=accuracy,
        accuracy_present=0.9,
        accuracy_missing=0.5,
        accuracy_own=0.85,
        accuracy_no_augmentation=0.7,
        curve={0: 0.4, 2: accuracy},
        generator_recognition=None,
        seconds=1.5,
    )


class Service:
    """Stands in for TaskService: records the calls, fails on label 9."""

    def __init__(self):
        self.calls = []
        self.final_models = {}

    def submit(self, labels, q=None):
        self.calls.append((tuple(labels), q))
        if 9 in labels:
            raise ValueError("no client holds 9\ndetails")
        self.final_models = {0: np.full(3, 1.0), 3: np.full(3, 3.0)}
        return result(labels)


def test_result_view_is_json_ready():
    view = result_view(result([1, 4]))
    assert view["accuracy_before"] is None and view["accuracy"] == 0.8
    assert view["curve"] == {"0": 0.4, "2": 0.8}
    assert (view["case"], view["clusters"], view["clients"]) == (2, [1, 0], [0, 3])


def test_worker_serves_tasks_in_order_and_reports_failures():
    from dfml.launch.serving.worker import TaskWorker

    board, service = TaskBoard(), Service()
    worker = TaskWorker(service, board, put=lambda v: ("stored", v))
    ok, bad = board.submit(Task((1, 4), (1.0, 3.0))), board.submit(Task((9,)))
    assert worker.step(0.0) == ok and worker.step(0.0) == bad and worker.step(0.0) is None
    assert service.calls == [((1, 4), (0.25, 0.75)), ((9,), None)]
    assert board.view(ok)["status"] == "done" and board.view(ok)["accuracy"] == 0.8
    served = board.model("task-1")
    assert served.labels == (1, 4) and served.vector[0] == "stored"
    np.testing.assert_array_equal(served.vector[1], np.full(3, 2.0, dtype=np.float32))
    assert board.view(bad)["status"] == "failed"
    assert board.view(bad)["error"] == "ValueError: no client holds 9"


def test_clusters_their_views_and_meta_models():
    assignment = {0: 0, 1: 1, 2: 0}
    labels = {0: (1, 2), 1: (3,)}
    w = np.array([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    views = cluster_views(assignment, labels, w, [1, 2, 3])
    assert views[0] == {
        "cluster": 0,
        "labels": [1, 2],
        "distribution": {"1": 0.5, "2": 0.5, "3": 0.0},
        "clients": [0, 2],
    }
    vectors = {0: np.zeros(2), 1: np.ones(2), 2: np.full(2, 4.0)}
    models = cluster_models(assignment, labels, vectors, model_size=2)
    np.testing.assert_array_equal(models[0].vector, [2.0, 2.0])
    assert models[1].labels == (3,)
    assert cluster_models(assignment, labels, vectors, model_size=4) == {}


def test_average_is_float32():
    got = average([np.array([1.0, 2.0]), np.array([2.0, 4.0])])
    assert got.dtype == np.float32 and got.tolist() == pytest.approx([1.5, 3.0])
