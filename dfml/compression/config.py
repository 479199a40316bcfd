"""The compression knobs: which compressor, how much it keeps, how many levels.

:class:`CompressionConfig` is mixed into an algorithm's config: CHOCO-SGD's
always (it compresses by design), any gossip algorithm's when
``--compressor`` is given (each client then publishes its vector
compressed, for comparison). Its checks run before any actor starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from dfml.compression.methods import COMPRESSORS, Compressor
from dfml.errors import ConfigError


@dataclass(frozen=True)
class CompressionConfig:
    """How a client compresses the vector it sends its neighbours.

    Mixed into the algorithm's config; an ``aggregation`` the algorithm has
    must be ``gossip`` (a server step averages whole vectors).

    Attributes:
        compressor: ``none`` (the dense float32 vector), ``topk`` (the
            largest-magnitude coordinates), ``randk`` (coordinates drawn at
            random), ``qsgd`` (stochastic quantization with ``levels``
            levels) or ``sign`` (signs and one scale); see docs/communication.md.
        compression: the fraction of coordinates topk and randk send, in (0, 1].
        levels: s, the quantization levels of qsgd per sign, >= 1.
    """

    compressor: str = "topk"
    compression: float = 0.1
    levels: int = 16

    def __post_init__(self) -> None:
        learner_checks = getattr(super(), "__post_init__", None)
        if learner_checks is not None:  # the learner's config, mixed in after this one
            learner_checks()
        check_compressor(self.compressor)
        if not (0.0 < self.compression <= 1.0 and math.isfinite(self.compression)):
            raise ConfigError(f"compression must be in (0, 1], got {self.compression}")
        if isinstance(self.levels, bool) or self.levels < 1:
            raise ConfigError(f"levels must be an integer >= 1, got {self.levels}")
        aggregation = getattr(self, "aggregation", "gossip")
        if aggregation != "gossip":
            raise ConfigError(
                "--compressor compresses the vectors clients gossip: aggregation must be "
                f"gossip, got {aggregation!r}"
            )

    def build(self) -> Compressor:
        """The configured :class:`~dfml.compression.methods.Compressor`."""
        return Compressor(self.compressor, self.compression, self.levels)


def check_compressor(name: str) -> None:
    """One :class:`ConfigError` line unless ``name`` is one of :data:`COMPRESSORS`."""
    if name not in COMPRESSORS:
        raise ConfigError(f"unknown compressor {name!r}; allowed: {', '.join(COMPRESSORS)}")
