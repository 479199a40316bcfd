"""A run's identity: what ``run.json`` records, so ``--resume`` continues the right run.

A run writes the same record into its results folder and beside its
checkpoints (``<checkpoint_uri>/run/run.json``):

* ``run_id``: random, made when the run starts; every checkpoint's manifest
  carries it too, so checkpoints of another run under the same URI are
  never taken for this run's;
* ``config_hash``: SHA-256 of the options as canonical JSON, so an edited or
  damaged record is noticed instead of resuming a different experiment;
* ``options``: every experiment option, with local paths made absolute at
  run start (``--resume`` from another directory reads the same files);
* ``out``: the absolute results folder.

:func:`load_resume` reads a ``--resume`` target (a results folder or a
checkpoint URI) and refuses, with one line naming both sides, a copied
results folder, a folder or a URI that now holds another run, a record
that does not parse or does not match its hash, and an ``--out`` other than
the run's own folder.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dfml.errors import ConfigError
from dfml.launch.limits import MAX_CONFIG_BYTES
from dfml.launch.options import absolute_paths
from dfml.runtime.checkpoint import RUN_FILE, Checkpointer
from dfml.untrusted import load_json, read_limited


def config_hash(options: Mapping[str, Any]) -> str:
    """SHA-256 of ``options`` as canonical JSON (sorted keys, lists for tuples)."""
    text = json.dumps(options, sort_keys=True, separators=(",", ":"), default=list)
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass(frozen=True)
class RunRecord:
    """The parsed ``run.json`` (see the module docstring)."""

    run_id: str
    config_hash: str
    options: dict[str, Any]
    out: str

    @classmethod
    def new(cls, options: Mapping[str, Any], out: Path) -> RunRecord:
        """The record of a run starting now: a fresh id, paths made absolute."""
        absolute = absolute_paths(options)
        return cls(secrets.token_hex(8), config_hash(absolute), absolute, str(Path(out).resolve()))

    def to_json(self) -> str:
        body = {
            "run_id": self.run_id,
            "config_hash": self.config_hash,
            "out": self.out,
            "options": self.options,
        }
        return json.dumps(body, indent=2, default=list) + "\n"

    @classmethod
    def parse(cls, data: bytes | str, where: str) -> RunRecord:
        """Read a record; one ``ConfigError`` line naming ``where`` if it is not one."""
        try:
            doc = load_json(data, where)
        except ValueError:
            raise ConfigError(f"{where} is not a readable run record (damaged JSON)") from None
        if not isinstance(doc, dict):
            raise ConfigError(f"{where} is not a run record (a JSON object is expected)")
        fields = (("run_id", str), ("config_hash", str), ("out", str), ("options", dict))
        for name, kind in fields:
            if not isinstance(doc.get(name), kind):
                raise ConfigError(
                    f"{where} is not a run record of this dfml version (no valid {name!r})"
                )
        record = cls(doc["run_id"], doc["config_hash"], doc["options"], doc["out"])
        if config_hash(record.options) != record.config_hash:
            raise ConfigError(
                f"{where} was changed after run {record.run_id} started (its options do not "
                "match its config_hash); it cannot be resumed"
            )
        return record


def read_record(path: Path) -> RunRecord:
    """The record in a results folder's ``run.json`` (at most ``MAX_CONFIG_BYTES``, as a config)."""
    where = repr(str(path))
    return RunRecord.parse(read_limited(path, where, MAX_CONFIG_BYTES), where)


def load_resume(target: str, out: str | None = None) -> tuple[RunRecord, Checkpointer]:
    """``--resume OUT`` (a results folder) or ``--resume URI`` (its checkpoint URI).

    Returns the run's record and the checkpointer to read from, after
    checking that the results folder, the checkpoints and ``out`` (the
    ``--out`` given again, if any) all belong to this one run.
    """
    folder = Path(target)
    if (folder / RUN_FILE).is_file():
        record = read_record(folder / RUN_FILE)
        if folder.resolve() != Path(record.out):
            raise ConfigError(
                f"--resume {target}: this folder is a copy of run {record.run_id}, whose results "
                f"folder is {record.out!r}; resume that folder (a copy cannot continue: its "
                "checkpoints are the original's)"
            )
    else:
        reader = Checkpointer(target, 1)
        record = RunRecord.parse(reader.read_run_file(), f"{target!r} (run/{RUN_FILE})")
    uri = record.options.get("checkpoint_uri")
    if not uri:
        raise ConfigError(
            f"the run in {target!r} wrote no checkpoints (it had no --checkpoint-uri); "
            "it cannot be resumed"
        )
    checkpointer = Checkpointer(
        str(uri), int(record.options.get("checkpoint_every", 1)), run_id=record.run_id
    )
    beside = RunRecord.parse(checkpointer.read_run_file(), f"{uri!r} (run/{RUN_FILE})")
    if beside.run_id != record.run_id:
        raise ConfigError(
            f"checkpoint_uri {uri!r} holds the checkpoints of run {beside.run_id} (results in "
            f"{beside.out!r}), not of run {record.run_id} in {record.out!r}; it cannot be resumed"
        )
    results = Path(record.out) / RUN_FILE
    if results.is_file():
        held = read_record(results)
        if held.run_id != record.run_id:
            raise ConfigError(
                f"results folder {record.out!r} now holds run {held.run_id}, not run "
                f"{record.run_id} of {uri!r}; it cannot be resumed there"
            )
    if out is not None and Path(out).resolve() != Path(record.out):
        raise ConfigError(
            f"--out {out} differs from the resumed run's results folder {record.out!r}; "
            "a resumed run continues in its own folder (leave --out out)"
        )
    return record, checkpointer
