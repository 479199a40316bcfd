"""The disagreement probe: how far apart neighbouring clients' vectors are, per round.

Gossip converges when neighbours agree, so the distance between a client's
vector and the average its mixing row would give it,

    d_i = ‖x_i − (w_ii x_i + Σ_j w_ij x_j)‖₂,

is the quantity to watch while tuning a topology or a learning rate. The
probe is a whole feature in one module, the example of a step source in
``docs/architecture.md``: its config section (:class:`ProbeConfig`), its
client program (:data:`PROBE`, read-only: it changes no client state), its
typed slot in :attr:`~dfml.steps.DriverState.sources` (:class:`ProbeState`)
and the summary keys it adds. The launch layer registers it as a service
(``dfml/launch/services.py``); nothing else knows it exists.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from dfml.actors.state import ClientContext, ClientState
from dfml.algorithms.aggregate import weighted_average
from dfml.algorithms.base import Message, RunEnv
from dfml.errors import ConfigError
from dfml.programs import Metrics, Program, register
from dfml.records import Callback
from dfml.steps import PARAMS, DriverState, Step, StepResult, StepSource

#: The probe's client program.
PROBE = "probe_disagreement"
#: Its phase, and its slot in ``DriverState.sources``.
PHASE = "probe"


@dataclass(frozen=True)
class ProbeConfig:
    """The disagreement probe.

    Attributes:
        probe_every: measure every client's disagreement d_i (distance to its
            mixing row's average) after every this many rounds, and in the
            last; 0 turns the probe off.
    """

    probe_every: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.probe_every, bool) or self.probe_every < 0:
            raise ConfigError(f"probe_every must be an integer >= 0, got {self.probe_every!r}")

    @property
    def active(self) -> bool:
        return self.probe_every > 0


@dataclass
class ProbeState:
    """The probe's slot: the rounds probed and the mean and max d_i of each."""

    rounds: list[int] = field(default_factory=list)
    mean: list[float] = field(default_factory=list)
    max: list[float] = field(default_factory=list)


def disagreement(own: np.ndarray, neighbors: Sequence[np.ndarray], msg: Message) -> float:
    """‖x_i − (w_ii x_i + Σ_j w_ij x_j)‖₂ for one client's mixing row."""
    mixed = weighted_average([own, *neighbors], [msg.self_weight, *msg.weights])
    return float(np.linalg.norm(own.astype(np.float64) - mixed.astype(np.float64)))


def probe_client(
    algorithm: Any, ctx: ClientContext, state: ClientState, neighbors: Sequence[Any], msg: Message
) -> tuple[ClientState, Metrics]:
    """The client program: d_i, and the state unchanged."""
    own = state.params.detach().cpu().numpy()
    return state, {"disagreement": disagreement(own, [np.asarray(v) for v in neighbors], msg)}


class DisagreementProbe(StepSource, Callback):
    """Adds one read-only step after the algorithm's steps in every probed round.

    The rows are the topology's (:meth:`~dfml.topology.service.TopologyService.mixing_row`),
    over the live clients' latest ``params`` handles.
    """

    def __init__(self, cfg: ProbeConfig, rounds: int) -> None:
        self.cfg = cfg
        self.rounds = rounds
        self._state: ProbeState | None = None

    def _due(self, round_: int) -> bool:
        return (round_ + 1) % self.cfg.probe_every == 0 or round_ == self.rounds - 1

    def next_step(self, state: DriverState, env: RunEnv) -> Step | None:
        slot = state.sources.setdefault(PHASE, ProbeState())
        self._state = slot
        if PHASE in state.phases or not self._due(state.round):
            return None
        refs = state.channels.get(PARAMS, {})
        messages = {}
        for i in env.live():
            self_weight, row = env.topology.mixing_row(i)
            nbrs = sorted(j for j in row if j in refs)
            messages[i] = Message(
                round=state.round,
                neighbors=tuple(refs[j] for j in nbrs),
                weights=tuple(row[j] for j in nbrs),
                self_weight=self_weight,
            )
        return Step(PHASE, PROBE, state.round, messages, publish=False, read_only=True)

    def absorb(
        self, state: DriverState, step: Step, results: Mapping[int, StepResult], env: RunEnv
    ) -> None:
        state.merge_metrics(results)
        values = [r.metrics["disagreement"] for r in results.values()]
        slot = state.sources[PHASE]
        slot.rounds.append(step.round)
        slot.mean.append(float(np.mean(values)))
        slot.max.append(float(np.max(values)))

    def summary(self) -> dict[str, Any]:
        if self._state is None or not self._state.rounds:
            return {}
        return {
            "probe_rounds": list(self._state.rounds),
            "probe_disagreement_mean": list(self._state.mean),
            "probe_disagreement_max": list(self._state.max),
        }


register(Program(PROBE, probe_client))
