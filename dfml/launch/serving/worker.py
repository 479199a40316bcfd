"""The driver side of ``dfml serve``: the one worker that owns the trained system.

It publishes the clusters and their meta-models on the board, then takes the
board's tasks one at a time, serves each on the live clients with the task
service (:meth:`~dfml.algorithms.clfml.service.TaskService.submit`, the same
call as from Python, so an answer equals that call's on the same seed) and
hands the result and the task model back. Plain Python over any board with
:class:`~dfml.launch.serving.board.TaskBoard`'s driver methods (the board
itself in tests, its Ray actor in ``dfml serve``).

A served model is one parameter vector: the uniform average of the members'
vectors — a cluster's clients' meta-models, or the engaged clients' final
task models (the consensus their gossip fine-tuning moves towards).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

import numpy as np

from dfml.algorithms.clfml.service import TaskResult, TaskService
from dfml.algorithms.clfml.tasks import Task
from dfml.channels import get_value
from dfml.launch.serving.board import ServedModel, model_id

log = logging.getLogger(__name__)


class DriverBoard(Protocol):
    """What the worker needs of the board (its driver half)."""

    def open(self, clusters: list[dict[str, Any]], models: dict[str, ServedModel]) -> None: ...

    def claim(self, wait_s: float = 0.0) -> tuple[int, Task] | None: ...

    def finish(self, task_id: int, result: dict[str, Any], model: ServedModel) -> None: ...

    def fail(self, task_id: int, error: str) -> None: ...


def _number(value: float | None) -> float | None:
    """JSON has no NaN: an accuracy that could not be measured is ``null``."""
    return None if value is None or math.isnan(value) else float(value)


def result_view(result: TaskResult) -> dict[str, Any]:
    """A task's result as ``GET /tasks/{id}`` shows it (accuracies ``null`` when NaN)."""
    out = dataclasses.asdict(result)
    for key, value in out.items():
        if key.startswith("accuracy") or key == "generator_recognition":
            out[key] = _number(value)
    out["curve"] = {str(r): _number(v) for r, v in sorted(result.curve.items())}
    return out


def average(vectors: Sequence[np.ndarray]) -> np.ndarray:
    """The uniform average of parameter vectors, float32."""
    return np.mean(np.stack([np.asarray(v, dtype=np.float64) for v in vectors]), 0).astype(
        np.float32
    )


def cluster_views(
    assignment: Mapping[int, int],
    labels: Mapping[int, Sequence[int]],
    w: np.ndarray,
    universe: Sequence[int],
) -> list[dict[str, Any]]:
    """``GET /clusters``: each cluster's label set ℒ_k, its label distribution w_k
    over the universe, and its clients."""
    return [
        {
            "cluster": int(k),
            "labels": [int(v) for v in labels[k]],
            "distribution": {str(u): float(p) for u, p in zip(universe, w[k], strict=True)},
            "clients": sorted(int(c) for c, j in assignment.items() if j == k),
        }
        for k in sorted(labels)
    ]


def cluster_models(
    assignment: Mapping[int, int],
    labels: Mapping[int, Sequence[int]],
    vectors: Mapping[int, np.ndarray],
    model_size: int,
) -> dict[int, ServedModel]:
    """Cluster k → its meta-model (the average of its clients' published vectors),
    answering over ℒ_k. Empty when the published vectors hold more than the
    model (Meta-SGD's θ‖α, AFML's encoder): those are not one model to serve."""
    sizes = {len(v) for v in vectors.values()}
    if sizes != {model_size}:
        log.warning(
            "published vectors have %s entries, the model %d: cluster meta-models are not served",
            sorted(sizes),
            model_size,
        )
        return {}
    return {
        k: ServedModel(
            average([vectors[c] for c in sorted(assignment) if assignment[c] == k]),
            tuple(sorted(int(v) for v in labels[k])),
        )
        for k in sorted(labels)
    }


class TaskWorker:
    """Serves the board's tasks on one trained system, one at a time.

    ``put`` stores a model vector where predictors can read it (``ray.put``
    in ``dfml serve``; the identity in tests without Ray).
    """

    def __init__(
        self,
        service: TaskService,
        board: DriverBoard,
        put: Callable[[np.ndarray], Any],
    ) -> None:
        self.service, self.board, self.put = service, board, put

    def open(self, runtime: Any) -> tuple[list[dict[str, Any]], dict[int, bool]]:
        """Publish the clusters of ``runtime``'s trained system and their meta-models;
        the clusters' views, and cluster id → whether its meta-model is served."""
        assignment, labels, w = self.service.clustering(runtime.state, runtime.env)
        views = cluster_views(assignment, labels, np.asarray(w), self.service.universe)
        vectors = {c: np.asarray(get_value(h)) for c, h in runtime.published().items()}
        models = cluster_models(assignment, labels, vectors, self.service.requester.model.size)
        self.board.open(
            views,
            {
                model_id("cluster", k): ServedModel(self.put(m.vector), m.labels)
                for k, m in models.items()
            },
        )
        return views, {int(k): k in models for k in labels}

    def step(self, wait_s: float) -> int | None:
        """Serve the next queued task (waiting up to ``wait_s`` for one); its id, if any.

        A task whose training raises is marked ``failed`` with the error line
        (and the traceback logged); the worker goes on with the next.
        """
        claimed = self.board.claim(wait_s)
        if claimed is None:
            return None
        task_id, task = claimed
        log.info("task %d: labels %s", task_id, list(task.labels))
        try:
            result = self.service.submit(task.labels, task.q)
            vector = average(list(self.service.final_models.values()))
        except Exception as err:
            log.exception("task %d failed", task_id)
            self.board.fail(task_id, f"{type(err).__name__}: {err}".splitlines()[0])
            return task_id
        model = ServedModel(self.put(vector), tuple(result.labels))
        self.board.finish(task_id, result_view(result), model)
        log.info("task %d done: accuracy %s in %.1f s", task_id, result.accuracy, result.seconds)
        return task_id
