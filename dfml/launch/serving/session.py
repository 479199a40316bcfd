"""One serving session: the board actor, the Serve application and the worker loop.

:class:`Serving` is a context manager around a trained
:class:`~dfml.experiment.Experiment`: entering publishes the clusters and
starts Ray Serve's HTTP proxy on (host, port) with the application;
:meth:`Serving.run` serves tasks until stopped; leaving shuts Serve down and
stops the board, however it ends.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import ray
from ray import serve

from dfml.experiment import Experiment
from dfml.launch.services import task_service
from dfml.launch.serving.app import ModelSpec, RemoteBoard, board_actor, build_app
from dfml.launch.serving.worker import TaskWorker

log = logging.getLogger(__name__)

#: The Serve application's name.
APP_NAME = "dfml-tasks"
#: Seconds the worker waits for a task before it looks at ``stop`` again.
POLL_SECONDS = 0.5


class Serving:
    """Serve ``exp``'s task service over HTTP on ``host``:``port``."""

    def __init__(self, exp: Experiment, host: str, port: int) -> None:
        self.exp, self.host, self.port = exp, host, port
        self.service = task_service(exp)
        self.board: Any = None
        self.clusters: list[dict[str, Any]] = []

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> Serving:
        self.board = board_actor()
        try:
            self.worker = TaskWorker(self.service, RemoteBoard(self.board), ray.put)
            self.clusters, served = self.worker.open(self.exp.runtime)
            prep = self.exp.prepared
            spec = ModelSpec(self.exp.cfg.model, tuple(prep.input_shape), prep.num_classes)
            servable = [u for u in self.service.universe if self._scorable(u)]
            serve.start(http_options={"host": self.host, "port": self.port})
            app = build_app(self.board, servable, spec, served)
            serve.run(app, name=APP_NAME, route_prefix="/")
            log.info("serving %d clusters' tasks on %s", len(self.clusters), self.url)
        except BaseException:
            self._stop()
            raise
        return self

    def _scorable(self, label: int) -> bool:
        """A label with held-out samples, so a task asking for it can be scored."""
        return bool((self.service.requester.test.y == label).any())

    def run(self, stop: threading.Event | None = None) -> None:
        """Serve queued tasks one at a time until ``stop`` is set (or forever)."""
        stop = stop or threading.Event()
        while not stop.is_set():
            self.worker.step(POLL_SECONDS)

    def __exit__(self, *exc: object) -> None:
        self._stop()

    def _stop(self) -> None:
        """Shut Serve down and stop the board (the experiment's owner stops the actors)."""
        try:
            serve.shutdown()
        finally:
            if self.board is not None:
                ray.kill(self.board)
                self.board = None
