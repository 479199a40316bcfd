"""Client programs: what a step runs on each of its clients, found by name.

A step names its program (:attr:`dfml.steps.Step.program`); the actor looks
the function up here. Each module that defines programs registers them when
it is imported — the base algorithm's own (training, adopt, evaluation) in
:mod:`dfml.algorithms`, CL-FML's in its package, the task service's in its
module — so a new phase is a new program, not an edit of the core.

Only names travel to the actors. The modules that registered programs in
the driver (:func:`modules`) are imported in every actor (see
:class:`~dfml.actors.client_actor.CohortSpec`), so both sides hold the
same table, also for a program whose module the algorithm does not import.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from dfml.errors import ConfigError

#: What a program measured on one client (metric name → value).
Metrics = dict[str, float]

#: A program on one client: (algorithm, ctx, state, neighbour vectors, message)
#: → (new state, metrics). The algorithm is the actor's copy of it (config only).
ProgramFn = Callable[[Any, Any, Any, Sequence[Any], Any], tuple[Any, Metrics]]

#: A program over a cohort at once: (contexts, states, each client's
#: neighbour vectors, messages) → one (state, metrics) per client, in order.
BatchedFn = Callable[
    [Sequence[Any], Sequence[Any], Sequence[Sequence[Any]], Sequence[Any]],
    list[tuple[Any, Metrics]],
]

#: Offers a program's vectorised form for (algorithm, model), or ``None``
#: where only the per-client form computes what the algorithm means.
BatchedResolver = Callable[[Any, Any], BatchedFn | None]


@dataclass(frozen=True)
class Program:
    """One client program and what the core needs to know about it.

    Attributes:
        name: the name a step gives (unique among registered programs).
        run: the per-client function (:data:`ProgramFn`).
        batched: offers the vectorised form for an algorithm and model
            (``--vectorize``), or ``None``: the program runs client by client.
        scored: its messages carry ``evaluate`` (the training and adopt
            steps score clients only in rounds ``--eval-every`` scores).
        channels: state extras the program writes that a client publishes as
            channels of their own (the task service's ``task``, ``generator``).
    """

    name: str
    run: ProgramFn
    batched: BatchedResolver | None = None
    scored: bool = False
    channels: tuple[str, ...] = ()

    @property
    def module(self) -> str:
        """The module that defines the program (importing it registers it)."""
        return self.run.__module__

    def vectorized(self, algorithm: Any, model: Any) -> BatchedFn | None:
        """The batched form for ``algorithm`` on ``model``, or ``None``."""
        return None if self.batched is None else self.batched(algorithm, model)


_PROGRAMS: dict[str, Program] = {}


def register(program: Program) -> Program:
    """Add ``program`` to the table; a name another module registered is refused.

    The same module may register again (a reload replaces its programs).
    """
    known = _PROGRAMS.get(program.name)
    if known is not None and known.module != program.module:
        raise ValueError(
            f"program {program.name!r} is registered by {known.module}; "
            f"{program.module} cannot register it again"
        )
    _PROGRAMS[program.name] = program
    return program


def get(name: str) -> Program:
    """The program registered as ``name``; one line naming the known ones if none is."""
    try:
        return _PROGRAMS[name]
    except KeyError:
        known = ", ".join(sorted(_PROGRAMS)) or "none"
        raise ConfigError(
            f"unknown program {name!r} (registered: {known}); "
            "import the module that defines it before planning the step"
        ) from None


def modules() -> tuple[str, ...]:
    """The modules whose import registered the programs known in this process."""
    return tuple(sorted({p.module for p in _PROGRAMS.values()}))


def load(names: Iterable[str]) -> None:
    """Import modules ``names`` (an actor: register what the driver registered)."""
    for name in names:
        importlib.import_module(name)


def channels() -> tuple[str, ...]:
    """Every state extra a registered program publishes as a channel, once each."""
    return tuple(dict.fromkeys(c for p in _PROGRAMS.values() for c in p.channels))
