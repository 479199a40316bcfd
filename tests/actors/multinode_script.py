"""Clients join onto a node added mid-run; run by test_multinode.py in a subprocess.

A process can join one Ray cluster only and the test process already holds
the shared session, hence the subprocess. The cluster (its own temp dir) is
a head and one worker, 1 CPU each; four clients on a ring, two per 1-CPU
actor, ``--placement spread``: the two nodes are full. Before round 2 two
clients join (``--schedule 2:+2``), a new actor; as round 1 ends the callback
adds a third node (``add_node`` must run on the main thread), the stand-in
for the nodes an autoscaler brings. The join's placement group can only go
there.

Prints one ``RESULT {json}`` line; the results folder is ``argv[1]``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import pyarrow.parquet as pq
import ray
from ray.cluster_utils import Cluster

from dfml.launch.options import LaunchConfig, build_config
from dfml.launch.runner import execute
from dfml.records import Callback

OPTIONS: dict[str, Any] = {
    "algorithm": "dfedavg",
    "dataset": "digits",
    "clients": 4,
    "rounds": 3,
    "seed": 0,
    "model": "mlp",
    "hidden": 16,
    "local_epochs": 1,
    "personalized_eval": False,
    "topology": "ring",
    "clients_per_actor": 2,
    "num_cpus_per_actor": 1.0,
    "placement": "spread",
    "schedule": "2:+2",
    "scale_timeout": 120,
}


class Messages(logging.Handler):
    """Keeps the messages of one logger."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


class GrowBeforeJoin(Callback):
    """Records where clients run; as round ``grow_after`` ends, adds a node."""

    def __init__(self, cluster: Cluster, grow_after: int) -> None:
        self.cluster, self.grow_after = cluster, grow_after
        self.federation: Any = None
        self.nodes: dict[str, dict[int, str]] = {}
        self.added: dict[str, Any] = {}

    def on_run_start(self, algorithm: Any, federation: Any) -> None:
        self.federation = federation

    def on_round_end(self, record: Any) -> None:
        self.nodes[f"round{record.round}"] = self.federation.client_nodes()
        if record.round == self.grow_after:
            t0 = time.perf_counter()
            node = self.cluster.add_node(num_cpus=1)
            self.added.update(node_id=node.node_id, seconds=time.perf_counter() - t0)


def main(out: Path) -> dict[str, Any]:
    t0 = time.perf_counter()
    waits = Messages()
    logging.getLogger("dfml.actors.scaling").addHandler(waits)
    with tempfile.TemporaryDirectory(prefix="dfml-ray-", dir="/tmp") as tmp:
        # Cluster() records its address under $RAY_TMPDIR, where an address-less
        # ray.init() elsewhere on the machine would find it: keep it private.
        os.environ["RAY_TMPDIR"] = tmp
        os.makedirs(os.path.join(tmp, "ray"))
        cluster = Cluster(
            initialize_head=True,
            head_node_args={"num_cpus": 1, "include_dashboard": False, "temp_dir": tmp},
        )
        worker = cluster.add_node(num_cpus=1)
        try:
            ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
            cluster.wait_for_nodes()
            started = time.perf_counter() - t0
            head = ray.get_runtime_context().get_node_id()
            grow = GrowBeforeJoin(cluster, grow_after=1)
            cfg, _ = build_config(OPTIONS)
            launch = LaunchConfig(out=str(out), progress=False, dashboard=False)
            execute(cfg, launch, callbacks=[grow])
            summary = json.loads((out / "summary.json").read_text())
            rows = pq.read_table(out / "metrics.parquet").to_pylist()
            result = {
                "head": head,
                "worker": worker.node_id,
                "added": grow.added["node_id"],
                "add_node_seconds": grow.added["seconds"],
                "nodes": grow.nodes,
                "waits": waits.lines,
                "summary": summary,
                "joined_rows": [r for r in rows if r["client"] >= 4],
                "cluster_start_seconds": started,
            }
        finally:
            ray.shutdown()
            cluster.shutdown()
    result["seconds"] = time.perf_counter() - t0
    return result


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(Path(sys.argv[1])), default=str), flush=True)
