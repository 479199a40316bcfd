"""``dfml serve``'s Serve application on the test Ray session, driven over real HTTP.

One small CL-FML system (digits, 9 clients, 2 rounds, in process) is trained
once for the module and served; a second system of the same config and seed
answers the same task directly (``task_service(exp).submit``) for comparison.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import torch
from helpers.clfml import SCENARIO
from helpers.fault import BASE

from dfml.algorithms.clfml.scoring import restricted_predictions, score_task
from dfml.algorithms.clfml.state import SLOT
from dfml.channels import get_value
from dfml.experiment import Experiment, prepare
from dfml.launch.options import build_config
from dfml.launch.registry import algorithm_class
from dfml.launch.services import task_service
from dfml.launch.serving.session import Serving
from dfml.launch.serving.worker import average

SYSTEM = {**BASE, **{k: v for k, v in SCENARIO.items() if k != "tasks"}}
TASK = [1, 5, 7]


def _experiment(**options) -> Experiment:
    cfg, _ = build_config({**SYSTEM, **options})
    return Experiment(cfg, algorithm_class("clfml")(cfg.algorithm), prepared=prepare(cfg))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def direct(ray_session):
    """The task answered by the task service's Python API on a fresh system."""
    with _experiment(backend="local") as exp:
        exp.run()
        return task_service(exp).submit(TASK)


@pytest.fixture(scope="module")
def served(direct):
    """The trained system served on a free port; the worker loop in a thread. Its
    clients stay in this process (``--backend local``): Serve's own actors are the
    Ray under test here, the training actors are tested elsewhere."""
    with _experiment(backend="local") as exp:
        exp.run()
        with Serving(exp, "127.0.0.1", _free_port()) as serving:
            stop = threading.Event()
            loop = threading.Thread(target=serving.run, args=(stop,), daemon=True)
            loop.start()
            with httpx.Client(base_url=serving.url, timeout=60) as client:
                yield SimpleNamespace(exp=exp, serving=serving, http=client)
            stop.set()
            loop.join(timeout=30)


def _wait(http: httpx.Client, task_id: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        view = http.get(f"/tasks/{task_id}").json()
        if view["status"] in ("done", "failed"):
            return view
        time.sleep(0.2)
    raise AssertionError(f"task {task_id} not finished in {timeout} s: {view}")


def _test_samples(served, labels: list[int]) -> tuple[np.ndarray, np.ndarray]:
    test = served.serving.service.requester.test
    pos = test.select(labels)
    return test.x[pos].numpy(), test.y[pos]


def test_healthz_and_clusters(served):
    health = served.http.get("/healthz")
    assert health.status_code == 200 and health.json()["serving"] is True
    body = served.http.get("/clusters").json()
    info = served.exp.runtime.state.sources[SLOT]
    assert {c["cluster"]: c["labels"] for c in body["clusters"]} == {
        k: list(v) for k, v in info.cluster_labels.items()
    }
    for c in body["clusters"]:
        assert c["clients"] == sorted(i for i, k in info.assignment.items() if k == c["cluster"])
        assert list(c["distribution"].values()) == pytest.approx(
            list(np.asarray(info.w)[c["cluster"]])
        )
    assert body["labels"] == list(range(10))


def test_task_over_http_equals_the_direct_answer_and_predicts_within_its_labels(served, direct):
    answer = served.http.post("/tasks", json={"labels": TASK})
    assert answer.status_code == 202, answer.text
    view = _wait(served.http, answer.json()["task_id"])
    assert view["status"] == "done", view
    for key in ("case", "primary_cluster", "clusters", "clients", "missing"):
        assert view[key] == getattr(direct, key), key
    assert view["accuracy"] == pytest.approx(direct.accuracy)
    assert view["accuracy_before"] == pytest.approx(direct.accuracy_before)
    assert view["seconds"] > 0
    service = served.serving.service
    finals = service.final_models
    assert sorted(finals) == view["clients"]
    # The final models are the ones the task's accuracy scored.
    held = {c: (0, 1, 2, 3, 4, 5, 6, 7, 8, 9) for c in finals}
    vectors = {c: torch.from_numpy(v) for c, v in finals.items()}
    score = score_task(service.requester.model, vectors, service.requester.test, TASK, held)
    assert score.accuracy == pytest.approx(view["accuracy"])
    x, y = _test_samples(served, TASK)
    got = served.http.post(f"/tasks/{view['task_id']}/predict", json={"inputs": x.tolist()})
    assert got.status_code == 200, got.text
    predicted = np.asarray(got.json()["predictions"])
    assert set(predicted.tolist()) <= set(TASK) and len(predicted) == len(y)
    model = torch.from_numpy(average(list(finals.values())))
    expected = restricted_predictions(service.requester.model, model, torch.from_numpy(x), TASK)
    np.testing.assert_array_equal(predicted, expected)
    assert (predicted == y).mean() > 0.5  # three digits: far above chance (1/3)


def test_cluster_meta_models_predict_within_their_labels(served):
    clusters = served.http.get("/clusters").json()["clusters"]
    runtime = served.exp.runtime
    for c in clusters:
        x, _ = _test_samples(served, c["labels"])
        got = served.http.post(
            f"/clusters/{c['cluster']}/predict", json={"inputs": x[:20].tolist()}
        )
        assert got.status_code == 200, got.text
        meta = average([np.asarray(get_value(runtime.published()[i])) for i in c["clients"]])
        expected = restricted_predictions(
            served.serving.service.requester.model,
            torch.from_numpy(meta),
            torch.from_numpy(x[:20]),
            c["labels"],
        )
        assert got.json()["predictions"] == expected.tolist()


def test_concurrent_submissions_both_finish(served):
    tasks = [[0, 1], [8, 9, 3]]
    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(lambda t: served.http.post("/tasks", json={"labels": t}), tasks))
    assert [a.status_code for a in answers] == [202, 202]
    ids = [a.json()["task_id"] for a in answers]
    assert len(set(ids)) == 2
    views = [_wait(served.http, i) for i in ids]
    assert [v["status"] for v in views] == ["done", "done"]
    for labels, view in zip(tasks, views, strict=True):
        assert view["labels"] == labels
        x, _ = _test_samples(served, labels)
        got = served.http.post(
            f"/tasks/{view['task_id']}/predict", json={"inputs": x[:30].tolist()}
        )
        assert set(got.json()["predictions"]) <= set(labels)


def test_a_task_whose_training_fails_is_failed_with_the_error(served, monkeypatch):
    def broken(labels, q=None):
        raise RuntimeError("actor lost\nsecond line")

    monkeypatch.setattr(served.serving.service, "submit", broken)
    task_id = served.http.post("/tasks", json={"labels": [2, 3]}).json()["task_id"]
    view = _wait(served.http, task_id)
    assert view["status"] == "failed" and view["error"] == "RuntimeError: actor lost"
    got = served.http.post(f"/tasks/{task_id}/predict", json={"inputs": [[0.0] * 64]})
    assert got.status_code == 409 and "failed" in got.json()["error"]


BAD = [
    ("POST", "/tasks", b"{labels: [1]}", 400, "not JSON"),
    ("POST", "/tasks", b"[1, 2]", 400, "send a JSON object"),
    ("POST", "/tasks", b'{"labels": []}', 400, "no labels"),
    ("POST", "/tasks", b'{"labels": [1, 1]}', 400, "twice"),
    ("POST", "/tasks", b'{"labels": [1, 42]}', 400, "label 42 is not served; allowed: 0, 1,"),
    ("POST", "/tasks", b'{"labels": [1, "a"]}', 400, "label 'a' is not an integer"),
    ("POST", "/tasks", b'{"labels": [1, 2.5]}', 400, "label 2.5 is not an integer"),
    ("POST", "/tasks", b'{"labels": [true, 2]}', 400, "label True is not an integer"),
    ("POST", "/tasks", b'{"labels": 3}', 400, "labels must be a list"),
    ("POST", "/tasks", b'{"label": [3]}', 400, "unknown field 'label'; allowed: labels, q"),
    ("POST", "/tasks", b"{}", 400, "field 'labels' is missing"),
    ("POST", "/tasks", b'{"labels": [1, 2], "q": [1]}', 400, "one weight per label"),
    ("GET", "/tasks/999", None, 404, "unknown task id '999'"),
    ("GET", "/tasks/abc", None, 404, "unknown task id 'abc'"),
    ("POST", "/tasks/999/predict", b'{"inputs": [[0]]}', 404, "unknown task id '999'"),
    ("POST", "/tasks/1/predict", b'{"inputs": [[0, 1]]}', 400, "inputs have shape [1, 2]"),
    ("POST", "/tasks/1/predict", b'{"inputs": [["x"]]}', 400, "not a regular array"),
    ("POST", "/tasks/1/predict", b'{"inputs": []}', 400, "inputs holds 0 samples"),
    ("POST", "/clusters/7/predict", b'{"inputs": [[0]]}', 404, "unknown cluster id '7'"),
    ("GET", "/nowhere", None, 404, "GET /nowhere: Not Found"),
    ("DELETE", "/tasks", None, 405, "Method Not Allowed"),
]


@pytest.mark.parametrize(("method", "path", "body", "status", "fragment"), BAD)
def test_bad_requests_get_one_line_4xx(served, method, path, body, status, fragment):
    if path.startswith("/tasks/1/"):  # a done task, so the inputs are what is wrong
        assert _wait(served.http, 1)["status"] == "done"
    got = served.http.request(method, path, content=body)
    assert got.status_code == status, got.text
    error = json.loads(got.text)
    assert list(error) == ["error"] and "\n" not in error["error"]
    assert fragment in error["error"], error["error"]
