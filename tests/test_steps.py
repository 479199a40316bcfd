"""The step types: the columnar message table against messages built by hand."""

from __future__ import annotations

import pickle

import numpy as np

from dfml.channels import Row
from dfml.steps import PARAMS, DriverState, Message, MessageTable, ResultTable, StepResult


def _rows() -> tuple[list, dict[int, Message]]:
    """Three clients (given out of order): packed-row handles of two objects,
    a plain handle and a client without neighbours; and the messages by hand."""
    a, b, plain = np.zeros((3, 2)), np.ones((3, 2)), np.full(2, 7.0)
    rows = [
        (5, 0.5, [Row(a, 2), plain], [0.25, 0.25]),
        (1, 1 / 3, [Row(a, 0), Row(b, 1)], [1 / 3, 1 / 3]),
        (9, 1.0, [], []),
    ]
    by_hand = {
        1: Message(4, (Row(a, 0), Row(b, 1)), (1 / 3, 1 / 3), 1 / 3),
        5: Message(4, (Row(a, 2), plain), (0.25, 0.25), 0.5),
        9: Message(4, (), (), 1.0),
    }
    return rows, by_hand


def _same(got: Message, want: Message) -> None:
    """Equal messages; handles compared by what they name (arrays are not ==-comparable)."""
    assert (got.round, got.weights, got.self_weight, got.evaluate) == (
        want.round,
        want.weights,
        want.self_weight,
        want.evaluate,
    )
    assert len(got.neighbors) == len(want.neighbors)
    for g, w in zip(got.neighbors, want.neighbors, strict=True):
        if isinstance(w, Row):
            assert isinstance(g, Row) and g.ref is w.ref and g.index == w.index
        else:
            assert g is w


def test_a_table_is_the_mapping_of_its_messages():
    rows, by_hand = _rows()
    table = MessageTable.build(4, rows)
    assert list(table) == [1, 5, 9] and len(table) == 3 and 5 in table and 2 not in table
    for cid, want in by_hand.items():
        _same(table[cid], want)
    assert len(table.bases) == 3  # a, b and the plain handle, each once
    # Every handle in client order, then each client's neighbour order.
    names = [
        (h.ref is rows[0][2][0].ref, h.index) if isinstance(h, Row) else "plain"
        for h in table.handles()
    ]
    assert names == [(True, 0), (False, 1), (True, 2), "plain"]


def test_a_subset_and_an_unscored_table_keep_each_message():
    rows, by_hand = _rows()
    table = MessageTable.build(4, rows)
    part = table.subset([9, 5])
    assert list(part) == [5, 9] and part.bases is table.bases
    _same(part[5], by_hand[5])
    _same(part[9], by_hand[9])
    quiet = table.unscored()
    assert not quiet[1].evaluate and table[1].evaluate
    _same(quiet[1], Message(4, by_hand[1].neighbors, by_hand[1].weights, 1 / 3, evaluate=False))


def test_a_table_pickles_as_its_columns():
    rows, _ = _rows()
    back = pickle.loads(pickle.dumps(MessageTable.build(4, rows).subset([1, 5])))
    assert list(back) == [1, 5]
    assert back[1].weights == (1 / 3, 1 / 3) and back[5].self_weight == 0.5
    assert back[1].neighbors[0].ref is back[5].neighbors[0].ref  # one object, shared


def _results(ids, packed, offset=0.0) -> dict[int, StepResult]:
    """Alike results: a packed-row params handle each, three float metrics."""
    return {
        c: StepResult(
            {PARAMS: Row(packed, i)},
            {"train_loss": 0.5 + c + offset, "test_loss": 1.5 * c, "accuracy": c / 10},
            {PARAMS: 40},
        )
        for i, c in enumerate(ids)
    }


def test_a_result_table_is_the_mapping_of_its_results():
    a, b = np.zeros((2, 10)), np.ones((2, 10))
    first, second = _results([3, 7], a), _results([4, 8], b)
    tables = [ResultTable.pack(first), ResultTable.pack(second)]
    table = ResultTable.concat(tables)
    assert list(table) == [3, 4, 7, 8]
    for cid, want in {**first, **second}.items():
        got = table[cid]
        assert got.metrics == want.metrics and got.sizes == want.sizes
        assert got.ref.ref is want.ref.ref and got.ref.index == want.ref.index
    back = pickle.loads(pickle.dumps(table))
    assert back[8].metrics == second[8].metrics and back[8].ref.index == 1


def test_results_that_are_not_alike_stay_a_dict():
    packed = np.zeros((2, 3))
    mixed = _results([0, 1], packed)
    mixed[1] = StepResult(mixed[1].refs, {"train_loss": 1.0}, mixed[1].sizes)
    assert ResultTable.pack(mixed) is None
    counted = _results([0, 1], packed)
    counted[0] = StepResult(counted[0].refs, {**counted[0].metrics, "accuracy": 1}, {PARAMS: 40})
    assert ResultTable.pack(counted) is None  # an int metric
    assert ResultTable.pack({}) is None


def test_the_driver_state_records_a_table_as_it_records_the_dict():
    packed = np.zeros((3, 4))
    results = _results([2, 5, 9], packed, offset=0.25)
    by_dict, by_table = DriverState(), DriverState()
    for state, given in ((by_dict, results), (by_table, ResultTable.pack(results))):
        state.publish(given)
        state.merge_metrics(given)
    assert by_table.metrics == by_dict.metrics
    assert by_table.sizes == by_dict.sizes
    assert {c: (h.ref is packed, h.index) for c, h in by_table.refs.items()} == {
        2: (True, 0),
        5: (True, 1),
        9: (True, 2),
    }
