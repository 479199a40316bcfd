"""The set of client actors of one experiment, as the driver sees it.

:class:`Federation` creates the actors (cohorts, CPU/GPU fractions), routes
per-client messages to the actor hosting each client and gathers the small
results. It hands out and receives object refs only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import ray

from dfml.actors.client_actor import CohortSpec, RemoteClientActor
from dfml.actors.config import ResourceConfig, plan_cohorts
from dfml.data.config import DataConfig
from dfml.data.partition import ClientSplit
from dfml.errors import ConfigError
from dfml.models.zoo import ModelConfig

log = logging.getLogger(__name__)


class Federation:
    """Client actors plus the client → actor routing table."""

    def __init__(
        self,
        data: DataConfig,
        model: ModelConfig,
        splits: Sequence[ClientSplit],
        seed: int,
        resources: ResourceConfig,
        start_timeout_s: float = 300.0,
    ) -> None:
        self.data, self.model, self.splits, self.seed = data, model, list(splits), seed
        self.resources = resources
        self.start_timeout_s = start_timeout_s
        self.actors: list[Any] = []
        self.cohorts: list[list[int]] = []
        self.actor_of: dict[int, int] = {}

    @property
    def num_clients(self) -> int:
        return len(self.splits)

    def _check_resources(self) -> tuple[float, float]:
        total = ray.cluster_resources()
        cpus, gpus = float(total.get("CPU", 0.0)), float(total.get("GPU", 0.0))
        r = self.resources
        if r.num_gpus_per_actor > 0 and gpus == 0:
            raise ConfigError(
                f"--num-gpus-per-actor {r.num_gpus_per_actor} asks for GPUs but the Ray cluster "
                "has none; use --num-gpus-per-actor 0 to run on CPU"
            )
        if r.num_cpus_per_actor > cpus:
            raise ConfigError(
                f"--num-cpus-per-actor {r.num_cpus_per_actor} exceeds the cluster's {cpus:g} CPUs"
            )
        return cpus, gpus

    def actor_options(self, index: int) -> dict[str, Any]:
        r = self.resources
        return {
            "num_cpus": r.num_cpus_per_actor,
            "num_gpus": r.num_gpus_per_actor,
            "max_restarts": 0,
        }

    def make_actor(
        self, index: int, algorithm: Any, options: Mapping[str, Any] | None = None
    ) -> Any:
        """Create the actor for cohort ``index`` (also used to replace a dead one)."""
        spec = CohortSpec(
            data=self.data,
            model=self.model,
            splits={cid: self.splits[cid] for cid in self.cohorts[index]},
            seed=self.seed,
            num_threads=max(1, int(self.resources.num_cpus_per_actor)),
        )
        opts = {**self.actor_options(index), **(options or {})}
        return RemoteClientActor.options(**opts).remote(spec, algorithm)

    def start(self, algorithm: Any) -> dict[int, ray.ObjectRef]:
        """Create actors, build every client, return the initial parameter refs."""
        cpus, gpus = self._check_resources()
        self.cohorts = plan_cohorts(self.num_clients, self.resources, cpus, gpus)
        self.actor_of = {cid: k for k, cohort in enumerate(self.cohorts) for cid in cohort}
        self.actors = [self.make_actor(k, algorithm) for k in range(len(self.cohorts))]
        pending = [a.publish_all.remote() for a in self.actors]
        ready, not_ready = ray.wait(pending, num_returns=len(pending), timeout=self.start_timeout_s)
        if not_ready:
            self.shutdown()
            raise ConfigError(
                f"{len(not_ready)} of {len(pending)} client actors could not be placed within "
                f"{self.start_timeout_s:.0f} s (each asks for {self.resources.num_cpus_per_actor} CPU, "
                f"{self.resources.num_gpus_per_actor} GPU; cluster has {ray.cluster_resources()})"
            )
        refs: dict[int, ray.ObjectRef] = {}
        for part in ray.get(ready):
            refs.update(part)
        log.info("started %d client actors for %d clients", len(self.actors), self.num_clients)
        return dict(sorted(refs.items()))

    def _by_actor(self, messages: Mapping[int, Any]) -> dict[int, dict[int, Any]]:
        grouped: dict[int, dict[int, Any]] = {}
        for cid, msg in messages.items():
            grouped.setdefault(self.actor_of[cid], {})[cid] = msg
        return grouped

    def step(
        self, method: str, messages: Mapping[int, Any], publish: bool = True
    ) -> dict[int, Any]:
        """Run ``algorithm.<method>`` on every messaged client; gather results."""
        futures = [
            self.actors[k].step.remote(method, msgs, publish)
            for k, msgs in self._by_actor(messages).items()
        ]
        out: dict[int, Any] = {}
        for part in ray.get(futures):
            out.update(part)
        return dict(sorted(out.items()))

    def call(
        self, method: str, *args: Any, client_ids: Sequence[int] | None = None
    ) -> dict[int, Any]:
        """Run a read-only per-client ``algorithm.<method>(ctx, state, *args)``."""
        ids = list(range(self.num_clients)) if client_ids is None else list(client_ids)
        grouped = self._by_actor({cid: None for cid in ids})
        futures = [self.actors[k].call.remote(method, sorted(c), *args) for k, c in grouped.items()]
        out: dict[int, Any] = {}
        for part in ray.get(futures):
            out.update(part)
        return dict(sorted(out.items()))

    def get_states(self, client_ids: Sequence[int] | None = None) -> dict[int, Any]:
        """Host copies of client states (for checkpoints, replicas and tests)."""
        ids = list(range(self.num_clients)) if client_ids is None else list(client_ids)
        futures = {cid: self.actors[self.actor_of[cid]].get_state.remote(cid) for cid in ids}
        return dict(zip(futures, ray.get(list(futures.values())), strict=True))

    def info(self) -> list[dict[str, Any]]:
        return ray.get([a.info.remote() for a in self.actors])

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []
