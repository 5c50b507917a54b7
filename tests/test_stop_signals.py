"""stop_on_signals against a signal that lands while a finalizer runs: Python ignores what a
finalizer raises ("Exception ignored in: <finalize object>"), so a Stopped raised there was lost
and a chaos run kept going for minutes after its SIGTERM (tests/test_local_cloud.py flaked)."""

from __future__ import annotations

import os
import signal
import time
import weakref

import pytest

from notifier.tools.processes import Stopped, stop_on_signals


class _Thing:
    pass


def _finalizer_then_wait(seconds: float) -> None:
    """A finalizer that receives SIGTERM while it runs, then ordinary code for ``seconds``."""
    thing = _Thing()
    weakref.finalize(thing, os.kill, os.getpid(), signal.SIGTERM)  # the signal arrives inside the finalizer
    del thing  # runs the finalizer now
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:  # was: the whole wait, Stopped never raised
        time.sleep(0.01)


def _signal_then_wait(seconds: float) -> None:
    os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(seconds)


@pytest.mark.parametrize("code", [_finalizer_then_wait, _signal_then_wait])
def test_a_signal_stops_the_run_wherever_it_lands(code):
    started = time.monotonic()
    with stop_on_signals(), pytest.raises(Stopped) as caught:
        code(5.0)
    assert caught.value.signum == signal.SIGTERM
    assert time.monotonic() - started < 4, "stopped well before the wait ran out"
