"""The ``secure`` config section: secure aggregation (``--secure-aggregation``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SecureConfig:
    """Secure aggregation: pairwise additive masks (Bonawitz et al. 2017; docs/privacy.md).

    Attributes:
        secure_aggregation: mask what clients send, so that the server (server
            mode) reads only the weighted sum of the clients that trained, and a
            gossiping client only the weighted sum of its neighbours' vectors,
            never one vector. Needs an algorithm whose aggregation is a weighted
            sum: no robust aggregation, choco-sgd, --compressor or
            --schedule-mode async. Off by default.
    """

    secure_aggregation: bool = False

    @property
    def active(self) -> bool:
        return self.secure_aggregation
