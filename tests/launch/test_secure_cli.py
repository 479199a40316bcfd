"""Secure aggregation from the command line: what it cannot serve is one line and exit 2
before anything starts (tests/launch/test_help.py checks every flag's help and default)."""

from __future__ import annotations

import pytest
from helpers.cli import tiny_argv

from dfml.launch import runner
from dfml.launch.cli import main

TINY = tiny_argv(clients=6, local_epochs=1, dashboard=False)
GOSSIP = ["--personalized-eval", "false"]
BYZANTINE = "--byzantine and --robust-aggregation need the plain vectors; allowed: one of them"


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    try:
        code = main(list(argv))
    except SystemExit as exit_:  # argparse usage errors
        code = exit_.code
    return code, capsys.readouterr().err


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
    def no_ray(*args, **kwargs):
        raise AssertionError("ray.init must not be reached")

    monkeypatch.setattr(runner.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(runner.ray, "init", no_ray)
    argv = ["run", *TINY, "--secure-aggregation", *flags, "--out", str(tmp_path / "r")]
    code, err = run_cli(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert message in lines[0]
    assert not (tmp_path / "r").exists()
