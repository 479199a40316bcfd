"""The Ray Serve shell of ``dfml serve``: HTTP routes and the multiplexed predictor.

Thin on purpose: every check is in :mod:`.requests`, the task state in
:mod:`.board` (run as one Ray actor, :func:`board_actor`), the training in
the driver's :mod:`.worker`. Two deployments:

* :class:`TaskApi`, the FastAPI ingress: ``POST /tasks``, ``GET /tasks/{id}``,
  ``POST /tasks/{id}/predict``, ``GET /clusters``,
  ``POST /clusters/{k}/predict``, ``GET /healthz``;
* :class:`Predictor`, which loads served models by id with Serve's model
  multiplexing (``@serve.multiplexed``: ``task-ID`` or ``cluster-K``, the
  vector read from the object store through the board) and predicts, the
  argmax restricted to the model's labels. Prediction never touches the
  training actors.

Every refusal is ``{"error": "<one line>"}`` with a 4xx status; an
unexpected error is logged with its traceback and answered 500 with one line.
(No ``from __future__ import annotations`` here: FastAPI reads the route
signatures' annotations, which Serve's ingress wrapper cannot resolve from strings.)
"""

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from ray import serve
from ray.serve.handle import DeploymentHandle
from starlette.exceptions import HTTPException

from dfml.algorithms.clfml.scoring import restricted_predictions
from dfml.launch.serving.board import ServedModel, TaskBoard, model_id
from dfml.launch.serving.requests import BadRequest, parse_id, parse_inputs, parse_task
from dfml.models.zoo import ModelConfig, build_model

log = logging.getLogger(__name__)

#: Served models a predictor replica keeps loaded (least recently used go first).
MODELS_PER_REPLICA = 32


@dataclass(frozen=True)
class ModelSpec:
    """What a predictor needs to rebuild the model a vector belongs to."""

    model: ModelConfig
    input_shape: tuple[int, ...]
    num_classes: int


def board_actor() -> Any:
    """The task board as a threaded Ray actor (its ``claim`` waits while others answer)."""
    return ray.remote(num_cpus=0, max_concurrency=16)(TaskBoard).remote()


class RemoteBoard:
    """The board actor behind the worker's synchronous driver calls."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor

    def open(self, clusters: list[dict[str, Any]], models: dict[str, ServedModel]) -> None:
        ray.get(self.actor.open.remote(clusters, models))

    def claim(self, wait_s: float = 0.0) -> Any:
        return ray.get(self.actor.claim.remote(wait_s))

    def finish(self, task_id: int, result: dict[str, Any], model: ServedModel) -> None:
        ray.get(self.actor.finish.remote(task_id, result, model))

    def fail(self, task_id: int, error: str) -> None:
        ray.get(self.actor.fail.remote(task_id, error))


api = FastAPI(title="dfml tasks")


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


@api.exception_handler(BadRequest)
async def _bad_request(request: Request, err: BadRequest) -> JSONResponse:
    return _error(err.status, err.message)


@api.exception_handler(HTTPException)
async def _http_error(request: Request, err: HTTPException) -> JSONResponse:
    """Unknown routes and methods: the same one-line body as every other refusal."""
    return _error(err.status_code, f"{request.method} {request.url.path}: {err.detail}")


@api.exception_handler(RequestValidationError)
async def _validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
    return _error(400, f"{request.method} {request.url.path}: {err.errors()[0]['msg']}")


@api.exception_handler(Exception)
async def _internal_error(request: Request, err: Exception) -> JSONResponse:
    log.error("%s %s failed", request.method, request.url.path, exc_info=err)
    line = f"{type(err).__name__}: {err}".splitlines()[0]
    return _error(500, f"internal error ({line}); the server log has the traceback")


#: Requests one replica takes at a time (Serve's default, 5, queues a burst in the proxy;
#: these handlers await I/O and a small forward pass).
MAX_ONGOING = 256


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=MAX_ONGOING)
class Predictor:
    """Predicts with a served model, loaded by multiplexed model id."""

    def __init__(self, board: Any, spec: ModelSpec) -> None:
        self.board = board
        self.model = build_model(spec.model, spec.input_shape, spec.num_classes)

    @serve.multiplexed(max_num_models_per_replica=MODELS_PER_REPLICA)
    async def get_model(self, name: str) -> tuple[torch.Tensor, tuple[int, ...]]:
        served: ServedModel = await self.board.model.remote(name)
        vector = served.vector
        if isinstance(vector, ray.ObjectRef):
            vector = await vector
        return torch.tensor(np.asarray(vector), dtype=torch.float32), served.labels

    async def predict(self, x: np.ndarray) -> list[int]:
        vector, labels = await self.get_model(serve.get_multiplexed_model_id())
        return restricted_predictions(self.model, vector, torch.from_numpy(x), labels).tolist()


@serve.deployment(ray_actor_options={"num_cpus": 0}, max_ongoing_requests=MAX_ONGOING)
@serve.ingress(api)
class TaskApi:
    """The HTTP routes; checks requests, answers from the board, predicts via the predictor."""

    def __init__(
        self,
        board: Any,
        predictor: DeploymentHandle,
        servable: list[int],
        spec: ModelSpec,
        clusters: dict[int, bool],
    ) -> None:
        self.board, self.predictor = board, predictor
        self.servable, self.input_shape = servable, spec.input_shape
        self.cluster_models = clusters  # cluster id → whether its meta-model is served

    @api.get("/healthz")
    async def healthz(self) -> JSONResponse:
        health = await self.board.health.remote()
        return JSONResponse(health, status_code=200 if health["serving"] else 503)

    @api.post("/tasks", status_code=202)
    async def submit(self, request: Request) -> dict[str, int]:
        task = parse_task(await request.body(), self.servable)
        return {"task_id": await self.board.submit.remote(task)}

    @api.get("/tasks/{task_id}")
    async def status(self, task_id: str) -> dict[str, Any]:
        view = await self.board.view.remote(parse_id(task_id, "task"))
        if view is None:
            raise BadRequest(404, f"unknown task id {task_id!r}; POST /tasks to make one")
        return view

    @api.post("/tasks/{task_id}/predict")
    async def predict_task(self, task_id: str, request: Request) -> dict[str, Any]:
        view = await self.status(task_id)
        if view["status"] != "done":
            raise BadRequest(
                409, f"task {view['task_id']} is {view['status']}; predict once it is done"
            )
        x = parse_inputs(await request.body(), self.input_shape)
        return await self._predict(model_id("task", view["task_id"]), x)

    @api.get("/clusters")
    async def clusters(self) -> dict[str, Any]:
        return {"clusters": await self.board.clusters.remote(), "labels": self.servable}

    @api.post("/clusters/{cluster}/predict")
    async def predict_cluster(self, cluster: str, request: Request) -> dict[str, Any]:
        number = parse_id(cluster, "cluster", sorted(self.cluster_models))
        if not self.cluster_models[number]:
            raise BadRequest(
                409, "this algorithm publishes more than the model: cluster models are not served"
            )
        x = parse_inputs(await request.body(), self.input_shape)
        return await self._predict(model_id("cluster", number), x)

    async def _predict(self, name: str, x: np.ndarray) -> dict[str, Any]:
        handle = self.predictor.options(multiplexed_model_id=name)
        return {"model": name, "predictions": await handle.predict.remote(x)}


def build_app(board: Any, servable: list[int], spec: ModelSpec, clusters: dict[int, bool]) -> Any:
    """The Serve application: the ingress bound to the board and a predictor.

    ``clusters``: cluster id → whether its meta-model is served (fixed once
    trained, so a cluster prediction asks the board nothing)."""
    return TaskApi.bind(board, Predictor.bind(board, spec), servable, spec, clusters)
