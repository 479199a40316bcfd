"""The task board of ``dfml serve``: the queue and state of every requested task.

Plain Python and thread-safe, so it is tested without Ray; ``dfml serve``
runs it as one Ray actor that the HTTP replicas and the driver share. A task
moves ``queued`` → ``running`` → ``done`` or ``failed``: the HTTP side
:meth:`~TaskBoard.submit`\\ s, the driver (the one worker that owns the
trained system) :meth:`~TaskBoard.claim`\\ s the oldest queued task, trains
it and reports :meth:`~TaskBoard.finish` or :meth:`~TaskBoard.fail`. So
tasks train one at a time, in the order they came.

The board also holds the served models (:class:`ServedModel`: a parameter
vector, usually an object-store reference, and the labels prediction is
restricted to) by model id, ``cluster-K`` or ``task-ID``, which is how the
predictor replicas load them.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from dfml.algorithms.clfml.tasks import Task

STATUSES = ("queued", "running", "done", "failed")


@dataclass(frozen=True)
class ServedModel:
    """A model a predictor serves: its parameter vector and the labels it may answer.

    ``vector`` is a NumPy vector or, on Ray, a reference to one in the object
    store (kept by reference: a board passed through Ray does not fetch it).
    """

    vector: Any
    labels: tuple[int, ...]


@dataclass
class TaskRecord:
    """One requested task and where it stands."""

    task_id: int
    task: Task
    status: str = "queued"
    submitted: float = field(default_factory=time.time)
    result: dict[str, Any] | None = None
    error: str | None = None

    def view(self) -> dict[str, Any]:
        """The JSON answer of ``GET /tasks/{id}``."""
        out: dict[str, Any] = {
            "task_id": self.task_id,
            "status": self.status,
            "labels": list(self.task.labels),
            "q": None if self.task.q is None else list(self.task.q),
        }
        if self.result is not None:
            out.update(self.result)
        if self.error is not None:
            out["error"] = self.error
        return out


def model_id(kind: str, number: int) -> str:
    """The multiplexed model id of cluster ``number`` or task ``number``."""
    return f"{kind}-{number}"


class TaskBoard:
    """Tasks by id, the queue of the ones not yet claimed, and the served models."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._records: dict[int, TaskRecord] = {}
        self._queue: list[int] = []
        self._models: dict[str, ServedModel] = {}
        self._clusters: list[dict[str, Any]] = []
        self._serving = False

    # ----- the HTTP side ---------------------------------------------------
    def submit(self, task: Task) -> int:
        """Queue a (checked) task; its id."""
        with self._lock:
            task_id = len(self._records) + 1
            self._records[task_id] = TaskRecord(task_id, task)
            self._queue.append(task_id)
            self._lock.notify_all()
            return task_id

    def view(self, task_id: int) -> dict[str, Any] | None:
        """The task's JSON view, or ``None`` for an id never given."""
        with self._lock:
            record = self._records.get(task_id)
            return None if record is None else record.view()

    def ids(self) -> list[int]:
        with self._lock:
            return sorted(self._records)

    def model(self, name: str) -> ServedModel | None:
        """The served model of id ``name`` (:func:`model_id`), or ``None``."""
        with self._lock:
            return self._models.get(name)

    def clusters(self) -> list[dict[str, Any]]:
        """The clusters' JSON view (label sets, distributions, clients)."""
        with self._lock:
            return list(self._clusters)

    def health(self) -> dict[str, Any]:
        """``serving`` once the trained system's clusters are published; the queue."""
        with self._lock:
            counts = {s: 0 for s in STATUSES}
            for record in self._records.values():
                counts[record.status] += 1
            return {"serving": self._serving, "tasks": counts}

    # ----- the driver side -------------------------------------------------
    def open(self, clusters: list[dict[str, Any]], models: dict[str, ServedModel]) -> None:
        """Publish the trained system's clusters and their meta-models; start serving."""
        with self._lock:
            self._clusters = list(clusters)
            self._models.update(models)
            self._serving = True

    def claim(self, wait_s: float = 0.0) -> tuple[int, Task] | None:
        """The oldest queued task, now ``running``; ``None`` if none came within ``wait_s``."""
        with self._lock:
            if not self._queue:
                self._lock.wait(wait_s)
            if not self._queue:
                return None
            task_id = self._queue.pop(0)
            record = self._records[task_id]
            record.status = "running"
            return task_id, record.task

    def finish(self, task_id: int, result: dict[str, Any], model: ServedModel) -> None:
        """Task ``task_id`` is done: its result and its model, served as ``task-ID``."""
        with self._lock:
            record = self._records[task_id]
            record.status, record.result = "done", dict(result)
            self._models[model_id("task", task_id)] = model

    def fail(self, task_id: int, error: str) -> None:
        """Task ``task_id`` failed with ``error`` (one line)."""
        with self._lock:
            record = self._records[task_id]
            record.status, record.error = "failed", error
