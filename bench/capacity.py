"""`make bench`'s capacity rows (issue 18): one instance configured exactly as deploy/deploy.sh
configures it, driven as Cloud Run's front end drives it, at concurrency 1, 8, 32 and 80.

- The instance: `deploy.sh finalize --dry-run --concurrency N --env-file F` read by bench/deployed.py;
  the function's environment is that deployment's env file (THREADS, NOTIFY_MAX_IN_FLIGHT,
  NOTIFY_DEADLINE_SECONDS, ...) plus only what models the platform (the K_* variables, the secret
  --set-secrets mounts, Cloud Storage's endpoint and the metadata server as local stand-ins, the CA
  store). One worker (functions-framework's default), on a core of its own (bench/harness.py), from
  a workspace built as the buildpack builds it (bench/workspace.py).
- Around it (bench/coldstart.py's surroundings): the SendGrid stand-in over HTTPS answering after
  150 ms, the state bucket on fake-gcs-server over HTTPS with nothing injected, its objects kept in
  files (its memory backend scans a bucket's objects on every call: a 20 s row writes thousands, and
  the stand-in, not the function, would set the rate).
- The load: as many keep-alive connections as the concurrency (the front end sends an instance at
  most --concurrency requests at once), timed for SECONDS after a warm-up. Every answer is counted by
  status: a 429 here would mean the in-flight cap refuses what the platform is allowed to send.
- A held row: the default concurrency with a rule `digest = "1m"` (no SendGrid call on that path).
- State-bucket requests per event by kind, measured through a counting proxy (HTTPS, in front of
  fake-gcs-server) in short separate runs, so the timed rows carry no proxy latency.

``python -m bench.capacity [--quick] [--concurrency 8,16,24,32] [--seconds S]`` runs this part alone
and prints its JSON and its section (bench/capacity_report.py: the section and the capacity model);
``python -m bench.capacity --table [RESULTS]`` prints the capacity model (for 10, 100 and 1,000
uploads/s, with and without digests) from a run's results.json (default bench/results.json).
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import ssl
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import digest, workspace
from bench.capacity_report import TARGET, model_table, section
from bench.coldstart import PLATFORM, Surroundings, surroundings
from bench.deployed import Deployment, deployment
from bench.gcs_faults import GcsFaultProxy, ProxiedRequest
from bench.harness import _NOT_PASSED, BUNDLE, FUNCTION_CPUS, HARNESS_CPUS, ROOT, SOURCES, Function, Request, requests

LATENCY = 0.150  # SendGrid's answer, seconds
CONCURRENCIES = (1, 8, 32, 80)
SECONDS = 20.0  # each timed row, after its warm-up
CPU_FLOOR_S = 0.001  # of the one core per event: half the least an event has taken (a held one, 2.1 ms)
WINDOW = "1m"  # the held row's digest
WRITE_KINDS = ("create", "update", "delete")
QUICK = {"concurrencies": (1, 2), "events": 8, "writes_events": 4}
FULL = {"events": None, "writes_events": 40}
LIMIT_DEFINITION = (
    "limit = concurrency / unloaded latency, where the unloaded latency is the p50 at concurrency 1 in this "
    "run (SendGrid's {latency:.0f} ms plus the state bucket's round trips): {unloaded:.1f} ms. For context, "
    "concurrency / {latency:.0f} ms is the SendGrid-only bound."
)


@dataclass(frozen=True)
class Instance:
    """One function as deploy.sh deploys it, and the environment it runs with here."""

    deployed: Deployment
    env: dict[str, str]
    default: bool  # deployed without --concurrency: the script's default


def user_env_file(folder: Path, bucket: str, around: Surroundings, config: Path | None) -> Path:
    """The user's --env-file: what a user sets (the rest is deploy.sh's)."""
    values = {"NOTIFY_FROM": "bench@example.com", "NOTIFY_TO": "ops@example.com", "NOTIFY_STATE_BUCKET": bucket,
              "SENDGRID_API_HOST": around.sendgrid.url}  # fmt: skip
    if config is not None:
        values["NOTIFY_CONFIG"] = str(config)
    path = folder / f"{bucket}.env.yaml"
    path.write_text("".join(f"{name}: {json.dumps(value)}\n" for name, value in values.items()))
    return path


def deployed_as(concurrency: int | None, env_file: Path) -> Deployment:
    """deploy.sh's deployment at ``concurrency`` (None: its default)."""
    options = () if concurrency is None else ("--concurrency", str(concurrency))
    return deployment(*options, env_file=env_file)


def deployed_env(deployed: Deployment, *, ca_dir: str, storage_endpoint: str, metadata_host: str) -> dict[str, str]:
    """The function's environment as deployed (here and in bench/burst.py): the caller's own, less
    ours, the platform's, Google's and functions-framework's sizing (THREADS, WORKERS: one worker, as
    deployed); then what the platform adds to the env file (its K_* variables, the SendGrid key
    --set-secrets mounts, the stand-ins for Cloud Storage, the metadata server and the CA store); then
    the env file itself, THREADS as deployed."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith((*_NOT_PASSED, "THREADS", "WORKERS"))}
    platform = {**PLATFORM, "SENDGRID_API_KEY": "SG.bench-not-a-real-key", "NOTIFY_STORAGE_ENDPOINT": storage_endpoint,
                "GCE_METADATA_HOST": metadata_host, "SSL_CERT_DIR": ca_dir,
                "SSL_CERT_FILE": os.path.join(ca_dir, BUNDLE), "PYTHONDONTWRITEBYTECODE": "1"}  # fmt: skip
    return {**inherited, **platform, **deployed.env, "THREADS": str(deployed.threads)}


def instance(around: Surroundings, folder: Path, concurrency: int | None, bucket: str, *,
             config: Path | None = None, endpoint: str | None = None) -> Instance:  # fmt: skip
    """The deployment at ``concurrency``, with its own new state bucket; THREADS as deployed (the
    platform's default, 4 per vCPU, if the env file does not set it), one worker."""
    body = json.dumps({"name": bucket}).encode()
    around._get(f"{around.gcs.plain_url}/storage/v1/b?project=bench", body)
    deployed = deployed_as(concurrency, user_env_file(folder, bucket, around, config))
    env = deployed_env(deployed, ca_dir=around.sendgrid.ca_dir, storage_endpoint=endpoint or around.gcs.url,
                       metadata_host=around.metadata.host)  # fmt: skip
    return Instance(deployed, env, concurrency is None)


@dataclass(frozen=True)
class Driven:
    seconds: float
    latencies: dict[str, list[float]]  # status (or the connection error's name) -> each answer's ms
    answers: Counter  # status (or the connection error's name) -> count


def figures(driven: Driven) -> dict[str, Any]:
    """A load's figures: events are the 2xx answers (a refused request is not an event handled),
    their rate and latencies; every other answer counted apart."""
    ordered = sorted(ms for answer, each in driven.latencies.items() if answer.startswith("2") for ms in each)
    events = len(ordered)
    return {
        "events": events, "seconds": driven.seconds, "events_per_s": events / driven.seconds,
        "p50_ms": ordered[events // 2] if events else math.nan,
        "p99_ms": ordered[min(events - 1, events * 99 // 100)] if events else math.nan,
        "non_2xx": {answer: n for answer, n in driven.answers.items() if not answer.startswith("2")},
    }  # fmt: skip


def events_for(seconds: float, concurrency: int) -> int:
    """A batch that outlasts ``seconds`` even at one event per CPU_FLOOR_S of the one core: sized by
    the core, not by SendGrid's latency, since a held event makes no SendGrid call."""
    return math.ceil(seconds / CPU_FLOOR_S * 1.1) + concurrency


def drive(function: Function, batch: Sequence[Request], concurrency: int, seconds: float = math.inf) -> Driven:
    """``batch`` over ``concurrency`` keep-alive connections until it runs out or ``seconds`` pass;
    every answer counted, none raised on (a refused request is a figure here)."""
    latencies: dict[str, list[float]] = {}
    answers: Counter = Counter()
    cursor, lock = iter(range(len(batch))), threading.Lock()
    deadline = time.perf_counter() + seconds

    def worker() -> None:
        connection = function.connect()
        while True:
            with lock:
                index = next(cursor, None) if time.perf_counter() < deadline else None
            if index is None:
                break
            started = time.perf_counter()
            try:
                answer: int | str = function.post(batch[index], connection)
            except (OSError, http.client.HTTPException) as error:
                answer = type(error).__name__
                connection.close()
                connection = function.connect()
            took = (time.perf_counter() - started) * 1000
            with lock:
                answers[str(answer)] += 1
                latencies.setdefault(str(answer), []).append(took)
        connection.close()

    started = time.perf_counter()
    workers = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join()
    return Driven(time.perf_counter() - started, latencies, answers)


@contextmanager
def peak_pss(function: Function) -> Iterator[list[int]]:
    """Samples the instance's PSS every 50 ms meanwhile (the kernel keeps no peak of it); the peak
    in KiB is the list's one item afterwards."""
    peak, done = [0], threading.Event()

    def sample() -> None:
        while not done.wait(0.05):
            peak[0] = max(peak[0], function.memory_kib()["instance_pss"])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peak
    finally:
        done.set()
        sampler.join()
        peak[0] = max(peak[0], function.memory_kib()["instance_pss"])


def core_ticks(cpus: set[int]) -> tuple[int, int]:
    """Busy and total clock ticks of ``cpus`` so far, whoever ran on them (/proc/stat)."""
    busy = total = 0
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
            ticks = [int(v) for v in values[:8]]  # user nice system idle iowait irq softirq steal
            busy, total = busy + sum(ticks) - ticks[3] - ticks[4], total + sum(ticks)
    return busy, total


@contextmanager
def cores_busy() -> Iterator[dict[str, float]]:
    """How busy the function's core and the harness's were meanwhile (0-1), by every process: a
    function core busier than the function itself says other work shared it (a noisy figure)."""
    before = {name: core_ticks(cpus) for name, cpus in (("function", FUNCTION_CPUS), ("harness", HARNESS_CPUS))}
    busy: dict[str, float] = {}
    yield busy
    for name, cpus in (("function", FUNCTION_CPUS), ("harness", HARNESS_CPUS)):
        ticks, total = (after - first for after, first in zip(core_ticks(cpus), before[name], strict=True))
        busy[name] = ticks / total if total else 0.0


def row(source: Path, chosen: Instance, count: int | None, seconds: float, latency: float) -> dict[str, Any]:
    """One timed row: a warm-up, then the load for ``seconds`` (or ``count`` events)."""
    deployed, concurrency = chosen.deployed, chosen.deployed.concurrency
    warm = 2 * concurrency + 10
    most = count or events_for(seconds, concurrency)
    batch = requests(1 + warm + most, start=100_000)
    function = Function.launch(source, chosen.env)
    try:
        function.wait_until_serving(batch[0])
        drive(function, batch[1 : 1 + warm], concurrency)
        cpu_before = function.cpu_seconds()
        with peak_pss(function) as peak, cores_busy() as busy:
            driven = drive(function, batch[1 + warm :], concurrency, seconds)
        cpu = function.cpu_seconds() - cpu_before
    finally:
        function.stop()
    measured = figures(driven)
    if measured["events"] == 0:
        raise RuntimeError(f"concurrency {concurrency}: no 2xx answer, only {dict(driven.answers)}")
    shown = ("THREADS", "NOTIFY_MAX_IN_FLIGHT", "NOTIFY_DEADLINE_SECONDS", "NOTIFY_STATE_BUCKET", "NOTIFY_CONFIG")
    return {
        "concurrency": concurrency, "default": chosen.default, "deployment": deployed.describe(),
        "threads": deployed.threads, "max_in_flight": deployed.env.get("NOTIFY_MAX_IN_FLIGHT"),
        "timeout_s": deployed.timeout_seconds, "memory_mib": mib(deployed.flags.get("memory", "256Mi")),
        "function_env": {name: chosen.env[name] for name in shown if name in chosen.env},
        **measured, "cpu_ms_per_event": cpu / measured["events"] * 1000, "peak_pss_mib": peak[0] / 1024,
        "sendgrid_bound_per_s": concurrency / latency, "function_busy": cpu / driven.seconds,
        "core_busy": busy["function"], "harness_busy": busy["harness"],
    }  # fmt: skip


def mib(size: str) -> float:
    """A --memory value (256Mi, 2Gi, 256MB, 1G) in MiB."""
    units = {"": 1 / 2**20, "k": 1e3 / 2**20, "ki": 1 / 1024, "m": 1e6 / 2**20, "mi": 1, "g": 1e9 / 2**20, "gi": 1024}
    digits = size.rstrip("BbIiKkMmGg")
    return int(digits) * units[size[len(digits) :].lower().removesuffix("b")]


def with_limits(rows: list[dict[str, Any]], unloaded_ms: float) -> list[dict[str, Any]]:
    """Each row with its Little's-law limit (concurrency / the unloaded latency) and its share of it."""
    return [{**r, "limit_per_s": (limit := r["concurrency"] / (unloaded_ms / 1000)),
             "ratio_to_limit": r["events_per_s"] / limit} for r in rows]  # fmt: skip


# --- State-bucket requests per event, through a counting proxy ------------------------------------


def kinds(proxied: Sequence[ProxiedRequest]) -> list[str]:
    """Each request's kind: create (an upload with ifGenerationMatch=0, or without a precondition to a
    name not written before in ``proxied``), update (any other upload, or a patch), delete, read."""
    written: set[str | None] = set()
    found = []
    for request in proxied:
        found.append(_kind(request, request.object_name in written))
        if request.method != "GET":
            written.add(request.object_name)
    return found


def _kind(request: ProxiedRequest, written_before: bool) -> str:
    if request.method in ("GET", "DELETE"):
        return {"GET": "read", "DELETE": "delete"}[request.method]
    if request.method == "POST" and request.path.startswith("/upload/"):
        precondition = request.query.get("ifGenerationMatch")
        fresh = precondition == "0" or (precondition is None and not written_before)
        return "create" if fresh else "update"
    return "update" if request.method in ("PATCH", "PUT") else "other"


def per_event(proxied: Sequence[ProxiedRequest], span: range, events: int) -> dict[str, Any]:
    """The requests in ``span`` per event by kind, and which objects (by first path segment) the
    writes were about (a kind needs every request before, to know the names already written)."""
    found = kinds(proxied)
    chosen = [(proxied[i], found[i]) for i in span]
    by_kind = Counter(k for _, k in chosen)
    prefixes = Counter(f"{k} {(r.object_name or '').split('/')[0]}/" for r, k in chosen if k != "read")
    figures: dict[str, Any] = {k: by_kind[k] / events for k in (*WRITE_KINDS, "read", "other")}
    figures["writes"] = sum(by_kind[k] for k in WRITE_KINDS) / events
    return {**figures, "events": events, "by_object": {k: n / events for k, n in sorted(prefixes.items())}}


@contextmanager
def counting_proxy(around: Surroundings) -> Iterator[tuple[GcsFaultProxy, str]]:
    """A proxy in front of fake-gcs-server that records every request and injects nothing,
    speaking HTTPS (a deployed function sends its token over https only); its URL."""
    proxy = GcsFaultProxy(around.gcs.plain_url)
    certificate = around.authority.issue("gcs-proxy", "localhost", "127.0.0.1")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(certificate.cert_file), str(certificate.key_file))
    proxy._server.socket = context.wrap_socket(proxy._server.socket, server_side=True, do_handshake_on_connect=False)
    with proxy:
        yield proxy, proxy.url.replace("http://", "https://")


def counted(source: Path, chosen: Instance, proxy: GcsFaultProxy, count: int, start: int) -> range:
    """``count`` events through the function, after a first one that wakes it up; where their
    state-bucket requests are in ``proxy.requests`` (each event's are made before it is answered)."""
    batch = requests(count + 1, start=start)
    function = Function.launch(source, chosen.env)
    try:
        function.wait_until_serving(batch[0])
        first = len(proxy.requests)
        driven = drive(function, batch[1:], chosen.deployed.concurrency)
        end = len(proxy.requests)
    finally:
        function.stop()
    if not all(answer.startswith("2") for answer in driven.answers):
        raise RuntimeError(f"the writes run was answered {dict(driven.answers)}")
    return range(first, end)


def writes(around: Surroundings, folder: Path, source: Path, count: int) -> dict[str, Any]:
    """Per event: a sent one, a held one, and the held one's share of the flush that sends it."""
    with counting_proxy(around) as (proxy, url):
        sent = instance(around, folder, None, "bench-capacity-writes-sent", endpoint=url)
        rules = digest.rules_file(folder, WINDOW)
        held = instance(around, folder, None, "bench-capacity-writes-held", config=rules, endpoint=url)
        sent_span = counted(source, sent, proxy, count, 700_000)
        held_span = counted(source, held, proxy, count, 710_000)
        flush_first = len(proxy.requests)
        flushed = digest._flush_in_child(held.env, folder / "capacity-flush")
        if flushed["outcomes"] != ["sent"] or flushed["events"] != count + 1:
            raise RuntimeError(f"the flush of {count + 1} held events did not send one digest: {flushed}")
        proxied = list(proxy.requests)
    return {"sent": per_event(proxied, sent_span, count), "held": per_event(proxied, held_span, count),
            "flush": per_event(proxied, range(flush_first, len(proxied)), count + 1)}  # fmt: skip


# --- The whole part -------------------------------------------------------------------------------


def measure(quick: bool = False, *, latency: float = LATENCY, seconds: float = SECONDS,
            concurrencies: Sequence[int] | None = None) -> dict[str, Any]:  # fmt: skip
    """Every row, the held row and the writes per event, as deployed; quick: a few events each."""
    plan = QUICK if quick else {**FULL, "concurrencies": CONCURRENCIES}
    chosen = sorted({1, *(concurrencies or plan["concurrencies"])})
    count = plan["events"]
    started = time.perf_counter()
    with (
        surroundings(latency, objects_in_files=True) as around,
        tempfile.TemporaryDirectory(prefix="bench-capacity-") as folder,
    ):
        here = Path(folder)
        source = workspace.build(SOURCES["storage-notifier"], here / "workspace")
        default = instance(around, here, None, "bench-capacity-default")
        rows = [row(source, instance(around, here, c, f"bench-capacity-{c}"), count, seconds, latency)
                for c in chosen if c != default.deployed.concurrency]  # fmt: skip
        rows.append(row(source, default, count, seconds, latency))
        rows.sort(key=lambda r: r["concurrency"])
        held_instance = instance(around, here, None, "bench-capacity-held", config=digest.rules_file(here, WINDOW))
        held = row(source, held_instance, count, seconds, latency)
        counts = writes(around, here, source, plan["writes_events"])
    unloaded = rows[0]["p50_ms"]
    rows = with_limits(rows, unloaded)
    return {
        "configuration": default.deployed.describe(), "default_concurrency": default.deployed.concurrency,
        "latency_ms": latency * 1000, "seconds_per_row": None if count else seconds, "unloaded_ms": unloaded,
        "limit_definition": LIMIT_DEFINITION.format(latency=latency * 1000, unloaded=unloaded),
        "rows": rows, "held": {**held, "window": WINDOW}, "writes": counts,
        "max_instances": int(default.deployed.flags.get("max-instances", "0")) or None,
        "target": f">= {TARGET} of the limit, p99 < timeout", "measured_s": time.perf_counter() - started,
    }  # fmt: skip


def _numbers(text: str) -> tuple[int, ...]:
    try:
        numbers = tuple(int(part) for part in text.split(","))
    except ValueError:
        numbers = ()
    if not numbers or min(numbers) < 1:
        raise argparse.ArgumentTypeError(f"expected whole numbers >= 1 separated by commas, got {text!r}")
    return numbers


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny run to check the code works")
    parser.add_argument(
        "--concurrency",
        metavar="N,N,...",
        type=_numbers,
        help=f"the rows to measure (default {','.join(map(str, CONCURRENCIES))}; 1 always, and deploy.sh's default)",
    )
    parser.add_argument("--seconds", type=float, default=SECONDS, help="each row's timed load (default %(default)s)")
    parser.add_argument("--table", metavar="RESULTS", nargs="?", const=str(ROOT / "bench/results.json"),
                        help="measure nothing: print the capacity model from a run's results.json")  # fmt: skip
    args = parser.parse_args(argv)
    if args.table:
        print("\n".join(model_table(json.loads(Path(args.table).read_text())["capacity"])))
        return 0
    from bench.harness import harness_pinned

    with harness_pinned():
        results = measure(args.quick, seconds=args.seconds, concurrencies=args.concurrency)
    print(json.dumps(results, indent=2))
    print("\n".join(section(results)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
