"""Accuracy against bytes: DFedAvg, compressed DFedAvg and CHOCO-SGD (issue 16, part 1).

Digits (or ``--dataset mnist-5k``, with ``--model mlp``), 20 clients on a
ring, the default IID partition and MLP, seeds 0, 1, 2.
Per seed, DFedAvg runs first (``--dfedavg-rounds``, default 100); its final
accuracy minus 3 points is the target of every other run of that seed
(``--target-accuracy``, so ``bytes_to_target`` in their summary.json is the
bytes they sent until their mean client accuracy first reached it). Then,
for top-k at 1 %, 10 % and 50 % of the coordinates, naive compressed DFedAvg
(``--compressor topk``) and CHOCO-SGD (``--consensus-lr`` γ from
:data:`GAMMA`) run ``--rounds`` rounds (default 200). Only DFedAvg runs the
personalized evaluation, for its local-only accuracy (the context: what
local SGD alone reaches on this split).

Writes ``OUT/table.md`` (mean ± std over seeds) and ``OUT/table.json``, and
with ``--figure`` the mean accuracy against cumulative megabytes sent. A
second table repeats the bytes-to-target reading against DFedAvg stopped at
round ``--early`` (default 30, the quick-start length), from the per-round
means. Completed runs found under ``OUT`` are reused, not run again.

    .venv/bin/python benchmarks/compression.py [--seeds 0,1,2] [--out runs/compression] \\
        [--figure docs/communication-accuracy-vs-bytes.png]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import ray
from reuse import run_or_reuse

from dfml.algorithms.evaluation import bytes_to_target
from dfml.errors import TrainingDivergedError
from dfml.launch.compare import mean_std
from dfml.launch.results import read_metrics

log = logging.getLogger("compression")

COMMON: dict[str, Any] = {"dataset": "digits", "clients": 20, "topology": "ring"}
RATIOS = (0.01, 0.1, 0.5)
#: CHOCO-SGD's consensus step size per kept fraction (tuned on seed 0, see RESULTS.md).
GAMMA = {0.01: 0.1, 0.1: 0.5, 0.5: 0.5}
#: Points below DFedAvg's final accuracy that count as reaching it.
MARGIN = 0.03


def runs() -> list[tuple[str, dict[str, Any], tuple[str, str]]]:
    """(row name, options, (colour, line style) in the figure) of every
    compressed run of one seed: one colour per kept fraction, naive dashed."""
    out = []
    for i, ratio in enumerate(RATIOS):
        pct = f"{ratio:.0%}"
        naive = {"algorithm": "dfedavg", "compressor": "topk", "compression": ratio}
        out.append((f"compressed DFedAvg, top-k {pct}", naive, (f"C{i}", "--")))
        choco = {"algorithm": "choco-sgd", "compression": ratio, "consensus_lr": GAMMA[ratio]}
        out.append((f"CHOCO-SGD, top-k {pct}, γ {GAMMA[ratio]}", choco, (f"C{i}", "-")))
    return out


def run_one(options: dict[str, Any], out: Path) -> dict[str, Any]:
    """Run ``options`` into ``out`` (a completed run there is reused) and return
    its summary plus the mean accuracy of every round."""
    try:
        summary = run_or_reuse({**COMMON, **options}, out, ("completed", "diverged"))
    except TrainingDivergedError as err:
        log.warning("%s: %s", out, err)  # its summary.json says diverged
        summary = json.loads((out / "summary.json").read_text())
    table = read_metrics(out).to_pandas()
    summary["mean_accuracy"] = table.groupby("round")["accuracy"].mean().tolist()
    return summary


def row(
    name: str, rounds: int, summaries: list[dict[str, Any]], reference: list[float], at: int
) -> str:
    """One table row: final accuracy, accuracy after ``at`` rounds (DFedAvg's),
    MB sent, MB to the target and its share of DFedAvg's bytes, rounds to the
    target, and how many seeds reached it."""

    def cell(values: list[float | None], scale: float = 1.0, digits: int = 3) -> str:
        mean, std = mean_std([None if v is None else v * scale for v in values])
        return "–" if np.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"

    to_target = [s.get("bytes_to_target") for s in summaries]
    share = [None if b is None else b / ref for b, ref in zip(to_target, reference, strict=True)]
    reached = f"{sum(b is not None for b in to_target)}/{len(summaries)}"
    status = {s["status"] for s in summaries} - {"completed"}
    return (
        f"| {name} | {rounds} | {cell([s['final_accuracy'] for s in summaries])} "
        f"| {cell([s['mean_accuracy'][at - 1] for s in summaries])} "
        f"| {cell([s['bytes_sent'] for s in summaries], 1e-6, 1)} "
        f"| {cell(to_target, 1e-6, 1)} | {cell(share, 100, 1)} "
        f"| {cell([s.get('rounds_to_target') for s in summaries], 1, 0)} "
        f"| {'–' if name == 'DFedAvg' else reached}"
        f"{' (' + ', '.join(sorted(status)) + ')' if status else ''} |"
    )


def early_rows(results: dict[str, list[dict[str, Any]]], early: int) -> list[str]:
    """Against DFedAvg stopped after ``early`` rounds (read from its per-round
    means): the MB each method sent until its mean accuracy first reached
    DFedAvg's accuracy then minus the margin, as a share of DFedAvg's MB then."""
    lines = [
        f"| method | DFedAvg's accuracy at round {early} − {MARGIN:.2f} "
        "| MB to it | % of DFedAvg's MB | reached |",
        "|---|---|---|---|---|",
    ]
    bases = results["DFedAvg"]
    targets = [b["mean_accuracy"][early - 1] - MARGIN for b in bases]
    budgets = [sum(b["bytes_sent_per_round"][:early]) for b in bases]
    for name, summaries in results.items():
        if name == "DFedAvg":
            continue
        sent = [
            bytes_to_target(s["mean_accuracy"], s["bytes_sent_per_round"], t)
            for s, t in zip(summaries, targets, strict=True)
        ]
        mb = mean_std([None if b is None else b / 1e6 for b in sent])
        share = mean_std(
            [None if b is None else 100 * b / x for b, x in zip(sent, budgets, strict=True)]
        )
        cell = "– | –"
        if not np.isnan(mb[0]):
            cell = f"{mb[0]:.2f} ± {mb[1]:.2f} | {share[0]:.1f} ± {share[1]:.1f}"
        reached = sum(b is not None for b in sent)
        target = mean_std(targets)
        lines.append(
            f"| {name} | {target[0]:.3f} ± {target[1]:.3f} | {cell} | {reached}/{len(sent)} |"
        )
    return lines


def plot(
    curves: dict[str, list[dict[str, Any]]], styles: dict[str, tuple[str, str]], path: Path
) -> None:
    """Mean accuracy over seeds against the mean cumulative MB sent, per method."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9.5, 4.2), dpi=120)
    ax = fig.subplots()
    for name, summaries in curves.items():
        rounds = min(len(s["mean_accuracy"]) for s in summaries)
        acc = np.mean([s["mean_accuracy"][:rounds] for s in summaries], axis=0)
        sent = np.mean([np.cumsum(s["bytes_sent_per_round"][:rounds]) for s in summaries], axis=0)
        keep = sent > 0  # log axis: CHOCO-SGD sends nothing in round 0
        color, style = styles[name]
        ax.plot(sent[keep] / 1e6, acc[keep], style, color=color, label=name)
    ax.set_xscale("log")
    ax.set(xlabel="MB sent (all clients, cumulative)", ylabel="mean client accuracy", ylim=(0, 1))
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small", loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    fig.savefig(path, format="png")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", default="0,1,2", help="seeds (default 0,1,2)")
    parser.add_argument("--rounds", type=int, default=200, help="compressed runs' rounds (200)")
    parser.add_argument("--dfedavg-rounds", type=int, default=100, help="DFedAvg's rounds (100)")
    parser.add_argument("--out", default="runs/compression", help="results (runs/compression)")
    parser.add_argument("--figure", default=None, help="accuracy-vs-bytes PNG (none)")
    parser.add_argument("--early", type=int, default=30, help="second target's round (30)")
    parser.add_argument("--ray-address", default="local", help="Ray to use (a new local one)")
    parser.add_argument("--dataset", default="digits", help="digits or mnist-5k (digits)")
    parser.add_argument("--model", default=None, help="model (the dataset's default)")
    parser.add_argument(
        "--backend", default="ray", help="ray, or local: every client in this process (ray)"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    seeds = [int(s) for s in args.seeds.split(",")]
    out = Path(args.out)
    COMMON.update(dataset=args.dataset, backend=args.backend)
    if args.model is not None:
        COMMON["model"] = args.model
    if args.backend == "ray":
        ray.init(address=args.ray_address, include_dashboard=False, logging_level="ERROR")
    results: dict[str, list[dict[str, Any]]] = {}
    for seed in seeds:
        dfedavg = {"algorithm": "dfedavg", "rounds": args.dfedavg_rounds, "seed": seed}
        base = run_one(dfedavg, out / f"dfedavg/seed{seed}")
        target = round(base["final_accuracy"] - MARGIN, 4)
        results.setdefault("DFedAvg", []).append(base)
        log.info("seed %d: DFedAvg %.4f, target %.4f", seed, base["final_accuracy"], target)
        for name, options, _ in runs():
            tag = "-".join(f"{k}{v}" for k, v in options.items() if k != "algorithm")
            summary = run_one(
                {
                    **options,
                    "rounds": args.rounds,
                    "seed": seed,
                    "target_accuracy": target,
                    "personalized_eval": False,
                },
                out / options["algorithm"] / tag / f"seed{seed}",
            )
            results.setdefault(name, []).append(summary)
            log.info(
                "seed %d: %s %.4f, %.1f MB, to target %s",
                seed,
                name,
                summary["final_accuracy"],
                summary["bytes_sent"] / 1e6,
                summary.get("bytes_to_target"),
            )
    reference = [s["bytes_sent"] for s in results["DFedAvg"]]
    local = mean_std([s.get("local_accuracy") for s in results["DFedAvg"]])
    lines = [
        f"Seeds {seeds}; target = DFedAvg's final accuracy − {MARGIN:.2f} per seed; "
        f"local-only accuracy {local[0]:.3f} ± {local[1]:.3f}.",
        "",
        f"| method | rounds | final accuracy | accuracy at round {args.dfedavg_rounds} "
        "| MB sent | MB to target | % of DFedAvg's MB | rounds to target | reached |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, summaries in results.items():
        rounds = args.dfedavg_rounds if name == "DFedAvg" else args.rounds
        lines.append(row(name, rounds, summaries, reference, args.dfedavg_rounds))
    lines += ["", *early_rows(results, args.early)]
    text = "\n".join(lines) + "\n"
    print(text)
    (out / "table.md").write_text(text)
    keys = ("final_accuracy", "bytes_sent", "bytes_to_target", "rounds_to_target", "status")
    slim = {n: [{k: s.get(k) for k in keys} for s in ss] for n, ss in results.items()}
    (out / "table.json").write_text(json.dumps(slim, indent=2) + "\n")
    if args.figure:
        styles = {"DFedAvg": ("k", "-"), **{name: style for name, _, style in runs()}}
        plot(results, styles, Path(args.figure))


if __name__ == "__main__":
    main()
