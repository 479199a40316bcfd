"""What the step loop needs from a federation: the one interface its three forms share.

The loop (:mod:`dfml.runtime.loop`) drives the plain Ray federation
(:class:`dfml.actors.federation.Federation`), the single-process one
(:class:`dfml.actors.inprocess.InProcessFederation`) and the fault-tolerant
one (:class:`dfml.fault.federation.FaultTolerantFederation`) through exactly
these members and nothing else, so a new federation (a remote one, a
simulator) implements this protocol and the loop, checkpoints and callbacks
work unchanged. ``tests/runtime/test_federation.py`` checks each form
against it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from dfml.actors.roster import Roster
from dfml.data.split import ClientSplit
from dfml.steps import Step, StepResult


@runtime_checkable
class FederationProtocol(Protocol):
    """The loop's view of the clients: who is live, where, and how a step runs.

    Attributes:
        roster: client id → actor slot, and the membership epoch (``None``
            until :meth:`plan`).
        splits: every client's data share, the live ones and the reserve.
    """

    roster: Roster | None
    splits: Mapping[int, ClientSplit]

    def plan(self, roster: Roster | None = None) -> None:
        """Decide the actor slots (a fresh roster, or the one of a checkpoint)."""
        ...

    def start(
        self, algorithm: Any, states: Mapping[int, Any] | None = None
    ) -> dict[int, StepResult]:
        """Start the clients (fresh, or from checkpointed states); their first publish."""
        ...

    def run_step(self, step: Step) -> dict[int, StepResult]:
        """Run ``step``'s program on its participants; one result per client."""
        ...

    def add_clients(self, starts: Mapping[int, Any]) -> dict[int, StepResult]:
        """Start the clients ``starts`` names (id → start state) between rounds."""
        ...

    def remove_clients(self, ids: Sequence[int]) -> None:
        """Stop the clients ``ids`` between rounds."""
        ...

    def live(self) -> list[int]:
        """The live client ids, sorted."""
        ...

    def put(self, value: Any) -> Any:
        """A handle clients can read ``value`` through (an object ref; the value
        itself in-process)."""
        ...

    def get_states(self, client_ids: Sequence[int] | None = None) -> dict[int, Any]:
        """The clients' states (all live ones by default), for checkpoints."""
        ...

    def slot_nodes(self) -> dict[int, str]:
        """Actor slot → the node it runs on."""
        ...

    def client_nodes(self) -> dict[int, str]:
        """Live client → the node hosting it."""
        ...

    def info(self) -> list[dict[str, Any]]:
        """Per actor: its clients and device (for summary.json)."""
        ...

    def shutdown(self) -> None:
        """Stop every actor."""
        ...
