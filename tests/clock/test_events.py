"""The virtual clock's arithmetic against hand-computed values."""

from __future__ import annotations

import pytest

from dfml.clock import Speed, next_due, staleness, update_seconds


def test_an_update_costs_its_steps_and_its_messages():
    assert update_seconds(Speed(0.5, 0.25), steps=6, messages=2) == 3.5
    assert update_seconds(Speed(2.0), steps=3, messages=4) == 6.0


def test_the_next_event_is_the_earliest_with_ties_by_id():
    done_at = {4: 3.0, 1: 2.0, 7: 2.0, 2: 2.0, 0: 5.0}
    assert next_due(done_at, 10) == (2.0, [1, 2, 7])
    assert next_due(done_at, 2) == (2.0, [1, 2])  # the rest stay due at 2.0
    with pytest.raises(ValueError):
        next_due({}, 1)


def test_staleness_counts_the_versions_published_since_the_read():
    assert staleness({3: 1, 1: 4}, {1: 6, 3: 1, 9: 20}) == [2, 0]
    assert staleness({}, {1: 2}) == []
