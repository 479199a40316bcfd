"""What summary.json says about a secure run: the mode the masks served."""

from __future__ import annotations

from typing import Any

from dfml.records import Callback


class SecureReport(Callback):
    """Adds ``secure_aggregation`` (``server`` or ``gossip``) to summary.json."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def summary(self) -> dict[str, Any]:
        return {"secure_aggregation": self.mode}
