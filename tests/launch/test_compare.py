"""``dfml compare``: input checks, option routing, the table maths, end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from dfml.errors import ConfigError
from dfml.launch.cli import main
from dfml.launch.compare import (
    aggregate,
    markdown_table,
    mean_std,
    parse_algorithms,
    parse_seeds,
    plan,
    split_options,
    table_columns,
)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--algorithms", "fedavg,nope"], "unknown algorithm 'nope'"),
        (["--algorithms", ","], "at least one algorithm"),
        (["--algorithms", "fedavg,fedavg"], "more than once"),
        (["--algorithms", "fedavg", "--seeds", "0,x"], "--seeds must be"),
        (["--algorithms", "fedavg", "--seeds", "1,1"], "more than once"),
        (["--algorithms", "fedavg", "--seed", "3"], "use --seeds"),
        (["--algorithms", "fedavg", "--algorithm", "fedprox"], "use --algorithms"),
        (["--algorithms", "fedavg,dfedavg", "--mu", "0.1"], "--mu applies to none"),
        (["--algorithms", "fedavg,fedprox", "--mu", "-1"], "mu must be"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    code = main(["compare", *argv, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists(), "nothing may run on bad input"


def test_usage_error_exits_2(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--seeds", "0"])
    assert exc.value.code == 2
    assert "required: --algorithms" in capsys.readouterr().err


def test_parsers():
    assert parse_algorithms(" fedavg , fedprox,") == ["fedavg", "fedprox"]
    assert parse_seeds("3,0, 7") == [3, 0, 7]
    for bad in ("", "1.5", "a"):
        with pytest.raises(ConfigError):
            parse_seeds(bad)


def test_algorithm_options_go_only_to_the_algorithms_that_declare_them():
    opts = {"mu": "0.5", "lam": "10", "clients": "4", "lr": "0.05"}
    per = split_options(opts, ["fedavg", "fedprox", "pfedme"])
    assert per["fedavg"] == {"clients": "4", "lr": "0.05"}
    assert per["fedprox"] == {"mu": "0.5", "clients": "4", "lr": "0.05"}
    assert per["pfedme"] == {"lam": "10", "clients": "4", "lr": "0.05"}
    with pytest.raises(ConfigError, match="--lam applies to none of fedavg, fedprox"):
        plan(opts, ["fedavg", "fedprox"], [0])
    del opts["lam"]
    jobs, launch, root = plan({**opts, "out": "/tmp/x"}, ["fedavg", "fedprox"], [0, 2])
    assert [(j.algorithm, j.seed) for j in jobs] == [
        ("fedavg", 0),
        ("fedavg", 2),
        ("fedprox", 0),
        ("fedprox", 2),
    ]
    assert jobs[3].cfg.algorithm.mu == 0.5 and jobs[3].cfg.run.seed == 2
    assert str(jobs[3].out) == "/tmp/x/fedprox/seed2" and launch.out == "/tmp/x"
    assert root == Path("/tmp/x")


def test_mean_std_and_table():
    assert mean_std([0.5, 0.7]) == pytest.approx((0.6, 0.14142135623730953))
    assert mean_std([0.5]) == (0.5, 0.0)
    assert mean_std([0.5, None, float("nan"), 0.9]) == pytest.approx((0.7, 0.28284271247461906))
    summaries = {
        "a": [
            {"final_accuracy": 0.5, "bytes_sent": 2_000_000, "status": "completed"},
            {"final_accuracy": 0.7, "bytes_sent": 4_000_000, "status": "completed"},
        ],
        "b": [{"final_accuracy": 0.9, "bytes_sent": 1_000_000, "status": "diverged"}],
    }
    rows = aggregate(summaries, ["final_accuracy", "bytes_sent", "qoi"])
    assert rows[0]["final_accuracy_mean"] == pytest.approx(0.6)
    assert rows[0]["bytes_sent_mean"] == 3_000_000 and rows[1]["diverged"] == 1
    cols = [("final_accuracy", "accuracy"), ("bytes_sent", "MB sent"), ("qoi", "QoI")]
    md = markdown_table(rows, cols).splitlines()
    assert md[0] == "| algorithm | runs | accuracy | MB sent | QoI |"
    assert md[2] == "| a | 2 | 0.600 ± 0.141 | 3.00 ± 1.41 | – |"
    assert md[3] == "| b | 1 (1 diverged) | 0.900 ± 0.000 | 1.00 ± 0.00 | – |"
    titles = [t for _, t in table_columns((0, 1, 5), 0.8)]
    assert titles[:5] == ["accuracy", "weighted", "global", "Pers.1", "Pers.5"]
    assert titles[-2:] == ["rounds to 0.8", "MB to 0.8"]
    with_tasks = [k for k, _ in table_columns((0, 1, 5), None, tasks=True)]
    assert with_tasks[1:4] == ["task_accuracy", "task_accuracy_before", "task_accuracy_case1"]


@pytest.mark.e2e
def test_compare_end_to_end(tmp_path, capsys, monkeypatch):
    import ray

    def no_ray(*_, **__):
        raise AssertionError("compare --backend local started Ray")

    monkeypatch.setattr(ray, "init", no_ray)
    out = tmp_path / "cmp"
    code = main(
        [
            "compare",
            "--backend",
            "local",
            "--algorithms",
            "fedavg,fedprox",
            "--seeds",
            "0,1",
            "--mu",
            "0.1",
            "--dataset",
            "digits",
            "--clients",
            "4",
            "--rounds",
            "2",
            "--local-epochs",
            "1",
            "--target-accuracy",
            "0.05",
            "--progress",
            "false",
            "--dashboard",
            "false",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    assert "| fedavg | 2 |" in capsys.readouterr().out
    for name in ("fedavg", "fedprox"):
        for seed in (0, 1):
            run = out / name / f"seed{seed}"
            assert (run / "summary.json").is_file() and (run / "metrics.parquet").is_file()
    assert (out / "accuracy.png").stat().st_size > 1000
    md = (out / "table.md").read_text().splitlines()
    assert md[0].startswith(
        "| algorithm | runs | accuracy | weighted | global | Pers.1 | Pers.5 | QoI |"
    )
    assert [line.split(" | ")[0] for line in md[2:]] == ["| fedavg", "| fedprox"]
    rows = list(csv.DictReader((out / "table.csv").open()))
    for row in rows:
        summaries = [
            json.loads((out / row["algorithm"] / f"seed{s}" / "summary.json").read_text())
            for s in (0, 1)
        ]
        assert row["runs"] == "2" and row["diverged"] == "0"
        for key in ("final_accuracy", "pers5_accuracy", "qoi", "bytes_sent"):
            m, s = mean_std([x[key] for x in summaries])
            assert float(row[f"{key}_mean"]) == pytest.approx(m)
            assert float(row[f"{key}_std"]) == pytest.approx(s)
        assert float(row["rounds_to_target_mean"]) == 1.0  # 5 % is reached in round 1
    assert summaries[0]["config"]["algorithm"]["mu"] == 0.1


def test_task_accuracy_plot_draws_one_bar_per_algorithm_and_case(tmp_path):
    from dfml.launch.compare import TASK_BARS, plot_task_accuracy

    rows = []
    for a, name in enumerate(("clfml", "dfedavg")):
        row = {"algorithm": name}
        for i, (key, _) in enumerate(TASK_BARS):
            row[f"{key}_mean"], row[f"{key}_std"] = 0.1 * (i + 1) + 0.05 * a, 0.01
        rows.append(row)
    rows[1]["task_accuracy_case1_mean"] = float("nan")  # no Case I task for this one
    fig = plot_task_accuracy(rows, tmp_path / "task_accuracy.png")
    assert (tmp_path / "task_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = fig.axes[0]
    bars = [c for c in ax.containers if hasattr(c, "patches")]
    heights = [[p.get_height() for p in c.patches] for c in bars]
    assert len(heights) == len(TASK_BARS)
    assert heights[0] == pytest.approx([0.1, 0.15]) and heights[4] == pytest.approx([0.5, 0.55])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["clfml", "dfedavg"]


def test_a_comparison_where_no_run_completes_exits_2_and_keeps_everything(
    tmp_path, capsys, monkeypatch
):
    """Every run diverges: the table and runs are written, then one line and exit 2 (was 0)."""
    from dfml.errors import TrainingDivergedError
    from dfml.launch import compare

    def diverging_execute(cfg, launch, out, callbacks):
        out.mkdir(parents=True)
        (out / "summary.json").write_text(
            json.dumps({"status": "diverged", "final_accuracy": None, "config": {}})
        )
        raise TrainingDivergedError(0, 0, float("nan"))

    monkeypatch.setattr(compare, "execute", diverging_execute)
    monkeypatch.setattr(compare, "init_ray", lambda *args: False)
    monkeypatch.setattr(compare, "write_report", lambda paths, out, overwrite: out.write_text("r"))
    root = tmp_path / "cmp"
    argv = ["compare", "--algorithms", "fedavg,fedprox", "--seeds", "0,1", "--clients", "4"]
    code = main([*argv, "--out", str(root), "--progress", "false", "--dashboard", "false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert err[0] == (
        f"dfml: error: no run of the comparison completed (all 4 diverged); the table and "
        f"every run's results are in {root}"
    )
    rows = list(csv.DictReader((root / "table.csv").open()))
    assert [(r["algorithm"], r["runs"], r["diverged"]) for r in rows] == [
        ("fedavg", "2", "2"),
        ("fedprox", "2", "2"),
    ]
