"""The fault layer's one error."""

from __future__ import annotations


class FaultToleranceError(RuntimeError):
    """A call could not be completed despite recovery (or the failure was no crash)."""
