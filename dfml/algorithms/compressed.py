"""Compressed gossip: any gossip algorithm with the vector it sends compressed (``--compressor``).

Naive compression, the comparison CHOCO-SGD (:mod:`~dfml.algorithms.choco`)
is measured against. After every step client i publishes, besides its
vector x_i, the message C(x_i) of the configured compressor
(:class:`~dfml.compression.CompressionConfig`) on the channel
:data:`COMPRESSED`, and its neighbours read that channel instead of x_j:
what they fetch is C(x_j)'s bytes, decoded on reading
(:class:`~dfml.channels.Encoded`), so the learner's own mixing runs
unchanged on C(x_j),

    x_i ← w_ii x_i + Σ_j w_ij C(x_j),

and ``bytes_sent`` counts the compressed messages. A client keeps its own
x_i exactly; only what it sends is compressed, without memory of earlier
rounds. Every compressor here shrinks a vector (a δ-contraction), so the
mix is pulled towards zero by 1 − δ of the neighbours' weight: the bias
CHOCO-SGD's public copies remove. The random draws (random-k's indices,
qsgd's levels) are seeded by (seed, client, round), so a restored client
publishes the same message again.

:func:`compressed` builds the compressed form of any algorithm whose
clients gossip; one that aggregates at a server is refused.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from dfml.actors.state import ClientContext, ClientState
from dfml.algorithms.base import Algorithm, composed, gossips
from dfml.compression import CompressionConfig
from dfml.errors import ConfigError
from dfml.steps import PARAMS

#: The channel of a client's compressed vector C(x_i).
COMPRESSED = "compressed"
#: Salt of the round seed that draws random-k's indices and qsgd's levels.
COMPRESS_SALT = 0xC0DE


class CompressedGossip(Algorithm):
    """A learner whose neighbours read its vector compressed.

    A mixin placed before the learner (:func:`compressed`): it adds the
    :data:`COMPRESSED` channel and points the learner's gossip at it.
    """

    gossip_channel = COMPRESSED

    def publish(self, ctx: ClientContext, state: ClientState) -> dict[str, Any]:
        """The learner's channels plus C(x_i) of the vector it publishes."""
        out = super().publish(ctx, state)
        vector = np.asarray(out[PARAMS])
        seed = ctx.round_seed(state.round, COMPRESS_SALT)
        out[COMPRESSED] = self.config.build().encode(vector, seed)
        return out


@functools.cache
def compressed_config(learner_config: type) -> type:
    """The config of a compressed learner: ``learner_config``'s knobs plus
    :class:`~dfml.compression.CompressionConfig`'s, ``aggregation`` (if it
    has one) defaulting to ``gossip``. One class per learner config (cached),
    pickled by rebuilding it, so it crosses to actors."""
    name = f"Compressed{learner_config.__name__}"
    namespace: dict[str, Any] = {
        "__module__": __name__,
        "__qualname__": name,
        "__doc__": f"{learner_config.__name__}'s knobs plus the compressor's.",
        "__reduce__": _reduce_config,
        "learner_config": learner_config,
    }
    if "aggregation" in {f.name for f in dataclasses.fields(learner_config)}:
        namespace["__annotations__"] = {"aggregation": "str"}
        namespace["aggregation"] = "gossip"
    return dataclasses.dataclass(frozen=True)(
        type(name, (CompressionConfig, learner_config), namespace)
    )


def _reduce_config(config: Any) -> tuple[Any, tuple[Any, ...]]:
    values = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    return _rebuild_config, (type(config).learner_config, values)


def _rebuild_config(learner_config: type, values: dict[str, Any]) -> Any:
    return compressed_config(learner_config)(**values)


@functools.cache
def compressed(learner: type[Algorithm]) -> type[Algorithm]:
    """The compressed form of ``learner``: :class:`CompressedGossip` in front
    of it, its config :func:`compressed_config`'s (``--compressor``).

    A learner that aggregates at a server (:func:`~dfml.algorithms.base.gossips`)
    sends no gossip to compress: one :class:`ConfigError` line. The class is
    made once per learner (cached); its instances pickle by rebuilding it.
    """
    if not gossips(learner):
        raise ConfigError(
            f"algorithm {learner.name!r} aggregates at a server, so it sends no gossip "
            "to compress; --compressor needs an algorithm whose clients gossip"
        )
    return composed(
        CompressedGossip,
        learner,
        compressed,
        f"Compressed{learner.__name__}",
        f"{learner.__name__} with the vectors it gossips compressed.",
        compressed_config(learner.Config),
    )
