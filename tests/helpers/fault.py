"""Helpers of the fault tests: one small experiment, run through the CLI's runner."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from dfml.fault.chaos import kill_actor
from dfml.launch.options import LaunchConfig, build_config
from dfml.launch.runner import execute
from dfml.records import Callback

#: 4 clients on digits, a small MLP, 3 rounds: seconds per run, same bits every time.
BASE: dict[str, Any] = {
    "algorithm": "dfedavg",
    "dataset": "digits",
    "clients": 4,
    "rounds": 3,
    "seed": 0,
    "model": "mlp",
    "hidden": 16,
    "local_epochs": 1,
    "personalized_eval": False,
    "num_cpus_per_actor": 0.5,
}


def run(out: Path, callbacks: list[Callback] = (), **options: Any) -> dict[str, Any]:
    """Run BASE + ``options`` with results in ``out``; return summary.json."""
    cfg, _ = build_config({**BASE, **options})
    launch = LaunchConfig(out=str(out), progress=False, dashboard=False)
    execute(cfg, launch, callbacks=list(callbacks))
    return json.loads((out / "summary.json").read_text())


def metrics(out: Path) -> pa.Table:
    return pq.read_table(out / "metrics.parquet")


def faults(out: Path) -> list[dict[str, Any]]:
    return pq.read_table(out / "faults.parquet").to_pylist()


class AtRoundEnd(Callback):
    """Run ``actions[r](federation)`` when round r ends."""

    def __init__(self, actions: dict[int, Callable[[Any], None]]) -> None:
        self.actions = actions
        self.federation: Any = None

    def on_run_start(self, algorithm: Any, federation: Any) -> None:
        self.federation = federation

    def on_round_end(self, record: Any) -> None:
        if record.round in self.actions:
            self.actions[record.round](self.federation)


def kill_clients(fed: Any, clients: list[int], mode: str = "ray.kill") -> list[int]:
    """Kill the actors hosting ``clients``; return once Ray confirms they are dead."""
    ks = sorted({fed.actor_of_client(c) for c in clients})
    for k in ks:
        p = fed.placement_of(k)
        kill_actor(fed.actors[k], mode, p["pid"], p["node_id"])
    assert fed.confirm_dead(ks, timeout=30) == ks, "kill not confirmed"
    return ks


def incarnation_of(fed: Any, client: int) -> str:
    return fed.placement_of(fed.actor_of_client(client))["incarnation"]
