"""Workload W: dfml's runtime against two single-process floors.

Workload W (the digits FL benchmark used across FL simulators): digits
(pixels / 16), Dirichlet α = 0.5 with seed 0 (``min_samples 3`` so N = 100
partitions), 80/20 train/test per client, the default MLP (64-64), plain SGD
lr 0.05, batch 16, one local epoch, every client every round; DFedAvg on a
ring (data-size mixing) and FedAvg (server step). For N ≥ 1,000 the data is
synthetic (64 features, 10 classes, ``--samples-per-client`` samples per
client, 30 by default), the same model and per-client work;
``--model linear`` swaps the MLP for multinomial logistic regression (650
parameters), the model of the million-client runs.

The **floors** (:mod:`floors`, no dfml training code, one thread) do the same
math — sparse float32 ring mixing, the same per-client mini-batch order, the
same per-round evaluation of every client — and are checked against dfml's
numbers in ``tests/benchmarks/test_floors.py``:

- ``plain``: client by client, ``nn.Module`` + ``torch.optim.SGD``;
- ``vectorised``: ``torch.func`` (``functional_call`` + ``vmap`` + ``grad``)
  over the stacked client vectors, the physical reference for one CPU.

dfml runs through the real step loop (``Runtime``) on Ray actors (one per
core by default), or in this process with ``--backend local``.
``--vectorize true,false`` and ``--pack-params always,never`` run dfml once
per setting; the floors run once per (algorithm, N), only those
``--floors`` names (``none``: no floor; the plain floor takes minutes a
round at N = 100,000).

Reported: median seconds per round after round 0 for dfml and each floor,
the ratios, dfml's setup (``prepare`` + starting the clients) and round 0,
the driver's peak RSS (VmRSS every 0.1 s), the machine's peak memory use
(largest drop of MemAvailable: every process plus the object store), and
what Ray spilled to disk. The run is interrupted if MemAvailable falls
under 3 GB (a shared machine).

    .venv/bin/python benchmarks/workload_w.py [--clients 20,100,1000,10000] [--rounds 4]
        [--algorithms dfedavg,fedavg] [--model mlp|linear] [--samples-per-client 30]
        [--backend ray|local] [--vectorize true,false] [--pack-params auto,always,never]
        [--floors plain,vectorised|none] [--publish-dtype float32|float16] [--profile]
"""

from __future__ import annotations

import _thread
import argparse
import cProfile
import io
import logging
import os
import pstats
import re
import signal
import statistics
import threading
import time

import ray
import torch
from floors import plain_floor, problem_of, vectorised_floor
from round_time import PeakMemory, mem_available

from dfml.actors.config import ResourceConfig
from dfml.algorithms.base import LocalSGDConfig
from dfml.algorithms.server import FederatedSGDConfig
from dfml.channels import PUBLISH_DTYPES
from dfml.data.config import DataConfig, PartitionConfig
from dfml.experiment import ExperimentConfig, RunConfig, make_federation, prepare
from dfml.launch.registry import algorithm_class
from dfml.models.zoo import ModelConfig
from dfml.runtime.loop import Runtime
from dfml.topology.config import TopologyConfig

log = logging.getLogger("workload_w")


def workload(
    algorithm: str,
    clients: int,
    rounds: int,
    vectorize: bool = True,
    pack: str = "auto",
    model: str = "mlp",
    samples: int = 30,
    backend: str = "ray",
    publish_dtype: str = "float32",
) -> ExperimentConfig:
    if clients < 1000:
        data = DataConfig(dataset="digits")
        partition = PartitionConfig(
            partition="dirichlet", alpha=0.5, min_samples=3, test_fraction=0.2
        )
    else:
        data = DataConfig(
            dataset="synthetic",
            synthetic_samples=samples * clients,
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
        model=ModelConfig(model=model),
        topology=TopologyConfig(topology="ring", mixing="data-size"),
        resources=ResourceConfig(
            num_cpus_per_actor=1.0,
            pack_params=pack,
            backend=backend,
            publish_dtype=publish_dtype,
        ),
        algorithm=algo_cfg,
    )


def dfml_rounds(
    cfg: ExperimentConfig, prepared, profile: bool
) -> tuple[list[float], float, int, str]:
    """dfml's seconds per round, its start-up seconds (actors up, clients built
    and published), the number of actors and the driver's profile."""
    algorithm = algorithm_class(cfg.run.algorithm)(cfg.algorithm, vectorize=cfg.run.vectorize)
    federation = make_federation(cfg, prepared)
    # The prepared topology itself, not a copy: a second graph is 0.8 GB at a million clients.
    runtime = Runtime(algorithm, federation, prepared.topology, cfg.run.rounds, seed=0)
    profiler = cProfile.Profile() if profile else None
    try:
        if profiler is not None:
            profiler.enable()
        t0 = time.perf_counter()
        history = runtime.run()
        total = time.perf_counter() - t0
        if profiler is not None:
            profiler.disable()
        actors = len(getattr(federation, "actors", [])) or 1
    finally:
        federation.shutdown()
    text = ""
    if profiler is not None:
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(18)
        text = out.getvalue()
    seconds = [r.seconds for r in history]
    return seconds, total - sum(seconds), actors, text


def spilled_gb() -> float:
    """What this Ray instance has spilled to disk so far (0 if it never spilled)."""
    from ray._private.internal_api import memory_summary

    address = ray.get_runtime_context().gcs_address  # other Ray instances may run here
    found = re.search(r"Spilled (\d+) MiB", memory_summary(address, stats_only=True))
    return int(found.group(1)) * 2**20 / 1e9 if found else 0.0


class MemoryGuard:
    """Interrupts the main thread when MemAvailable falls under ``floor_gb``: the
    machine is shared, a run must not starve the others."""

    def __init__(self, floor_gb: float = 3.0) -> None:
        self.floor = floor_gb * 1e9
        self.tripped = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def _watch(self) -> None:
        while not self._stop.is_set():
            if mem_available() < self.floor:
                self.tripped = True
                log.error("MemAvailable under %.1f GB: interrupting the run", self.floor / 1e9)
                _thread.interrupt_main()
                # A long C call (or a handler that keeps going) may not see the
                # interrupt: then the process ends itself (its actors with it).
                if not self._stop.wait(10.0):
                    log.error("still running 10 s after the interrupt: killing this process")
                    os.kill(os.getpid(), signal.SIGKILL)
                return
            time.sleep(0.2)

    def __enter__(self) -> MemoryGuard:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


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


def floor_seconds(cfg: ExperimentConfig, prepared, names: list[str], rounds: int) -> dict:
    """Median seconds per round after round 0 of each named floor."""
    problem = problem_of(cfg, prepared)
    out = {}
    for name in names:
        _, _, times = FLOORS[name](problem, rounds)
        out[name] = median_after_first(times)
        log.info("%s N=%d %s floor %.3fs", cfg.run.algorithm, cfg.run.clients, name, out[name])
    return out


FLOORS = {"plain": plain_floor, "vectorised": vectorised_floor}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", default="20,100,1000,10000")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--algorithms", default="dfedavg,fedavg")
    parser.add_argument("--model", choices=["mlp", "linear"], default="mlp")
    parser.add_argument("--samples-per-client", type=int, default=30, help="synthetic data")
    parser.add_argument("--backend", choices=["ray", "local"], default="ray")
    parser.add_argument("--profile", action="store_true", help="print the driver's profile")
    parser.add_argument(
        "--object-store-gb",
        type=float,
        default=None,
        help="Ray's object store in GiB, as dfml's --object-store-gb (default: Ray's, 30%% of RAM)",
    )
    parser.add_argument(
        "--vectorize", default="true", help="dfml's --vectorize settings: true, false or both"
    )
    parser.add_argument(
        "--pack-params",
        default="auto",
        help="dfml's --pack-params settings to run: auto, always, never, or a comma list",
    )
    parser.add_argument(
        "--floors", default="plain,vectorised", help="floors to time: plain, vectorised, none"
    )
    parser.add_argument(
        "--publish-dtype",
        choices=PUBLISH_DTYPES,
        default="float32",
        help="dfml's --publish-dtype: the dtype published vectors travel in (default float32)",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    flag = {"true": True, "false": False}
    floors = [] if args.floors == "none" else args.floors.split(",")
    for name in floors:
        if name not in FLOORS:
            parser.error(f"--floors {name!r}: allowed plain, vectorised, none")
    settings = [
        (flag[v.strip()], p.strip())
        for v in args.vectorize.split(",")
        for p in args.pack_params.split(",")
    ]
    torch.set_num_threads(1)
    rows = []
    with MemoryGuard():
        for name in args.algorithms.split(","):
            for n in [int(c) for c in args.clients.split(",")]:
                floor: dict[str, float] | None = None
                for vectorize, pack in settings:
                    cfg = workload(
                        name,
                        n,
                        args.rounds,
                        vectorize,
                        pack,
                        args.model,
                        args.samples_per_client,
                        args.backend,
                        args.publish_dtype,
                    )
                    row = run_dfml(cfg, args.profile, args.object_store_gb)
                    if floor is None:
                        floor = floor_seconds(cfg, row.pop("prepared"), floors, args.rounds)
                    row.pop("prepared", None)
                    row.update(algorithm=name, n=n, vectorize=vectorize, pack=pack, floors=floor)
                    rows.append(row)
    print(
        f"\n{os.cpu_count()} CPUs, {args.rounds} rounds, model {args.model}, "
        f"backend {args.backend}, median s/round after round 0\n"
    )
    print(
        "| algorithm | N | vectorize | pack | actors | dfml s/round | setup s | round 0 s "
        "| plain floor s | ratio | vectorised floor s | ratio | driver peak RSS GB "
        "| machine peak GB | spilled GB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    nan = float("nan")
    for r in rows:
        plain, vec = r["floors"].get("plain", nan), r["floors"].get("vectorised", nan)
        print(
            f"| {r['algorithm']} | {r['n']:,} | {str(r['vectorize']).lower()} | {r['pack']} "
            f"| {r['actors']} | {r['ours']:.3f} | {r['setup']:.1f} | {r['first']:.2f} "
            f"| {plain:.3f} | {r['ours'] / plain:.2f}× | {vec:.3f} | {r['ours'] / vec:.2f}× "
            f"| {r['rss']:.2f} | {r['machine']:.2f} | {r['spilled']:.2f} |"
        )


def run_dfml(cfg: ExperimentConfig, profile: bool, object_store_gb: float | None = None) -> dict:
    """One dfml run of ``cfg``: its timings and memory (``prepared`` for the floors);
    ``object_store_gb`` sizes the Ray it starts (None: Ray's default)."""
    local = cfg.resources.backend == "local"
    spilled = 0.0
    with PeakMemory() as mem, PeakRSS() as driver:
        t0 = time.perf_counter()
        prepared = prepare(cfg)
        prep_s = time.perf_counter() - t0
        if not local:
            ray.init(
                num_cpus=os.cpu_count(),
                include_dashboard=False,
                logging_level="ERROR",
                **(
                    {}
                    if object_store_gb is None
                    else {"object_store_memory": int(object_store_gb * 2**30)}
                ),
            )
        try:
            times, start_s, actors, prof = dfml_rounds(cfg, prepared, profile)
            if not local:
                spilled = spilled_gb()
        finally:
            if not local:
                ray.shutdown()
    row = dict(
        ours=median_after_first(times),
        first=times[0],
        setup=prep_s + start_s,
        actors=actors,
        rss=driver.peak / 1e9,
        machine=mem.peak_gb,
        spilled=spilled,
        prepared=prepared,
    )
    log.info(
        "%s N=%d vectorize=%s pack=%s: dfml %.3fs (setup %.1fs, round 0 %.2fs, rounds %s), "
        "driver %.2f GB, machine %.2f GB, spilled %.2f GB",
        cfg.run.algorithm,
        cfg.run.clients,
        cfg.run.vectorize,
        cfg.resources.pack_params,
        row["ours"],
        row["setup"],
        row["first"],
        [round(t, 2) for t in times],
        row["rss"],
        row["machine"],
        spilled,
    )
    if prof:
        print(prof, flush=True)
    return row


if __name__ == "__main__":
    main()
