"""`make chaos`'s reading of what happened: which object got which emails, and why a second one.

An extra copy is explained by an unanswered send (the SendGrid stand-in accepted and hung, or the
function gave up on SendGrid at its deadline) or by a lost `sent` mark in the ledger (the function's
`sent` line carries ``ledger_error``) of the copy before it; anything else (a cause on the last copy
included) is an unexplained duplicate.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.standin import Acceptance, StandIn

if TYPE_CHECKING:
    from notifier.tools.localcloud import FakeGcsServer

STATE = "chaos-state"  # the state bucket, where dead letters are found
CAUSES = ("accepted, then timed out", "ledger missed `sent`")
_SENDGRID_TIMED_OUT = "SendGrid unreachable: timed out"
_NAME_IN_SUBJECT = re.compile(r"Uploaded: (chaos/\d+\.csv) ")


def acceptances(sendgrid: StandIn) -> Iterator[tuple[str, Acceptance]]:
    """(object, acceptance) for every message the stand-in accepted."""
    for acceptance in list(sendgrid.accepted):
        match = _NAME_IN_SUBJECT.search(acceptance.subject)
        if match:
            yield match[1], acceptance


@dataclass
class FunctionLog:
    """What the instances' outcome lines say could explain a second email about an object: when
    (time.time()) a `sent` line carried ``ledger_error``, and when the function gave up on SendGrid."""

    ledger_failures: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    cut_sends: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def read(cls, workdir: Path) -> FunctionLog:
        log = cls()
        for path in workdir.glob("instance-*.log"):
            for entry in _entries(path):
                name, outcome = entry.get("object", ""), entry.get("outcome")
                if outcome == "sent" and entry.get("ledger_error"):
                    log.ledger_failures[name].append(_timestamp(entry))
                elif outcome == "retrying" and str(entry.get("error")).startswith(_SENDGRID_TIMED_OUT):
                    log.cut_sends[name].append(_timestamp(entry))
        return log


def _entries(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON lines of a log; others (a traceback, a last line cut by a SIGKILL) are skipped."""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            entry = json.loads(line) if line.startswith("{") else None
        except ValueError:
            continue
        if isinstance(entry, dict) and isinstance(entry.get("time"), str):
            yield entry


def _timestamp(entry: dict[str, Any]) -> float:
    try:
        return datetime.fromisoformat(entry["time"]).timestamp()
    except ValueError:
        return float("nan")  # never within a window: explains nothing


# When a cause is logged, relative to the acceptance of the copy whose send it cut short (the log's
# milliseconds against the stand-in's clock: a little early is the same send) or whose `sent` mark
# it lost (the storage client's retries, three times over, take a while: only the next copy bounds it).
CUT_WINDOW = (-0.5, 3.0)
LEDGER_WINDOW = (-0.5, math.inf)


def explain(copies: list[Acceptance], cut_sends: list[float], ledger_failures: list[float]) -> tuple[int, int, int]:
    """(extra copies, how many an unanswered send explains, how many a lost `sent` mark explains).

    Copy k+1 exists because copy k's send was not recorded as sent, so its cause is attached to
    copy k and comes before copy k+1: copy k was accepted and then hung on (the client was never
    told), or the function gave up on SendGrid just after copy k was accepted (its `retrying` line
    says SendGrid timed out: its deadline may have cut an answer on its way), or copy k's `sent`
    line carries ``ledger_error``. A cause attached to the last copy explains nothing. A give-up
    just after a hung acceptance is that same send: one cause, counted once."""
    ordered = sorted(copies, key=lambda copy: copy.at)
    cuts, ledger = sorted(cut_sends), sorted(ledger_failures)
    timed_out = lost_marks = 0
    for copy, following in pairwise(ordered):
        cut = _take(cuts, copy.at, following.at, CUT_WINDOW)
        if copy.ambiguous or cut is not None:
            timed_out += 1
        elif _take(ledger, copy.at, following.at, LEDGER_WINDOW) is not None:
            lost_marks += 1
    return len(ordered) - 1, timed_out, lost_marks


def _take(times: list[float], accepted: float, next_accepted: float, window: tuple[float, float]) -> float | None:
    """The first of ``times`` within ``window`` of ``accepted`` and before ``next_accepted``,
    removed (a cause explains one copy); None if there is none."""
    for index, at in enumerate(times):
        if window[0] <= at - accepted <= window[1] and at < next_accepted:
            return times.pop(index)
    return None


def report(names: list[str], sendgrid: StandIn, dead: dict[str, str], log: FunctionLog,
           statuses: dict[int, int], injected: dict[str, int], tally: Any,
           args: argparse.Namespace, problems: list[str], digest_lines: Iterable[str] = ()) -> int:  # fmt: skip
    emails: dict[str, list[Acceptance]] = defaultdict(list)
    for name, acceptance in acceptances(sendgrid):
        emails[name].append(acceptance)
    lost = [name for name in names if name not in emails and name not in dead]
    by_cause, unexplained = Counter(), []
    for name, copies in emails.items():
        extra, timed_out, ledger = explain(copies, log.cut_sends.get(name, []), log.ledger_failures.get(name, []))
        by_cause.update({CAUSES[0]: timed_out, CAUSES[1]: ledger, "duplicates": extra})
        if timed_out + ledger < extra:
            unexplained.append(name)
    seconds = tally.seconds
    row = "  {:<29}{}".format
    uploads = len(names) + min(getattr(args, "bulk", 0), args.events)  # the digest phase's too
    print(f"chaos run: {uploads} objects uploaded to fake-gcs-server ({args.shards} shards) in"
          f" {seconds.get('upload', 0):.1f}s; {len(tally.republished)} notifications published twice")  # fmt: skip
    print(row("notifications published:", f"{sum(tally.published.values())} ({len(tally.published)} objects)"))
    print(row("pushes by HTTP status:", statuses))
    print(row("SendGrid stand-in answered:", dict(sorted(sendgrid.answered.items()))))
    print(row("state-bucket faults:", injected))
    print(row("state-bucket outage:", f"{args.outage:.0f}s, every ledger call 503 (the 'status 503' above)"))
    print(row("emails accepted:", f"{sum(len(c) for c in emails.values())} for {len(emails)} objects"))
    print(row("lost:", len(lost)))
    print(row("dead-lettered:", f"{len(dead)} (in gs://{STATE}/deadletter/, replayable)"))
    print(row("duplicates:", by_cause["duplicates"]))
    for cause in CAUSES:
        print(row(f"  {cause}:", by_cause[cause]))
    print(row("unexplained duplicates:", len(unexplained)))
    print(row("time:", f"{seconds.get('total', 0):.0f}s: start {seconds.get('start', 0):.0f}s, upload"
                       f" {seconds.get('upload', 0):.0f}s, then every object's email in"
                       f" {seconds.get('all', float('nan')):.0f}s and nothing left to redeliver in"
                       f" {seconds.get('wait', 0):.0f}s"))  # fmt: skip
    for line in digest_lines:  # the digest phase's (bench/chaos_digest.py)
        print(line)
    for name in (lost + unexplained)[:10]:
        print(f"    e.g. {name}: {'lost' if name in lost else 'unexplained duplicate'}")
    for problem in problems:
        print(f"FAIL: {problem}")
    ok = not lost and not unexplained and not problems
    print("PASS" if ok else "FAIL", flush=True)
    return 0 if ok else 1


def dead_letters(state: FakeGcsServer, bucket: str = STATE) -> dict[str, str]:
    """object → gs:// URI of its dead letter in ``bucket`` (what `notifier replay` reads)."""
    found = {}
    for blob in state.client().bucket(bucket).list_blobs(prefix="deadletter/"):
        try:
            found[json.loads(blob.download_as_bytes())["event"]["name"]] = f"gs://{bucket}/{blob.name}"
        except (ValueError, KeyError, TypeError):
            continue  # not a letter the function wrote: it stands for nothing
    return found
