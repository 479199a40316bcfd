"""Secure aggregation from the command line: what it cannot serve is one line and exit 2
before anything starts (tests/launch/test_help.py checks every flag's help and default)."""

from __future__ import annotations

import pytest
from helpers.cli import refuse_ray, run_cli, tiny_argv

TINY = tiny_argv(clients=6, local_epochs=1, dashboard=False)
GOSSIP = ["--personalized-eval", "false"]
BYZANTINE = "--byzantine and --robust-aggregation need the plain vectors; allowed: one of them"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--algorithm", "fedavg", "--byzantine", "0.34"], BYZANTINE),
        (["--robust-aggregation", "median", *GOSSIP], BYZANTINE),
        (["--robust-aggregation", "clipped-gossip", *GOSSIP], BYZANTINE),
        (
            ["--algorithm", "choco-sgd", *GOSSIP],
            "algorithm 'choco-sgd' gossips its 'choco' channel, not a weighted sum of vectors",
        ),
        (
            ["--compressor", "topk", *GOSSIP],
            "algorithm 'dfedavg' gossips its 'compressed' channel, not a weighted sum",
        ),
        (
            ["--schedule-mode", "async", *GOSSIP],
            "--schedule-mode async does not support --secure-aggregation",
        ),
        (
            ["--algorithm", "fedavg", "--clients-per-round", "1"],
            "a cohort of 1 client would show the server its vector; allowed: two or more",
        ),
        (
            ["--topology", "star", *GOSSIP],
            "client 1 has 1 neighbour(s), whose vector its mix would reveal",
        ),
        (["--algorithm", "dfedavg"], "does not support --personalized-eval true"),
        (["--probe-every", "1", *GOSSIP], "does not support --probe-every"),
    ],
)
def test_what_masks_cannot_serve_is_one_line_before_anything_starts(
    capsys, monkeypatch, tmp_path, flags, message
):
    refuse_ray(monkeypatch)
    argv = ["run", *TINY, "--secure-aggregation", *flags, "--out", str(tmp_path / "r")]
    code, _, err = run_cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert message in lines[0]
    assert not (tmp_path / "r").exists()
