"""One local Ray session for the whole test run (one per pytest-xdist worker under
``make test``: ``--dist loadscope`` keeps each module on one worker).

It declares 4 CPUs (so tests can hold spare actors on a 2-core machine) and,
without CUDA, 2 fake GPUs (so GPU-fraction placement is testable without a
GPU: actors get GPU ids but ``torch.cuda.is_available()`` stays False and
they run on CPU). With CUDA, Ray's own GPU detection is used.
Tests that need their own multi-node cluster run it in a subprocess.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

TEST_CPUS = 4


def _test_gpus() -> int | None:
    """Fake GPUs where there is no CUDA; the real ones (auto-detected) otherwise."""
    import torch

    return None if torch.cuda.is_available() else 2


@pytest.fixture(scope="session")
def ray_session():
    import ray

    if not ray.is_initialized():
        ray.init(
            num_cpus=TEST_CPUS,
            num_gpus=_test_gpus(),
            include_dashboard=False,
            logging_level="WARNING",
            log_to_driver=False,
        )
    yield ray
    ray.shutdown()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``ray`` every test that needs Ray (the shared session, directly or through
    a fixture, or a multi-node cluster of its own), so ``make check`` can leave it out."""
    for item in items:
        if "ray_session" in item.fixturenames or item.get_closest_marker("slow"):
            item.add_marker(pytest.mark.ray)
