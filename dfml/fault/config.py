"""Typed, validated configuration of fault tolerance and chaos testing.

Every field is a ``dfml run`` flag and a YAML key (``--replicas 2``,
``chaos_kill_rate: 0.1``). The fault layer is switched on by asking for
chaos or by ``--recovery true``; a plain run pays nothing for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from dfml.errors import ConfigError
from dfml.fault.durable import check_uri

#: The shortest heartbeat: a ping cannot come back sooner, and a shorter one
#: declared every actor unavailable, then fenced them one after another.
MIN_HEARTBEAT = 0.1
#: The longest timeout in seconds (a week): Ray's timeouts overflow far above.
MAX_SECONDS = 7 * 24 * 3600

#: How chaos kills: ``ray.kill`` of the client actor, SIGKILL of its worker
#: process, or a crash of the whole node hosting it (multi-node clusters).
CHAOS_MODES = ("ray.kill", "sigkill", "node")


@dataclass(frozen=True)
class FaultConfig:
    """FMRec-style replication, detection and restore; seeded chaos.

    Attributes:
        recovery: ``None`` (default) turns fault tolerance on exactly when
            chaos is configured; ``True`` also without chaos; ``False`` with
            chaos is FMRec's *Baseline_failure*: lost clients restart their
            meta-knowledge from scratch.
        replicas: leaf-set size — how many neighbour processes (nearest client
            ids on the ring, never the client's own process) keep a copy.
        checkpoint_every: replicate after every ``checkpoint_every``-th round.
        checkpoint_uri: optional durable copy (pyarrow filesystem: a local
            directory, ``s3://bucket/prefix``, ``gs://bucket/prefix``).
        replica_store: also keep the newest replica in a store actor on the
            driver's node (it fails only with the driver).
        keep_versions: replica versions every holder keeps per client.
        spares: warm spare actors kept ready to adopt a dead actor's clients.
            Two by default: a used spare's successor needs seconds to start
            (a new Ray worker imports torch and loads the data), and with one
            spare a second kill in that window waited for it (2–5 s
            recoveries); the second spare costs one idle process (measured in
            benchmarks/RESULTS.md, "Issue 19: replication and recovery").
        heartbeat_seconds: how long a step may run silently before the
            manager pings its actors (0.1 s to a week).
        unavailable_timeout: seconds an unresponsive actor may stay
            unavailable before it is fenced (killed) and treated as dead
            (1 s to a week, at least one heartbeat).
        chaos_kill_rate: per-round probability that each client actor fails.
        chaos_rounds: rounds at which ``chaos_fraction`` of the actors fail at once.
        chaos_fraction: fraction of the actors killed at each of ``chaos_rounds``.
        chaos_mode: one of :data:`CHAOS_MODES`.
    """

    recovery: bool | None = None
    replicas: int = 2
    checkpoint_every: int = 1
    checkpoint_uri: str | None = None
    replica_store: bool = True
    keep_versions: int = 2
    spares: int = 2
    heartbeat_seconds: float = 2.0
    unavailable_timeout: float = 30.0
    chaos_kill_rate: float = 0.0
    chaos_rounds: tuple[int, ...] = ()
    chaos_fraction: float = 0.25
    chaos_mode: str = "ray.kill"

    def __post_init__(self) -> None:
        if self.replicas < 0:
            raise ConfigError(f"replicas must be >= 0, got {self.replicas}")
        if self.checkpoint_every < 1:
            raise ConfigError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        if self.checkpoint_uri is not None and not self.checkpoint_uri.strip():
            raise ConfigError("checkpoint_uri must be a directory or URI, got an empty string")
        if self.checkpoint_uri is not None:
            check_uri(self.checkpoint_uri)
        if self.keep_versions < 1:
            raise ConfigError(f"keep_versions must be >= 1, got {self.keep_versions}")
        if self.spares < 0:
            raise ConfigError(f"spares must be >= 0, got {self.spares}")
        for name, low in (("heartbeat_seconds", MIN_HEARTBEAT), ("unavailable_timeout", 1.0)):
            value = getattr(self, name)
            if not low <= value <= MAX_SECONDS:
                raise ConfigError(
                    f"{name} must be {low:g} to {MAX_SECONDS:,} seconds, got {value:g}"
                )
        if self.unavailable_timeout < self.heartbeat_seconds:
            raise ConfigError(
                f"unavailable_timeout {self.unavailable_timeout:g} s is shorter than one "
                f"heartbeat ({self.heartbeat_seconds:g} s): an outage that short cannot be seen"
            )
        if not 0.0 <= self.chaos_kill_rate <= 1.0:
            raise ConfigError(f"chaos_kill_rate must be in [0, 1], got {self.chaos_kill_rate}")
        if any(r < 0 for r in self.chaos_rounds):
            raise ConfigError(f"chaos_rounds must be round indices >= 0, got {self.chaos_rounds}")
        if not 0.0 < self.chaos_fraction <= 1.0:
            raise ConfigError(f"chaos_fraction must be in (0, 1], got {self.chaos_fraction}")
        if self.chaos_mode not in CHAOS_MODES:
            raise ConfigError(
                f"unknown chaos_mode {self.chaos_mode!r}; allowed: {', '.join(CHAOS_MODES)}"
            )

    @property
    def chaos(self) -> bool:
        """True when chaos kills are scheduled."""
        return self.chaos_kill_rate > 0 or bool(self.chaos_rounds)

    @property
    def active(self) -> bool:
        """True when the fault-tolerant federation runs (chaos or recovery asked for)."""
        return self.recovery is True or self.chaos

    @property
    def restores(self) -> bool:
        """True when lost clients are restored from replicas (not restarted from scratch)."""
        return self.active and self.recovery is not False

    def check_rounds(self, rounds: int) -> None:
        """Chaos rounds must fall inside the run."""
        late = [r for r in self.chaos_rounds if r >= rounds]
        if late:
            raise ConfigError(f"chaos_rounds {late} are outside the run's rounds 0..{rounds - 1}")
