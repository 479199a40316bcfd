"""The task board: ids, the queue order, the state machine and the served models."""

from __future__ import annotations

import threading
import time

from dfml.algorithms.clfml.tasks import Task
from dfml.launch.serving.board import ServedModel, TaskBoard


def test_tasks_queue_in_order_and_move_through_their_states():
    board = TaskBoard()
    assert board.health() == {
        "serving": False,
        "tasks": {"queued": 0, "running": 0, "done": 0, "failed": 0},
    }
    board.open([{"cluster": 0}], {"cluster-0": ServedModel("v0", (1, 2))})
    first, second = board.submit(Task((1, 2))), board.submit(Task((3,), (1.0,)))
    assert (first, second) == (1, 2) and board.ids() == [1, 2]
    assert board.view(first) == {"task_id": 1, "status": "queued", "labels": [1, 2], "q": None}
    assert board.claim() == (1, Task((1, 2)))
    assert board.view(first)["status"] == "running"
    board.finish(first, {"accuracy": 0.9}, ServedModel("v1", (1, 2)))
    assert board.claim() == (2, Task((3,), (1.0,)))
    board.fail(second, "RuntimeError: lost")
    assert board.claim() is None
    assert board.view(first) == {
        "task_id": 1,
        "status": "done",
        "labels": [1, 2],
        "q": None,
        "accuracy": 0.9,
    }
    assert board.view(second)["error"] == "RuntimeError: lost"
    assert board.view(3) is None
    assert board.model("task-1") == ServedModel("v1", (1, 2))
    assert board.model("task-2") is None and board.model("cluster-0").vector == "v0"
    assert board.health() == {
        "serving": True,
        "tasks": {"queued": 0, "running": 0, "done": 1, "failed": 1},
    }
    assert board.clusters() == [{"cluster": 0}]


def test_claim_waits_for_a_submission():
    board = TaskBoard()
    threading.Timer(0.1, board.submit, args=(Task((4,)),)).start()
    t0 = time.perf_counter()
    assert board.claim(wait_s=5.0) == (1, Task((4,)))
    assert time.perf_counter() - t0 < 2.0
    assert board.claim(wait_s=0.05) is None
