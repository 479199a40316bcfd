"""Placement of clients on Ray actors: cohorts, CPU and GPU fractions, nodes."""

from __future__ import annotations

import math
from dataclasses import dataclass

from dfml.channels import PACK_MODES, PUBLISH_DTYPES
from dfml.errors import ConfigError

#: How actors are laid over the nodes (see :mod:`dfml.actors.placement`).
PLACEMENTS = ("default", "spread", "pack")
#: The longest --scale-timeout (a week): Ray's timeouts overflow far above.
MAX_SCALE_TIMEOUT = 7 * 24 * 3600
#: Where clients run: Ray actors, or every client in the driver process.
BACKENDS = ("ray", "local")


@dataclass(frozen=True)
class ResourceConfig:
    """How clients map onto actors and what each actor asks Ray for.

    Attributes:
        clients_per_actor: logical clients hosted by one actor; ``None`` means
            one actor per client while the cluster has room (CPU/GPU slots),
            then cohorts of equal size.
        num_cpus_per_actor: fractional CPUs Ray reserves for each actor.
        num_gpus_per_actor: fractional GPUs (0.25 → four actors per GPU).
        max_actors: an upper bound on the number of actors (``None``: no bound).
        placement: how actors are laid over the nodes: ``default`` (Ray's
            scheduler), ``spread`` (a placement group with the SPREAD strategy:
            over as many nodes as it can) or ``pack`` (PACK: on as few nodes as
            it can). With spread or pack, consecutive cohorts (neighbours on a
            ring) take the bundles of one node before the next node's; actors
            opened by joins get a placement group of their own.
        scale_timeout: seconds to wait for the autoscaler when joining clients
            need more actors than the cluster has room for (or a run starts on
            a cluster with no CPUs yet; 1 s to a week); then the run fails with
            one line.
        pack_params: how an actor publishes its clients' parameter vectors
            (and every other channel of alike arrays) after a step:
            ``always`` packed, one object per actor, channel and up to
            4,096 clients (one ``ray.put`` instead of one per client; a
            neighbour reads its row from shared memory), ``never`` as one
            object per client, ``auto`` packed when the cluster has one node
            with CPUs when the run starts (across nodes a reader would pull a
            whole cohort's object to read one row; nodes that join later do
            not change it).
        publish_dtype: the dtype clients' parameter vectors travel in (the
            ``params`` channel): ``float32`` (exact) or ``float16`` (half the
            object-store bytes and ``bytes_sent``; every reader widens it back
            to float32, the clients' own states stay float32, so only what
            neighbours mix is rounded).
        backend: ``ray`` (clients in Ray actors) or ``local``: every client
            in the driver process, one after another, without starting Ray,
            for stepping through an algorithm in a debugger and for small
            runs where actor start-up costs more than the training; the
            same client programs and the same numbers (placement, GPU
            fractions and the fault layer need ``ray``).
    """

    clients_per_actor: int | None = None
    num_cpus_per_actor: float = 1.0
    num_gpus_per_actor: float = 0.0
    max_actors: int | None = None
    placement: str = "default"
    scale_timeout: float = 600.0
    pack_params: str = "auto"
    publish_dtype: str = "float32"
    backend: str = "ray"

    def __post_init__(self) -> None:
        if self.clients_per_actor is not None and self.clients_per_actor < 1:
            raise ConfigError(f"clients_per_actor must be >= 1, got {self.clients_per_actor}")
        cpus, gpus = self.num_cpus_per_actor, self.num_gpus_per_actor
        if not (math.isfinite(cpus) and cpus > 0):
            raise ConfigError(f"num_cpus_per_actor must be a positive finite number, got {cpus}")
        if not (math.isfinite(gpus) and gpus >= 0 and (gpus <= 1 or float(gpus).is_integer())):
            raise ConfigError(
                f"num_gpus_per_actor must be a fraction in [0, 1] or a whole number of GPUs, "
                f"got {gpus}"
            )
        if self.max_actors is not None and self.max_actors < 1:
            raise ConfigError(f"max_actors must be >= 1, got {self.max_actors}")
        if self.placement not in PLACEMENTS:
            raise ConfigError(
                f"placement must be one of {', '.join(PLACEMENTS)}, got {self.placement!r}"
            )
        if self.pack_params not in PACK_MODES:
            raise ConfigError(
                f"pack_params must be one of {', '.join(PACK_MODES)}, got {self.pack_params!r}"
            )
        if self.publish_dtype not in PUBLISH_DTYPES:
            raise ConfigError(
                f"publish_dtype must be one of {', '.join(PUBLISH_DTYPES)}, "
                f"got {self.publish_dtype!r}"
            )
        if self.backend not in BACKENDS:
            raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.backend == "local" and self.placement != "default":
            raise ConfigError(
                f"placement {self.placement!r} needs --backend ray "
                "(with --backend local every client runs in the driver)"
            )
        if self.backend == "local" and gpus > 0:
            raise ConfigError(
                f"num_gpus_per_actor {gpus} needs --backend ray "
                "(with --backend local every client runs on the driver's CPU)"
            )
        if not 1.0 <= self.scale_timeout <= MAX_SCALE_TIMEOUT:
            raise ConfigError(
                f"scale_timeout must be 1 to {MAX_SCALE_TIMEOUT:,} seconds, got "
                f"{self.scale_timeout:g}"
            )
