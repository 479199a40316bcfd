"""The optional durable copy: replicas as ``.npz`` files on a pyarrow filesystem.

``checkpoint_uri`` may be a local directory, ``file:///abs/dir``,
``s3://bucket/prefix`` or ``gs://bucket/prefix`` (pyarrow resolves the
scheme and the credentials). Layout: ``<uri>/client-00007/v000000042.npz``.
Only the newest ``keep`` versions per client are kept.
"""

from __future__ import annotations

import logging
import os
import re

from pyarrow import fs as pafs

from dfml.fault.replica import Replica, from_bytes, to_bytes

log = logging.getLogger(__name__)

_VERSION = re.compile(r"^v(\d+)\.npz$")


def open_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, base path) for a directory or a URI."""
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
    filesystem, path = pafs.FileSystem.from_uri(uri)
    return filesystem, path.rstrip("/")


def client_dir(base: str, client_id: int) -> str:
    return f"{base}/client-{client_id:05d}"


def replica_path(base: str, client_id: int, version: int) -> str:
    return f"{client_dir(base, client_id)}/v{version:09d}.npz"


def list_versions(uri: str, client_id: int) -> list[int]:
    """Versions of ``client_id`` present under ``uri``, newest first."""
    filesystem, base = open_filesystem(uri)
    selector = pafs.FileSelector(client_dir(base, client_id), allow_not_found=True)
    versions = []
    for info in filesystem.get_file_info(selector):
        match = _VERSION.match(info.base_name)
        if match and info.type == pafs.FileType.File:
            versions.append(int(match.group(1)))
    return sorted(versions, reverse=True)


def write_replica(uri: str, replica: Replica, keep: int) -> int:
    """Write one replica (atomically: temp file, then move); prune old versions."""
    filesystem, base = open_filesystem(uri)
    folder = client_dir(base, replica.client_id)
    filesystem.create_dir(folder, recursive=True)
    path = replica_path(base, replica.client_id, replica.version)
    data = to_bytes(replica)
    tmp = f"{path}.tmp-{os.getpid()}"
    with filesystem.open_output_stream(tmp) as out:
        out.write(data)
    filesystem.move(tmp, path)
    for old in list_versions(uri, replica.client_id)[keep:]:
        filesystem.delete_file(replica_path(base, replica.client_id, old))
    return len(data)


def read_replica(uri: str, client_id: int, version: int) -> Replica:
    """Read one replica back (:class:`~dfml.fault.replica.ReplicaError` if damaged)."""
    filesystem, base = open_filesystem(uri)
    with filesystem.open_input_stream(replica_path(base, client_id, version)) as stream:
        return from_bytes(stream.read())
