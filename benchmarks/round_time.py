"""Seconds per DFedAvg round: Ray actors vs a single-process, single-thread loop.

Workloads (issue #2):
  (a) digits + MLP (scikit-learn's 1,797 digits split over N clients);
  (b) the 2-conv CNN on 28×28 synthetic images, ~500 samples per client.

Both sides run the same client code (`Federation` on Ray vs
`InProcessFederation`), so the ratio is the price (or gain) of Ray. Peak
memory is the largest drop of MemAvailable (/proc/meminfo) below its value
before Ray started: every process plus the object store. Linux only.

    .venv/bin/python benchmarks/round_time.py [--clients 10,50,100,200] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import threading
import time

import ray
import torch

from dfml.actors.config import ResourceConfig
from dfml.actors.federation import Federation
from dfml.actors.inprocess import InProcessFederation
from dfml.algorithms.base import LocalSGDConfig
from dfml.algorithms.dfedavg import DFedAvg
from dfml.data.config import DataConfig, PartitionConfig
from dfml.experiment import ExperimentConfig, RunConfig, prepare
from dfml.models.zoo import ModelConfig
from dfml.runtime.loop import run
from dfml.topology.config import TopologyConfig


def mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


class PeakMemory:
    """Samples MemAvailable every 0.1 s; reports the largest drop from baseline."""

    def __init__(self) -> None:
        self.baseline = mem_available()
        self.lowest = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.lowest = min(self.lowest, mem_available())
            time.sleep(0.1)

    def __enter__(self) -> PeakMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def peak_gb(self) -> float:
        return (self.baseline - self.lowest) / 1e9


def workload(name: str, clients: int, rounds: int) -> ExperimentConfig:
    if name == "digits-mlp":
        data = DataConfig(dataset="digits")
        model = ModelConfig(model="mlp", hidden=(64, 64))
    else:
        data = DataConfig(
            dataset="synthetic", synthetic_samples=500 * clients, synthetic_shape=(1, 28, 28)
        )
        model = ModelConfig(model="cnn", hidden=64)
    return ExperimentConfig(
        run=RunConfig(algorithm="dfedavg", clients=clients, rounds=rounds, seed=0),
        data=data,
        partition=PartitionConfig(partition="iid", min_samples=3),
        model=model,
        topology=TopologyConfig(topology="ring"),
        resources=ResourceConfig(num_cpus_per_actor=1.0),
        algorithm=LocalSGDConfig(local_epochs=1, lr=0.05, batch_size=32),
    )


def seconds_per_round(cfg: ExperimentConfig, federation_cls: type[Federation]) -> tuple[float, int]:
    """Median round time (round 0 excluded when there are more) and actor count."""
    prepared = prepare(cfg)
    algorithm = DFedAvg(cfg.algorithm)
    federation = federation_cls(cfg.data, cfg.model, prepared.splits, cfg.run.seed, cfg.resources)
    try:
        history = run(algorithm, federation, cfg.run.rounds, topology=prepared.topology)
        actors = len(federation.info())
    finally:
        federation.shutdown()
    times = [r.seconds for r in history]
    return statistics.median(times[1:] if len(times) > 1 else times), actors


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", default="10,50,100,200")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workloads", default="digits-mlp,cnn-synthetic")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    for name in args.workloads.split(","):
        for n in [int(c) for c in args.clients.split(",")]:
            cfg = workload(name, n, args.rounds)
            single, _ = seconds_per_round(cfg, InProcessFederation)
            with PeakMemory() as mem:
                ray.init(num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR")
                try:
                    distributed, actors = seconds_per_round(cfg, Federation)
                finally:
                    ray.shutdown()
            rows.append((name, n, actors, distributed, single, distributed / single, mem.peak_gb))
            print(f"{name} N={n}: ray {distributed:.3f}s single {single:.3f}s", flush=True)
    print(
        f"\n{os.cpu_count()} CPUs, rounds={args.rounds}, median seconds per round (round 0 excluded)\n"
    )
    print(
        "| workload | N | actors | Ray s/round | single-process s/round | ratio | peak memory GB |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, n, actors, d, s, ratio, gb in rows:
        print(f"| {name} | {n} | {actors} | {d:.3f} | {s:.3f} | {ratio:.2f}× | {gb:.2f} |")


if __name__ == "__main__":
    main()
