"""Byzantine clients and robust mixing in front of any learner (``--byzantine``,
``--robust-aggregation``).

:func:`robust` puts :class:`RobustMixing` in front of a learner, as
:func:`~dfml.algorithms.compressed.compressed` does for compression; the
run's :class:`~dfml.algorithms.robust.settings.Robustness` travels with the
algorithm to every actor. Its client half

* mixes with the robust rule: a gossiping client aggregates itself and the
  vectors its neighbours published (:meth:`RobustMixing.mix`); in server mode
  the server aggregates the trained clients (:meth:`RobustMixing.server_step`,
  a Ray task next to the data as the plain average is);
* makes the attackers attack: an attacker trains as every client does (on
  flipped labels for ``label-flip``) and then keeps the vector it will publish
  instead of its own in its state (:data:`ATTACKED`), so a replica, a
  checkpoint or a restore re-publishes the same attacked vector.

Who attacks is the settings' ``attackers``; the driver half is the
learner's, unchanged. Per-client only: the overridden client step turns the
vectorised cohort path off (``--vectorize`` is ignored).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import ray
import torch

from dfml.actors.state import ClientContext, ClientState
from dfml.algorithms.base import Algorithm, Message, Metrics, RunEnv, composed
from dfml.algorithms.privacy.accounting import DataSizes, Usage
from dfml.algorithms.privacy.dpsgd import DPSGD
from dfml.algorithms.robust.attacks import GAUSSIAN_SALT, flip_labels
from dfml.algorithms.robust.settings import Robustness
from dfml.channels import fetch
from dfml.errors import ConfigError
from dfml.steps import PARAMS, DriverState

#: The state extra holding the vector an attacker publishes instead of its own.
ATTACKED = "byzantine"


class RobustMixing(Algorithm):
    """A learner whose clients mix robustly and some of which attack (:func:`robust`)."""

    composed_settings = ("robustness",)

    def __init__(
        self,
        config: Any,
        *,
        vectorize: bool = True,
        privacy: DPSGD | None = None,
        robustness: Robustness | None = None,
    ) -> None:
        """``robustness``: the run's attackers and robust rule (none by default)."""
        self.robustness = robustness if robustness is not None else Robustness()
        super().__init__(config, vectorize=vectorize, privacy=privacy)

    def private_usage(self, sizes: DataSizes) -> Usage:
        """The learner's: label flipping changes the labels, not the steps."""
        return self.learner_class(self.config).private_usage(sizes)

    # ----- driver half -------------------------------------------------
    def server_step(self, state: DriverState, env: RunEnv, refs: Mapping[int, Any]) -> Any:
        """The server's robust aggregate of the trained clients (server mode only;
        relaxed by η_g as the learner's average is)."""
        rule = self.robustness
        if rule.rule == "none":
            return super().server_step(state, env, refs)
        ids = sorted(refs)
        weights = self.server_weights(env, ids)
        handles = [refs[c] for c in ids]
        eta = self.server_lr()
        center = state.global_ref
        if all(isinstance(v, np.ndarray) for v in [*handles, center]):
            return server_aggregate(rule, weights, handles, center, eta)
        return robust_server_task.remote(rule, weights, handles, [center], eta)

    # ----- client half -------------------------------------------------
    def mix(
        self, state: ClientState, neighbors: Sequence[np.ndarray], msg: Message
    ) -> torch.Tensor:
        """The robust rule over the client and its neighbours' published vectors.

        The learner's own mixing where there is nothing to combine robustly:
        no neighbours, the rule ``none``, or server mode (adopting the global
        model is not a mix).
        """
        rule = self.robustness
        if rule.rule == "none" or not neighbors or getattr(self, "centralized", False):
            return super().mix(state, neighbors, msg)
        own = state.params.detach().cpu().numpy()
        mixed = rule.aggregate(own, neighbors, msg.self_weight, msg.weights)
        return torch.from_numpy(mixed).to(state.params.device)

    def local_data(self, ctx: ClientContext) -> tuple[torch.Tensor, torch.Tensor]:
        """The learner's data; a label-flipping attacker's labels are c ↦ C − 1 − c."""
        x, y = super().local_data(ctx)
        if self.robustness.flips_labels(ctx.client_id):
            return x, flip_labels(y, self.robustness.num_classes)
        return x, y

    def client_step(
        self, ctx: ClientContext, state: ClientState, neighbors: Sequence[np.ndarray], msg: Message
    ) -> tuple[ClientState, Metrics]:
        """The learner's step; an attacker then keeps the vector it will publish."""
        new, metrics = super().client_step(ctx, state, neighbors, msg)
        if not self.robustness.is_attacker(ctx.client_id):
            return new, metrics
        own = new.params.detach().cpu().numpy()
        seed = ctx.round_seed(state.round, GAUSSIAN_SALT)
        attacked = self.robustness.attacked(own, neighbors, seed)
        if attacked is None:
            return new, metrics
        return new.evolve(extras={**new.extras, ATTACKED: torch.from_numpy(attacked)}), metrics

    def publish(self, ctx: ClientContext, state: ClientState) -> dict[str, Any]:
        """The learner's channels, with an attacker's vector replaced by its attack."""
        out = super().publish(ctx, state)
        attacked = state.extras.get(ATTACKED)
        if attacked is not None:
            out[PARAMS] = attacked.detach().cpu().numpy()
        return out


def server_aggregate(
    rule: Robustness,
    weights: Sequence[float],
    vectors: Sequence[np.ndarray],
    center: np.ndarray,
    eta: float,
) -> np.ndarray:
    """x ← (1 − η_g) x + η_g · rule(x_k) (``center`` is x, the last global model)."""
    aggregate = rule.server_aggregate(vectors, weights, center)
    if eta == 1.0:
        return aggregate
    return ((1.0 - eta) * np.asarray(center, dtype=np.float32) + eta * aggregate).astype(np.float32)


@ray.remote(num_cpus=0)
def robust_server_task(
    rule: Robustness,
    weights: Sequence[float],
    handles: Sequence[Any],
    center: Sequence[Any],
    eta: float,
) -> np.ndarray:
    """:func:`server_aggregate` as a Ray task that reads the clients' vectors itself
    (``center`` is wrapped in a list so Ray passes its ref, not its value)."""
    return server_aggregate(rule, weights, fetch(ray.get, handles), fetch(ray.get, center)[0], eta)


@functools.cache
def robust(learner: type[Algorithm]) -> type[Algorithm]:
    """``learner`` with :class:`RobustMixing` in front (its config unchanged).

    Refused (one :class:`ConfigError` line): a learner whose neighbours read
    another channel than its vector (``choco-sgd``'s messages, a
    ``--compressor``'s bytes): what an attacker publishes and what the robust
    rule combines would not be what travels.
    """
    if learner.gossip_channel != PARAMS:
        raise ConfigError(
            f"algorithm {learner.name!r} gossips its {learner.gossip_channel!r} channel, "
            "not its vector: --byzantine and --robust-aggregation need one that sends its "
            "vector (no --compressor, not choco-sgd)"
        )
    return composed(
        RobustMixing,
        learner,
        robust,
        f"Robust{learner.__name__}",
        f"{learner.__name__} with Byzantine clients and robust mixing.",
        learner.Config,
    )
