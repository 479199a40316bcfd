"""Inside the job: ``python -m dfml.launch.jobs _run_job ID OPTIONS`` runs the experiment.

The job prints ``dfml-job: results folder PATH on node NODE_ID`` first
(:data:`RESULTS_PREFIX`; ``dfml fetch`` reads it), one line per round, and
``final_accuracy=...`` at the end.
"""

from __future__ import annotations

import contextlib
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from dfml.errors import UserError

RESULTS_PREFIX = "dfml-job: results folder "


def results_folder(out: str | None, job: str) -> Path:
    """Where the job writes: an absolute ``out`` as is, else under the Ray session dir."""
    if out and Path(out).expanduser().is_absolute():
        return Path(out).expanduser()
    root = None
    with contextlib.suppress(Exception):
        import ray

        root = Path(ray._private.worker._global_node.get_session_dir_path())
    if root is None:
        root = Path(tempfile.gettempdir())
    folder = root / "dfml-jobs" / job
    return folder / out if out else folder


def run_job(job: str, options_json: str) -> int:
    """``python -m dfml.launch.jobs _run_job ID OPTIONS``: the job's entry point."""
    import signal

    import ray

    from dfml.launch.options import build_config
    from dfml.launch.runner import execute
    from dfml.records import Callback

    class RoundLines(Callback):
        """One log line per round (the job's progress, readable in a log file)."""

        def __init__(self, rounds: int) -> None:
            self.rounds = rounds

        def on_round_end(self, record: Any) -> None:
            print(
                f"round {record.round + 1}/{self.rounds}  acc={record.mean('accuracy'):.4f}  "
                f"loss={record.mean('train_loss'):.4f}  {record.seconds:.2f}s",
                flush=True,
            )

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # dfml stop: results written so far are kept

    signal.signal(signal.SIGTERM, stop)
    options = json.loads(options_json)
    ray.init(logging_level="WARNING")  # the job's cluster (RAY_ADDRESS is set by Ray)
    try:
        out = results_folder(options.get("out"), job)
        options.update(out=str(out), progress=False, dashboard=False)
        cfg, launch = build_config(options)
        node = ray.get_runtime_context().get_node_id()
        print(f"{RESULTS_PREFIX}{out} on node {node}", flush=True)
        summary = execute(cfg, launch, callbacks=[RoundLines(cfg.run.rounds)])
        print(f"final_accuracy={summary['final_accuracy']:.4f}  results in {out}", flush=True)
        return 0
    except UserError as err:
        print(f"dfml: error: {err}", file=sys.stderr, flush=True)
        return 2
    except KeyboardInterrupt:
        print("dfml: stopped; results written so far are kept", file=sys.stderr, flush=True)
        return 130
    finally:
        ray.shutdown()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 3 and argv[0] == "_run_job":
        return run_job(argv[1], argv[2])
    print("usage: python -m dfml.launch.jobs _run_job JOB_ID OPTIONS_JSON", file=sys.stderr)
    return 2
