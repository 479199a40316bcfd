"""A single-process, single-thread stand-in for :class:`Federation`.

It runs the very same client code (one plain :class:`ClientActor` hosting
every client, arrays instead of object refs), so it is the baseline the
benchmarks compare Ray against and a debugger-friendly way to step through
an algorithm. Algorithms whose server step is a Ray task need Ray.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dfml.actors.client_actor import ClientActor, CohortSpec, LocalStore
from dfml.actors.federation import Federation


class InProcessFederation(Federation):
    """All clients in this process; same routing API as :class:`Federation`."""

    def start(self, algorithm: Any) -> dict[int, Any]:
        self.cohorts = [list(range(self.num_clients))]
        self.actor_of = dict.fromkeys(range(self.num_clients), 0)
        spec = CohortSpec(
            self.data, self.model, dict(enumerate(self.splits)), self.seed, num_threads=1
        )
        self.local = ClientActor(spec, algorithm, store=LocalStore)
        return self.local.publish_all()

    def step(
        self, method: str, messages: Mapping[int, Any], publish: bool = True
    ) -> dict[int, Any]:
        return self.local.step(method, messages, publish)

    def call(
        self, method: str, *args: Any, client_ids: Sequence[int] | None = None
    ) -> dict[int, Any]:
        ids = list(range(self.num_clients)) if client_ids is None else list(client_ids)
        return self.local.call(method, ids, *args)

    def get_states(self, client_ids: Sequence[int] | None = None) -> dict[int, Any]:
        ids = list(range(self.num_clients)) if client_ids is None else list(client_ids)
        return {cid: self.local.get_state(cid) for cid in ids}

    def info(self) -> list[dict[str, Any]]:
        return [self.local.info()]

    def shutdown(self) -> None:
        self.local = None
