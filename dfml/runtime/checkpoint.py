"""Whole-run checkpoints: the driver state and every client state, durably.

Every ``checkpoint_every`` rounds the driver writes, under
``<checkpoint_uri>/run/round-<R>/`` (any pyarrow filesystem: a local
directory, ``s3://``, ``gs://``):

* ``clients.npz`` — every live client's state (the fault layer's replica
  format: flat vector, extras, round, loss, labels; checksummed);
* ``driver.pkl`` — the :class:`~dfml.steps.DriverState` with every object
  ref replaced by its value (the global model, MEFL's EOA state), plus the
  roster, the topology and the per-round history the results need;
* ``MANIFEST.json`` — written **last**: file names with their SHA-256, the
  round and the id of the run that wrote it.

A checkpoint is complete exactly when its manifest exists and every file
matches it: a driver killed mid-write leaves a folder without a manifest,
and a damaged file fails its checksum. :func:`latest` returns the newest
complete checkpoint and warns about each newer one it skips, so a resumed
run falls back to the one before. The newest ``keep`` checkpoints are kept.

``run.json`` beside them records the experiment's config and the run's id
(:mod:`dfml.launch.identity`), so ``dfml run --resume URI`` needs nothing
else; a checkpointer given a ``run_id`` takes no checkpoint another run
wrote.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import pickle
import re
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyarrow import fs as pafs

from dfml.actors.state import ClientState
from dfml.errors import ConfigError
from dfml.fault.durable import open_filesystem
from dfml.fault.replica import ReplicaError, from_bytes, pack_state, to_bytes, unpack_state

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
RUN_FILE = "run.json"
_ROUND = re.compile(r"^round-(\d{6})$")


@dataclass
class Checkpoint:
    """One complete checkpoint, read back.

    Attributes:
        round: rounds completed when it was taken (the round to run next).
        driver: the driver's payload (see :meth:`Checkpointer.save`).
        states: client id → its state (on CPU).
    """

    round: int
    driver: dict[str, Any]
    states: dict[int, ClientState]


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Checkpointer:
    """Writes and finds checkpoints under ``<uri>/run``.

    ``run_id`` (the run's identity) is written into every manifest, and a
    checkpoint whose manifest names another run is not this run's.
    """

    def __init__(self, uri: str, every: int, keep: int = 2, run_id: str | None = None) -> None:
        if every < 1:
            raise ConfigError(f"checkpoint_every must be >= 1, got {every}")
        self.uri, self.every, self.keep, self.run_id = uri, every, keep, run_id
        self.fs, base = open_filesystem(uri)
        self.base = f"{base}/run"
        self.seconds = 0.0
        self.bytes_written = 0

    def check_writable(self) -> None:
        """Fail now, with one line, if the URI names a file or cannot be written."""
        info = self.fs.get_file_info(self.base.rsplit("/run", 1)[0])
        if info.type == pafs.FileType.File:
            raise ConfigError(f"checkpoint_uri {self.uri!r} is a file; give a directory or URI")
        try:
            self.fs.create_dir(self.base, recursive=True)
        except OSError as err:
            raise ConfigError(f"cannot write checkpoints to {self.uri!r}: {err}") from None

    def due(self, rounds_done: int) -> bool:
        return rounds_done % self.every == 0

    # ----- the config beside the checkpoints ---------------------------
    def write_run_file(self, text: str) -> None:
        self.fs.create_dir(self.base, recursive=True)
        self._write(f"{self.base}/{RUN_FILE}", text.encode())

    def read_run_file(self) -> bytes:
        """The bytes of ``run/run.json`` (the launch layer parses and checks them)."""
        path = f"{self.base}/{RUN_FILE}"
        if self.fs.get_file_info(path).type != pafs.FileType.File:
            raise ConfigError(f"no run to resume under {self.uri!r} (missing run/{RUN_FILE})")
        return self._read(path)

    # ----- write ----------------------------------------------------------
    def save(self, rounds_done: int, driver: dict[str, Any], states: dict[int, ClientState]) -> str:
        """Write checkpoint ``rounds_done`` (manifest last); prune older ones."""
        folder = f"{self.base}/round-{rounds_done:06d}"
        self.fs.create_dir(folder, recursive=True)
        buf = io.BytesIO()
        packed = {
            f"c{cid}": np.frombuffer(to_bytes(pack_state(s, rounds_done)), np.uint8)
            for cid, s in sorted(states.items())
        }
        np.savez(buf, **packed)
        files = {"clients.npz": buf.getvalue(), "driver.pkl": pickle.dumps(driver)}
        for name, data in files.items():
            self._write(f"{folder}/{name}", data)
        manifest = {
            "run_id": self.run_id,
            "round": rounds_done,
            "files": {name: _sha256(data) for name, data in files.items()},
            "clients": sorted(states),
        }
        self._write(f"{folder}/{MANIFEST}", json.dumps(manifest).encode())
        self.bytes_written += sum(len(d) for d in files.values())
        for old in self.rounds()[self.keep :]:
            self.fs.delete_dir(f"{self.base}/round-{old:06d}")
        return folder

    def _write(self, path: str, data: bytes) -> None:
        tmp = f"{path}.tmp"
        with self.fs.open_output_stream(tmp) as out:
            out.write(data)
        self.fs.move(tmp, path)

    def _read(self, path: str) -> bytes:
        with self.fs.open_input_stream(path) as stream:
            return stream.read()

    # ----- read -----------------------------------------------------------
    def rounds(self) -> list[int]:
        """Checkpoint folders present (complete or not), newest first."""
        selector = pafs.FileSelector(self.base, allow_not_found=True)
        found = []
        for info in self.fs.get_file_info(selector):
            match = _ROUND.match(info.base_name)
            if match and info.type == pafs.FileType.Directory:
                found.append(int(match.group(1)))
        return sorted(found, reverse=True)

    def load(self, rounds_done: int) -> Checkpoint:
        """Read and verify one checkpoint; ``ReplicaError`` if incomplete or damaged."""
        folder = f"{self.base}/round-{rounds_done:06d}"
        if self.fs.get_file_info(f"{folder}/{MANIFEST}").type != pafs.FileType.File:
            raise ReplicaError("incomplete (no manifest)")
        try:
            manifest = json.loads(self._read(f"{folder}/{MANIFEST}"))
        except ValueError as err:
            raise ReplicaError(f"unreadable manifest: {err}") from None
        if self.run_id is not None and manifest.get("run_id") != self.run_id:
            raise ReplicaError(
                f"written by run {manifest.get('run_id')}, not by this run ({self.run_id})"
            )
        data = {}
        for name, digest in manifest["files"].items():
            try:
                data[name] = self._read(f"{folder}/{name}")
            except OSError as err:
                raise ReplicaError(f"{name} unreadable: {err}") from None
            if _sha256(data[name]) != digest:
                raise ReplicaError(f"{name} does not match its checksum")
        states = {}
        with np.load(io.BytesIO(data["clients.npz"]), allow_pickle=False) as npz:
            for key in npz.files:
                state = unpack_state(from_bytes(npz[key].tobytes()))
                states[state.client_id] = state
        return Checkpoint(int(manifest["round"]), pickle.loads(data["driver.pkl"]), states)

    def latest(self) -> Checkpoint:
        """The newest complete checkpoint; warns about each damaged newer one."""
        for rounds_done in self.rounds():
            try:
                return self.load(rounds_done)
            except ReplicaError as err:
                log.warning(
                    "checkpoint round-%06d under %s is unusable (%s); trying the one before",
                    rounds_done,
                    self.uri,
                    err,
                )
        raise ConfigError(f"no complete checkpoint under {self.uri!r} to resume from")
