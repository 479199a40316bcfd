"""The roster: placement of joining clients, removal, ids never reused."""

from __future__ import annotations

import pytest

from dfml.actors.config import ResourceConfig
from dfml.actors.roster import Roster
from dfml.errors import ConfigError


def test_plan_is_contiguous_cohorts_of_the_given_ids():
    r = Roster.plan([4, 0, 9, 2], ResourceConfig(clients_per_actor=2), 4, 0)
    assert r.slots == [[0, 2], [4, 9]] and r.ids() == [0, 2, 4, 9]
    assert r.slot_of(9) == 1 and r.next_id == 10 and r.epoch == 0


def test_joins_fill_slots_with_room_then_open_new_ones():
    r = Roster.plan(range(4), ResourceConfig(clients_per_actor=3), 16, 0)
    assert r.slots == [[0, 1], [2, 3]]
    placed, opened = r.place([4, 5])
    assert placed == {0: [4], 1: [5]} and opened == []
    placed, opened = r.place([6, 7])
    assert opened == [2] and placed == {2: [6, 7]} and r.epoch == 2
    assert r.by_slot([7, 0, 5]) == {0: [0], 1: [5], 2: [7]}


def test_a_full_cluster_puts_joiners_on_the_least_loaded_actor():
    r = Roster.plan(range(4), ResourceConfig(num_cpus_per_actor=1.0), 2, 0)
    assert len(r.slots) == 2 and r.max_slots == 2
    _, opened = r.place([4, 5, 6])
    assert opened == [] and sorted(len(s) for s in r.slots) == [3, 4]


def test_removed_ids_are_never_reused():
    r = Roster.plan(range(4), ResourceConfig(clients_per_actor=2), 4, 0)
    assert r.remove([1, 2]) == {0: [1], 1: [2]}
    assert r.ids() == [0, 3] and r.departed == {1, 2}
    for cid in (1, 3, 2):
        with pytest.raises(ConfigError, match="never reused"):
            r.place([cid])
    with pytest.raises(ConfigError, match="not live"):
        r.remove([1])
    assert r.new_ids(2) == [4, 5]


def test_round_trip_through_a_dict():
    r = Roster.plan(range(5), ResourceConfig(clients_per_actor=2), 4, 0)
    r.place([5])
    r.remove([0])
    back = Roster.from_dict(r.to_dict())
    assert back.to_dict() == r.to_dict() and back.actor_of == r.actor_of
