"""``make sandbox``'s scheduled flush: ``flush_digests`` served beside the event function, and a
thread that POSTs to it at the top of every minute, as the Cloud Scheduler job of a deployment
does (``deploy/deploy.sh flush``), printing one short line for each run that did something. The
function's log lines also go, through :class:`AfterAnswer`, to SendGrid's player, so that each digest
sent gets its delivery events as a single email does.
"""

from __future__ import annotations

import contextlib
import math
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Generic, TypeVar

from notifier.flush import FLUSH_BUDGET_SECONDS
from notifier.log import LINE_LIMIT, for_terminal
from notifier.tools.localcloud import json_object
from notifier.tools.processes import local_request, start_server, stop_group, wait_until_serving
from notifier.tools.sandbox_folder import SandboxDir, SandboxError
from notifier.tools.sandbox_output import say, shown

TARGET = "flush_digests"
PERIOD = 60.0  # notifier.digest.SCHEDULE, "* * * * *": on the minute, every minute
READY_TIMEOUT = 60.0
ANSWER_BYTES = 16 * 1024  # the answer is a few counts; anything longer is cut
SHOWN_CHARS = 200
MAX_HELD = 1000  # items waiting for a run's answer (or for the player): far more digests than one run sends
T = TypeVar("T")


def next_run(now: float) -> float:
    """The next top of a minute after ``now`` (epoch seconds, UTC)."""
    return (math.floor(now / PERIOD) + 1) * PERIOD


def post_flush(url: str, timeout: float) -> tuple[int, bytes]:
    """Cloud Scheduler's call: an empty POST; the status and the start of the body, whatever the status."""
    return local_request(url, b"", timeout=timeout, answer_bytes=ANSWER_BYTES)


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


class AfterAnswer(Generic[T]):
    """What ``parse`` finds in the flush function's log lines, handed on only once the run that
    logged it has answered: the flush records a digest's Sending just after its ``sent`` line, and
    the webhook takes events only for an id it knows (and remembers an unknown one for a minute).
    A line read after the answer (its pipe read late) is handed on at once. Kept until a receiver
    is attached (the webhook starts after the flush); at most MAX_HELD, the oldest dropped."""

    def __init__(self, parse: Callable[[str], T | None]) -> None:
        self._parse = parse
        self._lock = threading.Lock()
        self._held: deque[T] = deque(maxlen=MAX_HELD)
        self._running = False
        self._deliver: Callable[[T], None] | None = None

    def offer(self, line: str) -> None:
        if (item := self._parse(line)) is not None:
            with self._lock:
                self._held.append(item)
            self._hand_on()

    def attach(self, deliver: Callable[[T], None]) -> None:
        with self._lock:
            self._deliver = deliver
        self._hand_on()

    def begin(self) -> None:
        """A run was asked for: what it logs waits for its answer."""
        with self._lock:
            self._running = True

    def end(self) -> None:
        with self._lock:
            self._running = False
        self._hand_on()

    def _hand_on(self) -> None:
        with self._lock:
            if self._running or self._deliver is None:
                return
            items, deliver = list(self._held), self._deliver
            self._held.clear()
        for item in items:
            deliver(item)


class FlushScheduler:
    """POSTs to the flush at the top of every minute until stopped. ``wait(seconds)`` returns True
    once stopped (a test answers it at once); ``say`` prints a run's line; ``gate`` is told when
    each run begins and has answered."""

    def __init__(
        self, url: str, *, outbox: str, log: str, say: Callable[[str], None] = say,
        clock: Callable[[], float] = time.time, wait: Callable[[float], bool] | None = None,
        timeout: float = FLUSH_BUDGET_SECONDS + 60.0, gate: AfterAnswer | None = None,
    ) -> None:  # fmt: skip
        self.url, self.outbox, self.log, self.timeout, self.gate = url, outbox, log, timeout, gate
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
                status, body = self._post()
            except OSError as error:  # the health check stops the sandbox if the function is gone
                text = f"  error: the flush at {datetime.fromtimestamp(at, UTC):%H:%M UTC} could not reach the flush"
                self._say(f"{text} function ({for_terminal(str(error), SHOWN_CHARS)}); its log: {self.log}")
                continue
            if not self._stopped.is_set() and (line := run_line(at, status, body, outbox=self.outbox, log=self.log)):
                self._say(line)

    def _post(self) -> tuple[int, bytes]:
        if self.gate is None:
            return post_flush(self.url, self.timeout)
        self.gate.begin()
        try:
            return post_flush(self.url, self.timeout)
        finally:
            self.gate.end()

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="flush-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """No further run; one under way ends with the flush function, which is stopped next."""
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout=1.0)


@contextmanager
def scheduled_flush(url: str, *, outbox: str, log: str, gate: AfterAnswer | None = None) -> Iterator[FlushScheduler]:
    scheduler = FlushScheduler(url, outbox=outbox, log=log, gate=gate)
    scheduler.start()
    try:
        yield scheduler
    finally:
        scheduler.stop()


def _pump(stream: IO[bytes], log: IO[bytes], also: Callable[[str], None]) -> None:
    for raw in iter(lambda: stream.readline(LINE_LIMIT), b""):  # a longer line arrives in pieces
        with contextlib.suppress(OSError, ValueError):  # a full disk or a closed log stops no line
            log.write(raw)
            log.flush()
        also(raw.decode("utf-8", "replace").rstrip("\r\n"))


@contextmanager
def running_flush_function(
    port: int, env: Mapping[str, str], log: IO[bytes], *, also: Callable[[str], None] | None = None
) -> Iterator[str]:
    """functions-framework serving ``flush_digests`` with the event function's settings, in its own
    process group, its output in ``log`` (and each line to ``also``, read by a thread); its URL
    once it answers; stopped on the way out."""
    url = f"http://127.0.0.1:{port}"
    output = log if also is None else subprocess.PIPE
    process = start_server(port, dict(env), output, target=TARGET, start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        if also is not None:
            assert process.stdout is not None
            threading.Thread(target=_pump, args=(process.stdout, log, also), name="flush-output", daemon=True).start()
        try:
            wait_until_serving(url, process, READY_TIMEOUT)
        except OSError as error:
            raise SandboxError(f"the flush function: {error} (its log: {log.name})") from None
        yield url
    finally:
        stop_group(process)


def start_flush(
    stack: ExitStack, sandbox: SandboxDir, port: int, env: Mapping[str, str], log: IO[bytes], started: list[str],
    gate: AfterAnswer | None = None,
) -> None:  # fmt: skip
    """The sandbox's part: flush_digests with the function's settings, called at the top of every
    minute as the deployed Cloud Scheduler job calls it, its lines to ``gate``; the scheduler stops
    first, then the function."""
    started.append("the flush function")
    url = stack.enter_context(running_flush_function(port, env, log, also=gate.offer if gate else None))
    cwd = Path.cwd()
    stack.enter_context(
        scheduled_flush(url, outbox=shown(sandbox.outbox, cwd), log=shown(Path(log.name), cwd), gate=gate)
    )
    say(f"sandbox: flush_digests called every minute, on the minute (its log: {shown(Path(log.name), cwd)})")
