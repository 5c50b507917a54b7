"""``make sandbox``'s scheduled flush: ``flush_digests`` served beside the event function, and a
thread that POSTs to it at the top of every minute, as the Cloud Scheduler job of a deployment
does (``deploy/deploy.sh flush``), printing one short line for each run that did something.
"""

from __future__ import annotations

import math
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import IO

from notifier.flush import FLUSH_BUDGET_SECONDS
from notifier.log import for_terminal
from notifier.tools.localcloud import json_object
from notifier.tools.processes import start_server, stop_group, wait_until_serving
from notifier.tools.sandbox_folder import SandboxError

TARGET = "flush_digests"
PERIOD = 60.0  # notifier.digest.SCHEDULE, "* * * * *": on the minute, every minute
READY_TIMEOUT = 60.0
ANSWER_BYTES = 16 * 1024  # the answer is a few counts; anything longer is cut
SHOWN_CHARS = 200


def next_run(now: float) -> float:
    """The next top of a minute after ``now`` (epoch seconds, UTC)."""
    return (math.floor(now / PERIOD) + 1) * PERIOD


def post_flush(url: str, timeout: float) -> tuple[int, bytes]:
    """Cloud Scheduler's call: an empty POST; the status and the start of the body, whatever the status."""
    request = urllib.request.Request(url, data=b"", method="POST")  # noqa: S310 - our loopback server
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - our loopback server
            return response.status, response.read(ANSWER_BYTES)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read(ANSWER_BYTES)


def run_line(at: float, status: int, body: bytes, *, outbox: str, log: str) -> str | None:
    """One run as one line: what it sent (nothing when it had nothing to do), or why it failed."""
    when = datetime.fromtimestamp(at, UTC).strftime("%H:%M UTC")
    summary = json_object(body)
    if status != 200 or summary is None:
        said = str(summary.get("error", "")) if summary else body.decode("utf-8", "replace")
        shown = for_terminal(said.strip(), SHOWN_CHARS)
        return f"  error: the flush at {when} answered {status}: {shown}; its log: {log}"
    outcomes = summary.get("outcomes") if isinstance(summary.get("outcomes"), dict) else {}
    parts = []
    if sent := summary.get("sent"):
        parts.append(f"{sent} digest(s) sent ({summary.get('events')} event(s)) → {outbox}")
    if others := {k: v for k, v in outcomes.items() if k != "sent"}:
        listed = ", ".join(f"{count} {outcome}" for outcome, count in sorted(others.items()))
        parts.append(f"{for_terminal(listed, SHOWN_CHARS)}; its log: {log}")
    return f"flushed   {when}: {'; '.join(parts)}" if parts else None


class FlushScheduler:
    """POSTs to the flush at the top of every minute until stopped. ``wait(seconds)`` returns True
    once stopped (a test answers it at once); ``say`` prints a run's line."""

    def __init__(
        self, url: str, *, outbox: str, log: str, say: Callable[[str], None] = print,
        clock: Callable[[], float] = time.time, wait: Callable[[float], bool] | None = None,
        timeout: float = FLUSH_BUDGET_SECONDS + 60.0,
    ) -> None:  # fmt: skip
        self.url, self.outbox, self.log, self.timeout = url, outbox, log, timeout
        self._say, self._clock = say, clock
        self._stopped = threading.Event()
        self._wait = wait or self._stopped.wait
        self._thread: threading.Thread | None = None

    def run(self) -> None:
        """The thread's loop (a test calls it directly)."""
        while True:
            now = self._clock()
            if self._wait(max(0.0, next_run(now) - now)):
                return
            at = self._clock()
            try:
                status, body = post_flush(self.url, self.timeout)
            except OSError as error:  # the health check stops the sandbox if the function is gone
                text = f"  error: the flush at {datetime.fromtimestamp(at, UTC):%H:%M UTC} could not reach the flush"
                self._say(f"{text} function ({for_terminal(str(error), SHOWN_CHARS)}); its log: {self.log}")
                continue
            if not self._stopped.is_set() and (line := run_line(at, status, body, outbox=self.outbox, log=self.log)):
                self._say(line)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="flush-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """No further run; one under way ends with the flush function, which is stopped next."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)


@contextmanager
def scheduled_flush(url: str, *, outbox: str, log: str) -> Iterator[FlushScheduler]:
    scheduler = FlushScheduler(url, outbox=outbox, log=log)
    scheduler.start()
    try:
        yield scheduler
    finally:
        scheduler.stop()


@contextmanager
def running_flush_function(port: int, env: Mapping[str, str], log: IO[bytes]) -> Iterator[str]:
    """functions-framework serving ``flush_digests`` with the event function's settings, in its own
    process group, its output in ``log``; its URL once it answers; stopped on the way out."""
    url = f"http://127.0.0.1:{port}"
    process = start_server(port, dict(env), log, target=TARGET, start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        try:
            wait_until_serving(url, process, READY_TIMEOUT)
        except OSError as error:
            raise SandboxError(f"the flush function: {error} (its log: {log.name})") from None
        yield url
    finally:
        stop_group(process)
