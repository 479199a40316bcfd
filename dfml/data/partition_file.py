"""Import a partition instead of drawing one, so runs can share exact clients.

Rerunning on an earlier run's ``partition.parquet`` repeats its clients
sample for sample under another algorithm or seed; a JSON file brings a
partition made elsewhere. Two formats, told apart by the file's suffix:

* ``.parquet``: dfml's own ``partition.parquet``
  (:func:`dfml.launch.results.partition_table`): columns ``client`` (ids
  ``0..K-1``), ``split`` (``meta_train``, ``query`` or ``test``) and ``index``.
  The splits are taken as they are.
* ``.json``: ``{"clients": [{"train": [...], "test": [...], "query": [...]}, ...]}``,
  clients in order. With ``query``, ``train`` is D^M and ``query`` D^Q; without
  it, ``train`` is split into D^M and a label-balanced D^Q by
  :func:`dfml.data.partition.split_train` with ``query_fraction`` and the run
  seed, as drawn partitions are.

Indices point into the dataset's pooled sample order (``ArrayDataset.y``).
Every index may appear once in the whole file; each client needs training
and test indices; ``min_samples`` is not enforced on a partition the user
chose. Label permutations (ζ) are not stored and are applied by
:func:`dfml.data.partition.make_partition`. Every problem is one
:class:`~dfml.errors.ConfigError` line naming the file and the value.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dfml.data.config import PartitionConfig
from dfml.data.split import ClientSplit, client_seed, split_train
from dfml.errors import ConfigError
from dfml.untrusted import load_json, read_limited

logger = logging.getLogger(__name__)

PARQUET_SPLITS = ("meta_train", "query", "test")
#: The largest partition file read: a partition of millions of samples fits in far less.
MAX_PARTITION_BYTES = 256 << 20
JSON_KEYS = ("train", "query", "test")


@dataclass(frozen=True)
class _Client:
    """One client as the file gives it; ``query`` is None when JSON omits it."""

    train: np.ndarray
    test: np.ndarray
    query: np.ndarray | None


def num_clients_in(path: str | Path) -> int:
    """How many clients the partition file at ``path`` holds (validated as by loading)."""
    return len(_read(Path(path).expanduser()))


def load_partition_file(
    path: str | Path, labels: np.ndarray, cfg: PartitionConfig, seed: int
) -> list[ClientSplit]:
    """The clients of ``path`` as :class:`ClientSplit` objects, in client order.

    ``labels`` is the dataset's label vector (its length bounds the indices,
    its values drive the D^Q split of JSON clients without ``query``).

    Raises:
        ConfigError: the file is missing, unreadable, not parquet or JSON, or
            malformed; an index is out of range or appears twice; a client is
            empty or lacks test indices; fewer than 2 clients.
    """
    path = Path(path).expanduser()
    clients = _read(path)
    n = len(labels)
    for cid, client in enumerate(clients):
        for name, idx in (("train", client.train), ("query", client.query), ("test", client.test)):
            if idx is not None and len(idx) and (idx.min() < 0 or idx.max() >= n):
                bad = int(idx.min()) if idx.min() < 0 else int(idx.max())
                raise ConfigError(
                    f"partition file {path}: client {cid} {name} index {bad} is out of range "
                    f"for a dataset of {n} samples"
                )
    splits = [
        split_train(c.train, c.test, labels, cfg, client_seed(seed, cid))
        if c.query is None
        else ClientSplit(meta_train=np.sort(c.train), query=np.sort(c.query), test=np.sort(c.test))
        for cid, c in enumerate(clients)
    ]
    logger.info("loaded a partition of %d clients from %s", len(splits), path)
    return splits


def _read(path: Path) -> list[_Client]:
    """Parse and check everything that does not need the dataset."""
    if not path.exists():
        raise ConfigError(f"partition file {path} does not exist")
    if not path.is_file():
        raise ConfigError(f"partition file {path} is not a file")
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".json"):
        raise ConfigError(f"partition file {path} must end in .parquet or .json, not {suffix!r}")
    data = read_limited(path, f"partition file {path}", MAX_PARTITION_BYTES)
    clients = _read_parquet(path, data) if suffix == ".parquet" else _read_json(path, data)
    if len(clients) < 2:
        raise ConfigError(f"partition file {path} holds {len(clients)} client(s); need >= 2")
    for cid, c in enumerate(clients):
        has_train = len(c.train) > 0 or (c.query is not None and len(c.query) > 0)
        if not has_train and not len(c.test):
            raise ConfigError(f"partition file {path}: client {cid} is empty")
        if not len(c.test):
            raise ConfigError(f"partition file {path}: client {cid} has no test indices")
        if not len(c.train):
            raise ConfigError(f"partition file {path}: client {cid} has no train indices")
    _check_unique(path, clients)
    return clients


def _read_parquet(path: Path, data: bytes) -> list[_Client]:
    try:
        table = pq.read_table(pa.BufferReader(data))
    except OSError as err:
        raise ConfigError(f"partition file {path} cannot be read ({err})") from None
    except pa.ArrowException as err:
        raise ConfigError(f"partition file {path} is not a parquet file ({err})") from None
    for name, is_type in (
        ("client", pa.types.is_integer),
        ("split", lambda t: pa.types.is_string(t) or pa.types.is_large_string(t)),
        ("index", pa.types.is_integer),
    ):
        if name not in table.column_names:
            raise ConfigError(
                f"partition file {path} has no column {name!r}; needs client, split, index"
            )
        column = table.column(name)
        if not is_type(column.type):
            raise ConfigError(
                f"partition file {path}: column {name!r} has type {column.type}, "
                f"expected {'string' if name == 'split' else 'integer'}"
            )
        if column.null_count:
            raise ConfigError(f"partition file {path}: column {name!r} has empty values")
    client = table.column("client").to_numpy().astype(np.int64)
    split = np.asarray(table.column("split").to_pylist(), dtype=object)
    index = table.column("index").to_numpy().astype(np.int64)
    unknown = sorted(set(split.tolist()) - set(PARQUET_SPLITS))
    if unknown:
        raise ConfigError(
            f"partition file {path}: unknown split {unknown[0]!r}; "
            f"allowed: {', '.join(PARQUET_SPLITS)}"
        )
    if len(client) and client.min() < 0:
        raise ConfigError(f"partition file {path}: client id {client.min()} is negative")
    count = int(client.max()) + 1 if len(client) else 0
    rows = {name: split == name for name in PARQUET_SPLITS}
    return [
        _Client(
            train=index[(client == cid) & rows["meta_train"]],
            test=index[(client == cid) & rows["test"]],
            query=index[(client == cid) & rows["query"]],
        )
        for cid in range(count)
    ]


def _read_json(path: Path, data: bytes) -> list[_Client]:
    try:
        doc = load_json(data, f"partition file {path}")
    except json.JSONDecodeError as err:
        raise ConfigError(f"partition file {path} is not valid JSON (line {err.lineno})") from None
    except UnicodeDecodeError:
        raise ConfigError(f"partition file {path} is not valid JSON (not UTF-8 text)") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("clients"), list):
        raise ConfigError(f'partition file {path} must hold {{"clients": [...]}}')
    clients = []
    for cid, entry in enumerate(doc["clients"]):
        if not isinstance(entry, dict):
            raise ConfigError(
                f"partition file {path}: client {cid} must be an object with train and test"
            )
        unknown = sorted(set(entry) - set(JSON_KEYS))
        if unknown:
            raise ConfigError(
                f"partition file {path}: client {cid} has unknown key {unknown[0]!r}; "
                f"allowed: {', '.join(JSON_KEYS)}"
            )
        if "test" not in entry:
            raise ConfigError(f"partition file {path}: client {cid} has no test indices")
        query = entry.get("query")
        clients.append(
            _Client(
                train=_indices(path, cid, "train", entry.get("train", [])),
                test=_indices(path, cid, "test", entry["test"]),
                query=None if query is None else _indices(path, cid, "query", query),
            )
        )
    return clients


def _indices(path: Path, cid: int, name: str, value: Any) -> np.ndarray:
    """A JSON list of integer indices as int64 (bools and floats are refused)."""
    if not isinstance(value, list):
        raise ConfigError(
            f"partition file {path}: client {cid} {name} must be a list of indices, "
            f"got {type(value).__name__}"
        )
    bad = next((v for v in value if isinstance(v, bool) or not isinstance(v, int)), None)
    if bad is not None:
        raise ConfigError(
            f"partition file {path}: client {cid} {name} holds {bad!r}, not an integer index"
        )
    return np.asarray(value, dtype=np.int64)


def _check_unique(path: Path, clients: list[_Client]) -> None:
    """Every index once in the whole file: a sample belongs to one client and one split."""
    arrays, owners = [], []
    for cid, c in enumerate(clients):
        for name, idx in (("train", c.train), ("query", c.query), ("test", c.test)):
            if idx is not None:
                arrays.append(idx)
                owners += [f"client {cid} {name}"] * len(idx)
    flat = np.concatenate(arrays)
    values, counts = np.unique(flat, return_counts=True)
    if (counts > 1).any():
        dup = values[counts > 1][0]
        first, second = (owners[i] for i in np.flatnonzero(flat == dup)[:2])
        raise ConfigError(
            f"partition file {path}: index {dup} appears twice ({first} and {second})"
        )
