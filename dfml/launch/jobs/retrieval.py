"""How ``dfml fetch`` brings a job's results folder back.

From the node that ran the job, through a small *retrieval job* (see the
package docstring, :mod:`dfml.launch.jobs`), or with ``--from`` from shared
storage (:func:`copy_from_uri`, ``pyarrow.fs``, no cluster involved).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import inspect
import io
import re
import secrets
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from dfml.errors import ConfigError, UserError
from dfml.launch.jobs.dashboard import quiet_ray
from dfml.launch.jobs.entry import RESULTS_PREFIX
from dfml.launch.jobs.lifecycle import TERMINAL, submit_when_ready, wait_terminal

_RESULTS_LINE = re.compile(rf"^{re.escape(RESULTS_PREFIX)}(.+) on node ([0-9a-fA-F]+)\s*$", re.M)
_BEGIN, _END, _ERROR = "DFML-FETCH-BEGIN", "DFML-FETCH-END", "DFML-FETCH-ERROR"


def results_location(log: str) -> tuple[str, str] | None:
    """(folder, node id) from the job's results line, if it printed one."""
    found = _RESULTS_LINE.findall(log)
    return (found[-1][0], found[-1][1]) if found else None


def copy_from_uri(uri: str, out: Path) -> int:
    """Copy the folder ``uri`` (s3://, gs://, file path) into ``out``; number of files."""
    import pyarrow.fs as pafs

    source = uri if "://" in uri else str(Path(uri).expanduser().resolve())
    try:
        fs, path = pafs.FileSystem.from_uri(source)
        info = fs.get_file_info(path)
    except Exception as err:
        raise ConfigError(f"cannot open {uri!r}: {' '.join(str(err).split())}") from None
    if info.type != pafs.FileType.Directory:
        raise ConfigError(f"{uri!r} is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    pafs.copy_files(path, str(out.resolve()), source_filesystem=fs)
    return sum(1 for p in out.rglob("*") if p.is_file())


def _packer(folder: str, node: str, timeout: float) -> None:
    """Body of the retrieval job: pack ``folder`` on ``node``, print it between markers.

    Shipped as source (see :func:`packer_script`): it may import only the
    standard library and Ray.
    """
    import base64
    import hashlib
    import io
    import os
    import sys
    import tarfile

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    def pack(path):
        if not os.path.isdir(path):
            return None
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            tar.add(path, arcname=".")
        return buffer.getvalue()

    ray.init(logging_level="WARNING")
    task = ray.remote(num_cpus=0, max_retries=0)(pack).options(
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False)
    )
    try:
        data = ray.get(task.remote(folder), timeout=timeout)
    except Exception as err:
        message = " ".join(str(err).split())[:300]
        print(f"{_ERROR} cannot read {folder} on node {node}: {message}", flush=True)
        sys.exit(1)
    if data is None:
        print(f"{_ERROR} no folder {folder} on node {node}", flush=True)
        sys.exit(1)
    digest = hashlib.sha256(data).hexdigest()
    out = sys.stdout
    out.write(f"\n{_BEGIN} {digest} {len(data)}\n")
    out.write(base64.encodebytes(data).decode("ascii"))
    out.write(f"{_END}\n")
    out.flush()


def packer_script(folder: str, node: str, timeout: float) -> str:
    """A standalone Python file that runs :func:`_packer` for this folder."""
    return (
        f"_BEGIN, _END, _ERROR = {_BEGIN!r}, {_END!r}, {_ERROR!r}\n\n\n"
        + inspect.getsource(_packer)
        + f"\n\n_packer({folder!r}, {node!r}, {timeout!r})\n"
    )


def retrieve(client: Any, folder: str, node: str, timeout: float) -> bytes:
    """Run the retrieval job for ``folder`` on ``node``; the tar.gz bytes it printed."""
    with tempfile.TemporaryDirectory(prefix="dfml-fetch-") as tmp:
        Path(tmp, "dfml_fetch.py").write_text(packer_script(folder, node, timeout))
        with quiet_ray():
            fetch_job = submit_when_ready(
                client,
                entrypoint="python dfml_fetch.py",
                runtime_env={"working_dir": tmp},
                submission_id=f"dfml-fetch-{secrets.token_hex(4)}",
                metadata={"dfml": "fetch", "dfml_folder": folder},
            )
    try:
        state = wait_terminal(client, fetch_job, timeout + 60)
        log = client.get_job_logs(fetch_job)
        if state not in TERMINAL:
            client.stop_job(fetch_job)
            raise UserError(f"fetching {folder} took longer than {timeout:g} s; try --timeout")
        return decode_packed(log, folder)
    finally:
        with contextlib.suppress(Exception):
            wait_terminal(client, fetch_job, 10)
            client.delete_job(fetch_job)


def decode_packed(log: str, folder: str) -> bytes:
    """The bytes between the markers of a retrieval job's log, checked."""
    error = re.search(rf"^{_ERROR} (.*)$", log, re.M)
    if error:
        raise UserError(error.group(1).strip())
    found = re.search(rf"^{_BEGIN} ([0-9a-f]{{64}}) (\d+)\n(.*?)^{_END}$", log, re.M | re.S)
    if not found:
        tail = " ".join(log.strip().splitlines()[-1:])[:300]
        raise UserError(f"the retrieval job for {folder} failed: {tail or 'no output'}")
    digest, size, text = found.groups()
    data = base64.b64decode("".join(text.split()))
    if len(data) != int(size) or hashlib.sha256(data).hexdigest() != digest:
        raise UserError(f"the copy of {folder} arrived damaged; run dfml fetch again")
    return data


def unpack(data: bytes, out: Path) -> int:
    """Extract a tar.gz into ``out`` (only plain files and folders); number of files."""
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = tar.getmembers()
        tar.extractall(out, filter="data")
    return sum(1 for m in members if m.isfile())
