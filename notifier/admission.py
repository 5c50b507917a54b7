"""Admission control: at most ``NOTIFY_MAX_IN_FLIGHT`` requests handled at once per instance.

Cloud Run never sends an instance more than its ``--concurrency``, so deployed this is a safety
net; a push straight at one instance (a local Pub/Sub emulator) relies on it. A request over the cap
is refused at once (notifier.http answers 429, which every platform redelivers), and the refusals
are said in one WARNING line per :data:`REPORT_EVERY` seconds at most: a burst refused request by
request would flood the log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from notifier import log

REPORT_EVERY = 10.0  # seconds between two WARNING lines about refusals, at least


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

    def __init__(self, limit: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        self._lock = threading.Lock()
        self._inside = 0
        self._unreported = 0  # refusals no line has counted yet
        self._last_line: float | None = None  # when the previous line was logged

    @property
    def in_flight(self) -> int:
        return self._inside

    def enter(self) -> bool:
        """Take a slot; False (the refusal counted, maybe logged) when all are taken."""
        with self._lock:
            admitted = self._inside < self.limit
            if admitted:
                self._inside += 1
            else:
                self._unreported += 1
            due = None if admitted else self._due()
        _report(due)
        return admitted

    def leave(self) -> None:
        """Give back the slot :meth:`enter` took; refusals still unreported are said if it is time."""
        with self._lock:
            self._inside = max(0, self._inside - 1)
            due = self._due() if self._unreported else None
        _report(due)

    def _due(self) -> Refusals | None:
        """The refusals to log now, if a line is due (called under the lock)."""
        now = self._clock()
        if self._last_line is not None and now - self._last_line < REPORT_EVERY:
            return None
        since = None if self._last_line is None else now - self._last_line
        due = Refusals(self._unreported, self.limit, since)
        self._unreported, self._last_line = 0, now
        return due


def _report(due: Refusals | None) -> None:
    """Outside the lock: a slow stdout never holds up the requests entering."""
    if due is not None:
        log.log(log.get_logger(), logging.WARNING, due.message(), refused=due.refused, max_in_flight=due.limit)
