"""Node loss on a local four-node Ray cluster; run by test_node_loss.py in a subprocess.

A process can join one Ray cluster only and the test process already holds
the shared session, hence the subprocess. The cluster (a head without CPUs
for clients, three 2-CPU workers) gets its own temp dir and fast node-death
detection. One run of the fault tests' small experiment, two node deaths:

* after round 0 a worker hosting clients is removed
  (``allow_graceful=False``). Just before, a replica is made the naive way —
  ``get_params.remote()`` on a restartable actor on that node, the RAY_NOTES
  trap — to show what it returns after the node is gone;
* in round 2 chaos ``node`` mode crashes a worker hosting clients (SIGKILL of
  its raylet).

Prints one JSON line; the results folder is ``argv[1]/run``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")

import numpy as np
import ray
from helpers.fault import AtRoundEnd, run
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

FAST_NODE_DEATH = {"health_check_period_ms": 500, "health_check_failure_threshold": 4}
TRAP_FLOATS = 500_000  # 2 MB: kept in the node's object store, not inlined


@ray.remote(num_cpus=0, max_restarts=-1, max_task_retries=-1)
class NaiveClient:
    """A restartable actor whose parameters a naive replica reads by a task."""

    def __init__(self) -> None:
        self.params = np.zeros(TRAP_FLOATS, dtype=np.float32)  # "fresh" parameters

    def train(self) -> None:
        self.params = np.full(TRAP_FLOATS, 7.0, dtype=np.float32)

    def get_params(self) -> np.ndarray:
        return self.params

    def node(self) -> str:
        return ray.get_runtime_context().get_node_id()


def naive_client_near(nodes: set[str]):
    """A NaiveClient with soft affinity to one of ``nodes`` (soft, so Ray may
    restart it elsewhere). Ray's view of a node can lag, and a soft affinity
    then lands elsewhere: try every node in turn, pausing between tries.
    Returns (actor, its node)."""
    landed = []
    for attempt in range(20):
        target = sorted(nodes)[attempt % len(nodes)]
        naive = NaiveClient.options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(target, soft=True)
        ).remote()
        placed = ray.get(naive.node.remote())
        if placed in nodes:
            return naive, placed
        landed.append(placed)
        ray.kill(naive, no_restart=True)
        time.sleep(0.5)
    raise RuntimeError(
        f"could not place the naive client on any of {sorted(nodes)}; landed on {landed}"
    )


def client_nodes(fed) -> dict[int, str]:
    return {c: fed.placement_of(fed.actor_of_client(c))["node_id"] for c in range(fed.num_clients)}


def main(out: Path) -> dict:
    result: dict = {}
    with tempfile.TemporaryDirectory(prefix="dfml-ray-", dir="/tmp") as tmp:
        # Cluster() records its address in $RAY_TMPDIR/ray/ray_current_cluster,
        # where every address-less ray.init() on the machine would find it.
        os.environ["RAY_TMPDIR"] = tmp
        os.makedirs(os.path.join(tmp, "ray"))
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                "num_cpus": 0,
                "include_dashboard": False,
                "temp_dir": tmp,
                "_system_config": FAST_NODE_DEATH,
            },
        )
        workers = [cluster.add_node(num_cpus=2) for _ in range(3)]
        try:
            ray.init(address=cluster.address, logging_level="ERROR", log_to_driver=False)
            cluster.wait_for_nodes()
            head = ray.get_runtime_context().get_node_id()
            seen: dict = {}

            def remove_node(fed) -> None:
                seen["before"] = client_nodes(fed)
                workers_with_clients = set(seen["before"].values()) - {head}
                naive, victim = naive_client_near(workers_with_clients)
                ray.get(naive.train.remote())
                seen["naive"] = (naive, naive.get_params.remote())
                ray.wait([seen["naive"][1]], fetch_local=False)
                node = next(w for w in workers if w.node_id == victim)
                cluster.remove_node(node, allow_graceful=False)
                seen["victim"] = victim

            def after(fed) -> None:
                seen["after"] = client_nodes(fed)

            summary = run(
                out / "run",
                [AtRoundEnd({0: remove_node, 2: after})],
                clients_per_actor=2,
                spares=1,
                chaos_rounds="2",
                chaos_fraction=0.5,
                chaos_mode="node",
            )
            try:
                naive_params = ray.get(seen["naive"][1], timeout=120)
                naive = "zeros" if not naive_params.any() else f"values {set(naive_params[:3])}"
            except ray.exceptions.RayError as err:
                naive = type(err).__name__
            result.update(
                summary=summary,
                head=head,
                victim=seen["victim"],
                moved=[c for c, n in seen["before"].items() if n == seen["victim"]],
                nodes_after=seen["after"],
                alive=[n["NodeID"] for n in ray.nodes() if n["Alive"]],
                naive_replica=naive,
            )
        finally:
            ray.shutdown()
            cluster.shutdown()
    return result


if __name__ == "__main__":
    print("RESULT " + json.dumps(main(Path(sys.argv[1])), default=str), flush=True)
