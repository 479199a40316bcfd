"""``dfml chaos``: three failure regimes of one run, one table (Ray mocked out)."""

from __future__ import annotations

import csv

import pytest

from dfml.errors import ConfigError
from dfml.launch import chaos
from dfml.launch.cli import main


def test_modes_are_parsed_and_checked():
    assert chaos.parse_modes("none, recovery,none") == ["none", "recovery"]
    with pytest.raises(ConfigError, match="--modes must be a list of none, no-recovery, recovery"):
        chaos.parse_modes("none,sometimes")


def test_each_mode_sets_only_the_failure_regime():
    shared = {"chaos-kill-rate": 0.1, "clients": 6, "recovery": True}
    assert chaos.mode_options("none", shared) == {
        "chaos_kill_rate": 0.0,
        "chaos_rounds": (),
        "recovery": None,
        "clients": 6,
    }
    assert chaos.mode_options("no-recovery", shared)["recovery"] is False
    assert chaos.mode_options("recovery", shared) == {
        "chaos_kill_rate": 0.1,
        "clients": 6,
        "recovery": True,
    }


def test_run_chaos_runs_every_mode_and_writes_the_table(monkeypatch, tmp_path):
    seen = []

    def fake_execute(cfg, launch, out):
        seen.append((cfg.fault.active, cfg.fault.restores, cfg.fault.chaos_kill_rate, out))
        lost = 0 if cfg.fault.restores else 3
        return {
            "wall_seconds": 10.0 + len(seen),
            "seconds_per_round": 0.5,
            "final_accuracy": 0.9 - 0.1 * lost,
            **({} if not cfg.fault.active else {"failures_injected": 3, "clients_lost": lost}),
            **({"clients_restored": 3, "recovery_seconds_p50": 0.2} if cfg.fault.restores else {}),
        }

    monkeypatch.setattr(chaos, "execute", fake_execute)
    monkeypatch.setattr(chaos, "init_ray", lambda *a: False)
    options = {"chaos_kill_rate": "0.2", "clients": "4", "out": str(tmp_path)}
    root, table, rows = chaos.run_chaos(options, list(chaos.MODES))
    assert root == tmp_path
    assert seen == [
        (False, False, 0.0, tmp_path / "none"),
        (True, False, 0.2, tmp_path / "no-recovery"),
        (True, True, 0.2, tmp_path / "recovery"),
    ]
    assert [
        (r["mode"], r["failures_injected"], r["clients_restored"], r["clients_lost"]) for r in rows
    ] == [
        ("none", 0, 0, 0),
        ("no-recovery", 3, 0, 3),
        ("recovery", 3, 3, 0),
    ]
    assert (tmp_path / "table.md").read_text() == table
    assert table.splitlines()[0].startswith(
        "| mode | time (s) | s/round | final accuracy | failures"
    )
    assert "| recovery | 13.000 | 0.500 | 0.900 | 3 | 3 | 0 | 0.200 | – | – |" in table
    with (tmp_path / "table.csv").open() as f:
        assert [r["mode"] for r in csv.DictReader(f)] == ["none", "no-recovery", "recovery"]


def test_cli_needs_chaos_for_the_failure_modes(capsys):
    assert main(["chaos", "--clients", "4", "--out", "/nonexistent/never"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "give --chaos-kill-rate or --chaos-rounds" in err
