"""`make bench`: what users pay for, measured beside two references in the same run.

References (bench/reference/): the floor, a bare functions-framework function that only returns,
and the textbook handler (a SendGrid client and Mail built per event). Figures: cold start, warm
per-event cost in-process, throughput over HTTP against a local SendGrid stand-in, memory, and
routing cost. Ratios against the references are the headline; absolute numbers are context.
Writes bench/results.json and bench/results.md. `--quick` runs a tiny version (no targets).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from importlib import metadata
from pathlib import Path
from typing import Any

from bench import routing
from bench.standin import Faults, StandIn
from notifier.cli import build_request
from notifier.demo import free_port, stop_server

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {
    "floor": ROOT / "bench/reference/floor/main.py",
    "textbook": ROOT / "bench/reference/textbook/main.py",
    "storage-notifier": ROOT / "main.py",
}


def _env(sendgrid_url: str, threads: int = 8, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "SENDGRID_"))}
    env.update(
        SENDGRID_API_KEY="SG.bench-not-a-real-key", SENDGRID_API_HOST=sendgrid_url, NOTIFY_FROM="bench@example.com",
        NOTIFY_TO="ops@example.com", THREADS=str(threads), PYTHONDONTWRITEBYTECODE="1", **extra,
    )  # fmt: skip
    return env


def _start(source: Path, env: dict[str, str]) -> tuple[str, subprocess.Popen]:
    port = free_port()
    command = [sys.executable, "-m", "functions_framework", "--target", "handle_storage_event",
               "--source", str(source), "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return f"http://127.0.0.1:{port}", process


def _post(url: str, index: int) -> int:
    headers, body = build_request("finalize", "bench", f"in/{index:06d}.csv", size=1024, content_type="text/csv",
                                  event_id=f"bench-{index}-{time.monotonic_ns()}")  # fmt: skip
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
        return response.status


def cold_start(launches: int, sendgrid_url: str) -> dict[str, Any]:
    """Process launch to the first 2xx answer to a finalize event."""
    results = {}
    for name, source in SOURCES.items():
        times = []
        for _ in range(launches):
            started = time.perf_counter()
            url, process = _start(source, _env(sendgrid_url))
            try:
                while True:
                    try:
                        if _post(url, 0) < 300:
                            break
                    except OSError:
                        time.sleep(0.005)
                    if time.perf_counter() - started > 30:
                        raise RuntimeError(f"{name} did not start")
                times.append(time.perf_counter() - started)
            finally:
                stop_server(process)
        results[name] = _stats([t * 1000 for t in times])
    results["ratio_to_floor"] = results["storage-notifier"]["median"] / results["floor"]["median"]
    results["target"] = "<= 1.25x floor"
    return results


def warm(events: int, rules: int) -> dict[str, Any]:
    """decode -> route -> render -> a null backend, in-process, with `rules` rules."""

    from notifier.config import load_settings
    from notifier.events import object_resource, storage_cloud_event
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
    pipeline = Pipeline(settings, backend=NullBackend(), ledger=MemoryLedger(), dead_letters=LocalDeadLetters(folder))
    sink = open(os.devnull, "w")  # noqa: SIM115 - the log lines are part of the cost, not of the output
    stdout, sys.stdout = sys.stdout, sink
    try:
        samples = []
        for index in range(events):
            data = object_resource("finalize", "bench", f"in/{index:06d}.csv", size=1024, content_type="text/csv")
            event = storage_cloud_event("finalize", data, f"w{index}")
            started = time.perf_counter()
            pipeline.handle(event)
            samples.append((time.perf_counter() - started) * 1000)
    finally:
        sys.stdout = stdout
    samples = samples[len(samples) // 10 :]  # the first tenth warms caches
    return {**_stats(samples), "p99": _percentile(samples, 99), "rules": rules, "target": "p50 <= 1 ms, p99 <= 3 ms"}


def throughput(events: int, latency: float, threads: int, source: Path) -> dict[str, Any]:
    with StandIn(Faults(latency=latency)) as sendgrid:
        url, process = _start(source, _env(sendgrid.url, threads=threads))
        try:
            _wait(url)
            latencies = []

            def one(index: int) -> None:
                started = time.perf_counter()
                _post(url, index)
                latencies.append((time.perf_counter() - started) * 1000)

            started = time.perf_counter()
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(one, range(events)))
            seconds = time.perf_counter() - started
        finally:
            stop_server(process)
    rate = events / seconds
    limit = threads / latency if latency else None
    return {
        "events": events, "latency_ms": latency * 1000, "concurrency": threads, "events_per_s": rate,
        "p50_ms": _percentile(latencies, 50), "p99_ms": _percentile(latencies, 99),
        "littles_law_limit": limit, "ratio_to_limit": rate / limit if limit else None,
    }  # fmt: skip


def memory(events: int, sendgrid_url: str) -> dict[str, Any]:
    """Peak RSS (VmHWM) of the serving process after `events` events, and growth after warm-up."""
    url, process = _start(SOURCES["storage-notifier"], _env(sendgrid_url, threads=8))
    try:
        _wait(url)
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda i: _post(url, i), range(events // 10)))
            after_warmup = _rss_kib(process.pid)
            list(pool.map(lambda i: _post(url, i), range(events // 10, events)))
        peak, last = _hwm_kib(process.pid), _rss_kib(process.pid)
    finally:
        stop_server(process)
    return {"events": events, "peak_mib": peak / 1024, "growth_mib": (last - after_warmup) / 1024,
            "target": "peak <= 90 MiB, growth <= 2 MiB"}  # fmt: skip


def _tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(p) for p in children.read_text().split()] if children.exists() else []
    return [pid] + [k for kid in kids for k in _tree(kid)]


def _status(pid: int, field: str) -> int:
    return sum(
        int(line.split()[1])
        for p in _tree(pid)
        for line in Path(f"/proc/{p}/status").read_text().splitlines()
        if line.startswith(field)
    )


def _rss_kib(pid: int) -> int:
    return _status(pid, "VmRSS:")


def _hwm_kib(pid: int) -> int:
    return _status(pid, "VmHWM:")


def _wait(url: str) -> None:
    give_up = time.monotonic() + 30
    while time.monotonic() < give_up:
        try:
            _post(url, 0)
            return
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{url} did not start")


def _percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * pct / 100))]


def _stats(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def run(quick: bool) -> dict[str, Any]:
    scale = 0.02 if quick else 1.0
    results: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "versions": {p: metadata.version(p) for p in ("functions-framework", "sendgrid", "Jinja2", "tenacity")},
    }
    with StandIn() as sendgrid:
        results["cold_start_ms"] = cold_start(2 if quick else 5, sendgrid.url)
        results["memory"] = memory(max(200, int(10_000 * scale)), sendgrid.url)
    results["warm_in_process_ms"] = warm(max(100, int(3000 * scale)), 100)
    results["throughput"] = []
    for latency, threads, source in ((0.0, 1, "storage-notifier"), (0.0, 8, "storage-notifier"),
                                     (0.0, 32, "storage-notifier"), (0.0, 8, "textbook"),
                                     (0.05, 8, "storage-notifier"), (0.05, 32, "storage-notifier")):  # fmt: skip
        # At 50 ms a request, fewer events keep the suite under five minutes; the rate is what counts.
        count = max(50, int((5000 if latency == 0 else 1500) * scale))
        results["throughput"].append({"handler": source, **throughput(count, latency, threads, SOURCES[source])})
    results["routing_us"] = [routing.measure(n, 3 if quick else 7, 50 if quick else 500) for n in (10, 100, 1000)]
    return results


def markdown(results: dict[str, Any]) -> str:
    cold, warm_ms, mem = results["cold_start_ms"], results["warm_in_process_ms"], results["memory"]
    ours = cold["storage-notifier"]
    lines = [
        "# Benchmark results", "",
        f"Machine: {results['machine']['cpus']} CPUs, Python {results['machine']['python']}, "
        f"{results['machine']['platform']}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in results["versions"].items()), "",
        "| figure | storage-notifier | reference | ratio / target |", "|---|---|---|---|",
        f"| cold start, launch to first 2xx (median ms, min-max) | {ours['median']:.0f} "
        f"({ours['min']:.0f}-{ours['max']:.0f}) | floor {cold['floor']['median']:.0f}, "
        f"textbook {cold['textbook']['median']:.0f} | {cold['ratio_to_floor']:.2f}x floor (target <= 1.25x) |",
        f"| warm per event in-process, 100 rules (ms) | p50 {warm_ms['median']:.2f}, p99 {warm_ms['p99']:.2f} | - | "
        "target p50 <= 1, p99 <= 3 |",
        f"| memory after {mem['events']} events (MiB) | peak {mem['peak_mib']:.1f}, "
        f"growth {mem['growth_mib']:.1f} | - | target peak <= 90, growth <= 2 |",
    ]  # fmt: skip
    for t in results["throughput"]:
        limit = f"{t['ratio_to_limit']:.2f} of the {t['littles_law_limit']:.0f}/s limit" if t["ratio_to_limit"] else "-"
        figure = f"{t['events_per_s']:.0f}/s, p50 {t['p50_ms']:.1f} ms, p99 {t['p99_ms']:.1f} ms"
        lines.append(
            f"| throughput {t['handler']}, {t['latency_ms']:.0f} ms SendGrid, {t['concurrency']} threads "
            f"({t['events']} events) | {figure} | - | {limit} |"
        )
    for r in results["routing_us"]:
        lines.append(
            f"| routing, {r['rules']} rules (µs per event, median) | {r['median_us']:.1f} | - | target < 1000 |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny run to check the code works")
    parser.add_argument("--out", default=str(ROOT / "bench"), help="where results.json and results.md go")
    args = parser.parse_args(argv)
    results = run(args.quick)
    out = Path(args.out)
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str))
    (out / "results.md").write_text(markdown(results))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
