"""`make chaos`: thousands of events, every one delivered twice, against a SendGrid that fails.

Two instances of the real function (functions-framework over HTTP, sharing one SQLite ledger, as
instances share the state bucket) receive every event twice - for some events the second
delivery races the first - while the SendGrid stand-in answers 500/503 (10%), 429 with reset
headers (5%), resets connections (2%) and accepts-then-times-out (2%). This script plays the
platform: whatever is not answered 2xx is redelivered, as Eventarc does with --retry.

It prints events, emails accepted, lost, duplicates and ambiguous sends, and exits 1 if anything
was lost or duplicated without an accepted-then-timeout to explain it.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.standin import Faults, StandIn
from notifier.cli import build_request
from notifier.demo import free_port, start_server, stop_server, wait_until_serving

BUCKET = "chaos-bucket"
_NAME_IN_SUBJECT = re.compile(r"Uploaded: (chaos/\d+\.csv) ")


def run(events: int, concurrency: int, instances: int, racing: float, seed: int, keep: bool) -> int:
    faults = Faults(server_error=0.10, rate_limit=0.05, reset=0.02, accepted_then_timeout=0.02, hang=1.5)
    workdir = Path(tempfile.mkdtemp(prefix="notifier-chaos-"))
    started = time.monotonic()
    with StandIn(faults, seed=seed) as sendgrid:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "SENDGRID_"))},
            "SENDGRID_API_KEY": "SG.chaos-not-a-real-key",
            "SENDGRID_API_HOST": sendgrid.url,
            "SENDGRID_TIMEOUT_SECONDS": "1",  # shorter than the stand-in's hang: accepted-then-timeout
            "NOTIFY_FROM": "chaos@example.com",
            "NOTIFY_TO": "ops@example.com",
            "NOTIFY_MAX_ATTEMPTS": "3",
            "NOTIFY_MAX_BACKOFF_SECONDS": "0.2",
            "NOTIFY_DEADLINE_SECONDS": "10",
            "NOTIFY_LEDGER_FILE": str(workdir / "ledger.sqlite3"),
            "NOTIFY_DEAD_LETTER_DIR": str(workdir / "deadletter"),
            "THREADS": str(max(8, concurrency // instances)),
        }
        servers = []
        for index in range(instances):
            port = free_port()
            with (workdir / f"instance-{index}.log").open("wb") as log:
                servers.append((f"http://127.0.0.1:{port}", start_server(port, env, log)))
        try:
            for url, process in servers:
                wait_until_serving(url, process)
            platform = _Platform([url for url, _ in servers], seed)
            with ThreadPoolExecutor(concurrency) as pool:
                list(pool.map(lambda i: platform.deliver_twice(i, racing), range(events)))
            time.sleep(faults.hang + 0.5)  # let answers to accepted-then-timeout requests finish
        finally:
            for _, process in servers:
                stop_server(process)
    return _report(events, sendgrid, platform, time.monotonic() - started, workdir, keep)


class _Platform:
    """Delivers like Eventarc with --retry: until a 2xx, with a short backoff here."""

    def __init__(self, urls: list[str], seed: int) -> None:
        self.urls = urls
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.deliveries = Counter()  # status → count
        self.gave_up = 0

    def deliver_twice(self, index: int, racing: float) -> None:
        name = f"chaos/{index:05d}.csv"
        request = build_request("finalize", BUCKET, name, size=1024, content_type="text/csv", event_id=f"evt-{index}")
        with self.lock:
            race = self.random.random() < racing
        if race:
            second = threading.Thread(target=self._deliver, args=(request,))
            second.start()
            self._deliver(request)
            second.join()
        else:
            self._deliver(request)
            self._deliver(request)

    def _deliver(self, request: tuple[dict[str, str], bytes]) -> None:
        headers, body = request
        for attempt in range(40):
            with self.lock:
                url = self.random.choice(self.urls)
            try:
                request_ = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
                with urllib.request.urlopen(request_, timeout=30) as response:  # noqa: S310
                    status = response.status
            except urllib.error.HTTPError as error:
                status = error.code
            except OSError:
                status = 0
            with self.lock:
                self.deliveries[status] += 1
            if 200 <= status < 300:
                return
            time.sleep(min(0.05 * 2**attempt, 1.0))
        with self.lock:
            self.gave_up += 1


def _report(events: int, sendgrid: StandIn, platform: _Platform, seconds: float, workdir: Path, keep: bool) -> int:
    per_object: dict[str, list[bool]] = {}
    for acceptance in sendgrid.accepted:
        match = _NAME_IN_SUBJECT.search(acceptance.subject)
        if match:
            per_object.setdefault(match[1], []).append(acceptance.ambiguous)
    lost = [f"chaos/{i:05d}.csv" for i in range(events) if f"chaos/{i:05d}.csv" not in per_object]
    duplicated = {name: flags for name, flags in per_object.items() if len(flags) > 1}
    # Each accepted-then-timeout can explain one extra copy: the client never learned it was sent.
    unexplained = {name: flags for name, flags in duplicated.items() if len(flags) - 1 > sum(flags)}
    ambiguous = sum(flag for flags in per_object.values() for flag in flags)
    print(f"chaos run: {events} events, each delivered twice, in {seconds:.1f}s")
    print(f"  deliveries by HTTP status:   {dict(sorted(platform.deliveries.items()))}")
    print(f"  SendGrid stand-in answered:  {dict(sorted(sendgrid.answered.items()))}")
    print(f"  emails accepted:             {len(sendgrid.accepted)} for {len(per_object)} objects")
    print(f"  lost:                        {len(lost)}")
    print(f"  duplicates:                  {len(duplicated)}")
    print(f"  ambiguous sends:             {ambiguous} (accepted, then the answer timed out)")
    print(f"  unexplained duplicates:      {len(unexplained)}")
    print(f"  deliveries given up:         {platform.gave_up}")
    for name in (lost + list(unexplained))[:10]:
        print(f"    e.g. {name}")
    print(f"  logs: {workdir}" if keep or lost or unexplained else "")
    ok = not lost and not unexplained
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=32, help="events in flight at once")
    parser.add_argument("--instances", type=int, default=2, help="function instances sharing the ledger")
    parser.add_argument("--racing", type=float, default=0.3, help="share of events delivered twice at once")
    parser.add_argument("--seed", type=int, default=20261125)
    parser.add_argument("--keep", action="store_true", help="print where the instances' logs are")
    args = parser.parse_args(argv)
    return run(args.events, args.concurrency, args.instances, args.racing, args.seed, args.keep)


if __name__ == "__main__":
    sys.exit(main())
