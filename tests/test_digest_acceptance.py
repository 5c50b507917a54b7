"""Issue 16's "done when", end to end: 1,000 uploads delivered to two instances at once, with
redeliveries, in every wire format, become one digest per envelope per window, with 0 lost and 0
counted twice; two flushes at once send one email; ``max_emails = "5/h"`` gives 5 single emails and
a digest of 995; a redelivery after the flush adds nothing.

The GCS tests run the real function twice under functions-framework, sharing the state bucket on
fake-gcs-server, and flush with a pipeline built from the same settings. The events' own times are
fixed (windows of 2026-11-28), so nothing depends on the clock; the flushes send everything.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cloudevents.conversion import to_binary, to_structured

from notifier.ledger.digests import MemoryDigestStore
from notifier.ledger.local import LocalDeadLetters
from notifier.ledger.memory import MemoryLedger
from notifier.outcomes import BATCHED, DUPLICATE, SENT
from notifier.payloads import object_resource, pubsub_message, pubsub_push, storage_cloud_event
from notifier.pipeline import Pipeline
from tests.conftest import FunctionServer, read_eml, settings_for
from tests.fake_gcs_server import STATE_BUCKET
from tests.test_digest_flush import CountingRenderer, RecordingBackend

T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)  # a window start for "1m" and "1h" alike
SECOND_WINDOW = T0 + timedelta(minutes=2)  # the minute between them stays empty: two runs
EVENTS = 1000
MODES = ("binary", "structured", "pubsub")
SUBSCRIPTION = "projects/local/subscriptions/storage-notifier"
BURST_TO = ("ops@example.com", "audit@example.com")  # separate envelopes: one digest each

RULES = f"""
[[rules]]
name = "burst"
buckets = ["burst"]
to = {json.dumps(list(BURST_TO))}
digest = "1m"

[[rules]]
name = "capped"
buckets = ["capped"]
to = ["ops@example.com"]
max_emails = "5/h"
"""


@dataclass(frozen=True)
class Upload:
    """One object change, as every delivery of it carries it (the same generation and time)."""

    number: int
    bucket: str
    at: datetime

    @property
    def data(self) -> dict[str, Any]:
        return object_resource("finalize", self.bucket, f"in/{self.number:04d}.csv", size=100 + self.number,
                               content_type="text/csv", now=self.at)  # fmt: skip

    def request(self, mode: str) -> tuple[dict[str, str], bytes]:
        """Headers and body of a delivery in ``mode``; a redelivery in any mode is the same change."""
        data, event_id = self.data, f"evt-{self.bucket}-{self.number}"
        if mode == "pubsub":
            push = pubsub_push(pubsub_message("finalize", data), event_id, SUBSCRIPTION)
            return {"Content-Type": "application/json"}, json.dumps(push).encode()
        convert = to_binary if mode == "binary" else to_structured
        headers, body = convert(storage_cloud_event("finalize", data, event_id))
        return dict(headers), body


def _burst(count: int = EVENTS) -> list[Upload]:
    """Half in the first window, half in the window after the empty one; 50 ms apart."""
    half = count // 2
    return [
        Upload(i, "burst", (T0 if i < half else SECOND_WINDOW) + timedelta(milliseconds=50 * (i % half)))
        for i in range(count)
    ]


def digest_count(path: Path) -> int:
    """How many events the digest says it holds: its subject starts with the count."""
    subject = str(read_eml(path)["Subject"])
    found = re.match(r"(\d[\d,]*) ", subject)
    assert found, f"no count in the digest's subject {subject!r}"
    return int(found.group(1).replace(",", ""))


# --- in one process: two pipelines sharing a memory store and ledger ---------------------------


def test_two_instances_in_one_process_hold_every_event_once(tmp_path):
    config = tmp_path / "notify.toml"
    config.write_text(RULES, encoding="utf-8")
    settings = settings_for(NOTIFY_CONFIG=str(config))
    store, ledger, backend = MemoryDigestStore(), MemoryLedger(), RecordingBackend()
    instances = [
        Pipeline(settings, backend=backend, renderer=CountingRenderer.for_settings(settings), ledger=ledger,
                 dead_letters=LocalDeadLetters(tmp_path / f"dl-{i}"), digests=store)
        for i in range(2)
    ]  # fmt: skip
    uploads = _burst()
    deliveries = [(u, i % 2) for i, u in enumerate(uploads)] + [(u, u.number % 3 % 2) for u in uploads[::5]]

    def deliver(delivery: tuple[Upload, int]) -> list[str]:
        upload, instance = delivery
        event = storage_cloud_event("finalize", upload.data, f"evt-{upload.number}")
        return [o.outcome for o in instances[instance].handle(event)]

    with ThreadPoolExecutor(8) as pool:
        outcomes = Counter(o for result in pool.map(deliver, deliveries) for o in result)
    assert outcomes == {BATCHED: EVENTS, DUPLICATE: EVENTS // 5}
    results = instances[0].flush(everything=True)
    assert sorted((r.outcome, r.events) for r in results) == [(SENT, EVENTS // 2)] * 2
    assert sorted(len(m.text.split()) for m in backend.sent) == [EVENTS // 2] * 2
    assert len({i for m in backend.sent for i in m.text.split()}) == EVENTS, "0 lost, 0 counted twice"
    assert store.pending().entries == ()


# --- two function instances over HTTP, sharing the state bucket on fake-gcs-server ---------------


@dataclass
class Cloud:
    """Two instances of the function and what a flush needs to be built like them."""

    instances: tuple[FunctionServer, FunctionServer]
    flushes: tuple[FunctionServer, FunctionServer]  # main.py: flush_digests, as Cloud Scheduler calls it
    env: dict[str, str]
    flush_outbox: Path
    _logs_read: list[int]
    _emails_before: set[Path]

    def start_test(self, flush_outbox: Path) -> None:
        self.flush_outbox = flush_outbox
        self._logs_read = [len(s.output()) for s in self.instances]
        self._emails_before = set(self.instance_emails())

    def instance_emails(self) -> list[Path]:
        return [p for s in self.instances for p in s.emails()]

    def new_instance_emails(self) -> list[Path]:
        return [p for p in self.instance_emails() if p not in self._emails_before]

    def outcome_lines(self) -> list[dict[str, Any]]:
        """The lines with an outcome both instances logged in this test."""
        lines = []
        for server, start in zip(self.instances, self._logs_read, strict=True):
            lines += [json.loads(t) for t in server.output()[start:].splitlines() if t.startswith("{")]
        return [line for line in lines if "outcome" in line]

    def pipeline(self, outbox: Path | None = None) -> Pipeline:
        """A flush, built from the same settings as the instances (its own outbox)."""
        pipeline = Pipeline(settings_for(**self.env, NOTIFY_OUTBOX_DIR=str(outbox or self.flush_outbox)))
        pipeline.sleep = lambda _seconds: None
        return pipeline

    def deliver(self, deliveries: list[tuple[Upload, str, int]]) -> None:
        """POST each (upload, mode, instance), 16 at a time; every one must be acknowledged."""

        def post(delivery: tuple[Upload, str, int]) -> int:
            upload, mode, instance = delivery
            headers, body = upload.request(mode)
            return self.instances[instance].post(body, headers)[0]

        with ThreadPoolExecutor(16) as pool:
            statuses = Counter(pool.map(post, deliveries))
        assert statuses == {200: len(deliveries)}


@pytest.fixture(scope="module")
def cloud(function_server_factory, gcs_server, tmp_path_factory) -> Cloud:
    folder = tmp_path_factory.mktemp("digest-acceptance")
    (folder / "notify.toml").write_text(RULES, encoding="utf-8")
    env = {
        "NOTIFY_BACKEND": "outbox", "NOTIFY_CONFIG": str(folder / "notify.toml"),
        "NOTIFY_STATE_BUCKET": STATE_BUCKET, "STORAGE_EMULATOR_HOST": gcs_server.url,
    }  # fmt: skip
    instances = (function_server_factory(**env), function_server_factory(**env))
    flushes = (
        function_server_factory(target="flush_digests", **env),
        function_server_factory(target="flush_digests", **env),
    )
    return Cloud(instances, flushes, env, folder, [0, 0], set())


@pytest.fixture
def clouds(cloud: Cloud, fake_gcs, tmp_path: Path) -> Cloud:
    """The instances, with the state bucket emptied for this test; flushes write to its own outbox."""
    cloud.start_test(tmp_path / "flush-outbox")
    return cloud


def test_1000_uploads_to_two_instances_with_redeliveries_make_one_digest_per_envelope_per_window(clouds):
    uploads = _burst()
    redelivered = uploads[::5]  # 20%: half to the other instance at once, half later to the same one
    deliveries: list[tuple[Upload, str, int]] = []
    for u in uploads:
        deliveries.append((u, MODES[u.number % 3], u.number % 2))
        if u.number % 10 == 0:  # beside its original in the queue: the two are in flight together
            deliveries.append((u, MODES[(u.number + 1) % 3], (u.number + 1) % 2))
    deliveries += [(u, MODES[(u.number + 2) % 3], u.number % 2) for u in uploads if u.number % 10 == 5]
    assert len(deliveries) == EVENTS + len(redelivered)
    clouds.deliver(deliveries)
    lines = clouds.outcome_lines()
    assert Counter(line["outcome"] for line in lines) == {BATCHED: EVENTS, DUPLICATE: len(redelivered)}
    assert {line["window"] for line in lines} == {T0.isoformat(), SECOND_WINDOW.isoformat()}

    results = clouds.pipeline().flush(everything=True)
    assert sorted((r.outcome, r.events) for r in results) == [(SENT, EVENTS // 2)] * 2
    digests = sorted(clouds.flush_outbox.glob("*.eml"))
    by_envelope = Counter(str(read_eml(p)["To"]) for p in digests)
    assert sorted(by_envelope.values()) == [2, 2] and len(by_envelope) == len(BURST_TO), "one per envelope per window"
    assert sorted(digest_count(p) for p in digests) == [EVENTS // 2] * 4
    periods = sorted((str(read_eml(p)["To"]), str(read_eml(p)["Subject"]).rsplit("(", 1)[-1]) for p in digests)
    assert periods == sorted((to, period) for to in BURST_TO for period in ("10:00–10:01 UTC)", "10:02–10:03 UTC)"))
    assert clouds.new_instance_emails() == [], "the instances only held them"
    assert clouds.pipeline().holding.store.pending().entries == ()

    # A redelivery of events already digested adds nothing to a later digest; a late one goes alone.
    late = Upload(EVENTS, "burst", T0 + timedelta(seconds=59))
    again_delivered = redelivered[::7]  # both windows: the second's run holds redeliveries alone
    clouds.deliver([(u, MODES[u.number % 3], u.number % 2) for u in again_delivered] + [(late, "binary", 0)])
    again = clouds.pipeline().flush(everything=True)
    assert sorted((r.outcome, r.events, r.windows[0]) for r in again) == [
        (DUPLICATE, 0, int(SECOND_WINDOW.timestamp())),
        (SENT, 1, int(T0.timestamp())),
    ], "the first window's run sends the late event alone"
    newest = sorted(set(clouds.flush_outbox.glob("*.eml")) - set(digests))
    assert len(newest) == len(BURST_TO) and all("in/1000.csv" in str(read_eml(p)["Subject"]) for p in newest)
    assert clouds.pipeline().holding.store.pending().entries == ()


def test_two_flushes_started_together_send_one_email(clouds, tmp_path):
    clouds.deliver([(u, "binary", u.number % 2) for u in _burst(40)[:20]])  # all in the first window
    flushes = [clouds.pipeline(tmp_path / f"outbox-{i}") for i in range(2)]
    start = threading.Barrier(2)
    results: list = []

    def flush(pipeline: Pipeline) -> None:
        start.wait(timeout=10)
        results.extend(pipeline.flush(everything=True))

    threads = [threading.Thread(target=flush, args=(p,)) for p in flushes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    emails = sorted(tmp_path.glob("outbox-*/*.eml"))
    assert len(emails) == len(BURST_TO), "one digest, one copy per envelope"
    assert [digest_count(p) for p in emails] == [20] * len(BURST_TO)
    assert [r.outcome for r in results].count(SENT) == 1, results


def test_two_scheduled_flush_processes_posted_together_send_one_email(clouds):
    """The flush entry point flushes what is due by the clock: these events are from 10 minutes ago."""
    ten_minutes_ago = datetime.fromtimestamp(time.time() // 60 * 60 - 600, UTC)
    clouds.deliver(
        [(Upload(i, "burst", ten_minutes_ago + timedelta(milliseconds=i)), "binary", i % 2) for i in range(20)]
    )
    before = {p for s in clouds.flushes for p in s.emails()}
    start = threading.Barrier(2)

    def flush(server: FunctionServer) -> tuple[int, str]:
        start.wait(timeout=10)
        return server.post(b"", {})

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(flush, clouds.flushes))
    assert [status for status, _ in answers] == [200, 200], answers
    assert sum(json.loads(body)["sent"] for _, body in answers) == 1, answers
    emails = [p for s in clouds.flushes for p in s.emails() if p not in before]
    assert len(emails) == len(BURST_TO) and [digest_count(p) for p in emails] == [20] * len(BURST_TO)
    assert clouds.pipeline().holding.store.pending().entries == ()


def test_max_emails_5_an_hour_sends_5_alone_and_one_digest_of_the_other_995(clouds):
    uploads = [Upload(i, "capped", T0 + timedelta(seconds=3 * i)) for i in range(EVENTS)]  # all in one hour
    clouds.deliver([(u, MODES[u.number % 3], u.number % 2) for u in uploads])
    assert Counter(line["outcome"] for line in clouds.outcome_lines()) == {SENT: 5, BATCHED: EVENTS - 5}
    assert len(clouds.new_instance_emails()) == 5
    results = clouds.pipeline().flush(everything=True)
    assert [(r.outcome, r.events) for r in results] == [(SENT, EVENTS - 5)]
    (digest,) = clouds.flush_outbox.glob("*.eml")
    assert digest_count(digest) == EVENTS - 5
