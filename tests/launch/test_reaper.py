"""The reaper ends what a SIGKILLed driver's raylet leaves running (no Ray here: a
stand-in "raylet" whose child ignores SIGTERM, as Ray's agents outlive it)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dfml.launch import reaper

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")

#: Starts a "raylet" with one stubborn child, then the reaper with a 0.5 s grace;
#: prints their pids and waits to be killed.
DRIVER = """
import json, os, subprocess, sys, time
sys.path.insert(0, {folder!r})
import reaper
AGENT = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"
RAYLET = (
    "import subprocess, sys, time; "
    f"a = subprocess.Popen([sys.executable, '-c', {{AGENT!r}}]); "
    "print(a.pid, flush=True); time.sleep(600)"
)
raylet = subprocess.Popen([sys.executable, "-c", RAYLET], stdout=subprocess.PIPE, text=True)
agent = int(raylet.stdout.readline())
start = reaper._stat(raylet.pid)[2]
watcher = subprocess.Popen(
    [sys.executable, reaper.__file__, str(os.getpid()), str(raylet.pid), start, "0.5"],
    start_new_session=True,
)
print(json.dumps({{"raylet": raylet.pid, "agent": agent, "reaper": watcher.pid}}), flush=True)
time.sleep(600)
"""


def gone(pid: int, timeout: float) -> bool:
    """Whether ``pid`` has ended (exited, or a zombie no one reaped) within ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if "State:\tZ" in Path(f"/proc/{pid}/status").read_text():
                return True
        except FileNotFoundError:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


@pytest.mark.e2e
def test_the_raylets_children_are_killed_after_the_driver_dies():
    code = DRIVER.format(folder=str(Path(reaper.__file__).parent))
    driver = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    pids = json.loads(driver.stdout.readline())
    try:
        assert reaper.raylet_of(driver.pid) is None  # its child is not named raylet
        time.sleep(2 * reaper.POLL_S)  # the reaper has listed the raylet's children
        assert not gone(pids["agent"], 0.5), "killed while the driver lived"
        driver.kill()  # SIGKILL: no clean-up runs in the driver
        driver.wait()
        os.kill(pids["raylet"], signal.SIGKILL)  # Ray's fate-sharing ends the raylet
        assert gone(pids["agent"], 10), "the raylet's child outlived the driver"
        assert gone(pids["reaper"], 10)
    finally:
        for pid in pids.values():
            if not gone(pid, 0):
                os.kill(pid, signal.SIGKILL)
