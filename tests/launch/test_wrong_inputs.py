"""A table of wrong inputs through the CLI's entry, in process (issue 20's probe).

Each row is an argv for ``dfml.launch.cli.main``: it must end with exactly
one line on stderr that starts ``dfml`` and names the value, exit code 2,
no traceback, and before Ray starts (``ray.init`` is replaced by a function
that fails the test) and before any results folder is made. Files a row
needs are written under ``{tmp}`` by :func:`files` first.
"""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dfml.launch import runner
from dfml.launch.cli import main

QUIET = ["--progress", "false", "--dashboard", "false"]
NUL = "\x00"


def files(tmp: Path) -> None:
    """The user files the rows read (each damaged in one way)."""
    (tmp / "page.html").write_text("precious")
    (tmp / "full").mkdir()
    (tmp / "full" / "summary.json").write_text("precious")
    (tmp / "run").mkdir()
    (tmp / "deep.yaml").write_text("clients: " + "[" * 5000 + "]" * 5000 + "\n")
    (tmp / "bomb.yaml").write_text(
        'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
        + "".join(
            f"{c}: &{c} [{', '.join([f'*{p}'] * 9)}]\n"
            for p, c in zip("abcdefgh", "bcdefghi", strict=True)
        )
        + "clients: *i\n"
    )
    (tmp / "alias.yaml").write_text("base: &b 4\nclients: *b\n")
    (tmp / "huge.yaml").write_text("# padding\n" * 200_000 + "clients: 4\n")
    (tmp / "list.yaml").write_text("- clients\n- 4\n")
    (tmp / "bigfloat.yaml").write_text(f"lr: {10**400}\n")
    (tmp / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (tmp / "edges.txt").write_text("0 1\n1 2\n2 3\n3 0\n0 99999999999999999999\n")
    (tmp / "far.txt").write_text("0 1\n1 2\n2 3\n3 0\n3 40\n")
    part = pa.table(
        {
            "client": pa.array([0] * 3 + [1] * 3, pa.int32()),
            "split": ["meta_train", "query", "test"] * 2,
            "index": pa.array([0, 1, 2, 3, 4, 999_999], pa.int64()),
        }
    )
    pq.write_table(part, tmp / "partition.parquet")
    (tmp / "partition.json").write_text(json.dumps({"clients": [{"train": [0], "test": [1]}]}))


#: (row id, argv with {tmp}, what the one line must say). Grouped by the issue's classes.
ROWS = [
    # (a) results that would be overwritten or mixed
    ("report over a file", "report {tmp}/run --out {tmp}/page.html", "page.html' already exists"),
    ("fetch into files", "fetch job {tmp}/full --from {tmp}/run", "full' already holds files"),
    ("resume and overwrite", "--resume {tmp}/run --overwrite", "exclude each other"),
    ("resume nothing", "--resume {tmp}/run", "no run to resume under"),
    # (c) paths and URIs
    ("uri unknown scheme", "--checkpoint-uri foo://bar", "unknown scheme 'foo'"),
    (
        "uri file host",
        "--checkpoint-uri file://host/x",
        "'file://host/x': a file:// URI names no host",
    ),
    ("uri no scheme", "--checkpoint-uri ://x", "'://x' is malformed"),
    ("uri no bucket", "--checkpoint-uri s3://", "'s3://' names no bucket"),
    ("uri s3 no slashes", "--checkpoint-uri s3:bucket", "'s3:bucket' is malformed"),
    ("nul out", f"--out {{tmp}}/a{NUL}b", "--out holds a NUL byte"),
    ("nul edge list", f"--topology edge-list --edge-list a{NUL}b", "--edge-list holds a NUL byte"),
    ("nul tasks file", f"--algorithm clfml --tasks-file a{NUL}b", "--tasks-file holds a NUL byte"),
    ("nul checkpoint uri", f"--checkpoint-uri a{NUL}b", "--checkpoint-uri holds a NUL byte"),
    ("nul s3 uri", f"--checkpoint-uri s3://b/a{NUL}b", "--checkpoint-uri holds a NUL byte"),
    ("nul data root", f"--dataset mnist --data-root a{NUL}b", "--data-root holds a NUL byte"),
    ("nul partition file", f"--partition-file a{NUL}b", "--partition-file holds a NUL byte"),
    ("nul resume", f"--resume a{NUL}b", "--resume holds a NUL byte"),
    ("nul name", f"--algorithm a{NUL}b", "unknown algorithm 'a\\x00b'"),
    ("nul config file", f"{{tmp}}/a{NUL}b.yaml", "config file holds a NUL byte"),
    ("long out name", "--out {tmp}/" + "x" * 300, "--out holds a name of 300 bytes"),
    ("long out path", "--out " + "/x" * 2100, "--out is 4200 bytes long"),
    ("long edge list", "--topology edge-list --edge-list " + "e" * 256, "a name of 256 bytes"),
    ("long resume", "--resume " + "r" * 300, "--resume holds a name of 300 bytes"),
    # (d) sizes and limits
    ("seed beyond 64 bits", "--seed " + "9" * 30, "--seed must fit in 64 bits"),
    ("clients beyond 64 bits", "--clients -" + "9" * 30, "--clients must fit in 64 bits"),
    ("int of 5000 digits", "--rounds " + "9" * 5000, "--rounds must be int, got '99999"),
    ("float beyond double", "--lr 1e999", "--lr must be a finite number, got '1e999'"),
    ("yaml int beyond float", "{tmp}/bigfloat.yaml", "--lr must be float, got 1000000"),
    ("huge hidden", "--hidden 1000000000", "lower --hidden or choose a smaller --model"),
    ("absurd hidden", "--hidden 1000000000000000000", "the model with --hidden"),
    ("huge cnn", "--model cnn --dataset mnist-5k --hidden 100000000", "parameters"),
    (
        "huge synthetic samples",
        "--dataset synthetic --synthetic-samples 100000000000",
        "synthetic dataset (100000000000 samples of shape 1x28x28) would need",
    ),
    (
        "huge synthetic shape",
        "--dataset synthetic --synthetic-shape 100000x100000x100",
        "shape 100000x100000x100) would need",
    ),
    (
        "huge synthetic classes",
        "--dataset synthetic --synthetic-classes 100000000000",
        "would need",
    ),
    ("deep yaml", "{tmp}/deep.yaml", "deep.yaml' nests deeper than 32 levels"),
    ("yaml alias bomb", "{tmp}/bomb.yaml", "bomb.yaml' uses a YAML alias (line 2)"),
    ("yaml alias", "{tmp}/alias.yaml", "alias.yaml' uses a YAML alias (line 2)"),
    ("huge config", "{tmp}/huge.yaml", "huge.yaml' is 2,000,011 bytes; at most 1,048,576"),
    ("config a list", "{tmp}/list.yaml", "list.yaml' must hold a mapping"),
    ("config a folder", "{tmp}", "is not a file"),
    ("deep tasks file", "--algorithm dfedavg --tasks-file {tmp}/deep.json", "nests deeper than"),
    ("alias tasks file", "--algorithm dfedavg --tasks-file {tmp}/bomb.yaml", "uses a YAML alias"),
    ("deep partition", "--partition-file {tmp}/deep.json", "deep.json nests deeper than 32"),
    # (e) nonsense that used to be accepted
    (
        "pathological drops classes",
        "--clients 3 --partition pathological --classes-per-client 1",
        "deals 3 clients × 1 classes = 3 of the 10 classes",
    ),
    (
        "label groups without clients",
        "--clients 4 --partition label-group --groups 9",
        "--groups 9 > 4 clients",
    ),
    (
        "edge list id 2**66",
        "--topology edge-list --edge-list {tmp}/edges.txt",
        "99999999999999999999",
    ),
    ("edge list id past reserve", "--topology edge-list --edge-list {tmp}/far.txt", "client 40"),
    ("partition index", "--partition-file {tmp}/partition.parquet", "index 999999 is out of range"),
    ("partition of one client", "--partition-file {tmp}/partition.json", "holds 1 client(s)"),
    ("tiny heartbeat", "--recovery true --heartbeat-seconds 1e-300", "0.1 to 604,800 seconds"),
    ("huge heartbeat", "--recovery true --heartbeat-seconds 1e300", "0.1 to 604,800 seconds"),
    ("tiny unavailable", "--recovery true --unavailable-timeout 0.001", "1 to 604,800 seconds"),
    ("tiny scale timeout", "--scale-timeout 1e-300", "scale_timeout must be 1 to 604,800"),
    ("tiny stop timeout", "stop job --timeout 0.0001", "--timeout: must be 1 to 604,800 seconds"),
    ("tasks count", "--algorithm dfedavg --tasks 9223372036854775807", "tasks must be in 0..10000"),
]


@pytest.fixture
def no_ray(monkeypatch):
    """``ray.init`` must not be reached: every row is refused before Ray starts."""

    def init(*args, **kwargs):
        raise AssertionError("ray.init was reached")

    monkeypatch.setattr(runner.ray, "is_initialized", lambda: False)
    monkeypatch.setattr(runner.ray, "init", init)


def run_cli(capsys, argv: list[str]) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse usage errors
        code = int(exit_.code)
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("args", "message"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_a_wrong_input_is_one_line_and_exit_2(capsys, tmp_path, no_ray, args, message):
    files(tmp_path)
    argv = shlex.split(args.replace("{tmp}", str(tmp_path)))
    command = argv[:1] if argv[0] in ("report", "fetch", "stop", "compare", "chaos") else ["run"]
    rest = argv[1:] if command == argv[:1] else argv
    out = [] if "--out" in rest or command != ["run"] else ["--out", str(tmp_path / "o")]
    code, err = run_cli(capsys, [*command, *rest, *out, *(QUIET if command == ["run"] else [])])
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("dfml"), err
    assert message.replace("{tmp}", str(tmp_path)) in lines[0]
    assert "Traceback" not in err and len(lines[0]) < 400
    assert not (tmp_path / "o").exists()
    assert (tmp_path / "page.html").read_text() == "precious"
    assert (tmp_path / "full" / "summary.json").read_text() == "precious"
