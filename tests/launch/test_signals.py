"""SIGTERM ends a command as Ctrl-C does (no Ray here; the CLI run is in test_bad_input)."""

from __future__ import annotations

import os
import signal
import sys

import pytest

from dfml.launch import signals
from dfml.launch.signals import Terminated, reclaim, sigterm_interrupts


def mine(signum, frame) -> None:
    raise AssertionError("the handler from before")


def test_sigterm_raises_terminated_once_and_the_old_handler_returns(caplog):
    previous = signal.signal(signal.SIGTERM, mine)
    try:
        with sigterm_interrupts():
            with pytest.raises(Terminated):
                os.kill(os.getpid(), signal.SIGTERM)
                signal.sigtimedwait([], 0)  # let the handler run
            assert isinstance(Terminated(), KeyboardInterrupt)
            os.kill(os.getpid(), signal.SIGTERM)  # while winding down: logged, ignored
            signal.sigtimedwait([], 0)
            assert "SIGTERM again" in caplog.text
        assert signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_reclaim_takes_sigterm_back_from_ray_init():
    previous = signal.getsignal(signal.SIGTERM)
    with sigterm_interrupts():
        signal.signal(signal.SIGTERM, lambda s, f: sys.exit(s))  # what ray.init installs
        reclaim()
        assert signal.getsignal(signal.SIGTERM) is signals._on_sigterm
    reclaim()  # outside a command: does nothing
    assert signal.getsignal(signal.SIGTERM) is previous
