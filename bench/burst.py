"""`make burst`: a bulk copy's finalize notifications (10,000) through the Pub/Sub emulator to ONE
function instance configured as deploy/deploy.sh deploys it, saturated on purpose: every object
emailed, 0 lost, 0 unexplained duplicates, and how the instance answers while every slot is busy.

The instance: deploy.sh's own dry run (bench/deployed.py), for a user env file naming the stand-ins,
gives its flags and env file (THREADS, NOTIFY_MAX_IN_FLIGHT, NOTIFY_DEADLINE_SECONDS, ...), used as
they are; only what models the platform is added (K_SERVICE and its siblings, the SendGrid key the
secret mounts, the metadata server, the storage endpoint, the CA store), as bench/capacity.py adds it
(deployed_env: nothing of ours, and no THREADS or WORKERS, from the caller's shell). It runs from a
workspace built as the buildpack builds it, pinned to one core (bench/harness.py); all else shares
the rest.

Around it: the SendGrid stand-in over HTTPS with 150 ms latency (a process of its own, remembering
what it accepted for which object), the state bucket on fake-gcs-server over HTTPS (its objects kept
as files: the memory backend scans a bucket on every call, 8 times slower at 12,000 objects than at
1,000), its token from a metadata-server stand-in, and the Pub/Sub emulator. The notifications are what fake-gcs-server
publishes for an upload (the object resource as JSON_API_V1 data; bucketId, objectId, eventType,
objectGeneration, eventTime, payloadFormat as attributes), for distinct objects bulk/part-NNNNN.csv,
all published before the pushes begin (the subscriptions get their push endpoint once all are in):
a bulk copy's notifications waiting at once. Published while the emulator pushes, they went in at
about 100 a second (its push loops hold it up), which would have timed the emulator, not the instance.

The emulator pushes at most two messages at once per subscription, so they are spread round robin
over K topics, each with one push subscription; K defaults to the instance's --concurrency, so the
pushes in flight (2K) are twice what the instance takes. The ack deadline is the function's
--timeout, as for a deployed trigger. Pushes go through bench/balancer.py with the one instance
behind it: it only forwards, counting answers by status and timing them.

Report: publish time, time to drain (from the first push to every object's email accepted) and to
the last push (then none for a few seconds: nothing left to redeliver), pushes by status, answer times
of the 429s and the 2xx, the most pushes in flight at the instance, emails, lost (no accepted email and no
dead letter), dead letters, duplicates (explained as `make chaos` explains them; with no faults,
expect none), the function's WARNING lines about refusals, and how busy the function was and each
core (the function's, the harness's) while draining (bench/capacity.py's cores_busy). Exit 1 if
anything is lost or dead-lettered (nothing is injected), a duplicate is unexplained, a push answer
took longer than the function's timeout, or the pushes had not stopped by --deadline (or some were
still in flight); 128+N if signal N stopped it (after stopping all it started). A failed run keeps
its folder of logs and prints it.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import os
import shlex
import ssl
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from bench import workspace
from bench.balancer import Balancer
from bench.burst_report import Cores, InstanceLog, Pushes, emails_by_object, report, summary
from bench.capacity import cores_busy, deployed_env
from bench.chaos_report import FunctionLog, dead_letters
from bench.deployed import deployment
from bench.harness import ROOT, SOURCES, Authority, Function, _pin_to_function_cpus, harness_pinned, throwaway_ca
from bench.metadata import MetadataStandIn
from bench.runfolder import run_in_folder
from bench.standin import Acceptance, Faults, StandIn
from notifier.tools.localcloud import FakeGcsServer, PubSubEmulator, running_fake_gcs, running_pubsub_emulator
from notifier.tools.processes import (
    LocalCloudError,
    free_port,
    stop_group,
    stop_server,
    wait_until_serving,
)

PROJECT = "burst"
UPLOADS = "bench-uploads"  # the bucket deploy.sh's dry run watches (bench/deployed.py)
STATE = "burst-state"
CONTENT = b"id,value\n1,2\n"  # every object's bytes, as `make chaos` uploads them
MD5 = base64.b64encode(hashlib.md5(CONTENT, usedforsecurity=False).digest()).decode()
CRC32C = "r2pRtQ=="  # CONTENT's CRC32C, as fake-gcs-server reports it
PUBLISH_BATCH = 1000  # messages per publish call
POLL, QUIET = 0.5, 5.0  # seconds; quiet: no push for that long (the emulator redelivers each second)
PROGRESS = 10.0  # seconds between two progress lines on stderr
_EMULATOR_OPTIONS = "CLOUD_PUBSUB_EMULATOR_OPTS"  # the JVM options its start script passes on
_PUSH_LOOP = "com.google.cloud.pubsub.testing.v1.PushLoop"  # the emulator's logger of failed pushes


def object_name(index: int) -> str:
    return f"bulk/part-{index:05d}.csv"


def notification(name: str, generation: int, now: datetime, bucket: str = UPLOADS) -> tuple[bytes, dict[str, str]]:
    """The message fake-gcs-server publishes when ``name`` is uploaded: its data and attributes."""
    stamp = now.isoformat(timespec="microseconds").replace("+00:00", "Z")
    resource = {"kind": "storage#object", "id": f"{bucket}/{name}#{generation}", "name": name, "bucket": bucket,
                "generation": str(generation), "contentType": "text/csv", "timeCreated": stamp, "updated": stamp,
                "storageClass": "STANDARD", "size": str(len(CONTENT)), "md5Hash": MD5, "crc32c": CRC32C}  # fmt: skip
    attributes = {"bucketId": bucket, "eventTime": now.strftime("%Y-%m-%dT%H:%M:%SZ"), "eventType": "OBJECT_FINALIZE",
                  "objectGeneration": str(generation), "objectId": name, "payloadFormat": "JSON_API_V1"}  # fmt: skip
    return json.dumps(resource).encode(), attributes


# ---------------------------------------------------------------------------------------------
# The SendGrid stand-in, in a process of its own, telling which message it accepted when


class _RememberingStandIn(StandIn):
    """The stand-in, plus ``GET /acceptances?since=N``: what it accepted from the N-th message on."""

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        base, stand_in = super()._handler(), self

        class Handler(base):  # type: ignore[misc, valid-type]
            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                if path != "/acceptances":
                    super().do_GET()
                    return
                since = int((parse_qs(query).get("since") or ["0"])[0])
                with stand_in._lock:
                    rows = [asdict(acceptance) for acceptance in stand_in.accepted[since:]]
                self._answer(200, json.dumps(rows).encode(), {"Content-Type": "application/json"})

        return Handler


def serve_sendgrid(latency: str, cert_file: str, key_file: str) -> None:
    """The stand-in's process: HTTPS on a free port until SIGTERM; the first line printed is its URL."""
    import signal

    stand_in = _RememberingStandIn(Faults(latency=float(latency)))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert_file, key_file)
    # The handshake happens in the handler's thread, not in the accepting one.
    server = stand_in._server
    server.socket = context.wrap_socket(server.socket, server_side=True, do_handshake_on_connect=False)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(stand_in.url.replace("http://127.0.0.1", "https://localhost"), flush=True)
    server.serve_forever()


@dataclass
class SendGrid:
    """The running stand-in, and what it has accepted so far (read a little at a time)."""

    url: str
    context: ssl.SSLContext
    accepted: list[Acceptance] = field(default_factory=list)

    def refresh(self) -> list[Acceptance]:
        url = f"{self.url}/acceptances?since={len(self.accepted)}"
        with urllib.request.urlopen(url, timeout=30, context=self.context) as answer:  # noqa: S310 - our stand-in
            self.accepted += [Acceptance(**row) for row in json.loads(answer.read())]
        return self.accepted


@contextmanager
def sendgrid_stand_in(authority: Authority, latency: float, log: Any) -> Iterator[SendGrid]:
    certificate = authority.issue("sendgrid", "localhost")
    code = "import sys; from bench.burst import serve_sendgrid; serve_sendgrid(*sys.argv[1:])"
    command = [sys.executable, "-c", code, str(latency), str(certificate.cert_file), str(certificate.key_file)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL,
                               text=True, start_new_session=True)  # fmt: skip
    try:
        url = process.stdout.readline().strip()
        if not url.startswith("https://"):
            raise LocalCloudError(f"the SendGrid stand-in did not start (exit code {process.poll()})")
        yield SendGrid(url, authority.context())
    finally:
        stop_group(process)


# ---------------------------------------------------------------------------------------------
# The run


@dataclass(frozen=True)
class Options:
    events: int = 10_000
    deploy_options: tuple[str, ...] = ()  # passed to deploy.sh (e.g. --concurrency 8)
    subscriptions: int | None = None  # K; None: the instance's --concurrency
    latency: float = 0.150  # seconds the SendGrid stand-in takes to answer
    deadline: float = 1200.0  # seconds to wait for every email
    keep: bool = False
    out: Path | None = None


def run(options: Options) -> int:
    """The run's exit status: 0 passed, 1 failed, 128+N stopped by signal N (everything it started
    stopped first). Its folder of logs is removed unless it failed or ``options.keep``."""

    def body(workdir: Path) -> int:
        with harness_pinned():  # all but the function share the other core
            results = _run(options, workdir)
        return report(results, options.out)

    return run_in_folder("burst", options.keep, body, (LocalCloudError, RuntimeError))


def _run(options: Options, workdir: Path) -> dict[str, Any]:
    names = [object_name(index) for index in range(options.events)]
    with ExitStack() as stack:
        authority = stack.enter_context(throwaway_ca())
        sendgrid = stack.enter_context(sendgrid_stand_in(authority, options.latency, _log(stack, workdir, "sendgrid")))
        # deploy.sh checks its options first: a refused one fails the run before the slow parts start
        deployed = deployment(*options.deploy_options, env_file=_user_env_file(workdir, sendgrid.url))
        gcs_certificate = authority.issue("gcs", "localhost", "127.0.0.1")
        gcs = stack.enter_context(running_fake_gcs(certificate=gcs_certificate, log=_log(stack, workdir, "fake-gcs"),
                                                   root=workdir / "state"))  # fmt: skip
        state = FakeGcsServer(gcs.plain_url, gcs.port)  # the harness's own view, over plain HTTP
        state.bucket(STATE)
        metadata = stack.enter_context(MetadataStandIn())
        with _quiet_push_failures(workdir):
            emulator = stack.enter_context(running_pubsub_emulator(PROJECT, log=_log(stack, workdir, "pubsub")))
        env = deployed_env(deployed, ca_dir=authority.ca_dir, storage_endpoint=gcs.url, metadata_host=metadata.host)
        function = _launch(stack, workspace.build(SOURCES["storage-notifier"], workdir / "workspace"), env, workdir)
        balancer = stack.enter_context(Balancer([function.url]))
        count = options.subscriptions or deployed.concurrency
        topics = [_subscribe(emulator, index, deployed.timeout_seconds) for index in range(count)]
        print(f"burst: {deployed.describe()}, THREADS={deployed.threads}: publishing {len(names)} notifications"
              f" to {count} topics", file=sys.stderr, flush=True)  # fmt: skip
        seconds = {"publish": publish(emulator, topics, names)}
        cpu_before = function.cpu_seconds()
        with cores_busy() as busy:  # while pushed to: until every object's email, or the deadline
            started, released_at = time.monotonic(), time.time()
            _release(emulator, count, balancer.url)
            print(f"burst: published in {seconds['publish']:.1f}s; pushing", file=sys.stderr, flush=True)
            drained = _wait_until_drained(names, sendgrid, state, balancer, started, options.deadline)
        cores = Cores(time.monotonic() - started, function.cpu_seconds() - cpu_before, busy["function"],
                      busy["harness"])  # fmt: skip
        quiet = _wait_until_quiet(balancer, started, options.deadline)
        seconds["waited"], in_flight_at_end = time.monotonic() - started, balancer.in_flight
        seconds |= {key: value for key, value in (("drain", drained), ("quiet", quiet)) if value is not None}
        if drained is not None and len(emails := emails_by_object(sendgrid.accepted)) == len(names):
            # By the stand-in's clock, not the poll's: when the last object got its first email.
            seconds["drain"] = max(min(copy.at for copy in copies) for copies in emails.values()) - released_at
        cpu = function.cpu_seconds()
        dead = dead_letters(state, STATE)
    log = FunctionLog.read(workdir)  # the instance has stopped: its log is complete
    return summary(names, sendgrid.accepted, dead, log, Pushes.seen_by(balancer, in_flight_at_end), deployed, count,
                   seconds, cpu, InstanceLog.read(workdir / "instance-0.log"), cores)  # fmt: skip


def _log(stack: ExitStack, workdir: Path, name: str) -> Any:
    return stack.enter_context((workdir / f"{name}.log").open("wb"))


@contextmanager
def _quiet_push_failures(workdir: Path) -> Iterator[None]:
    """The emulator started meanwhile does not log each failed push (an INFO line and a stack trace
    per 429: 230 MB in a run of 10,000, relayed line by line by gcloud's Python on the harness's
    core); its warnings and errors still are. The balancer counts every push anyway."""
    settings = workdir / "emulator-logging.properties"
    settings.write_text(f"handlers=java.util.logging.ConsoleHandler\n.level=INFO\n{_PUSH_LOOP}.level=WARNING\n")
    before = os.environ.get(_EMULATOR_OPTIONS)
    os.environ[_EMULATOR_OPTIONS] = f"-Djava.util.logging.config.file={settings}"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(_EMULATOR_OPTIONS, None)
        else:
            os.environ[_EMULATOR_OPTIONS] = before


def _user_env_file(workdir: Path, sendgrid_url: str) -> Path:
    """What a user's env file says (deploy/env.example.yaml): who gets what, the state bucket, and here
    the stand-in as SendGrid's host."""
    path = workdir / "env.yaml"
    values = {"NOTIFY_FROM": "burst@example.com", "NOTIFY_TO": "ops@example.com", "NOTIFY_STATE_BUCKET": STATE,
              "SENDGRID_API_HOST": sendgrid_url}  # fmt: skip
    path.write_text("".join(f"{name}: {json.dumps(value)}\n" for name, value in values.items()))
    return path


def _launch(stack: ExitStack, source: Path, env: dict[str, str], workdir: Path) -> Function:
    """functions-framework serving ``source`` from its workspace on the function's core, as
    harness.Function.launch does, but logging to instance-0.log (its outcome lines are read)."""
    port = free_port()
    command = [sys.executable, "-m", "functions_framework", "--target", "handle_storage_event",
               "--source", str(source), "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    process = subprocess.Popen(command, cwd=source.parent, env=env, stdout=_log(stack, workdir, "instance-0"),
                               stderr=subprocess.STDOUT, preexec_fn=_pin_to_function_cpus)  # fmt: skip
    stack.callback(stop_server, process)
    function = Function(f"http://127.0.0.1:{port}", process)
    wait_until_serving(function.url, process, timeout=60)
    return function


def _subscribe(emulator: PubSubEmulator, index: int, ack_deadline: int) -> str:
    """Topic ``index`` and its subscription, which pushes once :func:`_release` gives it an endpoint."""
    topic = f"uploads-{index}"
    emulator.create_topic(topic)
    body = {"topic": emulator._path(f"topics/{topic}"), "ackDeadlineSeconds": ack_deadline}
    emulator._call("PUT", f"subscriptions/push-{index}", body)
    return topic


def _release(emulator: PubSubEmulator, count: int, endpoint: str) -> None:
    """Every subscription pushes to ``endpoint`` from now on, what was published before included."""
    config = {"pushConfig": {"pushEndpoint": endpoint}}
    for index in range(count):
        emulator._call("POST", f"subscriptions/push-{index}:modifyPushConfig", config)


def publish(emulator: PubSubEmulator, topics: list[str], names: list[str]) -> float:
    """One notification per name, round robin over ``topics``, in batches; the seconds it took."""
    now = datetime.now(UTC)
    first = int(now.timestamp() * 1_000_000)  # generations: microseconds, as fake-gcs-server's
    by_topic: list[list[dict[str, Any]]] = [[] for _ in topics]
    for index, name in enumerate(names):
        data, attributes = notification(name, first + index, now)
        by_topic[index % len(topics)].append({"data": base64.b64encode(data).decode(), "attributes": attributes})
    started = time.monotonic()
    for start in range(0, len(by_topic[0]), PUBLISH_BATCH):
        for topic, messages in zip(topics, by_topic, strict=True):
            if batch := messages[start : start + PUBLISH_BATCH]:
                emulator._call("POST", f"topics/{topic}:publish", {"messages": batch})
    return time.monotonic() - started


def _wait_until_drained(names: list[str], sendgrid: SendGrid, state: FakeGcsServer, balancer: Balancer,
                        started: float, deadline: float) -> float | None:  # fmt: skip
    """Until every object has an email (or a dead letter): the seconds from ``started`` (the first
    push) it took; None if ``deadline`` seconds passed first."""
    wanted, said = set(names), started
    while time.monotonic() - started < deadline:
        time.sleep(POLL)
        missing = wanted - set(emails_by_object(sendgrid.refresh()))
        if time.monotonic() - said >= PROGRESS:
            said = time.monotonic()
            _progress(said - started, f"{len(wanted) - len(missing)} of {len(wanted)} objects emailed", balancer)
        if missing and len(missing) <= 100:  # listing the dead letters is worth it only near the end
            missing -= set(dead_letters(state, STATE))
        if not missing:
            return time.monotonic() - started
    return None


def _wait_until_quiet(balancer: Balancer, started: float, deadline: float) -> float | None:
    """Until no push has come for QUIET seconds (nothing left to redeliver): when the last one ended,
    in seconds from ``started``; None if ``deadline`` seconds from ``started`` passed first."""
    said = time.monotonic()
    while time.monotonic() - started < deadline:
        if balancer.quiet_for() > QUIET:
            return balancer.last_request - started
        if time.monotonic() - said >= PROGRESS:
            said = time.monotonic()
            _progress(said - started, "waiting for the pushes to stop", balancer)
        time.sleep(POLL)
    return None


def _progress(seconds: float, state: str, balancer: Balancer) -> None:
    statuses = dict(sorted(balancer.statuses.items()))
    print(f"burst: {seconds:.0f}s: {state}; pushes by status {statuses}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=_whole(1, 99_999), default=10_000, help="notifications, one object each")
    parser.add_argument("--concurrency", help="deploy.sh --concurrency (default: deploy.sh's; it checks the value)")
    parser.add_argument("--deploy-args", default="", help='more deploy.sh options, e.g. "--cpu 2 --timeout 120"')
    parser.add_argument("--subscriptions", type=_whole(1, 500), help="push subscriptions, 2 pushes each (default:"
                        " concurrency)")  # fmt: skip
    parser.add_argument("--latency", type=_seconds(0), default=0.150, help="seconds the SendGrid stand-in takes")
    parser.add_argument("--deadline", type=_seconds(1), default=1200.0, help="seconds to wait for every email")
    parser.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--keep", action="store_true", help="keep the logs (a failed run always does) and print where")
    args = parser.parse_args(argv)
    deploy_options = (("--concurrency", args.concurrency) if args.concurrency is not None else ()) + tuple(
        shlex.split(args.deploy_args)
    )
    return run(Options(args.events, deploy_options, args.subscriptions, args.latency, args.deadline, args.keep,
                       args.out))  # fmt: skip


def _whole(low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"expected a whole number from {low} to {high}, got {text!r}")
        return int(text)

    return parse


def _seconds(low: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not low <= value <= 3600:  # NaN fails both
            raise argparse.ArgumentTypeError(f"expected seconds from {low} to 3600, got {text!r}")
        return value

    return parse


if __name__ == "__main__":
    sys.exit(main())
