"""``dfml report``: run folders → one self-contained HTML page."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from dfml.errors import ConfigError
from dfml.launch import report
from dfml.launch.cli import main
from dfml.launch.results import PARTS

PNG = 'src="data:image/png;base64,'
RUN_SECTIONS = (report.SUMMARY, report.ACCURACY, report.FINAL, report.TOPOLOGY, report.CONFIG)


class Page(HTMLParser):
    """Headings, image sources and external references of a page; fails on bad nesting."""

    VOID = frozenset({"meta", "img", "br", "hr", "link", "input"})

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.headings: list[str] = []
        self.images: list[str] = []
        self.external: list[str] = []
        self._heading: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in self.VOID:
            self.stack.append(tag)
        if tag in ("h1", "h2", "h3"):
            self._heading = ""
        for name, value in attrs:
            if name in ("src", "href") and value and not value.startswith(("data:", "#")):
                self.external.append(value)
        if tag == "img":
            self.images.append(dict(attrs)["src"] or "")

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (self.stack, tag)
        self.stack.pop()
        if tag in ("h1", "h2", "h3") and self._heading is not None:
            self.headings.append(self._heading)
            self._heading = None

    def handle_data(self, data: str) -> None:
        if self._heading is not None:
            self._heading += data


def parse(text: str) -> Page:
    page = Page()
    page.feed(text)
    page.close()
    assert page.stack == [], page.stack
    return page


def fake_run(
    folder: Path,
    algorithm: str = "fedavg",
    clients: int = 4,
    rounds: int = 3,
    faults: bool = False,
    tasks: bool = False,
    extra: dict[str, Any] | None = None,
) -> Path:
    """A run folder as ``dfml run`` writes it, without running anything."""
    folder.mkdir(parents=True)
    cols: dict[str, list[Any]] = {"round": [], "client": [], "accuracy": [], "train_loss": []}
    for r in range(rounds):
        for c in range(clients):
            cols["round"].append(r)
            cols["client"].append(c)
            cols["accuracy"].append(0.1 + 0.8 * (r + 1) / rounds - 0.02 * c)
            cols["train_loss"].append(1.0 / (r + 1))
    pq.write_table(pa.table(cols), folder / "metrics.parquet")
    final = cols["accuracy"][-clients:]
    summary = {
        "algorithm": algorithm,
        "dataset": "digits",
        "clients": clients,
        "rounds": rounds,
        "seed": 0,
        "topology": "ring",
        "final_accuracy": sum(final) / clients,
        "per_client_accuracy": final,
        "status": "completed",
        "error": None,
        "bytes_sent": 12345,
        "config": {
            "run": {"algorithm": algorithm, "clients": clients, "rounds": rounds, "seed": 0},
            "topology": {
                "topology": "ring",
                "degree": 4,
                "edge_probability": 0.3,
                "rewire_probability": 0.1,
                "edge_list": None,
                "mixing": "data-size",
            },
            "evaluation": {"pers_steps": [0, 1, 5], "target_accuracy": None},
        },
        **(extra or {}),
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    if faults:
        events = {
            "t": [1.0, 1.0, 1.5, 2.5],
            "round": [1, 1, 1, 1],
            "kind": ["kill", "injected", "detected", "restored"],
            "client": [-1, 2, -1, 2],
            "actor": [1, 1, 1, 1],
            "seconds": [float("nan"), float("nan"), 0.5, 1.5],
        }
        pq.write_table(pa.table(events), folder / "faults.parquet")
    if tasks:
        table = {"task": [0, 1], "labels": ["0,1,2", "3,4,5"], "clients": [2, 2]}
        pq.write_table(pa.table(table), folder / "tasks.parquet")
    return folder


def test_one_run_has_every_section_and_one_image_per_figure(tmp_path):
    run = fake_run(tmp_path / "a", faults=True, tasks=True, extra={"client_cluster": [0, 0, 1, 1]})
    out = report.write_report([run], tmp_path / "r.html")
    text = out.read_text()
    page = parse(text)
    for heading in (*RUN_SECTIONS, report.FAULTS, report.TASKS):
        assert heading in page.headings, heading
    assert report.COMPARISON not in page.headings  # one run: nothing to compare
    # accuracy, histogram, topology, fault timeline
    assert len(page.images) == 4 and all(
        i.startswith("data:image/png;base64,") for i in page.images
    )
    assert text.count(PNG) == 4
    assert page.external == []
    assert "<script" not in text and "<link" not in text


def test_two_runs_compare_and_optional_sections_only_when_present(tmp_path):
    a = fake_run(tmp_path / "fedavg" / "seed0")
    b = fake_run(tmp_path / "fedprox" / "seed0", algorithm="fedprox", faults=True)
    page = parse(report.write_report([a, b], tmp_path / "r.html").read_text())
    assert page.headings.count(report.COMPARISON) == 1
    assert page.headings.count(report.CURVES) == 1
    for heading in RUN_SECTIONS:
        assert page.headings.count(heading) == 2, heading
    assert page.headings.count(report.FAULTS) == 1
    assert report.TASKS not in page.headings
    # comparison curves + 3 per run + b's fault timeline
    assert len(page.images) == 1 + 3 + 3 + 1
    assert "Run: fedavg/seed0" in page.headings and "Run: fedprox/seed0" in page.headings


def test_text_from_run_folders_is_escaped(tmp_path):
    run = fake_run(tmp_path / "x", algorithm="<script>alert(1)</script>")
    text = report.write_report([run], tmp_path / "r.html").read_text()
    assert "<script>" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_round_curve_ignores_nan_and_row_order():
    metrics = {
        "round": [1, 0, 0, 1, 2],
        "client": [0, 0, 1, 1, 0],
        "accuracy": [float("nan"), 0.5, 0.7, 0.9, None],
    }
    rounds, mean, low, high = report.round_curve(metrics)
    assert rounds.tolist() == [0, 1, 2]
    assert mean[:2].tolist() == pytest.approx([0.6, 0.9])
    assert (low[:2].tolist(), high[:2].tolist()) == ([0.5, 0.9], [0.7, 0.9])
    assert np.isnan(mean[2])  # a round without a value stays a gap
    assert report.round_curve(None) is None
    assert report.round_curve({"round": [], "client": [], "accuracy": []}) is None


def test_unfinished_run_is_read_from_its_metric_parts(tmp_path):
    run = fake_run(tmp_path / "a", rounds=2)
    table = pq.read_table(run / "metrics.parquet")
    (run / "metrics.parquet").unlink()
    parts = run / PARTS
    parts.mkdir()
    for rnd in (0, 1):
        part = table.filter(pc.equal(table["round"], rnd))
        pq.write_table(part, parts / f"round-{rnd:06d}.parquet")
    loaded = report.load_run(run, "a")
    assert sorted(set(loaded.metrics["round"])) == [0, 1]
    assert report.write_report([run], tmp_path / "r.html").read_text().count(PNG) == 3


def test_topology_that_cannot_be_rebuilt_is_a_note_not_a_crash(tmp_path):
    run = fake_run(tmp_path / "a")
    summary = json.loads((run / "summary.json").read_text())
    summary["config"]["topology"].update(topology="edge-list", edge_list=str(tmp_path / "gone.txt"))
    (run / "summary.json").write_text(json.dumps(summary))
    text = report.write_report([run], tmp_path / "r.html").read_text()
    assert "topology not rebuilt" in text
    assert text.count(PNG) == 2


@pytest.mark.parametrize("sampler", ["oracle", "local"])
def test_an_epidemic_topology_draws_round_zeros_graph(tmp_path, sampler):
    run = fake_run(tmp_path / "a")
    summary = json.loads((run / "summary.json").read_text())
    summary["config"]["topology"].update(topology="epidemic", peers=1, epidemic=sampler)
    (run / "summary.json").write_text(json.dumps(summary))
    text = report.write_report([run], tmp_path / "r.html").read_text()
    assert "topology not rebuilt" not in text and text.count(PNG) == 3


def test_out_may_be_a_folder(tmp_path):
    run = fake_run(tmp_path / "a")
    assert report.write_report([run], tmp_path) == tmp_path / report.DEFAULT_OUT


def test_labels_tell_runs_apart():
    paths = [Path("/x/cmp/fedavg/seed0"), Path("/x/cmp/fedprox/seed0"), Path("/x/cmp/fedavg/seed1")]
    assert report.run_labels(paths) == ["fedavg/seed0", "fedprox/seed0", "fedavg/seed1"]
    assert report.run_labels([Path("/x/a"), Path("/x/a")]) == ["a (1)", "a (2)"]


def test_missing_folder_or_summary_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        report.load_run(tmp_path / "nope", "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"summary\.json' is missing"):
        report.load_run(tmp_path / "empty", "empty")


def test_cli_writes_the_report(tmp_path, capsys):
    a, b = fake_run(tmp_path / "a"), fake_run(tmp_path / "b", faults=True)
    out = tmp_path / "sub" / "x.html"
    assert main(["report", str(a), str(b), "--out", str(out)]) == 0
    assert f"report written to {out}" in capsys.readouterr().out
    assert parse(out.read_text()).headings.count(report.COMPARISON) == 1


@pytest.mark.parametrize("missing", ["folder", "summary"])
def test_cli_bad_path_is_one_line_and_exit_2(tmp_path, capsys, missing):
    good = fake_run(tmp_path / "good")
    bad = tmp_path / "bad"
    if missing == "summary":
        bad.mkdir()
    out = tmp_path / "x.html"
    assert main(["report", str(good), str(bad), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dfml: error:") and str(bad) in err[0]
    assert not out.exists()  # every folder is checked before anything is written


def test_compare_writes_the_report(tmp_path, monkeypatch):
    """``dfml compare`` ends with report.html over its runs (runs faked: no Ray)."""
    from dfml.launch import compare
    from dfml.records import RoundRecord

    def fake_execute(cfg, launch, out, callbacks):
        fake_run(out, algorithm=cfg.run.algorithm, clients=cfg.run.clients, rounds=1)
        for callback in callbacks:
            callback.on_round_end(RoundRecord(0, {c: {"accuracy": 0.5} for c in range(4)}, 0, 0.0))
        return json.loads((out / "summary.json").read_text())

    monkeypatch.setattr(compare, "execute", fake_execute)
    monkeypatch.setattr(compare, "init_ray", lambda *args: False)
    options = {"clients": 4, "rounds": 1, "out": str(tmp_path / "cmp"), "progress": False}
    root, _ = compare.run_compare(options, ["fedavg", "fedprox"], [0])
    page = parse((root / "report.html").read_text())
    assert page.headings.count(report.COMPARISON) == 1
    assert "Run: fedavg/seed0" in page.headings and "Run: fedprox/seed0" in page.headings


BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(BROWSER is None, reason="no chromium on PATH")
def test_headless_browser_loads_the_report(tmp_path):
    run = fake_run(tmp_path / "a", faults=True)
    out = report.write_report([run], tmp_path / "r.html")
    proc = subprocess.run(
        [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", out.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert report.ACCURACY in proc.stdout and PNG in proc.stdout


def test_an_existing_report_is_kept_unless_overwrite(tmp_path, capsys):
    run = fake_run(tmp_path / "a")
    out = tmp_path / "r.html"
    out.write_text("precious")
    assert main(["report", str(run), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"report file '{out}' already exists" in err[0]
    assert "--overwrite" in err[0] and out.read_text() == "precious"
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / report.DEFAULT_OUT).write_text("precious")
    assert main(["report", str(run), "--out", str(tmp_path / "folder")]) == 2
    assert (tmp_path / "folder" / report.DEFAULT_OUT).read_text() == "precious"
    capsys.readouterr()
    assert main(["report", str(run), "--out", str(out), "--overwrite"]) == 0
    assert parse(out.read_text()).headings and not list(tmp_path.glob(".*.tmp"))
