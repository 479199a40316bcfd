"""Byzantine clients from the command line: bad values are one line and exit 2 before
anything starts; a run under attack reports the honest clients' accuracy and who attacked."""

from __future__ import annotations

import json
import math

import pyarrow.parquet as pq
import pytest
from helpers.cli import refuse_ray, run_cli, tiny_argv

TINY = tiny_argv(clients=10, local_epochs=1, personalized_eval=False, dashboard=False)


KREG = ["--topology", "k-regular", "--degree", "4"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--byzantine", "1"], "--byzantine must be a fraction in [0, 1), got 1.0"),
        (["--byzantine", "-0.1"], "--byzantine must be a fraction in [0, 1), got -0.1"),
        (["--byzantine", "0.05"], "--byzantine 0.05 of 10 clients makes no attacker"),
        (
            ["--byzantine", "0.5", "--robust-aggregation", "median"],
            "the median breaks down at half the inputs arbitrary; allowed: --byzantine < 0.5",
        ),
        (
            ["--byzantine", "0.3", "--robust-aggregation", "trimmed-mean"],
            "trimming b tolerates at most a b fraction of attackers; allowed: --byzantine <= 0.2",
        ),
        (
            ["--byzantine", "0.6", "--robust-aggregation", "clipped-gossip"],
            "it needs an honest majority; allowed: --byzantine < 0.5",
        ),
        (
            ["--byzantine", "0.2", "--robust-aggregation", "krum", "--topology", "ring"],
            "client 0 aggregates n = 3 vectors, assuming f = 1 attackers, but Krum needs n > 2f + 2",
        ),
        (
            ["--robust-aggregation", "krum", "--krum-select", "6", *KREG],
            "--krum-select 6: client 0 aggregates n = 5 vectors with f = 0, so multi-Krum can "
            "select at most n - f = 5",
        ),
        (
            ["--robust-aggregation", "trimmed-mean", "--trim-fraction", "0.5"],
            "--trim-fraction must be in [0, 0.5), got 0.5",
        ),
        (["--byzantine", "0.2", "--attack", "bitflip"], "--attack must be one of sign-flip"),
        (["--robust-aggregation", "mean"], "--robust-aggregation must be one of none, median"),
        (["--attack", "gaussian"], "--attack applies to runs with attackers (--byzantine)"),
        (
            ["--byzantine", "0.2", "--attack", "alie", "--attack-scale", "2"],
            "--attack-scale applies to attack sign-flip or gaussian, not attack alie",
        ),
        (["--clip-radius", "1"], "--clip-radius applies to robust-aggregation clipped-gossip"),
        (
            ["--robust-aggregation", "clipped-gossip", "--clip-radius", "0"],
            "--clip-radius must be a number > 0, got 0.0",
        ),
        (
            ["--algorithm", "fedavg", "--byzantine", "0.2", "--attack", "alie"],
            "--attack alie needs the honest vectors an attacker receives",
        ),
        (
            ["--algorithm", "choco-sgd", "--byzantine", "0.2"],
            "'choco-sgd' gossips its 'choco' channel, not its vector",
        ),
    ],
)
def test_bad_robustness_input_is_one_line_before_anything_starts(
    capsys, tmp_path, monkeypatch, flags, message
):
    refuse_ray(monkeypatch)
    code, _, err = run_cli(capsys, "run", *TINY, *flags, "--out", str(tmp_path / "out"))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert message in lines[0]
    assert not (tmp_path / "out").exists()


def test_a_run_under_attack_reports_honest_accuracy_and_the_attackers(capsys, tmp_path):
    out = tmp_path / "run"
    argv = ["run", *TINY, *KREG, "--backend", "local", "--out", str(out)]
    argv += ["--byzantine", "0.2", "--robust-aggregation", "clipped-gossip"]
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    summary = json.loads((out / "summary.json").read_text())
    attackers = summary["byzantine_clients"]
    assert len(attackers) == 2 and summary["attack"] == "sign-flip"
    assert summary["robust_aggregation"] == "clipped-gossip" and summary["honest_clients"] == 8
    metrics = pq.read_table(out / "metrics.parquet").to_pandas()
    last = metrics[metrics["round"] == 1].set_index("client")
    assert last.loc[attackers, "honest_accuracy"].isna().all()
    honest = last.drop(index=attackers)
    assert (honest["honest_accuracy"] == honest["accuracy"]).all()
    assert summary["honest_accuracy"] == pytest.approx(honest["accuracy"].mean(), rel=1e-12)
    weighted = (honest["accuracy"] * honest["test_samples"]).sum() / honest["test_samples"].sum()
    assert summary["honest_weighted_accuracy"] == pytest.approx(weighted, rel=1e-12)
    assert len(summary["honest_accuracy_per_round"]) == 2
    assert not math.isnan(summary["honest_accuracy_per_round"][0])
