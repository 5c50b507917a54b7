"""Admission control: at most ``NOTIFY_MAX_IN_FLIGHT`` requests handled at once per instance.

Cloud Run never sends an instance more than its ``--concurrency``, so deployed this is a safety
net; a push straight at one instance (a local Pub/Sub emulator) relies on it. A request over the cap
is refused at once (notifier.http answers 429). Pub/Sub push redelivers a 429, and so do Eventarc and
1st-gen event triggers when deployed with ``--retry`` (deploy.sh's default); with ``--no-retry`` a
refused event is dropped. The refusals are said in one WARNING line per :data:`REPORT_EVERY` seconds
at most (a burst refused request by request would flood the log); those counted after a line are said
when the next one is due, by a timer if no later request comes to say them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from notifier import log

REPORT_EVERY = 10.0  # seconds between two WARNING lines about refusals, at least

# Calls a function once, after a delay in seconds, on another thread; returns at once.
Timer = Callable[[float, Callable[[], None]], None]


def daemon_timer(delay: float, call: Callable[[], None]) -> None:
    """The default :data:`Timer`: a daemon thread, so a pending line never holds up the exit."""
    timer = threading.Timer(delay, call)
    timer.daemon = True
    timer.start()


@dataclass(frozen=True, slots=True)
class Refusals:
    """What one WARNING line reports."""

    refused: int
    limit: int
    seconds: float | None  # since the previous line; None: the first

    def message(self) -> str:
        since = "" if self.seconds is None else f" in the last {self.seconds:.0f}s"
        return (
            f"{self.refused} request(s) refused with 429{since}: {self.limit} requests at once is this"
            " instance's cap (NOTIFY_MAX_IN_FLIGHT)"
        )


class Admission:
    """A counter of the requests inside, under a lock; thread-safe."""

    def __init__(self, limit: int, *, clock: Callable[[], float] = time.monotonic, timer: Timer = daemon_timer) -> None:
        self.limit = limit
        self._clock = clock
        self._timer = timer
        self._lock = threading.Lock()
        self._inside = 0
        self._unreported = 0  # refusals no line has counted yet
        self._last_line: float | None = None  # when the previous line was logged
        self._timer_pending = False  # at most one: the refusals it will say are all counted here

    @property
    def in_flight(self) -> int:
        return self._inside

    def enter(self) -> bool:
        """Take a slot; False (the refusal counted, maybe logged) when all are taken."""
        with self._lock:
            admitted = self._inside < self.limit
            if admitted:
                self._inside += 1
                due, wait = None, None
            else:
                self._unreported += 1
                due, wait = self._settle()
        self._after(due, wait)
        return admitted

    def leave(self) -> None:
        """Give back the slot :meth:`enter` took; refusals still unreported are said if it is time."""
        with self._lock:
            self._inside = max(0, self._inside - 1)
            due, wait = self._settle()
        self._after(due, wait)

    def _on_timer(self) -> None:
        with self._lock:
            self._timer_pending = False
            due, wait = self._settle()  # early (another clock than the timer's): armed again
        self._after(due, wait)

    def _settle(self) -> tuple[Refusals | None, float | None]:
        """The refusals to log now, or the seconds until a timer must say them (under the lock)."""
        if not self._unreported:
            return None, None
        now = self._clock()
        if self._last_line is not None and (wait := self._last_line + REPORT_EVERY - now) > 0:
            if self._timer_pending:
                return None, None
            self._timer_pending = True
            return None, wait
        since = None if self._last_line is None else now - self._last_line
        due = Refusals(self._unreported, self.limit, since)
        self._unreported, self._last_line = 0, now
        return due, None

    def _after(self, due: Refusals | None, wait: float | None) -> None:
        """Outside the lock: a slow stdout never holds up the requests entering."""
        if wait is not None:
            try:
                self._timer(wait, self._on_timer)
            except RuntimeError:  # no thread to be had: a later refusal or leave arms one again
                with self._lock:
                    self._timer_pending = False
        if due is not None:
            log.log(log.get_logger(), logging.WARNING, due.message(), refused=due.refused, max_in_flight=due.limit)
