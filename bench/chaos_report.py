"""`make chaos`'s reading of what happened: which object got which emails, and why a second one.

An extra copy is explained by an unanswered send (the SendGrid stand-in accepted and hung, or the
function gave up on SendGrid at its deadline) or by a lost `sent` mark in the ledger (the function's
`sent` line carries ``ledger_error``); anything else is an unexplained duplicate.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.standin import Acceptance, StandIn

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
    """What the instances' outcome lines say could explain a second email about an object."""

    ledger_failures: Counter = field(default_factory=Counter)  # `sent` lines with ledger_error
    cut_sends: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))  # SendGrid timed out

    @classmethod
    def read(cls, workdir: Path) -> FunctionLog:
        log = cls()
        for path in workdir.glob("instance-*.log"):
            for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
                entry = json.loads(line) if line.startswith("{") else {}
                name, outcome = entry.get("object", ""), entry.get("outcome")
                if outcome == "sent" and entry.get("ledger_error"):
                    log.ledger_failures[name] += 1
                elif outcome == "retrying" and str(entry.get("error")).startswith(_SENDGRID_TIMED_OUT):
                    log.cut_sends[name].append(datetime.fromisoformat(entry["time"]).timestamp())
        return log


def explain(copies: list[Acceptance], cut_sends: list[float], ledger_failures: int) -> tuple[int, int, int]:
    """(extra copies, how many an unanswered send explains, how many a lost `sent` mark explains).

    An unanswered send is one the stand-in accepted and then hung on, or one the function gave up
    on (its `retrying` line says SendGrid timed out: its deadline may have cut an answer that was on
    its way). A give-up within seconds after a hung acceptance is that same send, counted once."""
    extra = len(copies) - 1
    hung = sorted(copy.at for copy in copies if copy.ambiguous)
    unmatched = 0
    for gave_up in sorted(cut_sends):
        same = next((at for at in hung if -0.5 <= gave_up - at <= 3.0), None)
        if same is None:
            unmatched += 1
        else:
            hung.remove(same)
    timed_out = min(extra, sum(copy.ambiguous for copy in copies) + unmatched)
    return extra, timed_out, min(extra - timed_out, ledger_failures)


def report(names: list[str], sendgrid: StandIn, dead: dict[str, str], log: FunctionLog,
           statuses: dict[int, int], injected: dict[str, int], tally: Any,
           args: argparse.Namespace, problems: list[str]) -> int:  # fmt: skip
    emails: dict[str, list[Acceptance]] = defaultdict(list)
    for name, acceptance in acceptances(sendgrid):
        emails[name].append(acceptance)
    lost = [name for name in names if name not in emails and name not in dead]
    by_cause, unexplained = Counter(), []
    for name, copies in emails.items():
        extra, timed_out, ledger = explain(copies, log.cut_sends.get(name, []), log.ledger_failures[name])
        by_cause.update({CAUSES[0]: timed_out, CAUSES[1]: ledger, "duplicates": extra})
        if timed_out + ledger < extra:
            unexplained.append(name)
    seconds = tally.seconds
    row = "  {:<29}{}".format
    print(f"chaos run: {len(names)} objects uploaded to fake-gcs-server ({args.shards} shards) in"
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
    for name in (lost + unexplained)[:10]:
        print(f"    e.g. {name}: {'lost' if name in lost else 'unexplained duplicate'}")
    for problem in problems:
        print(f"FAIL: {problem}")
    ok = not lost and not unexplained and not problems
    print("PASS" if ok else "FAIL", flush=True)
    return 0 if ok else 1
