"""Sizes checked against the memory available before anything is allocated (no Ray)."""

from __future__ import annotations

import pytest

from dfml.data import builtin, memory
from dfml.errors import ConfigError


def test_available_memory_is_the_smaller_of_meminfo_and_the_cgroup_room(tmp_path, monkeypatch):
    (tmp_path / "meminfo").write_text("MemTotal: 4000 kB\nMemAvailable:    1000 kB\n")
    cgroup = tmp_path / "cgroup"
    cgroup.mkdir()
    (cgroup / "memory.max").write_text("2000000\n")
    (cgroup / "memory.current").write_text("1500000\n")
    monkeypatch.setattr(memory, "_MEMINFO", tmp_path / "meminfo")
    monkeypatch.setattr(memory, "_CGROUP", cgroup)
    assert memory.available_memory() == 500_000  # 2,000,000 - 1,500,000 < 1,024,000
    (cgroup / "memory.max").write_text("max\n")
    assert memory.available_memory() == 1_024_000


def test_check_fits_refuses_one_byte_over(monkeypatch):
    monkeypatch.setattr(memory, "available_memory", lambda: 1000)
    memory.check_fits("it", 1000, "lower it")
    with pytest.raises(ConfigError) as err:
        memory.check_fits("it", 1001, "lower it")
    assert str(err.value) == (
        "it would need 0.0 MiB of memory, but 0.0 MiB is available on this machine; lower it"
    )
    monkeypatch.setattr(memory, "available_memory", lambda: None)
    memory.check_fits("it", 10**30, "lower it")  # unknown: not checked


def test_a_synthetic_dataset_too_big_is_refused_before_drawing(monkeypatch):
    # 10 samples of 1x2x2 in 2 classes, drawn in one block: the float32 result,
    # the block's float64 draws and the means, (10 * 4 + 10 * 16 + 2 * 12) * 4 = 896 bytes
    monkeypatch.setattr(memory, "available_memory", lambda: 896)
    assert builtin.make_synthetic(10, 2, (1, 2, 2)).x.shape == (10, 1, 2, 2)
    monkeypatch.setattr(memory, "available_memory", lambda: 895)
    with pytest.raises(ConfigError, match=r"synthetic dataset \(10 samples of shape 1x2x2\)"):
        builtin.make_synthetic(10, 2, (1, 2, 2))
