"""FMRec's comparison on digits: time and accuracy with and without recovery.

The same DFedAvg run (digits, 20 clients, 30 rounds, seed 0 by default) as

  (a)  ``none``          — no failures, plain federation (FMRec's Baseline);
  (a') ``replicate``     — no failures, fault layer on (replicas, store,
                           spare): the price of being ready for failures;
  (b)  ``no-recovery``   — chaos kill rate 0.1 per actor per round, lost
                           clients restart from scratch (Baseline_failure);
  (c)  ``recovery``      — the same chaos, clients restored from replicas.

Prints a Markdown table: wall time, seconds per round, final accuracy,
failures (clients whose actor was killed), restored / lost clients,
recovery latency p50 / max (kill → client back in service), replication
seconds per round and as a share of the round, replicated MB; then each
failure, and the memory of the warm spares next to a client actor's
(RSS, PSS and private MB from /proc, at the end of each fault-layer run).

    .venv/bin/python benchmarks/fault_recovery.py [--clients 20] [--rounds 30]
        [--kill-rate 0.1] [--spares 2] [--seed 0] [--out runs/bench-fault]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import ray

from dfml.launch.options import LaunchConfig, build_config
from dfml.launch.runner import execute, init_ray
from dfml.records import Callback, RoundRecord


def process_mb(pid: int) -> dict[str, float]:
    """RSS, PSS and private (unshared) MB of a local process, from smaps_rollup."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        name, value, *_ = line.split()
        fields[name.rstrip(":")] = int(value) / 1024
    private = fields["Private_Clean"] + fields["Private_Dirty"]
    return {"rss": fields["Rss"], "pss": fields["Pss"], "private": private}


class ProcessMemory(Callback):
    """At the last round's end: the memory of each warm spare and of client actor 0."""

    def __init__(self, rounds: int) -> None:
        self.rounds = rounds
        self.federation: Any = None
        self.rows: list[tuple[str, dict[str, float]]] = []

    def on_run_start(self, algorithm: Any, federation: Any) -> None:
        self.federation = federation

    def on_round_end(self, record: RoundRecord) -> None:
        spares = getattr(self.federation, "spare_placements", None)
        if record.round != self.rounds - 1 or spares is None:
            return
        self.rows.append(("client actor 0", process_mb(self.federation.placement_of(0)["pid"])))
        for i, placed in enumerate(spares()):
            self.rows.append((f"warm spare {i}", process_mb(placed["pid"])))


def regimes(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    shared = {
        "algorithm": "dfedavg",
        "dataset": "digits",
        "clients": args.clients,
        "rounds": args.rounds,
        "seed": args.seed,
        "replicas": args.replicas,
        "checkpoint_every": 1,
        "spares": args.spares,
        **({"min_samples": args.min_samples} if args.min_samples is not None else {}),
    }
    chaos = {"chaos_kill_rate": args.kill_rate}
    return {
        "none": shared,
        "replicate": {**shared, "recovery": True},
        "no-recovery": {**shared, **chaos, "recovery": False},
        "recovery": {**shared, **chaos, "recovery": True},
    }


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def table(results: dict[str, dict[str, Any]]) -> str:
    head = (
        "| run | wall s | s/round | final acc | failures | restored | lost "
        "| recovery p50 s | recovery max s | repl. s/round | repl. % of round | repl. MB |"
    )
    lines = [head, "|" + "---|" * 12]
    for name, s in results.items():
        repl = s.get("replication_seconds_per_round")
        share = 100 * repl / s["seconds_per_round"] if repl is not None else None
        mb = s["replication_bytes"] / 1e6 if "replication_bytes" in s else None
        lines.append(
            "| "
            + " | ".join(
                [
                    name,
                    fmt(s["wall_seconds"], 1),
                    fmt(s["seconds_per_round"]),
                    fmt(s["final_accuracy"], 4),
                    fmt(s.get("failures_injected", 0)),
                    fmt(s.get("clients_restored", 0)),
                    fmt(s.get("clients_lost", 0)),
                    fmt(s.get("recovery_seconds_p50")),
                    fmt(s.get("recovery_seconds_max")),
                    fmt(repl),
                    fmt(share, 1),
                    fmt(mb, 1),
                ]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def per_failure(root: Path, results: dict[str, dict[str, Any]]) -> str:
    """Each actor failure: round, how long until its clients were back, by whom."""
    lines = []
    for name in results:
        path = root / name / "faults.parquet"
        if not path.exists():
            continue
        rows = pq.read_table(path).to_pylist()
        back: dict[tuple[int, int], dict[str, Any]] = {}
        for r in rows:
            if r["kind"] in ("restored", "lost"):
                back.setdefault((r["round"], r["actor"]), r)
        for (rnd, actor), r in sorted(back.items()):
            how = r["detail"].split(";")[0].removeprefix("replacement=")
            lines.append(f"- {name}: round {rnd}, actor {actor}: {r['seconds']:.3f} s ({how})")
    return (
        ("\nPer failure (kill → clients back in service):\n\n" + "\n".join(lines) + "\n")
        if lines
        else ""
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--kill-rate", type=float, default=0.1)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--spares", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--min-samples",
        type=int,
        default=None,
        help="smallest client share (default: dfml's 10; digits needs 3 for 200 clients)",
    )
    parser.add_argument("--runs", default="none,replicate,no-recovery,recovery")
    parser.add_argument("--out", default="runs/bench-fault")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    root = Path(args.out)
    wanted = [r.strip() for r in args.runs.split(",") if r.strip()]
    results: dict[str, dict[str, Any]] = {}
    memory: list[str] = []
    started = init_ray(None, False)
    try:
        for name, options in regimes(args).items():
            if name not in wanted:
                continue
            cfg, _ = build_config(options)
            launch = LaunchConfig(
                out=str(root / name), progress=False, dashboard=False, overwrite=True
            )
            probe = ProcessMemory(args.rounds)
            results[name] = execute(cfg, launch, callbacks=[probe])
            memory += [
                f"- {name}: {who}: RSS {mb['rss']:.0f} MB, PSS {mb['pss']:.0f} MB, "
                f"private {mb['private']:.0f} MB"
                for who, mb in probe.rows
            ]
            keys = ("wall_seconds", "final_accuracy", "failures_injected", "clients_lost")
            print(name, json.dumps({k: results[name].get(k) for k in keys}), flush=True)
    finally:
        if started:
            ray.shutdown()
    text = table(results) + per_failure(root, results)
    if memory:
        text += "\nProcess memory at the end of the run:\n\n" + "\n".join(memory) + "\n"
    (root / "table.md").write_text(text)
    print()
    print(text, end="")


if __name__ == "__main__":
    main()
