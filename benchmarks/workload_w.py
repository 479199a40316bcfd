"""Workload W: dfml's Ray runtime against a plain single-thread PyTorch loop.

Workload W (the digits FL benchmark used across FL simulators): digits
(pixels / 16), Dirichlet α = 0.5 with seed 0 (``min_samples 3`` so N = 100
partitions), 80/20 train/test per client, the default MLP (64-64), plain SGD
lr 0.05, batch 16, one local epoch, every client every round; DFedAvg on a
ring (data-size mixing) and FedAvg (server step). For N ≥ 1,000 the data is
synthetic (64 features, 10 classes, 30 samples per client), the same model
and per-client work.

The **floor** is an independent plain-PyTorch loop (``nn.Module``,
``torch.optim.SGD``, one thread, no dfml code): per round, every client
mixes its ring neighbours' vectors with the same weights, trains one epoch
and is evaluated — the same math as the reference in
``tests/algorithms/test_dfedavg_reference.py``. dfml runs through the real
step loop (``Runtime``) on Ray actors (one per core by default) with the
evaluation dfml does every round.

``--vectorize true,false`` runs dfml once per setting (``RunConfig.vectorize``:
a cohort's local SGD as one ``torch.func.vmap`` computation, or client by
client), ``--pack-params always,never`` once per packing setting
(``ResourceConfig.pack_params``: an actor publishes its clients' vectors as
one object, or one object per client); the floor is measured once per
(algorithm, N), and not at all with ``--floor false`` (at N = 100,000 the
single-thread loop would take minutes a round).

Reported: median seconds per round after round 0 for both, their ratio,
dfml's round 0 (lazy imports, warm-up), the driver's peak RSS while dfml
runs (VmRSS sampled every 0.1 s; the plain loop runs afterwards, so its
arrays do not count), and the machine's peak memory use (largest drop of
MemAvailable, every process plus the object store).

    .venv/bin/python benchmarks/workload_w.py [--clients 20,100,1000,10000] [--rounds 4]
        [--algorithms dfedavg,fedavg] [--vectorize true,false]
        [--pack-params auto,always,never] [--floor true|false] [--profile]
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import os
import pstats
import statistics
import threading
import time

import numpy as np
import ray
import torch
from round_time import PeakMemory
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from dfml.actors.config import ResourceConfig
from dfml.actors.federation import Federation
from dfml.algorithms.base import LocalSGDConfig
from dfml.algorithms.server import FederatedSGDConfig
from dfml.data.config import DataConfig, PartitionConfig
from dfml.data.registry import load_dataset
from dfml.experiment import ExperimentConfig, RunConfig, prepare
from dfml.launch.registry import algorithm_class
from dfml.models.zoo import ModelConfig, build_model
from dfml.runtime.loop import Runtime
from dfml.topology.config import TopologyConfig
from dfml.topology.mixing import mixing_matrix


def workload(
    algorithm: str, clients: int, rounds: int, vectorize: bool = True, pack: str = "auto"
) -> ExperimentConfig:
    if clients < 1000:
        data = DataConfig(dataset="digits")
        partition = PartitionConfig(
            partition="dirichlet", alpha=0.5, min_samples=3, test_fraction=0.2
        )
    else:
        data = DataConfig(
            dataset="synthetic",
            synthetic_samples=30 * clients,
            synthetic_classes=10,
            synthetic_shape=(64,),
        )
        partition = PartitionConfig(partition="iid", min_samples=3, test_fraction=0.2)
    knobs = {"local_epochs": 1, "lr": 0.05, "batch_size": 16}
    algo_cfg = (
        LocalSGDConfig(**knobs)
        if algorithm == "dfedavg"
        else FederatedSGDConfig(**knobs, aggregation="server")
    )
    return ExperimentConfig(
        run=RunConfig(
            algorithm=algorithm, clients=clients, rounds=rounds, seed=0, vectorize=vectorize
        ),
        data=data,
        partition=partition,
        model=ModelConfig(model="mlp"),
        topology=TopologyConfig(topology="ring", mixing="data-size"),
        resources=ResourceConfig(num_cpus_per_actor=1.0, pack_params=pack),
        algorithm=algo_cfg,
    )


def plain_loop(cfg: ExperimentConfig, prepared, rounds: int) -> list[float]:
    """Seconds per round of the same math in plain PyTorch, one thread."""
    dataset = load_dataset(cfg.data)
    flat = build_model(cfg.model, dataset.input_shape, dataset.num_classes)
    init = flat.init_flat(cfg.run.seed)
    n, alg = cfg.run.clients, cfg.algorithm
    module = copy.deepcopy(flat.module)
    data, tests = [], []
    for s in prepared.splits[:n]:
        data.append(
            (torch.from_numpy(dataset.features(s.train)), torch.from_numpy(dataset.y[s.train]))
        )
        tests.append(
            (torch.from_numpy(dataset.features(s.test)), torch.from_numpy(dataset.y[s.test]))
        )
    sizes = np.array([len(y) for _, y in data], dtype=np.float64)
    server = cfg.run.algorithm == "fedavg"
    if not server and n <= 2000:
        w = torch.from_numpy(mixing_matrix(prepared.graph, cfg.topology.mixing, sizes))
    vectors = init.repeat(n, 1).double()
    times = []
    for r in range(rounds):
        t0 = time.perf_counter()
        if server:
            mixed = vectors
        elif n <= 2000:
            mixed = w @ vectors
        else:  # ring rows without the dense matrix
            left, right = torch.roll(vectors, 1, 0), torch.roll(vectors, -1, 0)
            sz = torch.from_numpy(sizes)
            tot = sz + torch.roll(sz, 1) + torch.roll(sz, -1)
            mixed = (
                sz[:, None] * vectors
                + torch.roll(sz, 1)[:, None] * left
                + torch.roll(sz, -1)[:, None] * right
            ) / tot[:, None]
        new = []
        for i in range(n):
            vector_to_parameters(mixed[i].float().clone(), module.parameters())
            opt = torch.optim.SGD(module.parameters(), lr=alg.lr)
            rng = np.random.default_rng([cfg.run.seed, i, r])
            x, y = data[i]
            order = rng.permutation(len(y))
            for start in range(0, len(y), alg.batch_size):
                b = torch.from_numpy(order[start : start + alg.batch_size])
                opt.zero_grad()
                torch.nn.functional.cross_entropy(module(x[b]), y[b]).backward()
                opt.step()
            new.append(parameters_to_vector(module.parameters()).detach().double())
            if not server:
                with torch.no_grad():
                    module(tests[i][0]).argmax(1).eq(tests[i][1]).float().mean()
        vectors = torch.stack(new)
        if server:
            p = torch.from_numpy(sizes / sizes.sum())
            vectors = (p[:, None] * vectors).sum(0).repeat(n, 1)
            for i in range(n):
                vector_to_parameters(vectors[i].float(), module.parameters())
                with torch.no_grad():
                    module(tests[i][0]).argmax(1).eq(tests[i][1]).float().mean()
        times.append(time.perf_counter() - t0)
    return times


def dfml_rounds(cfg: ExperimentConfig, prepared, profile: bool) -> tuple[list[float], int, str]:
    algorithm = algorithm_class(cfg.run.algorithm)(cfg.algorithm, vectorize=cfg.run.vectorize)
    federation = Federation(cfg.data, cfg.model, prepared.splits, cfg.run.seed, cfg.resources)
    runtime = Runtime(algorithm, federation, prepared.topology.copy(), cfg.run.rounds, seed=0)
    profiler = cProfile.Profile() if profile else None
    try:
        if profiler is not None:
            profiler.enable()
        history = runtime.run()
        if profiler is not None:
            profiler.disable()
        actors = len(federation.actors)
    finally:
        federation.shutdown()
    text = ""
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(18)
        text = out.getvalue()
    return [r.seconds for r in history], actors, text


class PeakRSS:
    """The driver process's peak resident memory while a block runs (VmRSS every 0.1 s)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    @staticmethod
    def current() -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        raise RuntimeError("no VmRSS in /proc/self/status")

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.current())
            time.sleep(0.1)

    def __enter__(self) -> PeakRSS:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def median_after_first(times: list[float]) -> float:
    return statistics.median(times[1:] if len(times) > 1 else times)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", default="20,100,1000,10000")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--algorithms", default="dfedavg,fedavg")
    parser.add_argument("--profile", action="store_true", help="print the driver's profile")
    parser.add_argument(
        "--vectorize",
        default="true",
        help="dfml's --vectorize settings to run: true, false or both",
    )
    parser.add_argument(
        "--pack-params",
        default="auto",
        help="dfml's --pack-params settings to run: auto, always, never, or a comma list",
    )
    parser.add_argument(
        "--floor", default="true", help="also time the plain-loop floor (true|false)"
    )
    args = parser.parse_args()
    flag = {"true": True, "false": False}
    settings = [
        (flag[v.strip()], p.strip())
        for v in args.vectorize.split(",")
        for p in args.pack_params.split(",")
    ]
    torch.set_num_threads(1)
    rows = []
    for name in args.algorithms.split(","):
        for n in [int(c) for c in args.clients.split(",")]:
            floor = None
            for vectorize, pack in settings:
                cfg = workload(name, n, args.rounds, vectorize, pack)
                prepared = prepare(cfg)
                with PeakMemory() as mem, PeakRSS() as driver:
                    ray.init(
                        num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR"
                    )
                    try:
                        times, actors, prof = dfml_rounds(cfg, prepared, args.profile)
                    finally:
                        ray.shutdown()
                rss = driver.peak / 1e9
                ours = median_after_first(times)
                if floor is None and flag[args.floor]:
                    floor = median_after_first(plain_loop(cfg, prepared, args.rounds))
                rows.append(
                    (
                        name,
                        n,
                        vectorize,
                        pack,
                        actors,
                        ours,
                        times[0],
                        floor,
                        ours / floor if floor else float("nan"),
                        rss,
                        mem.peak_gb,
                    )
                )
                print(
                    f"{name} N={n} vectorize={vectorize} pack={pack}: dfml {ours:.3f}s "
                    f"(round 0 {times[0]:.3f}s) floor {floor or float('nan'):.3f}s",
                    flush=True,
                )
                if prof:
                    print(prof, flush=True)
    print(f"\n{os.cpu_count()} CPUs, {args.rounds} rounds, median s/round after round 0\n")
    print(
        "| algorithm | N | vectorize | pack | actors | dfml s/round | dfml round 0 s "
        "| plain loop s/round | ratio | driver peak RSS GB | peak memory GB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, n, vec, pack, actors, ours, first, floor, ratio, rss, gb in rows:
        print(
            f"| {name} | {n} | {str(vec).lower()} | {pack} | {actors} | {ours:.3f} | {first:.3f} "
            f"| {floor or float('nan'):.3f} | {ratio:.2f}× | {rss:.2f} | {gb:.2f} |"
        )


if __name__ == "__main__":
    main()
