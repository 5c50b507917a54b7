"""`make chaos`: thousands of uploads through the real local path, with a failing SendGrid and a
failing state bucket; 0 lost, and every duplicate email explained.

The path: objects written with google-cloud-storage to fake-gcs-server, which publishes each Cloud
Storage notification to the Pub/Sub emulator, whose push subscriptions POST them to a local balancer
(bench/balancer.py) in front of two function instances (functions-framework) sharing one state
bucket on fake-gcs-server. Pub/Sub itself redelivers whatever is not answered 2xx (ack deadline 10 s;
the function's NOTIFY_DEADLINE_SECONDS is 8). A share of the notifications is published a second
time, verbatim, as Cloud Storage's at-least-once delivery can, and the copy races the original.

The emulator pushes at most two messages at once per subscription (two push loops, each POSTing one
message and waiting for the answer); real Pub/Sub pushes many at once. So the objects are spread over
``--shards`` fake-gcs-servers, each publishing to its own topic and push subscription.

Faults: the SendGrid stand-in (bench/standin.py) answers 500/503 (10%), 429 (5%), resets (2%) and
accepts-then-times-out (2%); the state bucket, behind bench/gcs_faults.py, answers ledger calls with
5xx (5%), resets before (2%) and after (2%) the write, and slow answers (1%, 6 s: past the storage
client's 5 s timeout, so it retries a write that happened); and once a third of the emails are out,
it is down for ``--outage`` seconds (every ledger call 503), long enough for `sent` marks to be lost.

Digest phase (``--bulk N``, bench/chaos_digest.py; `make chaos` holds 1,000): the first N uploads go
under ``bulk/``, held for a one-minute digest and flushed every minute as Cloud Scheduler would.

Report: events, emails, lost, duplicates, and the cause of each: accepted-then-timed-out (the
stand-in hung after accepting, or the function's `retrying` line says SendGrid timed out: its
deadline may have cut an answer on its way), or the ledger failing to record `sent` (the `sent`
line carries `ledger_error`, and a redelivery after the lease sent it again). An object counts as
not lost if SendGrid accepted its email, or if its dead letter is in the state bucket's
deadletter/ (where `python -m notifier replay` finds it). The run waits until every object is
accounted for and no push has been made for a few seconds (nothing left to redeliver), or
``--deadline``. Exit 1 if anything was lost, a duplicate has no such cause, or the copier could not
publish a notification a second time; 128+N if signal N stopped it (after stopping all it started).
"""

from __future__ import annotations

import argparse
import base64
import os
import queue
import random
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import chaos_digest
from bench.balancer import Balancer
from bench.chaos_report import STATE, FunctionLog, acceptances, dead_letters, report
from bench.gcs_faults import GcsFaultProxy, GcsFaults, ProxiedRequest
from bench.runfolder import run_in_folder
from bench.standin import Faults, StandIn
from notifier.tools.localcloud import (
    EventSink,
    FakeGcsServer,
    PubSubEmulator,
    running_fake_gcs,
    running_pubsub_emulator,
)
from notifier.tools.processes import (
    LocalCloudError,
    free_port,
    start_server,
    stop_server,
    wait_until_serving,
)

PROJECT, WATCHED = "chaos", "chaos-uploads"
ACK_DEADLINE = 10  # seconds; the function's deadline is below it
QUIET = 5.0  # seconds without a push: nothing is waiting for a redelivery (the emulator retries each second)
ERROR_PAUSE = 0.5  # seconds the copier waits after the emulator failed it (a dead emulator: no busy loop)
COPY_TRIES = 3  # publishing one notification a second time
SENDGRID_FAULTS = Faults(server_error=0.10, rate_limit=0.05, reset=0.02, accepted_then_timeout=0.02, hang=1.5)
LEDGER_FAULTS = GcsFaults(server_error=0.05, reset=0.02, reset_after=0.02, slow=0.01, delay=6.0)


@dataclass(frozen=True)
class Shard:
    topic: str
    capture: str  # a pull subscription on the topic: every notification published to it
    gcs: FakeGcsServer


@dataclass
class Tally:
    """What the run saw, filled in as it goes."""

    published: Counter = field(default_factory=Counter)  # object → notifications seen on its topic
    republished: set[str] = field(default_factory=set)  # objects whose notification was published twice
    not_copied: list[str] = field(default_factory=list)  # objects whose second notification failed to publish
    copier_died: str | None = None  # the copier's unexpected error: the run did not see what it meant to
    seconds: dict[str, float] = field(default_factory=dict)


def ledger_calls(request: ProxiedRequest) -> bool:
    """Faults go to the ledger's records only, not to dead letters or the client's bucket lookups."""
    return (request.object_name or "").startswith("ledger/")


@dataclass
class Outage:
    """The state bucket down for ``seconds``: every ledger call answered 503 meanwhile. Long enough
    (past the storage client's retries, three times over) for a `sent` mark to be lost."""

    proxy: GcsFaultProxy
    seconds: float
    began: float | None = None

    def begin(self) -> None:
        if self.began is None and self.seconds > 0:
            self.began = time.monotonic()

    def target(self, request: ProxiedRequest) -> bool:
        """The proxy's target: ledger calls; during the outage each gets a queued 503 first."""
        if not chaos_digest.state_calls(request):  # the ledger's records and the digests' objects
            return False
        if self.began is not None and time.monotonic() - self.began < self.seconds:
            self.proxy.fail_next.append(503)  # answered before any random fault (the proxy holds its lock)
        return True


def object_name(index: int) -> str:
    return f"chaos/{index:05d}.csv"


def run(args: argparse.Namespace) -> int:
    """The run's exit status: 0 passed, 1 failed, 128+N stopped by signal N (everything it started
    stopped first). Its folder of logs is removed unless it failed or ``--keep``."""
    return run_in_folder("chaos", args.keep, lambda workdir: _run(args, workdir))


def _run(args: argparse.Namespace, workdir: Path) -> int:
    tally = Tally()
    bulk = [chaos_digest.bulk_name(i) for i in range(min(args.bulk, args.events))]  # uploaded first
    names = [object_name(i) for i in range(len(bulk), args.events)]
    config = {"NOTIFY_CONFIG": str(chaos_digest.rules_file(workdir))} if bulk else {}
    started = time.monotonic()
    with ExitStack() as stack:
        sendgrid = stack.enter_context(StandIn(SENDGRID_FAULTS, seed=args.seed))
        emulator = stack.enter_context(running_pubsub_emulator(PROJECT, log=_log(stack, workdir, "pubsub")))
        state = stack.enter_context(running_fake_gcs(log=_log(stack, workdir, "fake-gcs-state")))
        state.bucket(STATE)
        proxy = GcsFaultProxy(state.url, faults=LEDGER_FAULTS, seed=args.seed, preconditions=True)
        outage = Outage(proxy, args.outage)
        proxy.target = outage.target
        stack.enter_context(proxy)
        for server in (sendgrid._server, proxy._server):
            server.handle_error = _dropped_connection  # the function's clients drop connections: no traceback
        urls = [_start_instance(stack, workdir, index, sendgrid.url, proxy.url, config)
                for index in range(args.instances)]  # fmt: skip
        if bulk:  # flushed every minute, as Cloud Scheduler does
            flush_env = _env(sendgrid.url, proxy.url, config)
            flush = chaos_digest.start_flush(stack, flush_env, _log(stack, workdir, "flush"))
            scheduler = stack.enter_context(chaos_digest.Scheduler(flush))
        balancer = stack.enter_context(Balancer(urls))
        shards = [_start_shard(stack, workdir, emulator, balancer.url, index) for index in range(args.shards)]
        tally.seconds["start"] = time.monotonic() - started
        print(f"chaos: local cloud up in {tally.seconds['start']:.0f}s; uploading {len(bulk) + len(names)} objects"
              f" ({len(bulk)} held for digests)", file=sys.stderr, flush=True)  # fmt: skip

        def digested() -> bool:  # the bulk uploads' digests count them all
            return chaos_digest.counted(chaos_digest.digests(list(sendgrid.accepted))) >= len(bulk)

        stop = threading.Event()
        copier = threading.Thread(target=_copier, args=(emulator, shards, args, tally, stop), daemon=True)
        copier.start()
        try:
            _upload(shards, bulk + names, args.concurrency, tally)
            _wait_until_accounted(names, sendgrid, state, balancer, outage, tally, args.deadline,
                                  digested=digested, uploads=len(bulk) + len(names))  # fmt: skip
        finally:
            stop.set()
            copier.join()
        if bulk:  # once more: a redelivery held again after its digest is dropped as a duplicate
            scheduler.flush_now()
            records = chaos_digest.read_records(state.client(), STATE)
        dead = dead_letters(state)
        statuses, injected = dict(sorted(balancer.statuses.items())), dict(sorted(proxy.injected.items()))
    log = FunctionLog.read(workdir)  # every instance has stopped: its log is complete
    tally.seconds["total"] = time.monotonic() - started
    lines, problems = [], copier_problems(tally)
    if bulk:
        flush_log = chaos_digest.FlushLog.read(workdir / "flush.log")
        lines, more = chaos_digest.summary(len(bulk), sendgrid.accepted, records, flush_log, scheduler.answers)
        problems += more
    return report(names, sendgrid, dead, log, statuses, injected, tally, args, problems, lines)


# ---------------------------------------------------------------------------------------------
# Starting the parts (each stopped by the ExitStack, whatever happens)


def _dropped_connection(request: object, client_address: object) -> None:
    pass


def _log(stack: ExitStack, workdir: Path, name: str) -> Any:
    return stack.enter_context((workdir / f"{name}.log").open("wb"))


def _start_instance(stack: ExitStack, workdir: Path, index: int, sendgrid_url: str, storage_url: str,
                    config: dict[str, str]) -> str:  # fmt: skip
    env = _env(sendgrid_url, storage_url, config)
    port = free_port()
    process = start_server(port, env, _log(stack, workdir, f"instance-{index}"))
    stack.callback(stop_server, process)
    url = f"http://127.0.0.1:{port}"
    wait_until_serving(url, process)
    return url


def _env(sendgrid_url: str, storage_url: str, config: dict[str, str]) -> dict[str, str]:
    """Every instance's environment (the flush's too); ``config``: the rules file, for a digest phase."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "SENDGRID_", "PUBSUB_"))},
        "SENDGRID_API_KEY": "SG.chaos-not-a-real-key",
        "SENDGRID_API_HOST": sendgrid_url,
        "SENDGRID_TIMEOUT_SECONDS": "1",  # shorter than the stand-in's hang: accepted-then-timeout
        "NOTIFY_FROM": "chaos@example.com",
        "NOTIFY_TO": "ops@example.com",
        "NOTIFY_MAX_ATTEMPTS": "3",
        "NOTIFY_MAX_BACKOFF_SECONDS": "0.2",
        "NOTIFY_DEADLINE_SECONDS": str(ACK_DEADLINE - 2),
        "NOTIFY_STATE_BUCKET": STATE,
        "STORAGE_EMULATOR_HOST": storage_url,
        "THREADS": "32",
        **config,
    }


def _start_shard(stack: ExitStack, workdir: Path, emulator: PubSubEmulator, endpoint: str, index: int) -> Shard:
    topic, capture = f"uploads-{index}", f"capture-{index}"
    emulator.create_topic(topic)
    emulator.create_pull_subscription(capture, topic)
    emulator.create_push_subscription(f"push-{index}", topic, endpoint, ack_deadline=ACK_DEADLINE)
    sink = EventSink(emulator.host, PROJECT, topic, bucket=WATCHED, events=("finalize",))
    gcs = stack.enter_context(running_fake_gcs(events=sink, log=_log(stack, workdir, f"fake-gcs-{index}")))
    gcs.bucket(WATCHED)
    return Shard(topic, capture, gcs)


# ---------------------------------------------------------------------------------------------
# Playing the users and the platform


def _upload(shards: list[Shard], names: list[str], concurrency: int, tally: Tally) -> None:
    """``names`` uploaded by ``concurrency`` threads. The main thread only waits on joins with a
    timeout: a SIGTERM's Stopped, raised wherever the main thread is, once landed inside a
    ThreadPoolExecutor's locks and left its workers deadlocked (the run never stopped)."""
    buckets = [shard.gcs.client().bucket(WATCHED) for shard in shards]
    started, todo, failures, stop = time.monotonic(), queue.SimpleQueue(), [], threading.Event()
    for index in range(len(names)):
        todo.put(index)

    def uploader() -> None:
        while not stop.is_set():
            try:
                index = todo.get_nowait()
            except queue.Empty:
                return
            try:  # a bounded wait (the client's default is 60 s): a stopped run waits for those in flight
                blob = buckets[index % len(buckets)].blob(names[index])
                blob.upload_from_string(b"id,value\n1,2\n", content_type="text/csv", timeout=10)
            except Exception as error:  # noqa: BLE001 - the first one fails the run, in the main thread
                failures.append(error)
                stop.set()

    threads = [threading.Thread(target=uploader, name=f"upload-{i}", daemon=True) for i in range(concurrency)]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.1)
    finally:
        stop.set()  # stopped: the uploads not begun are dropped, not waited for
    if failures:
        raise failures[0]
    tally.seconds["upload"] = time.monotonic() - started


def _copier(emulator: PubSubEmulator, shards: list[Shard], args: argparse.Namespace, tally: Tally,
            stop: threading.Event) -> None:  # fmt: skip
    """The copier thread: an unexpected error ends it, and is kept, so the run fails saying why."""
    try:
        _copy_some(emulator, shards, args, tally, stop)
    except Exception as error:  # noqa: BLE001 - whatever it was, the run reports it and fails
        tally.copier_died = f"{type(error).__name__}: {error}"
        print(f"chaos: the copier thread died: {tally.copier_died}", file=sys.stderr)


def _copy_some(emulator: PubSubEmulator, shards: list[Shard], args: argparse.Namespace, tally: Tally,
               stop: threading.Event) -> None:  # fmt: skip
    """Watch every notification published; publish a share of them again, verbatim, to a random
    shard's topic (real Pub/Sub would push the copy concurrently with the original, as that shard does)."""
    chooser = random.Random(args.seed)
    while not stop.is_set():
        seen, failed = 0, False
        for shard in shards:
            try:
                messages = emulator.pull(shard.capture)
            except (LocalCloudError, OSError) as error:  # the busy emulator was slow to answer: pull again
                print(f"chaos: pulling the published notifications: {error}", file=sys.stderr)
                failed = True
                continue
            seen += len(messages)
            for message in messages:
                name = message["attributes"].get("objectId", "")
                tally.published[name] += 1
                if tally.published[name] == 1 and chooser.random() < args.twice:
                    _publish_again(emulator, chooser.choice(shards).topic, message, tally, stop)
        if failed:
            stop.wait(ERROR_PAUSE)
        elif not seen:
            stop.wait(0.2)


def _publish_again(emulator: PubSubEmulator, topic: str, message: dict[str, Any], tally: Tally,
                   stop: threading.Event) -> None:  # fmt: skip
    """``message`` published to ``topic`` once more, tried COPY_TRIES times; counted in ``tally``."""
    name = message["attributes"].get("objectId", "")
    data = base64.b64decode(message["data"])
    for attempt in range(1, COPY_TRIES + 1):
        try:
            emulator.publish(topic, data, message["attributes"])
        except (LocalCloudError, OSError) as error:
            print(f"chaos: publishing {name} a second time (try {attempt}): {error}", file=sys.stderr)
            if attempt == COPY_TRIES or stop.wait(ERROR_PAUSE):
                break
        else:
            tally.republished.add(name)
            return
    tally.not_copied.append(name)


def copier_problems(tally: Tally) -> list[str]:
    """Why the run is not the one asked for, if it is not: each fails it."""
    problems = []
    if tally.copier_died:
        problems.append(f"the copier thread died ({tally.copier_died}): notifications after it were neither"
                        " counted nor copied")  # fmt: skip
    if tally.not_copied:
        count = len(tally.not_copied)
        problems.append(f"{count} notification{'s' if count > 1 else ''} could not be published a second time"
                        f" (e.g. {tally.not_copied[0]}): the run is not the one asked for")  # fmt: skip
    return problems


def _wait_until_accounted(names: list[str], sendgrid: StandIn, state: FakeGcsServer, balancer: Balancer,
                          outage: Outage, tally: Tally, deadline: float, *, digested: Callable[[], bool],
                          uploads: int) -> None:  # fmt: skip
    """Until every object has an email (or a dead letter) and no push has been made for QUIET seconds
    (nothing is left for Pub/Sub to redeliver), or ``deadline`` seconds pass. The state bucket's
    outage begins once a third of the objects have their email."""
    started = time.monotonic()
    while time.monotonic() - started < deadline and not tally.copier_died:  # a dead copier: the run failed
        time.sleep(0.5)
        emailed = {name for name, _ in acceptances(sendgrid)}
        if len(emailed) >= len(names) / 3:
            outage.begin()
        missing = [name for name in names if name not in emailed]
        if missing and len(missing) <= 100:  # listing the dead letters is worth it only near the end
            dead = dead_letters(state)
            missing = [name for name in missing if name not in dead]
        if not missing and len(tally.published) >= uploads and digested():  # and every copy to make is made
            tally.seconds.setdefault("all", time.monotonic() - started)
            if balancer.quiet_for() > QUIET:
                break
    tally.seconds["wait"] = time.monotonic() - started


# ---------------------------------------------------------------------------------------------
# Reading what happened


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=5000, help="objects uploaded, one notification each")
    parser.add_argument("--concurrency", type=int, default=8, help="uploads in flight at once")
    parser.add_argument("--instances", type=int, default=2, help="function instances behind the balancer")
    parser.add_argument("--shards", type=int, default=8, help="fake-gcs-servers, each with its own topic")
    parser.add_argument("--twice", type=float, default=0.2, help="share of notifications published twice")
    parser.add_argument("--outage", type=float, default=30.0, help="seconds the state bucket is down (0: never)")
    parser.add_argument("--deadline", type=float, default=600.0, help="seconds to wait for every email")
    bulk = f'of the uploads, under {chaos_digest.BULK_PREFIX} with digest = "{chaos_digest.WINDOW}" (make chaos: 1000)'
    parser.add_argument("--bulk", type=int, default=0, help=bulk)
    parser.add_argument("--seed", type=int, default=20261128)
    parser.add_argument("--keep", action="store_true", help="keep the logs (a failed run always does) and print where")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
