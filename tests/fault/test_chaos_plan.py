"""Chaos planning and the fault config: pure, seeded, validated."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dfml.errors import ConfigError
from dfml.fault.chaos import plan_kills
from dfml.fault.config import FaultConfig
from dfml.launch.options import build_config


def test_plan_is_a_function_of_seed_and_round():
    a = [plan_kills(7, r, 20, 0.1) for r in range(30)]
    assert a == [plan_kills(7, r, 20, 0.1) for r in range(30)]
    assert a != [plan_kills(8, r, 20, 0.1) for r in range(30)]
    assert all(kills == sorted(set(kills)) for kills in a)


def test_rate_zero_kills_nothing_rate_one_kills_all():
    assert all(plan_kills(0, r, 5, 0.0) == [] for r in range(50))
    assert plan_kills(0, 3, 5, 1.0) == [0, 1, 2, 3, 4]
    assert plan_kills(0, 3, 0, 1.0) == []


def test_kill_rate_is_per_target_per_round():
    counts = [len(plan_kills(1, r, 20, 0.1)) for r in range(3000)]
    # Binomial(20, 0.1): mean 2, standard error of the mean 1.34 / sqrt(3000) = 0.024
    assert abs(np.mean(counts) - 2.0) < 0.1


@pytest.mark.parametrize(("n", "fraction", "expected"), [(10, 0.25, 3), (4, 0.5, 2), (3, 0.01, 1)])
def test_chaos_rounds_kill_a_fraction_at_once(n, fraction, expected):
    kills = plan_kills(0, 2, n, 0.0, rounds=(2, 5), fraction=fraction)
    assert len(kills) == expected == max(1, math.ceil(fraction * n))
    assert plan_kills(0, 3, n, 0.0, rounds=(2, 5), fraction=fraction) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"replicas": -1}, "replicas must be >= 0, got -1"),
        ({"checkpoint_every": 0}, "checkpoint_every must be >= 1, got 0"),
        ({"checkpoint_uri": " "}, "checkpoint_uri must be a directory or URI"),
        ({"keep_versions": 0}, "keep_versions must be >= 1"),
        ({"spares": -2}, "spares must be >= 0"),
        ({"heartbeat_seconds": 0.0}, "heartbeat_seconds must be 0.1 to 604,800 seconds, got 0"),
        ({"heartbeat_seconds": 1e-300}, "heartbeat_seconds must be 0.1 to 604,800 seconds"),
        ({"heartbeat_seconds": float("nan")}, "heartbeat_seconds must be 0.1 to 604,800"),
        ({"unavailable_timeout": float("inf")}, "unavailable_timeout must be 1 to 604,800"),
        ({"unavailable_timeout": 1e300}, "unavailable_timeout must be 1 to 604,800 seconds"),
        ({"unavailable_timeout": 0.5}, "unavailable_timeout must be 1 to 604,800 seconds"),
        (
            {"heartbeat_seconds": 5.0, "unavailable_timeout": 2.0},
            "unavailable_timeout 2 s is shorter than one heartbeat (5 s)",
        ),
        ({"chaos_kill_rate": 1.5}, "chaos_kill_rate must be in [0, 1], got 1.5"),
        ({"chaos_rounds": (2, -1)}, "chaos_rounds must be round indices >= 0"),
        ({"chaos_fraction": 0.0}, "chaos_fraction must be in (0, 1]"),
        ({"chaos_mode": "nuke"}, "unknown chaos_mode 'nuke'; allowed: ray.kill, sigkill, node"),
    ],
)
def test_bad_values_are_one_line_errors(kwargs, message):
    with pytest.raises(ConfigError) as err:
        FaultConfig(**kwargs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_chaos_rounds_must_fall_inside_the_run():
    FaultConfig(chaos_rounds=(0, 4)).check_rounds(5)
    with pytest.raises(ConfigError, match=r"chaos_rounds \[5\] are outside the run's rounds 0..4"):
        FaultConfig(chaos_rounds=(1, 5)).check_rounds(5)


def test_the_layer_is_on_with_chaos_or_recovery_and_off_by_default():
    assert not FaultConfig().active
    assert FaultConfig(recovery=True).active and FaultConfig(recovery=True).restores
    assert FaultConfig(chaos_kill_rate=0.1).restores
    baseline_failure = FaultConfig(chaos_rounds=(1,), recovery=False)
    assert baseline_failure.active and not baseline_failure.restores
    assert not FaultConfig(recovery=False).active


def test_fields_are_flags_and_yaml_keys():
    cfg, _ = build_config(
        {
            "chaos_kill_rate": "0.1",
            "replicas": "3",
            "checkpoint_every": 2,
            "chaos_rounds": "1,4",
            "chaos_mode": "sigkill",
            "checkpoint_uri": "/tmp/ckpt",
            "recovery": "false",
        }
    )
    assert cfg.fault == FaultConfig(
        recovery=False,
        replicas=3,
        checkpoint_every=2,
        checkpoint_uri="/tmp/ckpt",
        chaos_kill_rate=0.1,
        chaos_rounds=(1, 4),
        chaos_mode="sigkill",
    )
    assert build_config({})[0].fault == FaultConfig()


class _FakeTargets:
    """Two actors of two clients each; every kill is confirmed except actor 1's."""

    def __init__(self, confirmed: set[int]) -> None:
        self.confirmed = confirmed
        self.kills: list[tuple[int, float, str]] = []

    def slots(self) -> int:
        return 2

    def handle(self, k: int) -> str:
        return f"handle{k}"

    def clients_of(self, k: int) -> list[int]:
        return [2 * k, 2 * k + 1]

    def placement_of(self, k: int) -> dict:
        return {"pid": 100 + k, "node_id": f"node{k}", "incarnation": f"actor{k + 1}"}

    def confirm_dead(self, ks, timeout: float) -> list[int]:
        return sorted(k for k in ks if k in self.confirmed)

    def note_kill(self, k: int, t: float, mode: str) -> None:
        self.kills.append((k, t, mode))


def test_chaos_strikes_once_per_round_of_the_run_and_counts_confirmed_kills(monkeypatch):
    from dfml.fault import chaos
    from dfml.fault.timeline import Timeline

    sent: list[tuple[str, str, int, str]] = []
    monkeypatch.setattr(chaos, "kill_actor", lambda *args: sent.append(args))
    targets, timeline = _FakeTargets(confirmed={0}), Timeline()
    cfg = FaultConfig(chaos_rounds=(1, 2), chaos_fraction=1.0)
    observer = chaos.Chaos(cfg, seed=0, rounds=2, targets=targets, timeline=timeline)
    for rnd in (None, 0, 1, 1, 2, 5):  # round 2 is outside a 2-round run
        observer.step_sent(rnd)
    assert sent == [("handle0", "ray.kill", 100, "node0"), ("handle1", "ray.kill", 101, "node1")]
    assert [(k, mode) for k, _, mode in targets.kills] == [(0, "ray.kill"), (1, "ray.kill")]
    rows = [(e.kind, e.round, e.actor, e.client) for e in timeline.events]
    assert rows == [
        ("unconfirmed_kill", 1, 1, -1),
        ("kill", 1, 0, -1),
        ("injected", 1, 0, 0),
        ("injected", 1, 0, 1),
    ]
    assert observer.struck == {0, 1}  # round 0 was planned too (nothing to kill)
