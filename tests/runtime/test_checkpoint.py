"""Damaged checkpoints (no Ray): every manifest, file and payload is checked before use;
a bad one is skipped with one warning line and the one before is used; none left is one
line naming each checkpoint and why."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from dfml.actors.roster import Roster
from dfml.actors.state import ClientState
from dfml.algorithms.probe import ProbeState
from dfml.errors import ConfigError
from dfml.records import RoundRecord
from dfml.runtime.checkpoint import MANIFEST, Checkpointer


def driver(rounds: int) -> dict:
    """A driver payload as Runtime._checkpoint makes it."""
    history = [RoundRecord(r, {0: {"accuracy": 0.5}}, 8, 0.1) for r in range(rounds)]
    return {
        "state": {
            "sources": {"probe": ProbeState([0], [0.1], [0.2])},
            "global": np.arange(3, dtype=np.float32),
            "global_holders": [0],
        },
        "roster": Roster([[0, 5]], 2, None, 0, 6, set()).to_dict(),
        "topology": {"topology": "ring"},
        "history": [vars(r) | {"trained": frozenset(r.trained)} for r in history],
        "joins": {},
        "leaves": {},
    }


def state(cid: int, value: float, rounds: int) -> ClientState:
    return ClientState(cid, torch.full((3,), value), round=rounds, labels=(0, 1))


@pytest.fixture
def ckpt(tmp_path) -> Checkpointer:
    """Checkpoints of rounds 1, 2 and 3 under tmp_path."""
    checkpointer = Checkpointer(str(tmp_path), every=1, keep=3, run_id="r1")
    for r in (1, 2, 3):
        checkpointer.save(r, driver(r), {0: state(0, r, r), 5: state(5, -r, r)})
    return checkpointer


def folder(ckpt: Checkpointer, rounds: int) -> Path:
    return Path(ckpt.base) / f"round-{rounds:06d}"


def rewrite(ckpt: Checkpointer, rounds: int, name: str, data: bytes) -> None:
    """Replace one file and update its hash in the manifest (a damage the hash cannot see)."""
    (folder(ckpt, rounds) / name).write_bytes(data)
    manifest = json.loads((folder(ckpt, rounds) / MANIFEST).read_text())
    manifest["files"][name] = hashlib.sha256(data).hexdigest()
    (folder(ckpt, rounds) / MANIFEST).write_text(json.dumps(manifest))


def edit_manifest(ckpt: Checkpointer, rounds: int, change) -> None:
    path = folder(ckpt, rounds) / MANIFEST
    path.write_text(json.dumps(change(json.loads(path.read_text()))))


class Payload:
    """Unpickling this runs os.system: a crafted driver.pkl."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_sound_checkpoint_reads_back_exactly(ckpt):
    got = ckpt.latest()
    assert got.round == 3 and got.driver["state"]["sources"]["probe"] == ProbeState(
        [0], [0.1], [0.2]
    )
    assert np.array_equal(got.driver["state"]["global"], np.arange(3, dtype=np.float32))
    assert got.driver["history"][2]["round"] == 2
    assert torch.equal(got.states[5].params, torch.full((3,), -3.0))


DAMAGES = {
    "no manifest (never finished)": lambda c: (folder(c, 3) / MANIFEST).unlink(),
    "clients.npz truncated, hash kept": lambda c: (folder(c, 3) / "clients.npz").write_bytes(
        (folder(c, 3) / "clients.npz").read_bytes()[:100]
    ),
    "manifest is a list": lambda c: (folder(c, 3) / MANIFEST).write_text("[1, 2]"),
    "manifest truncated": lambda c: (folder(c, 3) / MANIFEST).write_text('{"round": 3, "fi'),
    "manifest nested deep": lambda c: (folder(c, 3) / MANIFEST).write_text("[" * 100000),
    "no files": lambda c: edit_manifest(
        c, 3, lambda m: {k: v for k, v in m.items() if k != "files"}
    ),
    "no round": lambda c: edit_manifest(
        c, 3, lambda m: {k: v for k, v in m.items() if k != "round"}
    ),
    "round of another folder": lambda c: edit_manifest(c, 3, lambda m: {**m, "round": 2}),
    "round as a string": lambda c: edit_manifest(c, 3, lambda m: {**m, "round": "3"}),
    "a file outside": lambda c: edit_manifest(
        c, 3, lambda m: {**m, "files": {**m["files"], "../../etc/passwd": "0" * 64}}
    ),
    "digest not hex": lambda c: edit_manifest(
        c, 3, lambda m: {**m, "files": {**m["files"], "driver.pkl": 5}}
    ),
    "clients not ids": lambda c: edit_manifest(c, 3, lambda m: {**m, "clients": "all"}),
    "another run's": lambda c: edit_manifest(c, 3, lambda m: {**m, "run_id": "r2"}),
    "clients.npz truncated": lambda c: (folder(c, 3) / "clients.npz").write_bytes(b"PK\x03"),
    "clients.npz other bytes, hash updated": lambda c: rewrite(c, 3, "clients.npz", b"x" * 50),
    "clients.npz of other clients": lambda c: edit_manifest(c, 3, lambda m: {**m, "clients": [0]}),
    "driver.pkl other bytes, hash updated": lambda c: rewrite(c, 3, "driver.pkl", b"\x80\x05junk"),
    "driver.pkl a list": lambda c: rewrite(c, 3, "driver.pkl", pickle.dumps([1, 2])),
    "driver.pkl without history": lambda c: rewrite(
        c, 3, "driver.pkl", pickle.dumps({k: v for k, v in driver(3).items() if k != "history"})
    ),
    "driver.pkl history of 2 rounds": lambda c: rewrite(
        c, 3, "driver.pkl", pickle.dumps({**driver(3), "history": driver(2)["history"]})
    ),
    "driver.pkl sources not a dict": lambda c: rewrite(
        c,
        3,
        "driver.pkl",
        pickle.dumps({**driver(3), "state": {**driver(3)["state"], "sources": []}}),
    ),
    "driver.pkl global a list": lambda c: rewrite(
        c,
        3,
        "driver.pkl",
        pickle.dumps({**driver(3), "state": {**driver(3)["state"], "global": [1.0]}}),
    ),
    "driver.pkl roster without slots": lambda c: rewrite(
        c, 3, "driver.pkl", pickle.dumps({**driver(3), "roster": {"capacity": 2}})
    ),
    "driver.pkl a module function": lambda c: rewrite(c, 3, "driver.pkl", pickle.dumps(np.save)),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_checkpoint_is_skipped_with_one_warning(ckpt, caplog, damage):
    DAMAGES[damage](ckpt)
    with caplog.at_level(logging.WARNING):
        got = ckpt.latest()
    assert got.round == 2 and got.driver["history"][-1]["round"] == 1
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "round-000003" in warnings[0].getMessage()
    assert "using round-000002" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()


def test_a_crafted_driver_pickle_runs_nothing(ckpt, tmp_path, caplog):
    marker = tmp_path / "pwned"
    rewrite(ckpt, 3, "driver.pkl", pickle.dumps(Payload(marker)))
    with caplog.at_level(logging.WARNING):
        assert ckpt.latest().round == 2
    assert not marker.exists(), "unpickling the checkpoint ran the file's code"
    assert "refused to build posix.system" in caplog.text


def test_none_left_is_one_line_naming_each(ckpt):
    DAMAGES["manifest is a list"](ckpt)
    (folder(ckpt, 2) / MANIFEST).unlink()
    rewrite(ckpt, 1, "driver.pkl", b"junk")
    with pytest.raises(ConfigError) as err:
        ckpt.latest()
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"no complete checkpoint under {ckpt.uri!r}")
    assert "round-000003 (manifest is a JSON list, not an object)" in line
    assert "round-000002 (incomplete (no manifest))" in line and "round-000001 (driver.pkl" in line


def test_a_checkpoint_another_run_wrote_is_never_taken(tmp_path, caplog):
    Checkpointer(str(tmp_path), 1, run_id="aaaa").save(1, driver(1), {0: state(0, 1, 1)})
    Checkpointer(str(tmp_path), 1, run_id="bbbb").save(2, driver(2), {0: state(0, 2, 2)})
    with caplog.at_level(logging.WARNING):
        assert Checkpointer(str(tmp_path), 1, run_id="aaaa").latest().round == 1
    assert "written by run bbbb, not by this run (aaaa)" in caplog.text
    with pytest.raises(ConfigError, match="no complete checkpoint"):
        Checkpointer(str(tmp_path), 1, run_id="cccc").latest()
