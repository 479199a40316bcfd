"""Weighted accuracy (Σ correct / Σ test samples) per round and in the summary."""

from __future__ import annotations

import math

import pytest

from dfml.launch.results import records_to_table, summarize, weighted
from dfml.records import RoundRecord


def test_weighted_accuracy_hand_example():
    sizes = {0: 10, 3: 30}
    first = RoundRecord(0, {0: {"accuracy": 0.5}, 3: {"accuracy": 0.9}}, 0, 1.0)
    second = RoundRecord(1, {0: {"accuracy": 1.0}, 3: {"accuracy": 0.6}}, 0, 1.0)
    # (0.5·10 + 0.9·30) / 40 = 0.8 ; (1.0·10 + 0.6·30) / 40 = 0.7
    assert weighted(first, sizes) == pytest.approx(0.8)
    out = summarize([first, second], test_sizes=sizes)
    assert out["weighted_accuracy_per_round"] == pytest.approx([0.8, 0.7])
    assert out["weighted_accuracy"] == pytest.approx(0.7)
    assert out["final_accuracy"] == pytest.approx(0.8)  # the unweighted mean differs
    table = records_to_table([first, second], sizes).to_pylist()
    assert [r["test_samples"] for r in table] == [10, 30, 10, 30]


def test_clients_without_accuracy_do_not_count():
    record = RoundRecord(0, {0: {"accuracy": 0.5}, 1: {}}, 0, 1.0)
    assert weighted(record, {0: 4, 1: 100}) == 0.5
    assert math.isnan(weighted(RoundRecord(0, {1: {}}, 0, 1.0), {1: 3}))
