"""`make burst`'s reading of what happened: emails by object (lost, duplicates and their causes, as
`make chaos` explains them), pushes by status and how long each took, the function's lines about
the requests it refused; the verdict, printed and as JSON."""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.balancer import Balancer
from bench.capacity_report import caveats
from bench.chaos_report import FunctionLog, explain
from bench.deployed import Deployment
from bench.standin import Acceptance

_NAME_IN_SUBJECT = re.compile(r"Uploaded: (bulk/part-\d+\.csv) ")
_REFUSAL = "refused with 429"  # in the function's WARNING lines about requests over NOTIFY_MAX_IN_FLIGHT


@dataclass(frozen=True)
class InstanceLog:
    """What the instance's own lines say: its WARNING lines about refused requests (each says how many
    since the last), and how long it took over each email it sent (a `sent` line's duration_ms)."""

    refusals: list[dict[str, Any]]
    sent_seconds: list[float]

    @classmethod
    def read(cls, path: Path) -> InstanceLog:
        log = cls([], [])
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            try:
                entry = json.loads(line) if line.startswith("{") else None
            except ValueError:
                continue  # a traceback's line, or a last line cut short
            if not isinstance(entry, dict):
                continue
            if entry.get("severity") == "WARNING" and _REFUSAL in str(entry.get("message")):
                log.refusals.append(entry)
            elif entry.get("outcome") == "sent" and isinstance(entry.get("duration_ms"), int | float):
                log.sent_seconds.append(entry["duration_ms"] / 1000)
        return log


@dataclass(frozen=True)
class Pushes:
    """What the balancer saw of the pushes: answers by status, each one's seconds, the most at once."""

    statuses: dict[int, int]
    answer_seconds: dict[int, list[float]]
    most_in_flight: int
    in_flight_at_end: int = 0  # when the run stopped waiting: pushes not answered yet

    @classmethod
    def seen_by(cls, balancer: Balancer, in_flight_at_end: int) -> Pushes:
        return cls(dict(balancer.statuses), dict(balancer.answer_seconds), balancer.most_in_flight, in_flight_at_end)

    def seconds(self, kind: str) -> list[float]:
        """Answer times of the 429s, the 2xx, or the other statuses."""
        chosen = {"429": lambda s: s == 429, "2xx": lambda s: 200 <= s < 300,
                  "other": lambda s: s != 429 and not 200 <= s < 300}[kind]  # fmt: skip
        return [seconds for status, each in self.answer_seconds.items() if chosen(status) for seconds in each]


@dataclass(frozen=True)
class Cores:
    """How busy the cores were while the instance was pushed to (from the first push until every
    object had its email, or the deadline): the function's own CPU, and everything on its core and on
    the harness's (bench/capacity.py's cores_busy), so a drain bound by the harness shows as such."""

    seconds: float
    function_cpu: float  # the function's CPU seconds in that time
    function_core: float  # 0-1, every process on the function's core
    harness_core: float  # 0-1, every process on the other core(s): stand-ins, emulator, balancer


def emails_by_object(accepted: list[Acceptance]) -> dict[str, list[Acceptance]]:
    emails: dict[str, list[Acceptance]] = defaultdict(list)
    for acceptance in accepted:
        if match := _NAME_IN_SUBJECT.search(acceptance.subject):
            emails[match[1]].append(acceptance)
    return emails


def spread(seconds: list[float]) -> dict[str, float | int]:
    """How many, and p50 / p99 / max in ms (nearest rank)."""
    ordered = sorted(seconds)
    if not ordered:
        return {"count": 0}

    def rank(share: float) -> float:
        return round(ordered[max(0, math.ceil(share * len(ordered)) - 1)] * 1000, 1)

    return {"count": len(ordered), "p50_ms": rank(0.50), "p99_ms": rank(0.99), "max_ms": rank(1.0)}


def summary(names: list[str], accepted: list[Acceptance], dead: dict[str, str], log: FunctionLog,
            pushes: Pushes, deployed: Deployment, subscriptions: int, seconds: dict[str, float],
            cpu_seconds: float, instance_log: InstanceLog, cores: Cores | None = None) -> dict[str, Any]:  # fmt: skip
    """The run's figures (the JSON written with --out); ``cpu_seconds`` is the function's over the run."""
    emails = emails_by_object(accepted)
    lost = [name for name in names if name not in emails and name not in dead]
    duplicates = unexplained = 0
    for name, copies in emails.items():
        extra, timed_out, ledger = explain(copies, log.cut_sends.get(name, []), log.ledger_failures.get(name, []))
        duplicates += extra
        unexplained += max(0, extra - timed_out - ledger)
    return {
        "instance": {
            "deploy": deployed.describe(),
            "threads": deployed.threads,
            "max_in_flight": deployed.env.get("NOTIFY_MAX_IN_FLIGHT"),
            "deadline_seconds": deployed.env.get("NOTIFY_DEADLINE_SECONDS"),
            "timeout_seconds": deployed.timeout_seconds,
        },
        "subscriptions": subscriptions,
        "push_concurrency": 2 * subscriptions,
        "events": len(names),
        "seconds": {key: round(value, 2) for key, value in seconds.items()},
        "pushes_by_status": {str(status): count for status, count in sorted(pushes.statuses.items())},
        "answers": {kind: spread(pushes.seconds(kind)) for kind in ("429", "2xx", "other")},
        "sent_in_function": spread(instance_log.sent_seconds),
        "slowest_answer_seconds": round(max((max(t) for t in pushes.answer_seconds.values() if t), default=0.0), 3),
        "most_in_flight": pushes.most_in_flight,
        "in_flight_at_end": pushes.in_flight_at_end,
        "emails_accepted": sum(len(copies) for copies in emails.values()),
        "objects_emailed": len(emails),
        "lost": len(lost),
        "lost_examples": lost[:10],
        "dead_lettered": len(dead),
        "dead_letter_examples": sorted(dead.values())[:3],
        "duplicates": duplicates,
        "unexplained_duplicates": unexplained,
        "refusal_warnings": len(refusals := instance_log.refusals),
        "refusals_logged": sum(entry.get("refused", 0) for entry in refusals if isinstance(entry.get("refused"), int)),
        "refusal_examples": [str(entry.get("message")) for entry in refusals[:2]],
        "cpu_seconds": round(cpu_seconds, 1),
        **_busy(cores),
        "cpu_ms_per_event": round(cpu_seconds * 1000 / max(1, len(names)), 2),
        "cpu_ms_per_push": round(cpu_seconds * 1000 / max(1, sum(pushes.statuses.values())), 2),
    }


def _busy(cores: Cores | None) -> dict[str, float | None]:
    """capacity.py's row keys: the function's own CPU, its core's and the harness's, as shares (0-1)."""
    if cores is None or cores.seconds <= 0:
        return {"busy_seconds": None, "function_busy": None, "core_busy": None, "harness_busy": None}
    return {"busy_seconds": round(cores.seconds, 2), "function_busy": round(cores.function_cpu / cores.seconds, 2),
            "core_busy": round(cores.function_core, 2), "harness_busy": round(cores.harness_core, 2)}  # fmt: skip


def problems(results: dict[str, Any]) -> list[str]:
    """Why the run failed, if it did."""
    found = []
    if results["lost"]:
        found.append(f"{results['lost']} objects lost (e.g. {', '.join(results['lost_examples'][:3])})")
    if results["dead_lettered"]:  # nothing is injected here: a dead letter is a delivery that failed
        found.append(f"{results['dead_lettered']} objects dead-lettered with nothing injected (e.g."
                     f" {', '.join(results['dead_letter_examples'])}; the state bucket's files are kept with"
                     " the logs, in state/)")  # fmt: skip
    if "quiet" not in results["seconds"]:
        found.append(f"the pushes never went quiet: still coming {_until_the_end(results)}")
    if results["in_flight_at_end"]:
        found.append(f"{results['in_flight_at_end']} pushes still in flight at the balancer when the run ended")
    if results["unexplained_duplicates"]:
        found.append(f"{results['unexplained_duplicates']} duplicate emails with no cause")
    timeout = results["instance"]["timeout_seconds"]
    if results["slowest_answer_seconds"] > timeout:
        found.append(f"a push was answered after {results['slowest_answer_seconds']:.1f}s, longer than the"
                     f" function's {timeout}s timeout")  # fmt: skip
    return found


def report(results: dict[str, Any], out: Path | None) -> int:
    """Print ``results`` (and write them to ``out``); 0 if the run passed, else 1."""
    failed = problems(results)
    results = {**results, "problems": failed, "passed": not failed}
    instance, seconds, answers = results["instance"], results["seconds"], results["answers"]
    row = "  {:<29}{}".format
    print(f"burst run: {results['events']} finalize notifications published to the Pub/Sub emulator in"
          f" {seconds.get('publish', 0):.1f}s ({results['subscriptions']} topics), then pushed")  # fmt: skip
    print(row("instance (deploy.sh):", f"{instance['deploy']}; THREADS={instance['threads']},"
              f" NOTIFY_MAX_IN_FLIGHT={instance['max_in_flight'] or 'unset'}; one pinned core"))  # fmt: skip
    print(row("pushes at once:", f"{results['push_concurrency']} (2 per subscription), ack deadline"
              f" {instance['timeout_seconds']}s (the function's --timeout)"))  # fmt: skip
    print(row("pushes by HTTP status:", results["pushes_by_status"]))
    for kind in ("429", "2xx", "other"):
        if answers[kind]["count"]:
            print(row(f"answer time, {kind}:", _spread_text(answers[kind])))
    if results["sent_in_function"]["count"]:
        print(row("  of which in the function:", _spread_text(results["sent_in_function"]) + " (its `sent` lines)"))
    print(row("most in flight at instance:", results["most_in_flight"]))
    print(row("emails accepted:", f"{results['emails_accepted']} for {results['objects_emailed']} objects"))
    print(row("lost:", results["lost"]))
    print(row("dead-lettered:", results["dead_lettered"]))
    print(row("duplicates:", f"{results['duplicates']} (unexplained {results['unexplained_duplicates']})"))
    print(row("refusals logged:", f"{results['refusal_warnings']} WARNING lines, counting"
              f" {results['refusals_logged']} refusals"))  # fmt: skip
    for message in results["refusal_examples"]:
        print(row("", f"e.g. {message}"))
    print(row("function CPU:", f"{results['cpu_seconds']}s over the run: {results['cpu_ms_per_event']} ms per"
              f" event, {results['cpu_ms_per_push']} ms per push"))  # fmt: skip
    if results["busy_seconds"] is not None:
        noted = "".join(f" ({caveat})" for caveat in caveats(results))
        print(row("busy while draining:", f"function {results['function_busy']:.0%}, its core"
                  f" {results['core_busy']:.0%}, harness core {results['harness_busy']:.0%} over"
                  f" {results['busy_seconds']:.1f}s{noted}"))  # fmt: skip
    print(row("time:", f"{_drain_text(results)}; {_quiet_text(results)}"))
    if out is not None:
        out.write_text(json.dumps(results, indent=2) + "\n")
    for problem in failed:
        print(f"FAIL: {problem}")
    print("PASS" if not failed else "FAIL", flush=True)
    return 0 if not failed else 1


def _until_the_end(results: dict[str, Any]) -> str:
    waited = results["seconds"].get("waited")
    return f"{waited:.1f}s after they began (the deadline)" if waited is not None else "when the run ended"


def _drain_text(results: dict[str, Any]) -> str:
    drain = results["seconds"].get("drain")
    if drain is None or drain <= 0:
        return "not every object emailed (or dead-lettered) by the deadline"
    return f"every object's email {drain:.1f}s after the pushes began ({results['events'] / drain:.0f} events/s)"


def _quiet_text(results: dict[str, Any]) -> str:
    quiet, waited = results["seconds"].get("quiet"), results["seconds"].get("waited")
    if quiet is not None:
        return f"the last push at {quiet:.1f}s"
    return f"pushes still coming at {waited:.1f}s" if waited is not None else "pushes still coming at the end"


def _spread_text(spread: dict[str, float | int]) -> str:
    return f"p50 {spread['p50_ms']} ms, p99 {spread['p99_ms']} ms, max {spread['max_ms']} ms ({spread['count']})"
