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

import dataclasses
import hashlib
import io
import json
import logging
import pickle
import re
import zipfile
from dataclasses import dataclass
from typing import Any

import numpy as np
from pyarrow import fs as pafs

from dfml.actors.roster import Roster
from dfml.actors.state import ClientState
from dfml.errors import ConfigError
from dfml.fault.durable import open_filesystem
from dfml.fault.replica import ReplicaError, from_bytes, pack_state, to_bytes, unpack_state
from dfml.records import RoundRecord
from dfml.untrusted import NUMPY_ARRAYS, safe_loads

log = logging.getLogger(__name__)

MANIFEST = "MANIFEST.json"
RUN_FILE = "run.json"
#: The files of a checkpoint besides its manifest.
FILES = ("clients.npz", "driver.pkl")
_ROUND = re.compile(r"^round-(\d{6})$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")

#: What ``driver.pkl`` may build besides dfml's own dataclasses and enums:
#: numpy arrays (the global model) and the fixed topologies, with their
#: networkx graphs, that label clustering keeps in its slot.
DRIVER_TYPES = NUMPY_ARRAYS | {
    ("dfml.topology.service", "FixedTopology"),
    ("networkx.classes.graph", "Graph"),
    ("networkx.classes.coreviews", "AdjacencyView"),
    ("networkx.classes.coreviews", "AtlasView"),
}


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


def check_manifest(data: bytes, rounds_done: int) -> dict[str, Any]:
    """The manifest of checkpoint ``rounds_done``, or ``ReplicaError`` saying what is wrong."""
    try:
        manifest = json.loads(data)
    except (ValueError, RecursionError) as err:
        raise ReplicaError(f"unreadable manifest: {type(err).__name__}") from None
    if not isinstance(manifest, dict):
        raise ReplicaError(f"manifest is a JSON {type(manifest).__name__}, not an object")
    kept = manifest.get("round")
    if type(kept) is not int or kept != rounds_done:
        raise ReplicaError(f"manifest names round {kept!r}, its folder round {rounds_done}")
    files = manifest.get("files")
    if not isinstance(files, dict) or sorted(files) != sorted(FILES):
        raise ReplicaError(f"manifest must list exactly {', '.join(FILES)} under 'files'")
    if not all(isinstance(d, str) and _DIGEST.match(d) for d in files.values()):
        raise ReplicaError("manifest holds a file digest that is not a SHA-256")
    clients = manifest.get("clients")
    if not isinstance(clients, list) or not all(type(c) is int for c in clients):
        raise ReplicaError("manifest's 'clients' is not a list of client ids")
    return manifest


def _client_states(data: bytes, clients: list[int]) -> dict[int, ClientState]:
    """The client states of ``clients.npz``: each checksummed, exactly the manifest's ids."""
    states = {}
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            for key in npz.files:
                state = unpack_state(from_bytes(npz[key].tobytes()))
                states[state.client_id] = state
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as err:
        raise ReplicaError(f"clients.npz unreadable ({type(err).__name__}: {err})") from None
    if sorted(states) != sorted(clients):
        raise ReplicaError("clients.npz does not hold exactly the manifest's clients")
    return states


#: Top-level keys of the driver payload (:meth:`Checkpointer.save`) and their types.
DRIVER_KEYS: dict[str, type] = {
    "state": dict,
    "roster": dict,
    "topology": dict,
    "history": list,
    "joins": dict,
    "leaves": dict,
}


def check_driver(driver: Any, rounds_done: int) -> None:
    """``ReplicaError`` unless ``driver`` has the payload's shape and types.

    Checked: the top-level keys and types, the driver state's ``sources``
    (a dict of named slots), ``global`` (an array or None) and its holders,
    one history record per round done with the fields of a
    :class:`~dfml.records.RoundRecord`, and a roster that can be rebuilt.
    """
    if not isinstance(driver, dict) or set(driver) != set(DRIVER_KEYS):
        raise ReplicaError(f"driver.pkl must hold the keys {', '.join(DRIVER_KEYS)}")
    for key, kind in DRIVER_KEYS.items():
        if not isinstance(driver[key], kind):
            raise ReplicaError(f"driver.pkl: {key!r} is a {type(driver[key]).__name__}")
    state = driver["state"]
    if (
        not isinstance(state.get("sources"), dict)
        or not all(isinstance(k, str) for k in state["sources"])
        or not (state.get("global") is None or isinstance(state["global"], np.ndarray))
        or not isinstance(state.get("global_holders"), list)
    ):
        raise ReplicaError("driver.pkl: the driver state is not sources, global, global_holders")
    history = driver["history"]
    fields = {f.name for f in dataclasses.fields(RoundRecord)}
    if len(history) != rounds_done or not all(
        isinstance(r, dict) and set(r) <= fields and r.get("round") == i
        for i, r in enumerate(history)
    ):
        raise ReplicaError(f"driver.pkl: the history is not {rounds_done} round records")
    try:
        Roster.from_dict(driver["roster"])
    except (KeyError, TypeError, ValueError) as err:
        raise ReplicaError(f"driver.pkl: the roster cannot be rebuilt ({err!r})") from None


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
        """Read and verify one checkpoint; ``ReplicaError`` if incomplete or damaged.

        Verified before anything is used: the manifest's schema (a JSON
        object naming this round, this run and exactly :data:`FILES` with
        their SHA-256), every file's hash, the client states' checksums and
        ids, and the driver payload's types (:func:`check_driver`; it is
        unpickled with :func:`~dfml.untrusted.safe_loads`, so a crafted
        ``driver.pkl`` runs nothing).
        """
        folder = f"{self.base}/round-{rounds_done:06d}"
        if self.fs.get_file_info(f"{folder}/{MANIFEST}").type != pafs.FileType.File:
            raise ReplicaError("incomplete (no manifest)")
        manifest = check_manifest(self._read(f"{folder}/{MANIFEST}"), rounds_done)
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
        states = _client_states(data["clients.npz"], manifest["clients"])
        try:
            driver = safe_loads(data["driver.pkl"], DRIVER_TYPES, trusted=("dfml",))
        except Exception as err:  # a damaged pickle can raise almost anything
            raise ReplicaError(f"driver.pkl unreadable ({type(err).__name__}: {err})") from None
        check_driver(driver, rounds_done)
        return Checkpoint(rounds_done, driver, states)

    def latest(self) -> Checkpoint:
        """The newest usable checkpoint; warns (one line each) about the newer ones skipped.

        When none is usable, one ``ConfigError`` line names every one and why.
        """
        skipped = []
        for rounds_done in self.rounds():
            try:
                checkpoint = self.load(rounds_done)
            except ReplicaError as err:
                skipped.append(f"round-{rounds_done:06d} ({err})")
                continue
            for reason in skipped:
                log.warning(
                    "checkpoint %s under %s is unusable; using round-%06d",
                    reason,
                    self.uri,
                    rounds_done,
                )
            return checkpoint
        found = f": {'; '.join(skipped)}" if skipped else ""
        raise ConfigError(f"no complete checkpoint under {self.uri!r} to resume from{found}")
