"""A single-process, single-thread stand-in for :class:`Federation`.

It runs the very same client code (one plain :class:`ClientActor` hosting
every client, arrays instead of object refs), so it is the baseline the
benchmarks compare Ray against and a debugger-friendly way to step through
an algorithm. Algorithms whose server step is a Ray task need Ray.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dfml.actors.client_actor import ClientActor, LocalStore
from dfml.actors.federation import Federation
from dfml.actors.roster import Roster
from dfml.actors.state import ClientState
from dfml.steps import Publish, StepResult


class InProcessFederation(Federation):
    """All clients in this process; same routing API as :class:`Federation`."""

    def plan(self, roster: Roster | None = None) -> None:
        self.roster = roster or Roster(
            [list(self.initial)], capacity=len(self.initial), max_slots=1
        )

    def start(
        self, algorithm: Any, states: Mapping[int, ClientState] | None = None
    ) -> dict[int, StepResult]:
        if self.roster is None:
            self.plan()
        self.algorithm = algorithm
        spec = self.spec(self.live())
        self.local = ClientActor(spec, algorithm, store=LocalStore)
        if states is not None:
            return self.local.set_states(states)
        return self.local.publish_all()

    def step(
        self, program: str, messages: Mapping[int, Any], publish: Publish = True
    ) -> dict[int, Any]:
        return self.local.step(program, messages, publish)

    def add_clients(self, starts: Mapping[int, Any]) -> dict[int, StepResult]:
        assert self.roster is not None
        self.roster.place(sorted(starts))
        return self.local.add_clients({c: self.splits[c] for c in starts}, starts)

    def remove_clients(self, ids: Sequence[int]) -> None:
        assert self.roster is not None
        self.roster.remove(ids)
        self.local.remove_clients(list(ids))

    def put(self, value: Any) -> Any:
        return value

    def get_states(self, client_ids: Sequence[int] | None = None) -> dict[int, Any]:
        ids = self.live() if client_ids is None else list(client_ids)
        return {cid: self.local.get_state(cid) for cid in ids}

    def info(self) -> list[dict[str, Any]]:
        return [self.local.info()]

    def shutdown(self) -> None:
        self.local = None
