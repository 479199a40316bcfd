"""Checks on dataset files and downloads that turn library errors into one line.

torchvision and medmnist report a failed download as a ``URLError`` (or a
``RuntimeError`` listing every mirror tried, tens of lines) and a damaged
idx file as a bare ``AssertionError``. :func:`download_failed` and
:func:`check_idx_file` say instead which dataset, which file or host, and
what to do.
"""

from __future__ import annotations

import math
import os
import re
import tarfile
import zipfile
from collections.abc import Iterable
from pathlib import Path
from urllib.error import URLError
from urllib.parse import urlparse

from dfml.errors import DataNotFoundError

#: What a failed download raises: network errors (URLError, socket errors and
#: timeouts are OSError), torchvision's "Error downloading ..." / md5
#: mismatch (RuntimeError), and damaged archives.
DOWNLOAD_ERRORS = (URLError, OSError, RuntimeError, EOFError, tarfile.TarError, zipfile.BadZipFile)

#: idx files are big-endian: two zero bytes, a type code (0x08: unsigned byte),
#: the number of dimensions, then each dimension as a 4-byte integer.
_IDX_UBYTE = 0x08
_URLOPEN = re.compile(r"<urlopen error (.*)>")


def _reason(err: BaseException) -> str:
    """One line of ``err``: a URLError's reason, else the last line of its text."""
    if isinstance(err, URLError):
        reason = err.reason
        text = reason.strerror if isinstance(reason, OSError) and reason.strerror else str(reason)
    elif isinstance(err, OSError) and err.strerror:
        text = err.strerror
    else:
        text = str(err)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if not lines:
        return type(err).__name__
    match = _URLOPEN.fullmatch(lines[-1])  # torchvision's per-mirror lines: <urlopen error ...>
    return match[1] if match else lines[-1]


def download_failed(
    name: str, urls: Iterable[str], err: BaseException, folder: Path
) -> DataNotFoundError:
    """One line: the dataset, the host(s) tried, why, and where the files could go instead."""
    hosts = list(dict.fromkeys(urlparse(u).netloc or u for u in urls))
    return DataNotFoundError(
        f"dataset {name!r}: download from {', '.join(hosts)} failed ({_reason(err)}); "
        f"check the network, or put the files in {folder}/ yourself"
    )


def check_idx_file(name: str, path: Path, ndim: int, item_shape: tuple[int, ...] = ()) -> int:
    """Check an idx file of unsigned bytes from its header and size; return its item count.

    Raises:
        DataNotFoundError: naming the file and what is wrong with it.
    """

    def bad(reason: str) -> DataNotFoundError:
        return DataNotFoundError(
            f"dataset {name!r}: {path} is damaged ({reason}); replace it, or delete it and "
            "pass --download"
        )

    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(4 + 4 * ndim)
    except OSError as err:
        raise DataNotFoundError(f"dataset {name!r}: cannot read {path} ({err.strerror})") from None
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise bad("not an idx file")
    if head[2] != _IDX_UBYTE or head[3] != ndim:
        raise bad(f"type 0x{head[2]:02x} with {head[3]} dimensions, expected 0x08 with {ndim}")
    if len(head) < 4 + 4 * ndim:
        raise bad("header cut short")
    dims = tuple(int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    if item_shape and dims[1:] != item_shape:
        raise bad(f"items of shape {dims[1:]}, expected {item_shape}")
    expected = 4 + 4 * ndim + math.prod(dims)
    if size != expected:
        raise bad(f"{size} bytes where its header announces {expected}")
    return dims[0]


def check_root(root: Path) -> None:
    """A data root that exists must be a directory."""
    if root.exists() and not root.is_dir():
        raise DataNotFoundError(
            f"--data-root {str(root)!r} is a file; give the directory that holds the dataset"
        )
    if root.is_dir() and not os.access(root, os.R_OK | os.X_OK):
        raise DataNotFoundError(f"--data-root {str(root)!r} cannot be read")
