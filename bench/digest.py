"""`make bench`'s digest rows (issue 16): what a held event costs, and what a flush of 1,000 held
events costs, with the deployed configuration (bench/coldstart.py's surroundings: the SendGrid
stand-in and the state bucket on fake-gcs-server, both over HTTPS, the token from a metadata stand-in).

- Held: a rule with ``digest = "10m"`` holds each event as one create-if-absent object in the state
  bucket. Its function's CPU per event and each event's latency over HTTP, beside the same function
  with the rule sending at once (claim, send, mark sent), in the same run and the same bucket setup.
- Flush: 1,000 events held through the function, then the flush (``Pipeline.flush``, what the
  scheduled entry point and ``python -m notifier flush --all`` call) in a process of its own on the
  function's core: wall time, its CPU, the state-bucket requests it made, and the one email it sent
  (checked: a flush that did not send exactly one digest of every held event is an error, not a figure).

``python -m bench.digest [--quick]`` runs this part alone and prints its JSON and its section.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

from bench import workspace
from bench.coldstart import PLATFORM, Surroundings, surroundings
from bench.harness import FUNCTION_CPUS, ROOT, SOURCES, Function, function_env, load, requests

WINDOW = "10m"
THREADS = 8
RULES = """[defaults]
from = "bench@example.com"
to = ["ops@example.com"]

[[rules]]
name = "in"
include = ["in/**"]
{digest}"""


def rules_file(folder: Path, digest: str | None) -> Path:
    """notify.toml with one rule for in/**: sending each event at once, or held for ``digest``."""
    path = folder / ("held.toml" if digest else "single.toml")
    path.write_text(RULES.format(digest=f'digest = "{digest}"\n' if digest else ""))
    return path


def deployed_env(around: Surroundings, bucket: str, config: Path) -> dict[str, str]:
    """The function's environment as deployed (coldstart's headline), with its own state bucket."""
    body = json.dumps({"name": bucket}).encode()  # over fake-gcs-server's plain port, as coldstart makes its bucket
    around._get(f"{around.gcs.plain_url}/storage/v1/b?project=bench", body)
    return {**function_env(around.sendgrid, THREADS), **PLATFORM, "NOTIFY_STATE_BUCKET": bucket,
            "NOTIFY_STORAGE_ENDPOINT": around.gcs.url, "GCE_METADATA_HOST": around.metadata.host,
            "NOTIFY_CONFIG": str(config)}  # fmt: skip


def per_event(source: Path, env: dict[str, str], count: int, name: str) -> dict[str, Any]:
    """``count`` events over HTTP with THREADS keep-alive connections: CPU per event, latencies."""
    batch = requests(count + 1, start=500_000)  # the first one wakes the function up, unmeasured
    function = Function.launch(source, env)
    try:
        function.wait_until_serving(batch[0])
        cpu_before, started = function.cpu_seconds(), time.perf_counter()
        _, latencies = load(function, batch[1:], THREADS)
        seconds, cpu = time.perf_counter() - started, function.cpu_seconds() - cpu_before
    finally:
        function.stop()
    ordered = sorted(latencies)
    return {
        "row": name, "events": count, "concurrency": THREADS, "events_per_s": count / seconds,
        "cpu_ms_per_event": cpu / count * 1000, "p50_ms": ordered[len(ordered) // 2],
        "p99_ms": ordered[min(len(ordered) - 1, len(ordered) * 99 // 100)],
    }  # fmt: skip


def held_rows(around: Surroundings, folder: Path, source: Path, count: int) -> list[dict[str, Any]]:
    """The rule sending at once, then the same rule held for a digest: each its own bucket."""
    return [
        per_event(source, deployed_env(around, "bench-single", rules_file(folder, None)), count, "single send"),
        per_event(source, deployed_env(around, "bench-held", rules_file(folder, WINDOW)), count, f"held ({WINDOW})"),
    ]


def flush_once(around: Surroundings, folder: Path, source: Path, entries: int, index: int) -> dict[str, Any]:
    """``entries`` events held through the function in a fresh bucket, then one flush of them all."""
    env = deployed_env(around, f"bench-flush-{index}", rules_file(folder, WINDOW))
    batch = requests(entries, start=600_000 + index * entries)
    function = Function.launch(source, env)
    try:
        function.wait_until_serving(batch[0])  # the first event is held too: it is one of them
        load(function, batch[1:], THREADS)
    finally:
        function.stop()
    emails_before = around.tally().emails
    measured = _flush_in_child(env, folder / f"flush-{index}")
    measured["emails"] = around.tally().emails - emails_before
    if measured["outcomes"] != ["sent"] or measured["events"] != entries or measured["emails"] != 1:
        raise RuntimeError(f"the flush of {entries} held events did not send one digest of them all: {measured}")
    return measured


def _flush_in_child(env: dict[str, str], out: Path) -> dict[str, Any]:
    """The flush in a process of its own on the function's core; what it measured."""
    result, log = out.with_suffix(".json"), out.with_suffix(".log")
    with log.open("wb") as output:
        finished = subprocess.run(
            [sys.executable, "-m", "bench.digest", "--flush-child", str(result)], cwd=ROOT, env=env,
            stdout=output, stderr=subprocess.STDOUT, preexec_fn=_pin, timeout=600, check=False,
        )  # fmt: skip
    if finished.returncode != 0 or not result.exists():
        tail = log.read_text(errors="replace")[-2000:]
        raise RuntimeError(f"the flush process failed (exit {finished.returncode}):\n{tail}")
    return json.loads(result.read_text())


def _pin() -> None:
    os.sched_setaffinity(0, FUNCTION_CPUS)


def flush_child(result: Path) -> int:
    """In the child: the pipeline as the flush entry point builds it, every HTTP request counted
    by where it goes, then one flush of everything held."""
    from notifier import httpclient
    from notifier.pipeline import Pipeline

    pipeline = Pipeline.from_environment()
    bucket = os.environ["NOTIFY_STORAGE_ENDPOINT"].rstrip("/")
    counted: Counter = Counter()
    original = httpclient.request

    def counting(method: str, url: str, **options: Any) -> Any:
        to = "state bucket" if url.startswith(bucket) else "other"
        counted[f"{to} {method}"] += 1
        return original(method, url, **options)

    httpclient.request = counting  # type: ignore[assignment]
    cpu, started = time.process_time(), time.perf_counter()
    flushed = pipeline.flush(everything=True)
    wall, cpu = time.perf_counter() - started, time.process_time() - cpu
    state = {k.removeprefix("state bucket "): v for k, v in counted.items() if k.startswith("state bucket ")}
    result.write_text(json.dumps({
        "wall_s": wall, "cpu_s": cpu, "state_bucket_requests": sum(state.values()), "by_method": state,
        "other_requests": sum(v for k, v in counted.items() if k.startswith("other ")),
        "outcomes": [f.outcome for f in flushed], "events": sum(f.events for f in flushed),
    }))  # fmt: skip
    return 0


def measure(quick: bool = False) -> dict[str, Any]:
    """Both rows, as deployed; quick: a few events, one small flush."""
    count, entries, flushes = (40, 40, 1) if quick else (2000, 1000, 3)
    with surroundings() as around, tempfile.TemporaryDirectory(prefix="bench-digest-") as folder:
        source = workspace.build(SOURCES["storage-notifier"], Path(folder) / "workspace")
        held = held_rows(around, Path(folder), source, count)
        runs = [flush_once(around, Path(folder), source, entries, i) for i in range(flushes)]
    return {
        "held": held,
        "window": WINDOW,
        "flush": {"entries": entries, "runs": runs, **_medians(runs)},
        "configuration": "as deployed: SendGrid and the state bucket (fake-gcs-server) over HTTPS, K_SERVICE set, "
        "token from a metadata-server stand-in; the function on a core of its own, 8 threads",
    }


def _medians(runs: list[dict[str, Any]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in ("wall_s", "cpu_s", "state_bucket_requests")}


def section(digest: dict[str, Any]) -> list[str]:
    """results.md's digest section (bench/report.py adds it when the run measured it)."""
    flush = digest["flush"]
    lines = [
        "", "## Digests: a held event, and a flush", "",
        f"A rule with `digest = \"{digest['window']}\"` beside the same rule sending at once,",
        f"{digest['configuration']}.",
        "A held event is one create-if-absent object in the state bucket; a sent one is a claim, the email",
        "and the `sent` mark.", "",
        "| row | events | events/s | p50 ms | p99 ms | CPU ms/event |", "|---|---|---|---|---|---|",
    ]  # fmt: skip
    lines += [
        f"| {r['row']} | {r['events']} | {r['events_per_s']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} "
        f"| {r['cpu_ms_per_event']:.2f} |"
        for r in digest["held"]
    ]
    methods = Counter()
    for run in flush["runs"]:
        methods.update(run["by_method"])
    lines += [
        "", f"A flush of {flush['entries']:,} held events into one email (median of {len(flush['runs'])}, each "
        "in a fresh bucket, the flush on the function's core):", "",
        f"- wall {flush['wall_s']:.2f} s, CPU {flush['cpu_s']:.2f} s, "
        f"{flush['state_bucket_requests']:.0f} state-bucket requests (in all runs: "
        + ", ".join(f"{m} {n}" for m, n in sorted(methods.items())) + "), one email sent each time",
    ]  # fmt: skip
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny run to check the code works")
    parser.add_argument("--flush-child", metavar="RESULT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.flush_child:
        return flush_child(Path(args.flush_child))
    from bench.harness import harness_pinned

    with harness_pinned():
        results = measure(args.quick)
    print(json.dumps(results, indent=2))
    print("\n".join(section(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
