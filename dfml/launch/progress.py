"""The progress bar of a launched run: one tqdm bar over rounds."""

from __future__ import annotations

import math
from typing import Any

from tqdm.auto import tqdm

from dfml.records import Callback, RoundRecord


class ProgressBar(Callback):
    """One tqdm bar over rounds showing mean client accuracy and loss."""

    def __init__(self, rounds: int, desc: str, enabled: bool = True) -> None:
        self.rounds, self.desc, self.enabled = rounds, desc, enabled
        self.bar: tqdm | None = None
        self.done = 0
        self.acc = "–"

    def on_run_start(self, algorithm: Any, federation: Any) -> None:
        self.bar = tqdm(
            total=self.rounds,
            initial=self.done,
            desc=self.desc,
            unit="round",
            disable=not self.enabled,
        )

    def on_resume(self, history: Any) -> None:
        self.done = len(history)

    def on_round_end(self, record: RoundRecord) -> None:
        if self.bar is not None:
            acc = record.mean("accuracy")
            if not math.isnan(acc):  # a round --eval-every skipped keeps the last accuracy
                self.acc = f"{acc:.3f}"
            self.bar.set_postfix(acc=self.acc, loss=f"{record.mean('train_loss'):.3f}")
            self.bar.update(1)

    def on_run_end(self, history: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
