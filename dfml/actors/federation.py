"""The set of client actors of one experiment, as the driver sees it.

:class:`Federation` creates the actors (cohorts, CPU/GPU fractions), routes
each step's per-client messages to the actor hosting each client (the
:class:`~dfml.actors.roster.Roster` says which) and gathers the small
results. Clients join (placed in an actor with room, or a new actor) and
leave between steps. It hands out and receives object refs only.

Where actors run is the :class:`~dfml.actors.placement.Placement`'s job
(``--placement``); when joins need room the cluster lacks, the federation
asks the autoscaler and waits (:mod:`dfml.actors.scaling`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import ray
from ray.autoscaler.sdk import request_resources

from dfml import programs
from dfml.actors.client_actor import CohortSpec, RemoteClientActor
from dfml.actors.config import ResourceConfig
from dfml.actors.placement import Placement, actor_bundle, describe_cluster
from dfml.actors.roster import Roster
from dfml.actors.scaling import (
    describe_need,
    ready_check,
    room_check,
    scale_request,
    wait_for,
)
from dfml.actors.state import ClientState
from dfml.data.config import DataConfig
from dfml.data.dataset import ArrayDataset
from dfml.data.registry import load_dataset
from dfml.data.split import ClientSplit
from dfml.errors import ConfigError
from dfml.models.zoo import ModelConfig
from dfml.steps import MessageTable, Publish, Step, StepResult, join_results

log = logging.getLogger(__name__)


def as_split_map(
    splits: Sequence[ClientSplit] | Mapping[int, ClientSplit],
) -> dict[int, ClientSplit]:
    """Client id → share; a plain list means ids 0..N-1."""
    return dict(splits) if isinstance(splits, Mapping) else dict(enumerate(splits))


def cohort_messages(messages: Mapping[int, Any], ids: Sequence[int]) -> Mapping[int, Any]:
    """The messages of clients ``ids``, for the one actor hosting them: a
    :class:`~dfml.steps.MessageTable`'s rows stay a table (one object to
    pickle, not one message per client)."""
    if isinstance(messages, MessageTable):
        return messages.subset(ids)
    return {c: messages[c] for c in ids}


class Federation:
    """Client actors plus the roster that routes client ids to them.

    ``splits`` holds the data share of every client that is live at start,
    or may join later (a reserve); ``initial`` names the clients live at
    start (default: all of ``splits``).
    """

    def __init__(
        self,
        data: DataConfig,
        model: ModelConfig,
        splits: Sequence[ClientSplit] | Mapping[int, ClientSplit],
        seed: int,
        resources: ResourceConfig,
        start_timeout_s: float = 300.0,
        initial: Sequence[int] | None = None,
        dataset: ArrayDataset | None = None,
    ) -> None:
        self.data, self.model, self.seed = data, model, seed
        # The driver's loaded dataset, put in the object store once (at the
        # first actor) so actors map it instead of loading or generating it
        # each: at a million synthetic clients every actor's own copy (2.6 GB)
        # was what ran the machine out of memory.
        self.dataset = dataset
        self._dataset_ref: Any = None
        self.splits = as_split_map(splits)
        self.initial = sorted(self.splits if initial is None else initial)
        self.resources = resources
        self.start_timeout_s = start_timeout_s
        self.actors: list[Any] = []
        self.roster: Roster | None = None
        self.placement = Placement(resources)
        self._nodes: dict[int, str] = {}
        self.pack_params = resources.pack_params == "always"

    # ----- roster views -------------------------------------------------
    @property
    def num_clients(self) -> int:
        return len(self.roster) if self.roster is not None else len(self.initial)

    @property
    def cohorts(self) -> list[list[int]]:
        """Actor slot k → the client ids it hosts."""
        assert self.roster is not None
        return self.roster.slots

    @property
    def actor_of(self) -> dict[int, int]:
        assert self.roster is not None
        return self.roster.actor_of

    def live(self) -> list[int]:
        assert self.roster is not None
        return self.roster.ids()

    def put(self, value: Any) -> Any:
        return ray.put(value)

    def slot_nodes(self) -> dict[int, str]:
        """Actor slot → the node its actor runs on (asked once per actor: here
        an actor never moves)."""
        missing = [k for k in range(len(self.actors)) if k not in self._nodes]
        if not missing:  # also: no Ray call at all in-process (ray.get([]) would start Ray)
            return dict(self._nodes)
        for k, info in zip(
            missing, ray.get([self.actors[k].info.remote() for k in missing]), strict=True
        ):
            self._nodes[k] = info["node_id"]
        return dict(self._nodes)

    def client_nodes(self) -> dict[int, str]:
        """Live client → the node hosting it (for the cross-node byte count)."""
        nodes = self.slot_nodes()
        return {c: nodes[k] for c, k in self.actor_of.items() if k in nodes}

    # ----- actors -------------------------------------------------------
    def _check_resources(self) -> tuple[float, float]:
        total = ray.cluster_resources()
        if total.get("CPU", 0.0) == 0:
            total = self._await_first_nodes()
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

    def _await_first_nodes(self) -> dict[str, float]:
        """A cluster without CPUs is one whose workers have not come yet (a head
        started with ``CPU: 0``, as the shipped recipes do): ask the autoscaler
        for the actors the config fixes and wait for them.

        With ``clients_per_actor`` or ``max_actors`` the count is known;
        otherwise room for one actor is awaited and the cohorts are sized from
        the nodes present then, as on a fixed cluster.
        """
        r, n = self.resources, len(self.initial)
        if r.clients_per_actor is not None:
            count = math.ceil(n / r.clients_per_actor)
        else:
            count = n if r.max_actors is not None else 1
        if r.max_actors is not None:
            count = min(count, r.max_actors)
        bundle = actor_bundle(r)
        request_resources(bundles=[bundle] * count)
        try:
            wait_for(
                room_check(ray.cluster_resources, bundle, count),
                describe_need(bundle, count, ray.available_resources()),
                r.scale_timeout,
            )
        finally:
            request_resources(bundles=[])  # the new nodes run actors from now on
        return ray.cluster_resources()

    def actor_options(self, index: int) -> dict[str, Any]:
        r = self.resources
        return {
            "num_cpus": r.num_cpus_per_actor,
            "num_gpus": r.num_gpus_per_actor,
            "max_restarts": 0,
            **self.placement.options(index),
        }

    def spec(self, clients: Sequence[int]) -> CohortSpec:
        if self.dataset is not None and self._dataset_ref is None:
            self._dataset_ref = ray.put(self.dataset)
            # The ref keeps it (actors that join later map it too); the
            # driver's own copy, held by the loader's cache, goes: 2.6 GB at
            # a million clients of 10 samples. A later load reads it again.
            self.dataset = None
            load_dataset.cache_clear()
        return CohortSpec(
            data=self.data,
            model=self.model,
            splits={cid: self.splits[cid] for cid in clients},
            seed=self.seed,
            num_threads=max(1, int(self.resources.num_cpus_per_actor)),
            gpu_share=self.resources.num_gpus_per_actor,
            pack_params=self.pack_params,
            publish_dtype=self.resources.publish_dtype,
            programs=programs.modules(),
            dataset=self._dataset_ref,
        )

    def make_actor(
        self,
        index: int,
        algorithm: Any,
        options: Mapping[str, Any] | None = None,
        clients: Sequence[int] | None = None,
    ) -> Any:
        """Create the actor for slot ``index`` hosting ``clients`` (default: its cohort).

        Also used to replace a dead actor, and (with no clients) to open a slot.
        """
        opts = {**self.actor_options(index), **(options or {})}
        members = self.cohorts[index] if clients is None else clients
        return RemoteClientActor.options(**opts).remote(self.spec(members), algorithm)

    def plan(self, roster: Roster | None = None) -> None:
        """Fix the roster: the given one (resume) or contiguous cohorts of the initial ids."""
        cpus, gpus = self._check_resources()
        self.roster = roster or Roster.plan(self.initial, self.resources, cpus, gpus)
        if self.resources.pack_params == "auto":
            hosts = [n for n in ray.nodes() if n["Alive"] and n["Resources"].get("CPU", 0) > 0]
            self.pack_params = len(hosts) == 1

    def _wait_placed(self, pending: list[Any]) -> list[Any]:
        _, not_ready = ray.wait(pending, num_returns=len(pending), timeout=self.start_timeout_s)
        if not_ready:
            self.shutdown()
            raise ConfigError(
                f"{len(not_ready)} of {len(pending)} client actors could not be placed within "
                f"{self.start_timeout_s:.0f} s (each asks for {self.resources.num_cpus_per_actor} CPU, "
                f"{self.resources.num_gpus_per_actor} GPU; cluster has {ray.cluster_resources()})"
            )
        return ray.get(pending)

    def start(
        self, algorithm: Any, states: Mapping[int, ClientState] | None = None
    ) -> dict[int, StepResult]:
        """Create actors, build every client (or load ``states``), publish.

        Returns each client's :class:`StepResult` (its published channels).
        """
        if self.roster is None:
            self.plan()
        self.algorithm = algorithm
        self.placement.reserve(range(len(self.cohorts)), self._start_wait(len(self.cohorts)))
        self.actors = [self.make_actor(k, algorithm) for k in range(len(self.cohorts))]
        if states is None:
            pending = [a.publish_all.remote() for a in self.actors]
        else:
            pending = [
                a.set_states.remote({c: states[c] for c in self.cohorts[k]})
                for k, a in enumerate(self.actors)
            ]
        out: dict[int, StepResult] = {}
        for part in self._wait_placed(pending):
            out.update(part)
        if len(self.splits) == len(self.initial):
            # No reserved share: no client can join, so nothing reads the
            # dataset again and the object store frees it (2.6 GB at a
            # million clients of 10 samples).
            self._dataset_ref = None
        log.info("started %d client actors for %d clients", len(self.actors), self.num_clients)
        return dict(sorted(out.items()))

    # ----- steps --------------------------------------------------------
    def run_step(self, step: Step) -> Mapping[int, StepResult]:
        """Run one step on the actors hosting its participants."""
        return self.step(step.program, step.messages, step.publish)

    def step(
        self, program: str, messages: Mapping[int, Any], publish: Publish = True
    ) -> Mapping[int, Any]:
        """Run ``program`` on every messaged client; gather results (a
        :class:`~dfml.steps.ResultTable` where every actor answered with one)."""
        assert self.roster is not None
        futures = [
            self.actors[k].step_columns.remote(program, cohort_messages(messages, ids), publish)
            for k, ids in self.roster.by_slot(messages).items()
        ]
        return join_results(ray.get(futures))

    # ----- membership ---------------------------------------------------
    def add_clients(self, starts: Mapping[int, Any]) -> dict[int, StepResult]:
        """Place the clients ``starts`` names (ids with a data share in ``splits``).

        ``starts``: client → message naming the vectors it starts from (see
        :meth:`ClientActor.add_clients`). New actors are created when the
        roster opens a slot. Returns the new clients' published channels.
        """
        assert self.roster is not None
        ids = sorted(starts)
        missing = [c for c in ids if c not in self.splits]
        if missing:
            raise ConfigError(f"clients {missing} have no reserved data share")
        placed, opened = self.roster.place(ids)
        self.make_room(opened)
        for k in opened:
            self.open_slot(k)
        calls = []
        for k, members in placed.items():
            calls.append(
                self.actors[k].add_clients.remote(
                    {c: self.splits[c] for c in members},
                    {c: starts[c] for c in members},
                    self._dataset_ref,
                )
            )
        out: dict[int, StepResult] = {}
        for part in self._wait_placed(calls):
            out.update(part)
        log.info("clients %s joined (epoch %d)", ids, self.roster.epoch)
        return dict(sorted(out.items()))

    def make_room(self, slots: Sequence[int]) -> None:
        """Room for the actors of the newly opened ``slots``, before they start.

        If the cluster's free resources do not hold them, the autoscaler is
        asked for room for every actor of the run and the join waits (status
        lines, ``--scale-timeout``); the request is cleared once they fit.
        With ``--placement spread|pack`` they get a placement group of their own.
        """
        if not slots:
            return
        bundle = actor_bundle(self.resources)
        free = ray.available_resources()
        asked = scale_request(free, bundle, len(slots), len(self.actors))
        need = describe_need(bundle, len(slots), free)
        if not asked:
            self.placement.reserve(slots, self._start_wait(len(slots)))
            return
        request_resources(bundles=asked)
        timeout = self.resources.scale_timeout
        try:
            if self.placement.active:
                self.placement.reserve(
                    slots, lambda ready: wait_for(ready_check(ready), need, timeout)
                )
            else:
                wait_for(room_check(ray.available_resources, bundle, len(slots)), need, timeout)
        finally:
            request_resources(bundles=[])

    def _start_wait(self, count: int) -> Callable[[Any], None]:
        """Waits for a placement group within the start timeout, or fails with one line."""

        def wait(ready: Any) -> None:
            done, _ = ray.wait([ready], timeout=self.start_timeout_s)
            if not done:
                bundle = actor_bundle(self.resources)
                raise ConfigError(
                    f"--placement {self.resources.placement}: a placement group for "
                    f"{count} actors of {bundle} could not be placed within "
                    f"{self.start_timeout_s:.0f} s ({describe_cluster()})"
                )

        return wait

    def open_slot(self, k: int) -> None:
        """Start the (empty) actor of a newly opened slot ``k``."""
        self.actors.append(self.make_actor(k, self.algorithm, clients=[]))

    def remove_clients(self, ids: Sequence[int]) -> None:
        """Drop clients from the roster and their actors."""
        assert self.roster is not None
        grouped = self.roster.remove(ids)
        ray.get([self.actors[k].remove_clients.remote(c) for k, c in grouped.items()])
        log.info("clients %s left (epoch %d)", sorted(ids), self.roster.epoch)

    # ----- inspection ---------------------------------------------------
    def get_states(self, client_ids: Sequence[int] | None = None) -> dict[int, Any]:
        """Host copies of client states (for checkpoints and tests)."""
        assert self.roster is not None
        ids = self.live() if client_ids is None else list(client_ids)
        grouped = self.roster.by_slot(ids)
        out: dict[int, Any] = {}
        for part in ray.get([self.actors[k].get_states.remote(c) for k, c in grouped.items()]):
            out.update(part)
        return dict(sorted(out.items()))

    def info(self) -> list[dict[str, Any]]:
        return ray.get([a.info.remote() for a in self.actors])

    def shutdown(self) -> None:
        for actor in self.actors:
            ray.kill(actor, no_restart=True)
        self.actors = []
        self.placement.release()
