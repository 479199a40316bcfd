"""Callbacks: what happens around the step loop (progress, results, reports).

A callback sees the run start (:meth:`Callback.on_start` gets the
:class:`~dfml.runtime.loop.Runtime`, whose ``add_clients``/``remove_clients``
change membership between rounds), every step with its phase, every
finished round, a resume (the rounds already done), and the end.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from tqdm.auto import tqdm

from dfml.algorithms.base import RoundRecord
from dfml.steps import Step

log = logging.getLogger(__name__)


class Callback:
    """No-op hooks; subclasses override what they need."""

    def on_start(self, runtime: Any) -> None:
        return None

    def on_run_start(self, algorithm: Any, federation: Any) -> None:
        return None

    def on_step_end(self, step: Step, seconds: float) -> None:
        return None

    def on_resume(self, history: Sequence[RoundRecord]) -> None:
        """The run resumed from a checkpoint after ``history`` (rounds already done)."""
        return None

    def on_round_end(self, record: RoundRecord) -> None:
        return None

    def on_run_end(self, history: Sequence[RoundRecord]) -> None:
        return None

    def summary(self) -> dict[str, Any]:
        """Keys this callback adds to summary.json."""
        return {}


class ProgressBar(Callback):
    """One tqdm bar over rounds showing mean client accuracy and loss."""

    def __init__(self, rounds: int, desc: str, enabled: bool = True) -> None:
        self.rounds, self.desc, self.enabled = rounds, desc, enabled
        self.bar: tqdm | None = None
        self.done = 0
        self.acc = "–"

    def on_run_start(self, algorithm, federation) -> None:
        self.bar = tqdm(
            total=self.rounds,
            initial=self.done,
            desc=self.desc,
            unit="round",
            disable=not self.enabled,
        )

    def on_resume(self, history) -> None:
        self.done = len(history)

    def on_round_end(self, record: RoundRecord) -> None:
        if self.bar is not None:
            acc = record.mean("accuracy")
            if not math.isnan(acc):  # a round --eval-every skipped keeps the last accuracy
                self.acc = f"{acc:.3f}"
            self.bar.set_postfix(acc=self.acc, loss=f"{record.mean('train_loss'):.3f}")
            self.bar.update(1)

    def on_run_end(self, history) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
