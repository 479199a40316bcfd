"""Run identity (no Ray): ``--resume`` continues exactly the run that wrote the folder
and the checkpoints, and names whatever else it finds instead."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dfml.launch.cli import main
from dfml.launch.identity import RunRecord, config_hash, load_resume
from dfml.runtime.checkpoint import RUN_FILE, Checkpointer


def write_run(folder: Path, uri: Path, **options) -> RunRecord:
    """The run.json files a run that started with these options leaves behind."""
    record = RunRecord.new({"clients": 4, "checkpoint_uri": str(uri), **options}, folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / RUN_FILE).write_text(record.to_json())
    Checkpointer(str(uri), 1).write_run_file(record.to_json())
    return record


def resume(capsys, *argv: str) -> tuple[int, str]:
    code = main(["run", "--resume", *argv, "--progress", "false", "--dashboard", "false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("dfml: error: "), err
    return code, err[0]


def test_the_record_is_absolute_and_hashed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    record = RunRecord.new(
        {"checkpoint_uri": "ckpt", "edge_list": "g.txt", "tasks_file": None, "lr": 0.1}, Path("r")
    )
    assert record.out == str(tmp_path / "r")
    assert record.options["checkpoint_uri"] == str(tmp_path / "ckpt")
    assert record.options["edge_list"] == str(tmp_path / "g.txt")
    assert record.options["tasks_file"] is None and record.options["lr"] == 0.1
    assert RunRecord.new({"checkpoint_uri": "s3://b/p"}, Path("r")).options["checkpoint_uri"] == (
        "s3://b/p"
    )
    assert RunRecord.parse(record.to_json(), "x") == record
    # the hash is SHA-256 of the sorted compact JSON, computed here independently
    import hashlib

    ckpt, edges = tmp_path / "ckpt", tmp_path / "g.txt"
    text = f'{{"checkpoint_uri":"{ckpt}","edge_list":"{edges}","lr":0.1,"tasks_file":null}}'
    assert record.config_hash == hashlib.sha256(text.encode()).hexdigest()
    assert config_hash({"a": (1, 2)}) == config_hash({"a": [1, 2]})


def test_a_relative_checkpoint_uri_resumes_from_another_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "r", Path("ckpt"))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    record, checkpointer = load_resume(str(tmp_path / "r"))
    assert checkpointer.base == f"{tmp_path / 'ckpt'}/run"
    assert checkpointer.run_id == record.run_id


def test_a_copied_folder_is_named(capsys, tmp_path):
    record = write_run(tmp_path / "r", tmp_path / "ckpt")
    shutil.copytree(tmp_path / "r", tmp_path / "copy")
    code, line = resume(capsys, str(tmp_path / "copy"))
    assert code == 2 and "is a copy of run " + record.run_id in line
    assert str(tmp_path / "r") in line


def test_checkpoints_of_another_run_are_named(capsys, tmp_path):
    mine = write_run(tmp_path / "r", tmp_path / "ckpt")
    other = write_run(tmp_path / "other", tmp_path / "ckpt", clients=6)  # reused the URI
    code, line = resume(capsys, str(tmp_path / "r"))
    assert code == 2 and f"holds the checkpoints of run {other.run_id}" in line
    assert f"not of run {mine.run_id}" in line


def test_a_results_folder_that_now_holds_another_run_is_named(capsys, tmp_path):
    mine = write_run(tmp_path / "r", tmp_path / "ckpt")
    other = RunRecord.new({"clients": 6}, tmp_path / "r")
    (tmp_path / "r" / RUN_FILE).write_text(other.to_json())  # --overwrite by another run
    code, line = resume(capsys, str(tmp_path / "ckpt"))
    assert code == 2 and f"now holds run {other.run_id}, not run {mine.run_id}" in line


def test_out_is_refused_unless_it_is_the_runs_own_folder(capsys, tmp_path):
    write_run(tmp_path / "r", tmp_path / "ckpt")
    code, line = resume(capsys, str(tmp_path / "r"), "--out", str(tmp_path / "new"))
    assert code == 2 and f"--out {tmp_path / 'new'} differs" in line
    code, line = resume(capsys, str(tmp_path / "r"), "--out", str(tmp_path / "r"))
    assert code == 2 and "no complete checkpoint" in line  # identity passed; nothing to resume


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"run_id": "ab", "options": {"clients"', "damaged JSON"),
        ("[1, 2]", "a JSON object is expected"),
        ('{"out": "/x"}', "no valid 'run_id'"),
        ("[" * 100000, "nests deeper than 32 levels"),
    ],
)
def test_a_damaged_run_json_is_one_line(capsys, tmp_path, text, message):
    write_run(tmp_path / "r", tmp_path / "ckpt")
    (tmp_path / "r" / RUN_FILE).write_text(text)
    code, line = resume(capsys, str(tmp_path / "r"))
    assert code == 2 and message in line and str(tmp_path / "r" / RUN_FILE) in line


def test_an_edited_run_json_is_named(capsys, tmp_path):
    write_run(tmp_path / "r", tmp_path / "ckpt")
    doc = json.loads((tmp_path / "r" / RUN_FILE).read_text())
    doc["options"]["clients"] = 40
    (tmp_path / "r" / RUN_FILE).write_text(json.dumps(doc))
    code, line = resume(capsys, str(tmp_path / "r"))
    assert code == 2 and "was changed after run" in line
