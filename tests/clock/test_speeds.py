"""Client speeds: the spec parsers, the seeded draws and the trace file."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dfml.clock import ClockConfig, Speed, client_speeds, read_trace
from dfml.clock.speeds import (
    LOGNORMAL_SALT,
    STRAGGLER_SALT,
    parse_lognormal,
    parse_stragglers,
    straggler_factors,
)
from dfml.errors import ConfigError


def test_spec_parsers_read_the_documented_forms():
    assert parse_lognormal("lognormal:0.5") == 0.5
    assert parse_lognormal("lognormal:0") == 0.0
    assert parse_stragglers("0.2:x10") == (0.2, 10.0)
    assert parse_stragglers("0.2:10") == (0.2, 10.0)
    assert parse_stragglers("0:×1") == (0.0, 1.0)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("normal:0.5", "--speeds must be lognormal:SIGMA with SIGMA >= 0, got 'normal:0.5'"),
        ("lognormal:-1", "got 'lognormal:-1'"),
        ("lognormal:nan", "got 'lognormal:nan'"),
        ("lognormal", "got 'lognormal'"),
    ],
)
def test_a_malformed_speeds_spec_is_one_line(text, message):
    with pytest.raises(ConfigError) as err:
        parse_lognormal(text)
    assert message in str(err.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0.2", "--stragglers must be FRACTION:xFACTOR (e.g. 0.2:x10), got '0.2'"),
        ("a:x10", "got 'a:x10'"),
        ("0.2:xk", "got '0.2:xk'"),
        ("1:x10", "--stragglers fraction must be in [0, 1), got 1"),
        ("-0.1:x10", "fraction must be in [0, 1), got -0.1"),
        ("0.2:x0.5", "--stragglers slowdown must be >= 1 (times slower), got 0.5"),
    ],
)
def test_a_malformed_stragglers_spec_is_one_line(text, message):
    with pytest.raises(ConfigError) as err:
        parse_stragglers(text)
    assert message in str(err.value)


def test_stragglers_are_the_rounded_fraction_drawn_from_the_seed():
    ids = list(range(20))
    factors = straggler_factors(0.2, 10.0, ids, seed=3)
    slow = sorted(c for c, f in factors.items() if f == 10.0)
    assert len(slow) == 4 and set(factors.values()) == {1.0, 10.0}
    # Independently: the first 4 of a permutation from SeedSequence([seed, salt]).
    perm = np.random.default_rng(np.random.SeedSequence([3, STRAGGLER_SALT])).permutation(20)
    assert slow == sorted(perm[:4].tolist())
    assert straggler_factors(0.2, 10.0, ids, seed=3) == factors
    assert straggler_factors(0.2, 10.0, ids, seed=4) != factors
    assert sum(f == 10.0 for f in straggler_factors(0.3, 10.0, ids, 0).values()) == 6
    assert sum(f == 10.0 for f in straggler_factors(0.1, 10.0, ids, 0).values()) == 2
    assert set(straggler_factors(0.0, 10.0, ids, 0).values()) == {1.0}


def test_lognormal_speeds_scale_step_seconds_per_client_id():
    cfg = ClockConfig(speeds="lognormal:0.5", step_seconds=0.2, latency=0.01)
    speeds = client_speeds(cfg, [0, 1, 2, 7], seed=5)
    for cid, speed in speeds.items():
        z = np.random.default_rng(np.random.SeedSequence([5, LOGNORMAL_SALT, cid]))
        assert speed.step_seconds == pytest.approx(0.2 * math.exp(0.5 * z.standard_normal()))
        assert speed.latency == 0.01
    # A client's draw depends on its id only, not on who else runs.
    assert client_speeds(cfg, [7], seed=5)[7] == speeds[7]
    assert client_speeds(ClockConfig(), [0, 1], 0) == {0: Speed(0.1, 0.0), 1: Speed(0.1, 0.0)}


def test_a_trace_gives_each_client_its_seconds(tmp_path):
    path = tmp_path / "trace.csv"
    path.write_text("client,step_seconds,latency\n1,0.5,0.25\n0,2,0\n")
    assert read_trace(str(path), [0, 1]) == {0: Speed(2.0, 0.0), 1: Speed(0.5, 0.25)}
    path.write_text("client,step_seconds\n0,1.5\n1,3\n")
    assert read_trace(str(path), [0, 1], latency=0.1) == {0: Speed(1.5, 0.1), 1: Speed(3.0, 0.1)}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("client,step_seconds\n0,1\n", "has 1 clients; the run has 2 (--clients plus --reserve)"),
        ("client,step_seconds\n0,1\n1,2\n2,3\n", "line 4: client '2' is not one of the run's"),
        ("client,step_seconds\n0,1\n1,\n", "line 3: missing step_seconds"),
        ("client,step_seconds\n0,1\n1\n", "line 3: missing step_seconds"),
        ("client,step_seconds\n0,1\n,2\n", "line 3: missing client"),
        ("client,step_seconds\n0,-1\n1,2\n", "line 2: step_seconds must be > 0, got -1"),
        ("client,step_seconds\n0,0\n1,2\n", "line 2: step_seconds must be > 0, got 0"),
        ("client,step_seconds\n0,fast\n1,2\n", "line 2: step_seconds 'fast' is not a number"),
        ("client,step_seconds\n0,inf\n1,2\n", "line 2: step_seconds 'inf' is not a number"),
        ("client,step_seconds,latency\n0,1,-2\n1,2,0\n", "line 2: latency must be >= 0, got -2"),
        ("client,step_seconds,latency\n0,1,x\n1,2,0\n", "line 2: latency 'x' is not a number"),
        ("client,step_seconds\n0,1\n0,2\n", "line 3: client 0 appears twice"),
        ("client,step_seconds\n0,1,3\n1,2\n", "line 2: more cells than the header names"),
        ("id,seconds\n0,1\n1,2\n", "must start with the header client,step_seconds"),
        ("", "must start with the header client,step_seconds"),
    ],
)
def test_a_bad_trace_is_one_line_naming_the_file_and_line(tmp_path, text, message):
    path = tmp_path / "trace.csv"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        read_trace(str(path), [0, 1])
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_a_missing_trace_file_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="is not a file"):
        read_trace(str(tmp_path / "none.csv"), [0])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"schedule_mode": "eventual"}, "unknown schedule_mode 'eventual'; allowed: sync, async"),
        (
            {"speeds": "lognormal:1", "stragglers": "0.1:x2"},
            "--speeds and --stragglers exclude each other",
        ),
        ({"step_seconds": 0.0}, "--step-seconds must be a number > 0, got 0.0"),
        ({"latency": -1.0}, "--latency must be a number >= 0, got -1.0"),
    ],
)
def test_a_bad_clock_section_is_one_line(kwargs, message):
    with pytest.raises(ConfigError) as err:
        ClockConfig(**kwargs)
    assert message in str(err.value)


def test_the_clock_is_active_only_when_asked_for():
    assert not ClockConfig().active
    assert ClockConfig(schedule_mode="async").active
    assert ClockConfig(stragglers="0.2:x10").active
    assert ClockConfig(latency=0.5).active
