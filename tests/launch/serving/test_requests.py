"""The request checks of dfml serve: every bad body is one line naming what is allowed."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dfml.launch.serving.requests import (
    MAX_INPUTS,
    BadRequest,
    parse_id,
    parse_inputs,
    parse_task,
)

SERVABLE = [0, 1, 2, 5, 7]


def body(value) -> bytes:
    return json.dumps(value).encode()


def test_a_good_task_keeps_its_labels_and_normalises_q():
    task = parse_task(body({"labels": [7, 1], "q": [3, 1]}), SERVABLE)
    assert task.labels == (7, 1) and task.q == (0.75, 0.25)
    assert parse_task(body({"labels": [5]}), SERVABLE).q is None


@pytest.mark.parametrize(
    ("raw", "status", "line"),
    [
        (b"{", 400, "body is not JSON"),
        (b"\xff", 400, "body is not JSON"),
        (body([1]), 400, "body is list JSON; send a JSON object"),
        (body({"labels": [1], "x": 1}), 400, "unknown field 'x'; allowed: labels, q"),
        (body({"q": [1]}), 400, "field 'labels' is missing"),
        (body({"labels": "1,2"}), 400, "labels must be a list of integers, got '1,2'"),
        (body({"labels": [1, None]}), 400, "label None is not an integer; allowed: 0, 1, 2, 5, 7"),
        (body({"labels": [False]}), 400, "label False is not an integer"),
        (body({"labels": [1.0]}), 400, "label 1.0 is not an integer"),
        (body({"labels": []}), 400, "task has no labels; allowed labels: 0, 1, 2, 5, 7"),
        (body({"labels": [2, 2]}), 400, "task lists label 2 twice"),
        (body({"labels": [2, 3]}), 400, "label 3 is not served; allowed: 0, 1, 2, 5, 7"),
        (body({"labels": [2, 5], "q": "a"}), 400, "q must be a list of numbers"),
        (body({"labels": [2, 5], "q": [1, True]}), 400, "q must be a list of numbers"),
        (body({"labels": [2, 5], "q": [0, 0]}), 400, "not all zero"),
    ],
)
def test_bad_tasks(raw, status, line):
    with pytest.raises(BadRequest) as err:
        parse_task(raw, SERVABLE)
    assert err.value.status == status and line in err.value.message
    assert "\n" not in err.value.message


def test_ids():
    assert parse_id("12", "task") == 12
    assert parse_id("2", "cluster", [0, 1, 2]) == 2
    for text in ("-1", "01", "1.0", "x", " 1"):
        with pytest.raises(BadRequest, match=f"unknown task id {text!r}") as err:
            parse_id(text, "task")
        assert err.value.status == 404
    with pytest.raises(BadRequest, match="unknown cluster id '3'; known: 0, 1, 2"):
        parse_id("3", "cluster", [0, 1, 2])


def test_inputs_take_flat_or_shaped_samples():
    shaped = np.arange(2 * 4, dtype=np.float32).reshape(2, 1, 2, 2)
    for inputs in (shaped.tolist(), shaped.reshape(2, 4).tolist()):
        got = parse_inputs(body({"inputs": inputs}), (1, 2, 2))
        assert got.dtype == np.float32 and np.array_equal(got, shaped)


@pytest.mark.parametrize(
    ("inputs", "line"),
    [
        ([], "inputs holds 0 samples; send each of 1..1024 samples a list of 4 numbers"),
        ({"a": 1}, "inputs holds dict samples"),
        ([[0.0] * 4] * (MAX_INPUTS + 1), f"inputs holds {MAX_INPUTS + 1} samples"),
        ([1, 2, 3, 4], "inputs have shape [4]"),
        ([[1, 2, 3]], "inputs have shape [1, 3]; send each of 1..1024 samples a list of 4"),
        ([[1, 2], [3, 4, 5, 6]], "not a regular array of numbers"),
        ([["a", 1, 2, 3]], "not a regular array of numbers"),
        ([[1, 2, 3, None]], "inputs hold null, NaN or infinity"),
        ([[1, 2, 3, 1e400]], "inputs hold null, NaN or infinity; send finite numbers"),
    ],
)
def test_bad_inputs(inputs, line):
    with pytest.raises(BadRequest) as err:
        parse_inputs(body({"inputs": inputs}), (4,))
    assert err.value.status == 400 and line in err.value.message


def test_an_oversized_body_is_refused_before_parsing(monkeypatch):
    monkeypatch.setattr("dfml.launch.serving.requests.MAX_BODY_BYTES", 10)
    with pytest.raises(BadRequest, match="body of 20 bytes; at most 10 allowed") as err:
        parse_inputs(b" " * 20, (4,))
    assert err.value.status == 413
