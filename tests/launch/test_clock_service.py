"""The ``clock`` section end to end through the runner, in process (``--backend local``):
what metrics.parquet and summary.json gain, and what a synchronous clock leaves alone."""

from __future__ import annotations

import pyarrow.parquet as pq
from helpers.fault import run

LOCAL = {"backend": "local", "rounds": 3, "target_accuracy": 0.1}


def table(out):
    return pq.read_table(out / "metrics.parquet").to_pandas()


def test_sync_without_speeds_is_the_run_without_a_clock(tmp_path):
    summary = run(tmp_path / "plain", **LOCAL)
    assert "virtual_time" not in table(tmp_path / "plain").columns
    assert summary["time_to_target"] is None and summary["rounds_to_target"] is not None
    assert "schedule_mode" not in summary
    sync = run(tmp_path / "sync", **LOCAL, schedule_mode="sync")
    assert table(tmp_path / "sync").equals(table(tmp_path / "plain"))
    assert sync["final_accuracy"] == summary["final_accuracy"]


def test_a_sync_clock_adds_virtual_time_and_changes_nothing_else(tmp_path):
    plain = run(tmp_path / "plain", **LOCAL)
    timed = run(tmp_path / "timed", **LOCAL, stragglers="0.25:x10", step_seconds=0.5)
    before, after = table(tmp_path / "plain"), table(tmp_path / "timed")
    assert after.drop(columns="virtual_time").equals(before)
    per_round = after.groupby("round")["virtual_time"]
    assert (per_round.nunique() == 1).all()
    # 4 clients, one 10x slower: a round is its 1 epoch of ⌈n/32⌉ steps at 5 s plus
    # the latency (none), whichever straggler has the most steps.
    times = per_round.first().tolist()
    assert times == sorted(times) and times[0] > 0 and times[0] % 5.0 == 0
    assert timed["time_to_target"] == times[timed["rounds_to_target"] - 1]
    assert timed["schedule_mode"] == "sync" and timed["virtual_time"] == times[-1]
    assert plain["final_accuracy"] == timed["final_accuracy"]


def test_an_async_run_records_time_and_staleness(tmp_path):
    summary = run(tmp_path / "a", **LOCAL, schedule_mode="async", stragglers="0.25:x10")
    metrics = table(tmp_path / "a")
    assert {"virtual_time", "staleness_mean", "staleness_max"} <= set(metrics.columns)
    times = metrics.groupby("round")["virtual_time"].agg(["min", "max"])
    assert (times["min"] == times["max"]).all() and times["max"].is_monotonic_increasing
    assert summary["schedule_mode"] == "async" and summary["time_to_target"] is not None
    assert summary["virtual_time"] == times["max"].iloc[-1]
    # A round is 4 client updates; the fast clients make up the straggler's share.
    counts = [summary["updates_per_client"].get(str(c), 0) for c in range(4)]
    assert sum(counts) == 3 * 4 and min(counts) < max(counts)
    again = run(tmp_path / "b", **LOCAL, schedule_mode="async", stragglers="0.25:x10")
    assert table(tmp_path / "b").equals(metrics)
    assert again["time_to_target"] == summary["time_to_target"]
