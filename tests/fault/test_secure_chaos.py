"""Chaos at 10 % kills per round with secure aggregation and DP-SGD on: no client is
lost, and every restored client re-publishes exactly the masked vector it had sent,
so the server's sums, and every metric, equal the failure-free run's."""

from __future__ import annotations

from helpers.fault import metrics, run

#: Server-mode secure aggregation with DP-SGD; seed 5 makes the 10 % chaos of two
#: actors kill one in round 0 (dfml.fault.chaos.plan_kills).
SECURE_DP = {
    "algorithm": "fedavg",
    "secure_aggregation": True,
    "dp_clip": 1.0,
    "dp_noise": 1.0,
    "seed": 5,
    "rounds": 2,
}


def test_ten_percent_kills_lose_no_client_with_dp_and_secure_aggregation(ray_session, tmp_path):
    calm = run(tmp_path / "calm", backend="local", **SECURE_DP)  # the same bits, no actor
    chaos = run(tmp_path / "chaos", clients_per_actor=2, chaos_kill_rate=0.1, **SECURE_DP)
    assert chaos["failures_injected"] == 2 == chaos["clients_restored"]
    assert chaos["clients_lost"] == 0 and chaos["rounds_completed"] == 2
    assert chaos["secure_aggregation"] == "server" and chaos["dp_epsilon"] > 0
    assert metrics(tmp_path / "chaos").equals(metrics(tmp_path / "calm"))
    assert chaos["final_accuracy"] == calm["final_accuracy"]
