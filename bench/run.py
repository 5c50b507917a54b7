"""`make bench`: what users pay for, measured beside two references in the same run.

References (bench/reference/): the floor, a bare functions-framework function that only returns,
and the textbook handler (a SendGrid client and Mail built per event). Figures: cold start as
deployed (bench/coldstart.py), warm per-event cost in-process, throughput over HTTP against a local
SendGrid stand-in, memory, routing cost, and the capacity of one instance as deploy.sh deploys it
(bench/capacity.py). Ratios against the references are the headline; absolute numbers are context.
How the functions are driven (a core of their own, keep-alive load): bench/harness.py.
Writes bench/results.json and bench/results.md. `--quick` runs a tiny version (no targets).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import capacity, coldstart, digest, routing
from bench.harness import (
    ROOT,
    SOURCES,
    StandInAddress,
    function_env,
    harness_pinned,
    load,
    requests,
    serving,
    stand_in,
)
from bench.report import markdown

SEGMENTS = 5  # each throughput run is timed in this many parts, for min/median/max


def warm(events: int, rules: int) -> dict[str, Any]:
    """decode -> route -> render -> a null backend, in-process, with `rules` rules; the textbook
    handler's per-event cost in the same process (SendGrid's send() replaced by a no-op)."""
    from cloudevents.http import CloudEvent

    from notifier.payloads import object_resource, storage_cloud_event

    def event(index: int) -> CloudEvent:
        data = object_resource("finalize", "bench", f"in/{index:06d}.csv", size=1024, content_type="text/csv")
        return storage_cloud_event("finalize", data, f"w{index}")

    ours, textbook = _our_handler(rules), _textbook_handler()
    sink = open(os.devnull, "w")  # noqa: SIM115 - the log lines are part of the cost, not of the output
    stdout, sys.stdout = sys.stdout, sink
    try:
        samples: dict[str, list[float]] = {"storage-notifier": [], "textbook": []}
        for index in range(events):
            for name, handle in (("storage-notifier", ours), ("textbook", textbook)):
                cloud_event = event(index)
                started = time.perf_counter()
                handle(cloud_event)
                samples[name].append((time.perf_counter() - started) * 1000)
    finally:
        sys.stdout = stdout
        sink.close()
    figures = {}
    for name, values in samples.items():
        values = values[len(values) // 10 :]  # the first tenth warms caches
        figures[name] = {"p50": _percentile(values, 50), "p99": _percentile(values, 99), "max": max(values)}
    return {**figures, "rules": rules, "target": "p50 <= 1 ms, p99 <= 3 ms"}


def _our_handler(rules: int):
    from notifier.config import load_settings
    from notifier.ledger.local import LocalDeadLetters
    from notifier.ledger.memory import MemoryLedger
    from notifier.mail.base import Backend, Receipt
    from notifier.pipeline import Pipeline

    class NullBackend(Backend):
        name = "null"

        def send(self, message, *, deadline):
            return Receipt("null", "x")

    folder = Path(tempfile.mkdtemp(prefix="bench-warm-"))
    lines = ['[defaults]\nfrom = "a@example.com"\nto = ["b@example.com"]\n']
    lines += [f'[[rules]]\nname = "team{i}"\ninclude = ["team{i}/**/*.csv"]\n' for i in range(rules - 1)]
    lines.append('[[rules]]\nname = "in"\ninclude = ["in/**"]\n')
    (folder / "notify.toml").write_text("".join(lines))
    settings = load_settings({"NOTIFY_CONFIG": str(folder / "notify.toml"), "NOTIFY_OUTBOX_DIR": str(folder)})
    return Pipeline(
        settings, backend=NullBackend(), ledger=MemoryLedger(), dead_letters=LocalDeadLetters(folder)
    ).handle


def _textbook_handler():
    import importlib.util

    from sendgrid import SendGridAPIClient

    os.environ.setdefault("NOTIFY_FROM", "a@example.com")
    os.environ.setdefault("NOTIFY_TO", "b@example.com")
    os.environ.setdefault("SENDGRID_API_KEY", "SG.bench-not-a-real-key")
    os.environ.setdefault("SENDGRID_API_HOST", "http://127.0.0.1:9")
    SendGridAPIClient.send = lambda self, message: message.get()  # a null backend, as ours gets
    spec = importlib.util.spec_from_file_location("textbook_main", SOURCES["textbook"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.handle_storage_event


def throughput(handler: str, count: int, latency: float, threads: int, *, tls: bool = True) -> dict[str, Any]:
    """`count` events over HTTP with `threads` gunicorn threads and as many client connections,
    in SEGMENTS equal parts timed one after another (min/median/max are over the parts)."""
    batch = requests(count)
    size = max(1, count // SEGMENTS)
    rates, latencies = [], []
    with stand_in(latency, tls=tls) as sendgrid, serving(SOURCES[handler], function_env(sendgrid, threads)) as function:
        cpu_before, started = function.cpu_seconds(), time.perf_counter()
        for first in range(0, count, size):
            seconds, part = load(function, batch[first : first + size], threads)
            rates.append(len(part) / seconds)
            latencies += part
        seconds, cpu = time.perf_counter() - started, function.cpu_seconds() - cpu_before
    rate = count / seconds
    limit = threads / latency if latency else None
    return {
        "handler": handler, "events": count, "latency_ms": latency * 1000, "concurrency": threads, "tls": tls,
        "events_per_s": rate, "segments_per_s": _stats(rates),
        "p50_ms": _percentile(latencies, 50), "p99_ms": _percentile(latencies, 99),
        "cpu_ms_per_event": cpu / count * 1000,  # the function's own CPU (server and worker)
        "littles_law_limit": limit, "ratio_to_limit": rate / limit if limit else None,
    }  # fmt: skip


def memory(handler: str, events: int, sendgrid: StandInAddress) -> dict[str, Any]:
    """Peak memory of a serving instance over `events` events, and growth after the first tenth."""
    with serving(SOURCES[handler], function_env(sendgrid, threads=8)) as function:
        peak_pss = 0
        done = threading.Event()

        def sample() -> None:  # the kernel keeps no peak PSS; sample it
            nonlocal peak_pss
            while not done.wait(0.05):
                peak_pss = max(peak_pss, function.memory_kib()["instance_pss"])

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        load(function, requests(events // 10), 8)
        after_warmup = function.memory_kib()
        load(function, requests(events - events // 10, start=events // 10), 8)
        done.set()
        sampler.join()
        last = function.memory_kib()
    return {
        "handler": handler, "events": events, "worker_peak_rss_mib": last["worker_hwm"] / 1024,
        "instance_peak_pss_mib": max(peak_pss, last["instance_pss"]) / 1024,
        "growth_mib": (last["worker_rss"] - after_warmup["worker_rss"]) / 1024,
        "target": "peak <= 90 MiB, growth <= 2 MiB",
    }  # fmt: skip


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def _stats(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def run(quick: bool) -> dict[str, Any]:
    with harness_pinned():
        return _run(quick)


def _run(quick: bool) -> dict[str, Any]:
    scale = 0.02 if quick else 1.0
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": {p: metadata.version(p) for p in ("functions-framework", "sendgrid", "Jinja2", "tenacity")},
    }
    started = time.perf_counter()
    results["cold_start_ms"] = coldstart.measure(2 if quick else 5)
    with stand_in() as sendgrid:
        results["memory"] = [
            memory("storage-notifier", max(200, int(10_000 * scale)), sendgrid),
            memory("textbook", max(200, int(600 * scale)), sendgrid),  # a reference, and slow: fewer events
        ]
    results["warm_in_process_ms"] = warm(max(100, int(3000 * scale)), 100)
    # (handler, SendGrid latency, threads, HTTPS, events). The plain-HTTP rows are context: no real
    # SendGrid client gets plain HTTP. Fewer events where each takes long (one at a time at 50 ms; the
    # textbook over HTTPS, which loads the CA store for every email) and for references keep the
    # suite under five minutes; rates are what count.
    plan = [("storage-notifier", 0.0, 1, True, 5000), ("storage-notifier", 0.0, 8, True, 5000),
            ("storage-notifier", 0.0, 32, True, 5000), ("textbook", 0.0, 8, True, 400),
            ("floor", 0.0, 8, True, 2500), ("storage-notifier", 0.0, 8, False, 2500),
            ("textbook", 0.0, 8, False, 2500), ("storage-notifier", 0.05, 1, True, 400),
            ("storage-notifier", 0.05, 8, True, 2500), ("storage-notifier", 0.05, 32, True, 5000),
            ("textbook", 0.05, 32, True, 200)]  # fmt: skip
    results["throughput"] = []
    for handler, latency, threads, tls, count in plan:
        results["throughput"].append(throughput(handler, max(40, int(count * scale)), latency, threads, tls=tls))
    results["routing_us"] = [routing.measure(n, 3 if quick else 7, 50 if quick else 500) for n in (10, 100, 1000)]
    results["digest"] = digest.measure(quick)  # a held event beside a sent one, and a 1,000-event flush
    results["capacity"] = capacity.measure(quick)  # one instance as deploy.sh deploys it, concurrency 1-80
    results["seconds"] = time.perf_counter() - started
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny run to check the code works")
    parser.add_argument("--out", default=str(ROOT / "bench"), help="where results.json and results.md go")
    args = parser.parse_args(argv)
    results = run(args.quick)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
