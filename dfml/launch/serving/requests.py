"""Checks of what an HTTP client sends ``dfml serve``: one clear line per bad request.

Plain Python (no Ray, no Serve), so every rule is unit-tested directly. A bad
request raises :class:`BadRequest` with the HTTP status and one line naming
the value and what is allowed; the Serve shell turns it into
``{"error": line}``. Bodies are parsed here, not by FastAPI's models, so that
malformed JSON gets the same one-line answer as any other mistake.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from dfml.algorithms.clfml.tasks import Task
from dfml.errors import ConfigError

#: The most samples one predict request may carry (bounds a request's memory).
MAX_INPUTS = 1024
#: The most bytes of a request body (a predict request of MAX_INPUTS 28×28 images fits).
MAX_BODY_BYTES = 16 * 2**20


class BadRequest(Exception):
    """A request the server refuses: its HTTP status and one line saying why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_body(body: bytes, fields: Sequence[str], required: Sequence[str]) -> dict[str, Any]:
    """The JSON object in ``body``; 400 for anything else, an unknown or a missing field."""
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(413, f"body of {len(body):,} bytes; at most {MAX_BODY_BYTES:,} allowed")
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, ValueError) as err:
        raise BadRequest(400, f"body is not JSON ({err}); send a JSON object") from None
    if not isinstance(value, dict):
        raise BadRequest(400, f"body is {type(value).__name__} JSON; send a JSON object")
    for key in value:
        if key not in fields:
            raise BadRequest(400, f"unknown field {key!r}; allowed: {', '.join(fields)}")
    for key in required:
        if key not in value:
            raise BadRequest(400, f"field {key!r} is missing; send {{{key!r}: [...]}}")
    return value


def _span(values: Sequence[int]) -> str:
    """``0, 1, 2, 5`` — the allowed labels, as an error line lists them."""
    return ", ".join(str(v) for v in values)


def parse_task(body: bytes, servable: Sequence[int]) -> Task:
    """The task in a ``POST /tasks`` body ``{"labels": [...], "q": [...]?}``.

    ``servable``: the labels a task may ask for (held by some client and with
    held-out samples to score on). Labels must be JSON integers (``1.0`` and
    ``true`` are refused), non-empty, without duplicates; ``q`` one
    non-negative weight per label, not all zero.
    """
    value = parse_body(body, ("labels", "q"), ("labels",))
    labels, q = value["labels"], value.get("q")
    if not isinstance(labels, list):
        raise BadRequest(400, f"labels must be a list of integers, got {labels!r}")
    for label in labels:
        if isinstance(label, bool) or not isinstance(label, int):
            raise BadRequest(400, f"label {label!r} is not an integer; allowed: {_span(servable)}")
    if q is not None and (
        not isinstance(q, list)
        or any(isinstance(v, bool) or not isinstance(v, int | float) for v in q)
    ):
        raise BadRequest(400, f"q must be a list of numbers, one per label, got {q!r}")
    try:
        task = Task(tuple(labels), None if q is None else tuple(q))
    except ConfigError as err:
        raise BadRequest(400, f"{err}; allowed labels: {_span(servable)}") from None
    known = set(servable)
    for label in task.labels:
        if label not in known:
            raise BadRequest(400, f"label {label} is not served; allowed: {_span(servable)}")
    return task


def parse_id(text: str, what: str, known: Sequence[int] | None = None) -> int:
    """A task or cluster id from the URL path; 404 naming it if it is not one."""
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0 or str(value) != text or (known is not None and value not in known):
        allowed = f"; known: {_span(known)}" if known is not None else ""
        raise BadRequest(404, f"unknown {what} id {text!r}{allowed}")
    return value


def parse_inputs(body: bytes, input_shape: Sequence[int]) -> np.ndarray:
    """The samples in a predict body ``{"inputs": [[...], ...]}`` as float32 ``(n, *shape)``.

    Each sample is a nested list of the model's input shape or a flat list of
    as many numbers; 1..:data:`MAX_INPUTS` finite numbers per sample.
    """
    shape = tuple(int(d) for d in input_shape)
    want = math.prod(shape)
    expect = f"each of 1..{MAX_INPUTS} samples a list of {want} numbers (or of shape {list(shape)})"
    inputs = parse_body(body, ("inputs",), ("inputs",))["inputs"]
    if not isinstance(inputs, list) or not 1 <= len(inputs) <= MAX_INPUTS:
        n = len(inputs) if isinstance(inputs, list) else type(inputs).__name__
        raise BadRequest(400, f"inputs holds {n} samples; send {expect}")
    try:
        x = np.asarray(inputs, dtype=np.float32)
    except (TypeError, ValueError):
        raise BadRequest(400, f"inputs are not a regular array of numbers; send {expect}") from None
    if x.shape[1:] not in (shape, (want,)):
        raise BadRequest(400, f"inputs have shape {list(x.shape)}; send {expect}")
    if not np.isfinite(x).all():
        raise BadRequest(400, "inputs hold null, NaN or infinity; send finite numbers")
    return x.reshape(len(x), *shape)
