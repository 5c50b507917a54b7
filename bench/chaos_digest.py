"""`make chaos`'s digest phase: the first ``--bulk`` uploads go under ``bulk/``, whose rule holds
them for a one-minute digest, while the faults are on; a scheduler flushes every minute, as Cloud
Scheduler calls the flush entry point (``main.flush_digests``, served by an instance of its own).

Checks (bench/chaos_report.py prints them): the digests' counts add up to the bulk uploads (each
digest counted once, whatever copies SendGrid got); the state bucket's records of what each digest
included name every held event exactly once and each window in one part (one digest per window
for the one envelope); nothing is still held at the end; and every second copy of a digest has a
cause (accepted then timed out, or the flush's `sent` mark lost), as for single emails.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.standin import Acceptance
from notifier.tools.processes import free_port, stop_server, wait_until_serving

BULK_PREFIX = "bulk/"
WINDOW = "1m"
# Where the state bucket's faults and outage land: the ledger's records and the digests' objects.
STATE_PREFIXES = ("ledger/", "digest/", "digested/", "cap/")
RULES = f"""[defaults]
from = "chaos@example.com"
to = ["ops@example.com"]

[[rules]]
name = "chaos"
include = ["chaos/**"]

[[rules]]
name = "bulk"
include = ["{BULK_PREFIX}**"]
digest = "{WINDOW}"
"""
FLUSH_TIMEOUT = 300.0  # one flush's whole answer (its budget is 240 s)
_DIGEST_SUBJECT = re.compile(r"^(\d+) (?:new objects|deleted objects|changes) in gs://\S+/" + BULK_PREFIX)
_SINGLE_SUBJECT = re.compile(r"Uploaded: (" + BULK_PREFIX + r"\d+\.csv) ")
_SENDGRID_TIMED_OUT = "SendGrid unreachable: timed out"


def bulk_name(index: int) -> str:
    return f"{BULK_PREFIX}{index:05d}.csv"


def state_calls(request: Any) -> bool:
    """The state bucket's calls the faults are for (ProxiedRequest): not dead letters or lookups."""
    return (request.object_name or "").startswith(STATE_PREFIXES)


def rules_file(workdir: Path) -> Path:
    path = workdir / "notify.toml"
    path.write_text(RULES)
    return path


def events_in(subject: str) -> int | None:
    """How many bulk uploads an email is about: a digest's count, 1 for the ordinary email a
    one-event digest sends; None for an email about something else."""
    if match := _DIGEST_SUBJECT.match(subject):
        return int(match[1])
    return 1 if _SINGLE_SUBJECT.search(subject) else None


def digests(accepted: Iterable[Acceptance]) -> dict[str, list[Acceptance]]:
    """Each bulk email's copies by its notification id (a digest's: its group and windows)."""
    found: dict[str, list[Acceptance]] = {}
    for acceptance in accepted:
        if events_in(acceptance.subject) is not None:
            found.setdefault(acceptance.notification_id, []).append(acceptance)
    return found


def counted(found: dict[str, list[Acceptance]]) -> int:
    """Bulk uploads the digests account for, each digest once (its largest copy: a retry after an
    unanswered send may have found a late event more)."""
    return sum(max(events_in(copy.subject) or 0 for copy in copies) for copies in found.values())


@dataclass(frozen=True)
class Records:
    """What the state bucket says the digests did: ids per (group, window, part) record, objects held."""

    parts: dict[tuple[str, int, int], list[str]]
    held: int

    def problems(self, bulk: int) -> list[str]:
        ids = Counter(i for listed in self.parts.values() for i in listed)
        twice = [i for i, n in ids.items() if n > 1]
        windows = Counter((group, window) for group, window, _ in self.parts)
        problems = []
        if len(ids) != bulk:
            problems.append(f"the digests' records name {len(ids)} held events, not the {bulk} bulk uploads")
        if twice:
            problems.append(f"{len(twice)} held event(s) included in two digests (e.g. {twice[0]})")
        if split := [key for key, n in windows.items() if n > 1]:
            problems.append(f"{len(split)} window(s) sent in more than one digest (e.g. {split[0]})")
        if self.held:
            problems.append(f"{self.held} event(s) still held after the last flush")
        return problems


_RECORD = re.compile(r"^digested/([0-9a-f]+)/(\d+)\.(\d+)\.json$")


def read_records(client: Any, bucket: str) -> Records:
    """The included records (digested/<group>/<window>.<part>.json) and the count of held entries."""
    parts = {}
    for blob in client.list_blobs(bucket, prefix="digested/"):
        if match := _RECORD.match(blob.name):
            listed = json.loads(blob.download_as_bytes())
            parts[(match[1], int(match[2]), int(match[3]))] = [str(i) for i in listed]
    held = sum(1 for _ in client.list_blobs(bucket, prefix="digest/"))
    return Records(parts, held)


@dataclass
class FlushLog:
    """The flush's lines that could explain a second copy of a digest (time.time() of each)."""

    cut_sends: list[float] = field(default_factory=list)
    ledger_failures: list[float] = field(default_factory=list)
    sent: int = 0

    @classmethod
    def read(cls, path: Path) -> FlushLog:
        from bench.chaos_report import _entries, _timestamp

        log = cls()
        for entry in _entries(path) if path.exists() else ():
            if entry.get("rule") != "bulk" or "group" not in entry:
                continue
            outcome = entry.get("outcome")
            if outcome == "sent":
                log.sent += 1
                if entry.get("ledger_error"):
                    log.ledger_failures.append(_timestamp(entry))
            elif outcome == "retrying" and str(entry.get("reason")).startswith(_SENDGRID_TIMED_OUT):
                log.cut_sends.append(_timestamp(entry))
        return log


class Scheduler:
    """Calls ``flush`` at the top of every minute, as Cloud Scheduler's `* * * * *` job does, until
    stopped; :meth:`flush_now` once more at the end (a redelivery held after the last digest)."""

    def __init__(self, flush: Callable[[], str]) -> None:
        self._flush = flush
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.answers: Counter = Counter()
        self._thread = threading.Thread(target=self._run, name="flush-schedule", daemon=True)

    def __enter__(self) -> Scheduler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10.0)  # a flush in flight is cut short when its instance stops (after this)

    def _run(self) -> None:
        while not self._stop.wait(60.0 - time.time() % 60.0):
            self.flush_now()

    def flush_now(self) -> None:
        with self._lock:  # one flush at a time from here, as one scheduler job runs
            try:
                self.answers[self._flush()] += 1
            except OSError as error:
                self.answers[f"failed: {type(error).__name__}"] += 1


def start_flush(stack: ExitStack, env: dict[str, str], log: Any) -> Callable[[], str]:
    """The flush as deployed: an instance serving ``main.flush_digests``, POSTed to. Until that entry
    point exists, ``Pipeline.flush()`` in a process of its own with the same environment."""
    root = Path(__file__).resolve().parent.parent
    if "def flush_digests" not in (root / "main.py").read_text():
        return lambda: _flush_process(env, log, root)
    port = free_port()
    command = [sys.executable, "-m", "functions_framework", "--target", "flush_digests", "--source",
               str(root / "main.py"), "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    process = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    stack.callback(stop_server, process)
    url = f"http://127.0.0.1:{port}/"
    wait_until_serving(url, process)

    def post() -> str:
        request = urllib.request.Request(url, data=b"", method="POST")  # our own loopback instance
        try:
            with urllib.request.urlopen(request, timeout=FLUSH_TIMEOUT) as answer:  # noqa: S310
                return str(answer.status)
        except urllib.error.HTTPError as error:
            return str(error.code)

    return post


def _flush_process(env: dict[str, str], log: Any, root: Path) -> str:
    code = "from notifier.pipeline import Pipeline; Pipeline.from_environment().flush()"
    finished = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, stdout=log,
                              stderr=subprocess.STDOUT, timeout=FLUSH_TIMEOUT, check=False)  # fmt: skip
    return f"exit {finished.returncode}"


def summary(bulk: int, accepted: Iterable[Acceptance], records: Records, flush_log: FlushLog,
            answers: Counter) -> tuple[list[str], list[str]]:  # fmt: skip
    """The report's digest lines, and what fails the run."""
    from bench.chaos_report import explain

    found = digests(accepted)
    extra = unexplained = 0
    for copies in found.values():
        more, timed_out, lost_marks = explain(copies, flush_log.cut_sends, flush_log.ledger_failures)
        extra += more
        unexplained += more - min(more, timed_out + lost_marks)
    total = counted(found)
    row = "  {:<29}{}".format
    lines = [
        row("digest phase:", f"{bulk} uploads under {BULK_PREFIX} (digest = \"{WINDOW}\"), flushed every minute:"
            f" {dict(sorted(answers.items()))}"),
        row("  digests:", f"{len(found)} ({sum(len(c) for c in found.values())} accepted), counting {total} events;"
            f" {len(records.parts)} window part(s) recorded, {records.held} still held"),
        row("  digest duplicates:", f"{extra}, unexplained {unexplained}"),
    ]  # fmt: skip
    problems = records.problems(bulk)
    if total != bulk:
        problems.append(f"the digests count {total} events, not the {bulk} bulk uploads")
    if unexplained:
        problems.append(f"{unexplained} digest copy(ies) with no cause (accepted-then-timed-out or a lost mark)")
    return lines, problems
