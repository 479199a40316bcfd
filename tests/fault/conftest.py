"""Fixtures of the fault tests."""

from __future__ import annotations

import pyarrow as pa
import pytest
from helpers.fault import metrics, run


@pytest.fixture(scope="session")
def reference(ray_session, tmp_path_factory) -> pa.Table:
    """The failure-free run (plain federation, all clients in one actor)."""
    out = tmp_path_factory.mktemp("reference")
    run(out, clients_per_actor=4)
    return metrics(out)
