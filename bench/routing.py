"""Routing cost per event with 10, 100 and 1,000 rules (target: well under 1 ms at 1,000).

The rules are a realistic mix: most have a folder prefix (`team42/**/*.csv`), some match by
suffix anywhere (`**/*.part`), some by content type or metadata only. Events hit a rule, hit
several, or hit nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from notifier.addresses import Address
from notifier.events import decode
from notifier.globs import Globs
from notifier.payloads import object_resource, storage_cloud_event
from notifier.rules import Conditions, Delivery, Recipients, Rule, RuleSet

TARGET_MS = 1.0


def build_rules(count: int) -> RuleSet:
    recipients = Recipients(Address("alerts@example.com"), to=(Address("team@example.com"),))
    rules = []
    for i in range(count):
        if i % 10 == 7:
            rule = Rule(f"suffix-{i}", Conditions(include=Globs((f"**/*.ext{i}",))), Delivery(recipients))
        elif i % 10 == 8:
            rule = Rule(f"type-{i}", Conditions(content_types=(f"application/x-type{i}",)), Delivery(recipients))
        elif i % 10 == 9:
            rule = Rule(f"meta-{i}", Conditions(metadata={"team": f"team{i}"}), Delivery(recipients))
        else:
            conditions = Conditions(
                events=frozenset({"finalize", "delete"}),
                include=Globs((f"team{i}/**/*.csv", f"team{i}/exports/*")),
                exclude=Globs(("**/_tmp/**",)),
            )
            rule = Rule(f"team-{i}", conditions, Delivery(recipients))
        rules.append(rule)
    return RuleSet(tuple(rules), ignore=Globs(("**/*.part",)), state_bucket="notifier-state")


def sample_events(count: int) -> list:
    names = [f"team{count // 2}/2026/q3/report.csv", "nobody/owns/this.bin", f"x/y/z.ext{count - 3}", "a/b.part"]
    events = []
    for name in names:
        data = object_resource("finalize", "acme-uploads", name, size=4096, content_type="text/csv")
        events.append(decode(storage_cloud_event("finalize", data, "bench")))
    return events


def measure(count: int, repeats: int, loops: int) -> dict[str, float]:
    rules = build_rules(count)
    events = sample_events(count)
    per_event_us = []
    for _ in range(repeats):
        started = time.perf_counter()
        for _ in range(loops):
            for event in events:
                if rules.ignore_reason(event) is None:
                    rules.route(event)
        per_event_us.append((time.perf_counter() - started) / (loops * len(events)) * 1e6)
    return {
        "rules": count,
        "min_us": min(per_event_us),
        "median_us": statistics.median(per_event_us),
        "max_us": max(per_event_us),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--loops", type=int, default=500)
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    results = [measure(n, args.repeats, args.loops) for n in (10, 100, 1000)]
    print("routing cost per event (µs): rules, min, median, max")
    for r in results:
        print(f"  {r['rules']:>5}  {r['min_us']:8.1f}  {r['median_us']:8.1f}  {r['max_us']:8.1f}")
    worst = results[-1]["median_us"] / 1000
    print(
        f"1,000 rules: {worst:.3f} ms per event (target < {TARGET_MS} ms): {'met' if worst < TARGET_MS else 'MISSED'}"
    )
    if args.json:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"routing": results}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
