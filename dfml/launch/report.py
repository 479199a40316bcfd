"""``dfml report``: one self-contained HTML page about one or more run folders.

A run folder is what ``dfml run`` writes: ``summary.json`` (required),
``metrics.parquet`` (round × client), and when the run had them
``faults.parquet`` (fault events), ``tasks.parquet`` (CL-FML's tasks). The
page holds, per run, the summary and the config as tables, the accuracy curve
with its per-client min–max band, the per-client final accuracy histogram,
the topology (rebuilt from the saved config, nodes coloured by
``client_cluster`` when the summary has it), the fault timeline and the task
table; with several runs it starts with a comparison table and the mean
accuracy curves overlaid.

The file is meant to be mailed or archived: figures are PNGs embedded as
base64 data URIs, the style is inline, and nothing is fetched from the
network. All text from the run folders goes through :func:`html.escape`.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dfml.errors import ConfigError, UserError
from dfml.fault.events import KINDS
from dfml.launch.limits import check_path
from dfml.launch.results import PARTS, read_metrics
from dfml.untrusted import load_json

if TYPE_CHECKING:
    from matplotlib.axis import Axis
    from matplotlib.figure import Figure

DEFAULT_OUT = "report.html"

SUMMARY = "Summary"
ACCURACY = "Accuracy per round"
FINAL = "Per-client final accuracy"
TOPOLOGY = "Topology"
FAULTS = "Fault events"
TASKS = "CL-FML tasks"
CONFIG = "Configuration"
COMPARISON = "Comparison"
CURVES = "Mean accuracy per round"

#: Summary keys of the comparison table, in this order, where any run has them.
COMPARISON_KEYS = (
    "algorithm",
    "dataset",
    "clients",
    "rounds",
    "seed",
    "topology",
    "status",
    "final_accuracy",
    "accuracy_std",
    "accuracy_worst10",
    "global_accuracy",
    "qoi",
    "rounds_to_target",
    "bytes_to_target",
    "time_to_target",
    "bytes_sent",
    "wall_seconds",
    "failures_injected",
    "clients_restored",
    "clients_lost",
)

#: Fault event kinds drawn as dashed lines on the accuracy curve: where chaos struck.
STRIKES = ("kill", "injected")

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { border-bottom: 2px solid #444; }
h2 { margin-top: 2em; border-bottom: 1px solid #aaa; }
table { border-collapse: collapse; margin: 0.5em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: left; }
th { background: #f0f0f0; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
img { max-width: 100%; }
.path, .note { color: #666; }
"""


@dataclass(frozen=True)
class Run:
    """One run folder's files, read once."""

    path: Path
    label: str
    summary: dict[str, Any]
    metrics: dict[str, list[Any]] | None
    faults: dict[str, list[Any]] | None
    tasks: dict[str, list[Any]] | None


# ----- reading ------------------------------------------------------------------
def _read(path: Path, read: Callable[[], pa.Table]) -> dict[str, list[Any]]:
    try:
        return read().to_pydict()
    except (pa.ArrowException, OSError) as err:
        raise ConfigError(f"{str(path)!r} is not a readable parquet file ({err})") from None


def _metrics(folder: Path) -> dict[str, list[Any]] | None:
    """metrics.parquet, or the per-round parts a killed run left (``read_metrics``)."""
    if not (folder / "metrics.parquet").is_file() and not (folder / PARTS).is_dir():
        return None
    return _read(folder / "metrics.parquet", lambda: read_metrics(folder))


def _optional(path: Path) -> dict[str, list[Any]] | None:
    return _read(path, lambda: pq.read_table(path)) if path.is_file() else None


def load_run(path: str | Path, label: str) -> Run:
    """Read a run folder; a missing folder or summary.json is one-line :class:`ConfigError`."""
    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"run folder {str(folder)!r} does not exist")
    summary_path = folder / "summary.json"
    if not summary_path.is_file():
        raise ConfigError(
            f"{str(summary_path)!r} is missing; is {str(folder)!r} a dfml run folder?"
        )
    try:
        summary = load_json(summary_path.read_bytes(), repr(str(summary_path)))
    except json.JSONDecodeError as err:
        raise ConfigError(f"{str(summary_path)!r} is not valid JSON (line {err.lineno})") from None
    if not isinstance(summary, dict):
        raise ConfigError(f"{str(summary_path)!r} must hold a JSON object")
    return Run(
        folder,
        label,
        summary,
        _metrics(folder),
        _optional(folder / "faults.parquet"),
        _optional(folder / "tasks.parquet"),
    )


def run_labels(paths: Sequence[Path]) -> list[str]:
    """Shortest trailing path parts that tell the runs apart (``fedavg/seed0``)."""
    parts = [Path(p).resolve().parts for p in paths]
    for k in range(1, max(len(p) for p in parts) + 1):
        labels = ["/".join(p[-k:]) for p in parts]
        if len(set(labels)) == len(labels):
            return labels
    return [f"{'/'.join(p[-1:])} ({i + 1})" for i, p in enumerate(parts)]


# ----- numbers -------------------------------------------------------------------
def round_curve(
    metrics: Mapping[str, Sequence[Any]] | None, key: str = "accuracy"
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
    """Per round: (rounds, mean, min, max) over the clients' ``key``; NaN is no value.

    Rows need not be sorted; clients that left the federation simply have
    no row in later rounds (``epoch`` is the membership epoch, not a key).
    """
    if metrics is None or key not in metrics or not metrics.get("round"):
        return None
    by_round: dict[int, list[float]] = {}
    for rnd, value in zip(metrics["round"], metrics[key], strict=True):
        by_round.setdefault(int(rnd), []).append(math.nan if value is None else float(value))
    rounds = np.array(sorted(by_round))
    per_round = [np.array(by_round[r]) for r in rounds]
    if not any(np.isfinite(v).any() for v in per_round):
        return None
    stats = [
        (np.nanmean(v), np.nanmin(v), np.nanmax(v)) if np.isfinite(v).any() else (math.nan,) * 3
        for v in per_round
    ]
    mean, low, high = (np.array(s) for s in zip(*stats, strict=True))
    return rounds, mean, low, high


def final_accuracies(run: Run) -> list[float]:
    """Each client's final accuracy: summary.json's list, else the last metrics round."""
    values = run.summary.get("per_client_accuracy") or []
    if not values and run.metrics and "accuracy" in run.metrics and run.metrics["round"]:
        last = max(run.metrics["round"])
        values = [
            a
            for r, a in zip(run.metrics["round"], run.metrics["accuracy"], strict=True)
            if r == last
        ]
    return [float(v) for v in values if v is not None and math.isfinite(float(v))]


def client_clusters(summary: Mapping[str, Any], clients: int) -> list[int] | None:
    """``client_cluster`` as one cluster id per client (a list, or a mapping client → id)."""
    raw = summary.get("client_cluster")
    if isinstance(raw, Mapping):  # JSON object keys are strings
        return [int(raw.get(str(c), -1)) for c in range(clients)]
    if isinstance(raw, list) and len(raw) == clients:
        return [int(c) for c in raw]
    return None


# ----- html pieces ------------------------------------------------------------------
def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def fmt(value: Any) -> str:
    """A cell value: floats to 6 significant digits, lists comma-joined, None as –."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list | tuple):
        return ", ".join(fmt(v) for v in value)
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An HTML table; numbers right-aligned."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for value in row:
            num = isinstance(value, int | float) and not isinstance(value, bool)
            cls = ' class="num"' if num else ""
            cells.append(f"<td{cls}>{esc(fmt(value))}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def note(text: str) -> str:
    return f'<p class="note">{esc(text)}</p>'


def image(fig: Figure, alt: str) -> str:
    """The figure as an ``<img>`` with an embedded base64 PNG (no external file)."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{esc(alt)}">'


def _figure() -> tuple[Figure, Any]:
    # A bare Figure, not pyplot: no global state, no GUI backend, always Agg for PNG.
    # matplotlib is imported here, not with the module (~1 s every dfml command paid).
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 3.6), layout="constrained")
    return fig, fig.subplots()


def _integer_ticks(axis: Axis) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


# ----- figures --------------------------------------------------------------------
def accuracy_figure(run: Run) -> str:
    curve = round_curve(run.metrics)
    if curve is None:
        return note("no accuracy measured (metrics.parquet missing or empty)")
    rounds, mean, low, high = curve
    fig, ax = _figure()
    x = rounds + 1
    ax.plot(x, mean, label="mean over clients")
    ax.fill_between(x, low, high, alpha=0.2, label="min–max over clients")
    if run.faults and "round" in run.faults:
        strikes = sorted(
            {
                r
                for r, k in zip(run.faults["round"], run.faults["kind"], strict=True)
                if k in STRIKES
            }
        )
        for k, r in enumerate(strikes):
            ax.axvline(
                r + 1, color="red", ls="--", lw=0.8, label="chaos strike" if k == 0 else None
            )
    ax.set(xlabel="round", ylabel="client accuracy", ylim=(0, 1))
    _integer_ticks(ax.xaxis)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return image(fig, f"accuracy per round of {run.label}")


def final_histogram(run: Run) -> str:
    values = final_accuracies(run)
    if not values:
        return note("no per-client final accuracy")
    fig, ax = _figure()
    ax.hist(values, bins=np.linspace(0, 1, 21), edgecolor="white")
    ax.axvline(float(np.mean(values)), color="black", ls="--", label=f"mean {np.mean(values):.3f}")
    ax.set(xlabel="final accuracy", ylabel="clients", xlim=(0, 1))
    _integer_ticks(ax.yaxis)
    ax.legend(loc="upper left")
    return image(fig, f"per-client final accuracy of {run.label}")


def topology_figure(run: Run) -> str:
    """The communication graph rebuilt from the saved config (same seed: the same graph);
    for a topology drawn afresh every round, round 0's."""
    import networkx as nx
    from matplotlib.collections import LineCollection

    from dfml.topology import DYNAMIC_TOPOLOGIES, TopologyConfig, build_topology

    config = run.summary.get("config") or {}
    saved = config.get("topology")
    clients = run.summary.get("clients", (config.get("run") or {}).get("clients"))
    seed = run.summary.get("seed", (config.get("run") or {}).get("seed", 0))
    if not isinstance(saved, Mapping) or not isinstance(clients, int):
        return note("summary.json has no topology config to rebuild the graph from")
    try:
        graph = build_topology(TopologyConfig(**saved), clients, int(seed))
    except (UserError, TypeError) as err:
        return note(f"topology not rebuilt: {err}")
    if saved.get("topology") == "ring":
        pos = nx.circular_layout(graph)
    else:
        pos = nx.spring_layout(graph, seed=0)
    fig, ax = _figure()
    ax.add_collection(
        LineCollection([(pos[u], pos[v]) for u, v in graph.edges], colors="#999", linewidths=0.8)
    )
    nodes = sorted(graph.nodes)
    xy = np.array([pos[n] for n in nodes])
    clusters = client_clusters(run.summary, clients)
    if clusters is None:
        ax.scatter(xy[:, 0], xy[:, 1], s=120, zorder=2)
    else:
        for k, cluster in enumerate(sorted(set(clusters))):
            mask = np.array([clusters[n] == cluster for n in nodes])
            ax.scatter(
                xy[mask, 0],
                xy[mask, 1],
                s=120,
                zorder=2,
                color=f"C{k % 10}",
                label=f"cluster {cluster}",
            )
        ax.legend(loc="upper left", bbox_to_anchor=(1, 1), fontsize="small")
    if clients <= 40:
        for n, (px, py) in zip(nodes, xy, strict=True):
            ax.annotate(str(n), (px, py), ha="center", va="center", fontsize=7, zorder=3)
    title = f"{saved.get('topology')}, {clients} clients, mixing {saved.get('mixing')}"
    if saved.get("topology") in DYNAMIC_TOPOLOGIES:  # a new graph every round: show round 0's
        title += (
            f"\n{saved.get('epidemic')} peer sampler, s = {saved.get('peers')}: round 0's graph"
        )
    ax.set_title(title)
    ax.set_aspect("equal")
    ax.axis("off")
    return image(fig, f"topology of {run.label}")


def faults_section(faults: Mapping[str, Sequence[Any]], label: str) -> str:
    """Events on a time line (one row per kind) and their counts."""
    kinds = [str(k) for k in faults.get("kind", [])]
    if not kinds:
        return note("faults.parquet holds no events")
    present = [k for k in KINDS if k in kinds] + sorted(set(kinds) - set(KINDS))
    use_time = "t" in faults
    x = np.array(faults["t"] if use_time else faults["round"], dtype=float)
    fig, ax = _figure()
    for row, kind in enumerate(present):
        mask = np.array([k == kind for k in kinds])
        ax.scatter(x[mask], np.full(mask.sum(), row), marker="|", s=200, color=f"C{row % 10}")
    ax.set_yticks(range(len(present)), present)
    ax.set_xlabel("seconds since the run started" if use_time else "round")
    ax.grid(axis="x", alpha=0.3)
    clients = faults.get("client") or [-1] * len(kinds)
    counts = [
        [
            kind,
            kinds.count(kind),
            len({c for c, k in zip(clients, kinds, strict=True) if k == kind and c >= 0}),
        ]
        for kind in present
    ]
    return image(fig, f"fault events of {label}") + table(["kind", "events", "clients"], counts)


# ----- the page -------------------------------------------------------------------
def summary_rows(summary: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The scalar keys (not the config, not per-client lists)."""
    scalar = str | int | float | bool | type(None)
    return [(k, v) for k, v in summary.items() if isinstance(v, scalar)]


def config_rows(config: Mapping[str, Any]) -> list[tuple[str, str, Any]]:
    return [
        (section, name, value)
        for section, fields in config.items()
        if isinstance(fields, Mapping)
        for name, value in fields.items()
    ]


def run_section(run: Run, index: int) -> str:
    parts = [
        f'<section id="run-{index}">',
        f"<h2>Run: {esc(run.label)}</h2>",
        f'<p class="path">{esc(run.path)}</p>',
        f"<h3>{SUMMARY}</h3>",
        table(["key", "value"], summary_rows(run.summary)),
        f"<h3>{ACCURACY}</h3>",
        accuracy_figure(run),
        f"<h3>{FINAL}</h3>",
        final_histogram(run),
        f"<h3>{TOPOLOGY}</h3>",
        topology_figure(run),
    ]
    if run.faults is not None:
        parts += [f"<h3>{FAULTS}</h3>", faults_section(run.faults, run.label)]
    if run.tasks is not None:
        headers = list(run.tasks)
        rows = list(zip(*run.tasks.values(), strict=True))
        parts += [f"<h3>{TASKS}</h3>", table(headers, rows)]
    config = config_rows(run.summary.get("config") or {})
    parts += [
        f"<h3>{CONFIG}</h3>",
        f"<details><summary>{len(config)} settings</summary>",
        table(["section", "option", "value"], config),
        "</details>",
        "</section>",
    ]
    return "\n".join(parts)


def comparison_section(runs: Sequence[Run]) -> str:
    keys = [k for k in COMPARISON_KEYS if any(k in r.summary for r in runs)]
    rows = [[r.label, *(r.summary.get(k) for k in keys)] for r in runs]
    fig, ax = _figure()
    for run in runs:
        curve = round_curve(run.metrics)
        if curve is not None:
            ax.plot(curve[0] + 1, curve[1], label=run.label)
    ax.set(xlabel="round", ylabel="mean client accuracy", ylim=(0, 1))
    _integer_ticks(ax.xaxis)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return "\n".join(
        [
            '<section id="comparison">',
            f"<h2>{COMPARISON}</h2>",
            table(["run", *keys], rows),
            f"<h3>{CURVES}</h3>",
            image(fig, "mean accuracy per round of every run"),
            "</section>",
        ]
    )


def render(runs: Sequence[Run]) -> str:
    """The whole page as one string."""
    nav = "".join(f'<li><a href="#run-{i}">{esc(r.label)}</a></li>' for i, r in enumerate(runs))
    body = [
        "<h1>dfml report</h1>",
        f"<nav><ul>{nav}</ul></nav>",
        *([comparison_section(runs)] if len(runs) >= 2 else []),
        *(run_section(r, i) for i, r in enumerate(runs)),
    ]
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en">',
            '<head><meta charset="utf-8"><title>dfml report</title>',
            f"<style>{STYLE}</style></head>",
            "<body>",
            *body,
            "</body></html>",
            "",
        ]
    )


def write_report(paths: Sequence[str | Path], out: str | Path, overwrite: bool = False) -> Path:
    """Read every run folder (all checked before anything is written), write the page.

    An existing file at ``out`` is refused unless ``overwrite``; the page is
    written to a temp file and renamed, so a failure leaves no half page.
    """
    if not paths:
        raise ConfigError("dfml report needs at least one run folder")
    for path in paths:
        check_path("run folder", str(path))
    check_path("--out", str(out))
    target = Path(out)
    if target.is_dir():
        target = target / DEFAULT_OUT
    if os.path.lexists(target) and not overwrite:
        raise ConfigError(
            f"report file {str(target)!r} already exists; give another --out, or --overwrite "
            "to replace it"
        )
    if target.exists() and not target.is_file():
        raise ConfigError(f"report file {str(target)!r} is not a file; give a file for --out")
    folders = [Path(p) for p in paths]
    runs = [load_run(p, label) for p, label in zip(folders, run_labels(folders), strict=True)]
    page = render(runs)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, target)
    except OSError as err:
        raise ConfigError(
            f"report file {str(target)!r} cannot be written ({err.strerror})"
        ) from None
    return target


# ----- the command ------------------------------------------------------------------
def add_parser(sub: Any) -> None:
    p = sub.add_parser("report", help="one self-contained HTML page about run folders")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run folders (each with summary.json)")
    p.add_argument("--out", default=DEFAULT_OUT, help=f"HTML file to write (default {DEFAULT_OUT})")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the file --out names if it exists (default: refuse)",
    )
    p.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    path = write_report(args.runs, args.out, overwrite=args.overwrite)
    print(f"report written to {path}")
    return 0
