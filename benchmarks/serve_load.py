"""``dfml serve`` under load: predict latency on the cluster meta-models, task time-to-ready.

For each client count, a CL-FML system (digits, label-group partition into
3 groups with 20 % overlap, 3 clusters, small-world topology, MLP 64-16-10)
is trained on a local Ray and served on 127.0.0.1 as ``dfml serve`` serves it
(:class:`~dfml.launch.serving.session.Serving`). Then:

* **predict**: ``--requests`` concurrent ``POST /clusters/{k}/predict``
  requests (k round-robin over the 3 cluster meta-models, ``--batch``
  samples each, one warm-up request per cluster first), sent at once from
  one asyncio client: p50 / p99 latency per request and requests per second
  over the whole burst;
* **time-to-ready**: ``--tasks`` tasks ``POST /tasks`` one after another,
  each polled every 50 ms until ``done``: seconds from the POST to done
  (median; the task service's own ``seconds`` beside it).

    .venv/bin/python benchmarks/serve_load.py [--clients 30,100] [--rounds 3] [--out FILE.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import ray

from dfml.experiment import Experiment, prepare
from dfml.launch.options import build_config
from dfml.launch.registry import algorithm_class
from dfml.launch.serving.session import Serving

log = logging.getLogger("serve_load")

SYSTEM: dict[str, Any] = {
    "algorithm": "clfml",
    "dataset": "digits",
    "partition": "label-group",
    "groups": 3,
    "group_overlap": 0.2,
    "clusters": "3",
    "topology": "small-world",
    "degree": 2,
    "model": "mlp",
    "hidden": 16,
    "seed": 0,
    "personalized_eval": False,
    "num_cpus_per_actor": 0.5,
}
TASKS = ([1, 5, 7], [0, 2], [3, 4, 8, 9])


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def _burst(url: str, bodies: list[tuple[int, dict]]) -> tuple[list[float], float]:
    """Send every (cluster, body) at once; each request's seconds and the burst's."""
    limits = httpx.Limits(max_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as client:

        async def one(cluster: int, body: dict) -> float:
            t0 = time.perf_counter()
            answer = await client.post(f"/clusters/{cluster}/predict", json=body)
            answer.raise_for_status()
            return time.perf_counter() - t0

        t0 = time.perf_counter()
        latencies = await asyncio.gather(*(one(k, b) for k, b in bodies))
        return list(latencies), time.perf_counter() - t0


def predict_load(serving: Serving, requests: int, batch: int) -> dict[str, float]:
    test = serving.service.requester.test
    clusters = [c for c in serving.clusters if c["labels"]][:3]
    bodies = []
    for i in range(requests):
        c = clusters[i % len(clusters)]
        pos = test.select(c["labels"])[:batch]
        bodies.append((c["cluster"], {"inputs": test.x[pos].numpy().tolist()}))
    asyncio.run(_burst(serving.url, bodies[: len(clusters)]))  # load each model once
    latencies, seconds = asyncio.run(_burst(serving.url, bodies))
    ms = np.asarray(latencies) * 1000
    return {
        "requests": requests,
        "models": len(clusters),
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        "requests_per_s": requests / seconds,
    }


def time_to_ready(serving: Serving, tasks: int) -> dict[str, Any]:
    ready, trained = [], []
    with httpx.Client(base_url=serving.url, timeout=60) as client:
        for labels in TASKS[:tasks]:
            t0 = time.perf_counter()
            task_id = client.post("/tasks", json={"labels": labels}).json()["task_id"]
            while (view := client.get(f"/tasks/{task_id}").json())["status"] not in (
                "done",
                "failed",
            ):
                time.sleep(0.05)
            if view["status"] != "done":
                raise RuntimeError(f"task {labels} failed: {view['error']}")
            ready.append(time.perf_counter() - t0)
            trained.append(view["seconds"])
    return {
        "tasks": len(ready),
        "ready_s": statistics.median(ready),
        "service_s": statistics.median(trained),
        "each_ready_s": ready,
    }


def measure(clients: int, rounds: int, per_actor: int, args: argparse.Namespace) -> dict:
    cfg, _ = build_config(
        {**SYSTEM, "clients": clients, "rounds": rounds, "clients_per_actor": per_actor}
    )
    t0 = time.perf_counter()
    with Experiment(cfg, algorithm_class("clfml")(cfg.algorithm), prepared=prepare(cfg)) as exp:
        exp.run()
        train_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        with Serving(exp, "127.0.0.1", _port()) as serving:
            start_s = time.perf_counter() - t0
            stop = threading.Event()
            worker = threading.Thread(target=serving.run, args=(stop,), daemon=True)
            worker.start()
            try:
                row = {
                    "clients": clients,
                    "rounds": rounds,
                    "train_s": train_s,
                    "serve_start_s": start_s,
                    "predict": predict_load(serving, args.requests, args.batch),
                    "task": time_to_ready(serving, args.tasks),
                }
            finally:
                stop.set()
                worker.join()
    log.warning("%s", json.dumps(row))
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", default="30,100", help="client counts (default: 30,100)")
    p.add_argument("--rounds", type=int, default=3, help="training rounds (default: 3)")
    p.add_argument("--clients-per-actor", type=int, default=10, help="(default: 10)")
    p.add_argument("--requests", type=int, default=200, help="concurrent predicts (default: 200)")
    p.add_argument("--batch", type=int, default=8, help="samples per predict (default: 8)")
    p.add_argument("--tasks", type=int, default=3, help="tasks timed, at most 3 (default: 3)")
    p.add_argument("--out", type=Path, help="write the rows as JSON here")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(include_dashboard=False, logging_level="ERROR", log_to_driver=False)
    try:
        rows = [
            measure(int(n), args.rounds, args.clients_per_actor, args)
            for n in args.clients.split(",")
        ]
    finally:
        ray.shutdown()
    print(
        "| clients | train s | Serve start s | predict p50 ms | p99 ms | req/s | task ready s (service s) |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        pr, t = r["predict"], r["task"]
        print(
            f"| {r['clients']} | {r['train_s']:.1f} | {r['serve_start_s']:.1f} | "
            f"{pr['p50_ms']:.0f} | {pr['p99_ms']:.0f} | {pr['requests_per_s']:.0f} | "
            f"{t['ready_s']:.1f} ({t['service_s']:.1f}) |"
        )
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
