"""The ref directory and the process registry: pure bookkeeping, no Ray session."""

from __future__ import annotations

import numpy as np
import pytest
from ray import ObjectRef

from dfml.algorithms.base import Message
from dfml.fault.directory import RefDirectory, changed_refs, refs_in
from dfml.fault.processes import Processes


def _ref(i: int) -> ObjectRef:
    """A ref that names nothing (made without a Ray session)."""
    return ObjectRef(bytes([i]) * 28)


def test_refs_in_names_neighbours_and_extras_only():
    a, b, c = _ref(1), _ref(2), _ref(3)
    msg = Message(0, (a, b), (0.5, 0.5), extra={"global": c, "mask": np.ones(3), "n": 4})
    assert refs_in(msg) == {a, b, c}
    assert refs_in("not a message") == set()
    assert refs_in(Message(0)) == set()


def _p(ref: ObjectRef, **more: ObjectRef) -> dict[str, ObjectRef]:
    """A client's published channels: ``params`` and any others."""
    return {"params": ref, **more}


def test_changed_refs_are_every_channel_of_a_client_that_came_back_different():
    before = {
        0: (_p(_ref(1)), "d0"),
        1: (_p(_ref(2), compressed=_ref(12)), "d1"),
        2: (_p(_ref(3)), "d2"),
    }
    # 0 came back with the same vector, 1 with another, 5 published nothing before
    assert changed_refs(before, {0: "d0", 1: "other", 5: "x"}) == {_ref(2), _ref(12)}
    assert changed_refs(before, {}) == set()


def test_substitute_swaps_renamed_refs_and_keeps_everything_else():
    d = RefDirectory()
    old, new, other = _ref(1), _ref(2), _ref(3)
    d.publish(0, _p(old), "d0")
    msg = Message(4, (old, other), (0.25, 0.75), 0.5, {"global": old, "k": 3})
    assert d.substitute(msg) is msg  # nothing renamed yet
    d.republished(0, _p(new), "d0'")
    out = d.substitute(msg)
    assert out.neighbors == (new, other) and out.extra == {"global": new, "k": 3}
    assert (out.round, out.weights, out.self_weight) == (4, (0.25, 0.75), 0.5)
    assert msg.neighbors == (old, other)  # the original is untouched
    assert d.substitute("raw") == "raw"


def test_every_channel_is_renamed_to_the_same_channel_of_the_restored_client():
    d = RefDirectory()
    d.publish(0, _p(_ref(1), compressed=_ref(2)), "a")
    d.republished(0, _p(_ref(3), compressed=_ref(4)), "a")
    out = d.substitute(Message(1, (_ref(2), _ref(1))))
    assert out.neighbors == (_ref(4), _ref(3))


def test_a_channel_the_restored_client_no_longer_publishes_is_left_as_it_was():
    d = RefDirectory()
    d.publish(0, _p(_ref(1), compressed=_ref(2)), "a")
    d.republished(0, _p(_ref(3)), "b")  # restored from a state that had no message yet
    assert d.substitute(Message(1, (_ref(2),))).neighbors == (_ref(2),)


def test_a_client_restored_twice_renames_every_older_ref_to_the_newest():
    d = RefDirectory()
    r1, r2, r3 = _ref(1), _ref(2), _ref(3)
    d.publish(0, _p(r1), "a")
    d.republished(0, _p(r2), "b")
    d.republished(0, _p(r3), "c")
    assert d.renamed == {r1: (0, "params"), r2: (0, "params")}
    assert {d.current(r1), d.current(r2), d.current(r3)} == {r3}
    assert d.published[0] == (_p(r3), "c") and d.ref(0) == r3
    d.republished(7, _p(_ref(9)), "z")  # first publication: nothing to rename
    assert _ref(9) not in d.renamed and d.published[7] == (_p(_ref(9)), "z")


def test_rename_points_an_old_ref_at_the_current_vector():
    d = RefDirectory()
    d.publish(1, _p(_ref(5)), "x")
    d.rename(_p(_ref(4)), 1)
    assert d.renamed == {_ref(4): (1, "params")} and d.current(_ref(4)) == _ref(5)


def test_a_completed_call_publishes_and_drops_renames_that_lead_to_its_clients():
    d = RefDirectory()
    d.publish(0, _p(_ref(1)), "a")
    d.publish(1, _p(_ref(2)), "b")
    d.republished(0, _p(_ref(3)), "a")
    d.republished(1, _p(_ref(4)), "b")
    d.step_published({0: (_p(_ref(5)), "a2")})
    assert d.published == {0: (_p(_ref(5)), "a2"), 1: (_p(_ref(4)), "b")}
    assert d.renamed == {_ref(2): (1, "params")} and d.current(_ref(2)) == _ref(4)


def test_a_call_that_published_some_channels_keeps_the_others():
    d = RefDirectory()
    d.publish(0, {"params": _ref(1), "task": _ref(2)}, "a")
    d.step_published({0: ({"task": _ref(3)}, "a")})  # a step that changed only "task"
    assert d.published == {0: ({"params": _ref(1), "task": _ref(3)}, "a")}
    assert (d.ref(0), d.ref(0, "task")) == (_ref(1), _ref(3))


def test_snapshot_and_forget():
    d = RefDirectory()
    d.publish(0, _p(_ref(1)), "a")
    d.publish(1, _p(_ref(2)), "b")
    assert d.snapshot([1, 2]) == {1: (_p(_ref(2)), "b")}
    d.forget([1, 3])
    assert d.snapshot([0, 1]) == {0: (_p(_ref(1)), "a")}


def test_processes_name_slots_placements_and_holders():
    p = Processes()
    a, b = p.new_name("actor"), p.new_name("store")
    assert (a, b) == ("actor1", "store2")
    p.assign(0, a, "handle-a")
    assert (p.incarnation(0), p.slot_of(a), p.handle(0)) == (a, 0, "handle-a")
    assert a not in p.started and a not in p.holders
    p.placed(a, {"pid": 7, "node_id": "n1", "ignored": True})
    assert p.placement[a] == {"pid": 7, "node_id": "n1"}
    assert a in p.started and p.holders[a] == "handle-a" and p.holder_kind[a] == "holder"
    p.add_holder(b, "handle-b", "store")
    assert p.node_of() == {a: "n1"}
    c = p.new_name("actor")
    p.assign(0, c, "handle-c")  # slot 0 replaced
    p.forget_holder(a)
    assert p.incarnation(0) == c and p.slot_of(a) == 0 and p.handle(0) == "handle-c"
    assert set(p.holders) == {b} and p.holder_kind[a] == "holder"  # kind outlives the holder
    assert p.placement[a]["pid"] == 7  # events still say where it ran
    with pytest.raises(KeyError):
        p.incarnation(1)
