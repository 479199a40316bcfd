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
from urllib.parse import urlsplit

import pyarrow as pa
from pyarrow import fs as pafs

from dfml.errors import ConfigError
from dfml.fault.replica import Replica, from_bytes, to_bytes

log = logging.getLogger(__name__)

_VERSION = re.compile(r"^v(\d+)\.npz$")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")

#: URI schemes a checkpoint URI may use; anything without ``://`` is a local folder.
URI_SCHEMES = ("file", "s3", "gs", "gcs")
_FORMS = "a local folder, file:///ABS/PATH, s3://BUCKET/PREFIX or gs://BUCKET/PREFIX"


def check_uri(uri: str) -> None:
    """One ``ConfigError`` line unless ``uri`` is a local path or a well-formed URI.

    Refused: a scheme other than :data:`URI_SCHEMES` (or in capitals), one of
    them without ``//`` (``s3:bucket`` would be a local folder named so), a
    ``file://`` URI with a host, and ``s3://`` / ``gs://`` without a bucket.
    """
    found = _SCHEME.match(uri)
    if found is None and "://" in uri:
        raise ConfigError(f"checkpoint_uri {uri!r} is malformed (no scheme); give {_FORMS}")
    if found is None or (found.group(1) not in URI_SCHEMES and "://" not in uri):
        return  # a local path (which may hold a colon)
    scheme = found.group(1)
    if scheme not in URI_SCHEMES:
        raise ConfigError(f"checkpoint_uri {uri!r}: unknown scheme {scheme!r}; give {_FORMS}")
    if not uri.startswith(f"{scheme}://"):
        raise ConfigError(f"checkpoint_uri {uri!r} is malformed; give {_FORMS}")
    try:
        parts = urlsplit(uri)
    except ValueError as err:
        raise ConfigError(f"checkpoint_uri {uri!r} is malformed ({err}); give {_FORMS}") from None
    if scheme == "file" and (parts.netloc or not parts.path.startswith("/")):
        raise ConfigError(
            f"checkpoint_uri {uri!r}: a file:// URI names no host and an absolute path "
            "(file:///ABS/PATH)"
        )
    if scheme != "file" and not parts.netloc:
        raise ConfigError(f"checkpoint_uri {uri!r} names no bucket ({scheme}://BUCKET/PREFIX)")


def open_filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, base path) for a directory or a URI (one ``ConfigError`` line if neither)."""
    check_uri(uri)
    if "://" not in uri:
        return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(uri))
    try:
        filesystem, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, OSError, ValueError) as err:
        reason = " ".join(str(err).split())[:200]
        raise ConfigError(f"checkpoint_uri {uri!r} cannot be opened ({reason})") from None
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
