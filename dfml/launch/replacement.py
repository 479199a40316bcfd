"""``--overwrite`` without a window where neither run's results exist.

When an overwriting run sets up its folder, every file the old run wrote
(:data:`~dfml.launch.results.RUN_OUTPUTS`, all of them together, so no
``tasks.parquet`` of a CL-FML run survives a run that serves no tasks) is
moved aside into ``OUT/.dfml-replaced-<token>/`` (renames within the
folder). The old files are removed, and the old checkpoints under
``--checkpoint-uri`` cleared, only once the new run has passed its
start-up: its actors run (:meth:`Replacement.on_start`). If the new run
ends before that (its actors could not start, Ctrl-C, SIGTERM), whatever it
wrote is removed and the old files are moved back (:meth:`Replacement.settle`),
so a late failure leaves the old results as they were.
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dfml.launch.identity import RunRecord
from dfml.launch.results import clear_results, existing_results
from dfml.records import Callback
from dfml.runtime.checkpoint import Checkpointer

log = logging.getLogger(__name__)

#: Prefix of the folder the old results wait in (inside OUT, so moves are renames).
ASIDE_PREFIX = ".dfml-replaced-"


class Replacement(Callback):
    """The old run's files while an ``--overwrite`` run starts: aside, then gone or back."""

    def __init__(
        self,
        out: Path,
        outputs: Sequence[str],
        checkpointer: Checkpointer | None,
        record: RunRecord,
    ) -> None:
        self.out, self.outputs = Path(out), tuple(outputs)
        self.checkpointer, self.record = checkpointer, record
        self.aside = self.out / f"{ASIDE_PREFIX}{secrets.token_hex(4)}"
        self.moved: list[str] = []
        self.committed = False

    def move_aside(self) -> None:
        """Move every old result file (and its temp file) into the aside folder."""
        names = existing_results(self.out, self.outputs)
        if not names:
            return
        self.aside.mkdir()
        for name in names:
            for entry in (name, f"{name}.tmp"):
                if os.path.lexists(self.out / entry):
                    os.replace(self.out / entry, self.aside / entry)
                    self.moved.append(entry)
        log.info("--overwrite: moved %s of %s aside until the run starts", names, self.out)

    def on_start(self, runtime: Any) -> None:
        """The new run's actors run: clear the old checkpoints, drop the old files."""
        if self.checkpointer is not None:
            fs, base = self.checkpointer.fs, self.checkpointer.base
            fs.delete_dir_contents(base, missing_dir_ok=True)
            self.checkpointer.write_run_file(self.record.to_json())
        if self.aside.exists():
            shutil.rmtree(self.aside)
        self.committed = True
        log.info("--overwrite: the old results in %s are removed", self.out)

    def settle(self) -> None:
        """After the run, however it ended: before its start-up passed, put the old files back."""
        if self.committed:
            return
        clear_results(self.out, self.outputs)  # what the new run wrote
        for entry in self.moved:
            os.replace(self.aside / entry, self.out / entry)
        if self.aside.exists():
            self.aside.rmdir()
        if self.moved:
            log.warning("the run ended before it started; the old results in %s are kept", self.out)
