"""A state bucket (or object bucket) that accepts requests and never answers must not hold an event
past its deadline: every Cloud Storage call is bounded by the time the delivery has left, and what
could not be done is left to the platform's redelivery (nothing lost)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest.mock import ANY

import pytest
from cloudevents.conversion import to_binary

from bench.gcs_faults import GcsFaultProxy, GcsFaults, ProxiedRequest
from notifier.ledger import ClaimStatus
from notifier.ledger.bucket import RETRY_BUDGET, StateBucket
from notifier.ledger.gcs import GcsDeadLetters, GcsLedger, state_bucket
from notifier.ledger.history import object_key
from notifier.mail.base import Backend, Message, Receipt
from notifier.pipeline import Pipeline, RetryLater
from notifier.tools.localcloud import FakeGcsServer
from tests.conftest import SECRET_KEY, settings_for, storage_cloud_event
from tests.fake_gcs_server import STATE_BUCKET, clean_slate

DEADLINE = 2.0  # NOTIFY_DEADLINE_SECONDS in these tests
BOUND = 3 * DEADLINE  # generous: "not stuck"; before the fix a hung call took 11 s (claim) to 60 s (dead letter)
# A hung call is cut off by the fixed limits (5 s a request, 8 s of retries) and, after the send, by
# the deadline plus a 10 s grace; in the tests that hang one, all three a tenth as long.
QUICK_TIMEOUT, QUICK_RETRY, QUICK_GRACE = 0.5, 0.8, 1.0


def _no_wait(bucket: StateBucket) -> StateBucket:
    """The bucket's own retries, without real sleeps."""
    bucket.sleep = lambda seconds: None
    return bucket


@dataclass
class HangingProxy(GcsFaultProxy):
    """The fault proxy, except that requests ``hangs`` picks are accepted and never answered (until
    the test ends; then their connection is reset, and nothing reaches the server)."""

    hangs: Callable[[ProxiedRequest], bool] = lambda request: False
    released: threading.Event = field(default_factory=threading.Event)

    def _decide(self, request: ProxiedRequest) -> str | int:
        if self.hangs(request):
            self.released.wait(60)
            return "reset"
        return super()._decide(request)


@pytest.fixture
def hanging_gcs(gcs_server: FakeGcsServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[HangingProxy]:
    clean_slate(gcs_server)
    proxy = HangingProxy(gcs_server.url, preconditions=True)
    with proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        try:
            yield proxy
        finally:
            proxy.released.set()
    clean_slate(gcs_server)


def _pipeline(
    proxy: HangingProxy, deadline: float = DEADLINE, *, quick: bool = True,
    clock: Callable[[], float] = time.monotonic, **env: str,
) -> Pipeline:  # fmt: skip
    """``quick``: the state bucket's limits a tenth as long (a slow answer needs the real ones)."""
    settings = settings_for(
        NOTIFY_STATE_BUCKET=STATE_BUCKET, STORAGE_EMULATOR_HOST=proxy.url, NOTIFY_DEADLINE_SECONDS=str(deadline), **env
    )
    bucket = _no_wait(state_bucket(settings))
    if quick:
        bucket.timeout, bucket.retry_budget = QUICK_TIMEOUT, QUICK_RETRY
    pipeline = Pipeline(settings, ledger=GcsLedger(bucket), dead_letters=GcsDeadLetters(bucket), clock=clock)
    pipeline.sleep = lambda seconds: None
    if quick:
        pipeline.state_grace = QUICK_GRACE
    return pipeline


@dataclass
class Handled:
    seconds: float
    result: Any = None
    error: BaseException | None = None


def _handle_in_a_thread(pipeline: Pipeline, event: Any, bound: float = BOUND) -> Handled:
    """Handle ``event`` on its own thread; the thread must be done within ``bound``, not left stuck."""
    handled = Handled(seconds=-1.0)

    def run() -> None:
        started = time.monotonic()
        try:
            handled.result = pipeline.handle(event)
        except Exception as error:  # noqa: BLE001 - RetryLater is the expected answer here
            handled.error = error
        handled.seconds = time.monotonic() - started

    thread = threading.Thread(target=run, name="handling", daemon=True)
    started = time.monotonic()
    thread.start()
    thread.join(bound)
    assert not thread.is_alive(), f"handling still running after {time.monotonic() - started:.1f} s"
    return handled


def _outcome_lines(capsys: pytest.CaptureFixture) -> list[dict[str, Any]]:
    lines = [json.loads(text) for text in capsys.readouterr().out.splitlines() if text.startswith("{")]
    return [line for line in lines if "outcome" in line]


def _objects(proxy: HangingProxy, prefix: str) -> Callable[[ProxiedRequest], bool]:
    return lambda request: (request.object_name or "").startswith(prefix)


def test_a_hung_state_bucket_answers_retry_later_within_the_deadline(hanging_gcs, capsys):
    hanging_gcs.hangs = _objects(hanging_gcs, "ledger/")
    pipeline = _pipeline(hanging_gcs, NOTIFY_BACKEND="console")

    handled = _handle_in_a_thread(pipeline, storage_cloud_event(event_id="hung-claim"))

    assert isinstance(handled.error, RetryLater), handled.error  # 500: the platform redelivers it
    assert handled.seconds < DEADLINE + 1.0, handled.seconds
    (line,) = _outcome_lines(capsys)
    assert (line["outcome"], line["severity"]) == ("retrying", "WARNING")
    assert "ledger unavailable: state bucket notifier-state" in line["message"]


def test_a_hung_dead_letter_write_is_logged_once_with_the_letter_and_redelivered(hanging_gcs, httpserver, capsys):
    httpserver.expect_request("/v3/mail/send").respond_with_json({"errors": [{"message": "bad"}]}, status=400)
    hanging_gcs.hangs = _objects(hanging_gcs, "deadletter/")
    pipeline = _pipeline(
        hanging_gcs, SENDGRID_API_KEY=SECRET_KEY, SENDGRID_API_HOST=httpserver.url_for("").rstrip("/"),
        NOTIFY_MAX_ATTEMPTS="1",
    )  # fmt: skip
    event = storage_cloud_event(name="reports/lost.csv", event_id="hung-dead-letter")

    handled = _handle_in_a_thread(pipeline, event)

    assert isinstance(handled.error, RetryLater), handled.error  # not acknowledged: the letter is not lost
    assert handled.seconds < DEADLINE + 2.0, handled.seconds
    (line,) = _outcome_lines(capsys)
    assert (line["outcome"], line["severity"]) == ("retrying", "ERROR")
    assert "the dead letter could not be stored" in line["message"]
    assert "reports/lost.csv" in line["subject"]  # what the letter held, in the one line
    assert (line["rule"], line["object"]) == ("default", "reports/lost.csv")
    # The claim was released: the redelivery may claim it at once.
    claim = GcsLedger(state_bucket(pipeline.settings)).claim(line["notification_id"], lease_seconds=60)
    assert claim.status is ClaimStatus.CLAIMED


def test_a_hung_sent_mark_does_not_hold_the_event_past_its_deadline(hanging_gcs, httpserver, capsys):
    httpserver.expect_request("/v3/mail/send").respond_with_data("", status=202, headers={"X-Message-Id": "m-1"})
    hanging_gcs.hangs = lambda request: request.query.get("ifGenerationMatch") not in (None, "0")  # not the claim
    pipeline = _pipeline(
        hanging_gcs, SENDGRID_API_KEY=SECRET_KEY, SENDGRID_API_HOST=httpserver.url_for("").rstrip("/"),
    )  # fmt: skip

    handled = _handle_in_a_thread(pipeline, storage_cloud_event(event_id="hung-mark"))

    assert handled.error is None, handled.error
    assert [o.outcome for o in handled.result] == ["sent"]
    (line,) = _outcome_lines(capsys)
    assert (line["outcome"], line["message_id"]) == ("sent", "m-1")
    assert "state bucket notifier-state" in line["ledger_error"]  # the lease expires; README says what remains


def test_a_hung_object_download_leaves_the_send_its_time(hanging_gcs, tmp_path: Path, capsys):
    config = tmp_path / "notify.toml"
    config.write_text('[[rules]]\nname = "attach"\nattach = true\nattach_max_size = "4 KiB"\n', encoding="utf-8")
    hanging_gcs.hangs = lambda request: "/b/acme/" in request.path  # the object's bucket, not the state bucket
    deadline = 4.0  # room for the download's half and a send after it
    pipeline = _pipeline(hanging_gcs, deadline, NOTIFY_BACKEND="outbox", NOTIFY_OUTBOX_DIR=str(tmp_path / "outbox"),
                         NOTIFY_CONFIG=str(config))  # fmt: skip

    handled = _handle_in_a_thread(pipeline, storage_cloud_event(bucket="acme", event_id="hung-object"), 2 * deadline)

    assert handled.error is None, handled.error  # sent, without the attachment, rather than redelivered
    assert [o.outcome for o in handled.result] == ["sent"]
    assert handled.seconds < deadline, handled.seconds  # the download took at most half the time left
    (email,) = (tmp_path / "outbox").glob("*.eml")
    assert "Not attached: the object could not be read" in email.read_text(encoding="utf-8")


def test_over_http_a_hung_state_bucket_is_answered_500_within_the_deadline(hanging_gcs, function_server_factory):
    hanging_gcs.hangs = _objects(hanging_gcs, "ledger/")
    server = function_server_factory(
        NOTIFY_BACKEND="outbox", NOTIFY_STATE_BUCKET=STATE_BUCKET, STORAGE_EMULATOR_HOST=hanging_gcs.url,
        NOTIFY_DEADLINE_SECONDS=str(DEADLINE),
    )  # fmt: skip
    server.new_log_lines()
    started = time.monotonic()

    status, answer = server.post(*reversed(to_binary(storage_cloud_event(event_id="hung-over-http"))))

    assert status == 500, answer  # the platform redelivers: nothing is lost
    assert time.monotonic() - started < BOUND
    (line,) = [line for line in server.new_log_lines() if "outcome" in line]
    assert line["outcome"] == "retrying"
    assert "ledger unavailable" in line["message"]
    assert server.emails() == []


# The issue 14 review's cases: a bucket that answers, only slowly, must not stop healthy deliveries.
LATE = 1.3  # seconds every answer is late: more than the 1 s the halved budgets came down to


class SlowSend(Backend):
    """A provider that accepts the message just before the deadline (waited for: it is the scenario)."""

    name = "slow"

    def __init__(self, ends_before_deadline: float) -> None:
        self._margin = ends_before_deadline

    def send(self, message: Message, *, deadline: float) -> Receipt:
        threading.Event().wait(max(0.0, deadline - time.monotonic() - self._margin))
        return Receipt(self.name, "m-late")


@dataclass
class SkewedClock:
    """The pipeline's clock, which a backend moves forward: a long send, without the wait."""

    ahead: float = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.ahead


class UsesTheTimeUp(Backend):
    name = "all-the-time"

    def __init__(self, clock: SkewedClock, seconds: float) -> None:
        self._clock, self._seconds = clock, seconds

    def send(self, message: Message, *, deadline: float) -> Receipt:
        self._clock.ahead += self._seconds
        return Receipt(self.name, f"m-{self._clock.ahead:g}")


def _record(gcs_server: FakeGcsServer, notification_id: str) -> dict[str, Any]:
    blob = gcs_server.client().bucket(STATE_BUCKET).get_blob(f"ledger/{notification_id}")
    return json.loads(blob.download_as_bytes())


def test_a_slow_state_bucket_leaves_a_five_second_deadline_time_to_claim_and_send(hanging_gcs, gcs_server, capsys):
    hanging_gcs.faults = GcsFaults(slow=1.0, delay=LATE)  # every object request answered 1.3 s late
    pipeline = _pipeline(hanging_gcs, 5.0, quick=False, NOTIFY_BACKEND="console")

    handled = _handle_in_a_thread(pipeline, storage_cloud_event(event_id="late-5"), 20.0)

    assert handled.error is None, handled.error  # was: RetryLater on every redelivery ("Timeout of 1.2s")
    assert [o.outcome for o in handled.result] == ["sent"]
    (line,) = _outcome_lines(capsys)
    assert "ledger_error" not in line  # the mark is kept
    assert _record(gcs_server, line["notification_id"])["state"] == "sent"


def test_a_slow_state_bucket_still_finds_a_redelivered_email_sent(hanging_gcs, capsys):
    pipeline = _pipeline(hanging_gcs, 10.0, quick=False, NOTIFY_BACKEND="console")
    event = storage_cloud_event(event_id="late-10")
    assert [o.outcome for o in _handle_in_a_thread(pipeline, event).result] == ["sent"]  # the bucket is quick
    hanging_gcs.faults = GcsFaults(slow=1.0, delay=LATE)  # then answers late: create 412, read, download

    handled = _handle_in_a_thread(pipeline, event, 20.0)

    assert handled.error is None, handled.error  # was: RetryLater, for as long as the platform retries
    assert [o.outcome for o in handled.result] == ["duplicate"]
    assert [line["outcome"] for line in _outcome_lines(capsys)] == ["sent", "duplicate"]


def test_deciding_a_redelivery_is_a_duplicate_may_take_longer_than_a_claim_for_a_send(hanging_gcs, capsys):
    # Create (412), read and download, 2 s each: 6 s, past the 4 s a claim for a send may take of a
    # 5 s deadline; no send follows a "sent" record, so the reads may use the grace.
    pipeline = _pipeline(hanging_gcs, 5.0, quick=False, NOTIFY_BACKEND="console")
    event = storage_cloud_event(event_id="late-2s")
    assert [o.outcome for o in _handle_in_a_thread(pipeline, event).result] == ["sent"]  # the bucket is quick
    hanging_gcs.faults = GcsFaults(slow=1.0, delay=2.0)

    handled = _handle_in_a_thread(pipeline, event, 20.0)

    assert handled.error is None, handled.error  # was: RetryLater ("Timeout of 0.0s") on every redelivery
    assert [o.outcome for o in handled.result] == ["duplicate"]


def test_a_send_that_ends_near_the_deadline_still_gets_its_sent_mark(hanging_gcs, gcs_server, capsys):
    hanging_gcs.faults = GcsFaults(slow=1.0, delay=LATE)
    hanging_gcs.target = lambda request: request.query.get("ifGenerationMatch") not in (None, "0")  # the marks
    pipeline = _pipeline(hanging_gcs, quick=False, NOTIFY_BACKEND="console")
    pipeline.backend = SlowSend(ends_before_deadline=0.2)  # took 1.8 s of the 2 s

    handled = _handle_in_a_thread(pipeline, storage_cloud_event(event_id="late-mark"), 20.0)

    assert handled.error is None, handled.error
    (line,) = _outcome_lines(capsys)
    assert (line["outcome"], line.get("ledger_error")) == ("sent", None)  # was: lost to a 1 s limit, no retries
    about = {"object_key": object_key(line["bucket"], line["object"]), "generation": str(line["generation"])}
    assert _record(gcs_server, line["notification_id"]) == {
        "state": "sent",
        "token": ANY,
        "message_id": "m-late",
        "about": about,  # where its history is
    }


def test_once_the_deadline_is_used_up_no_further_notification_is_claimed(hanging_gcs, tmp_path: Path, capsys):
    config = tmp_path / "notify.toml"
    config.write_text('[[rules]]\nname = "first"\n\n[[rules]]\nname = "second"\n', encoding="utf-8")
    clock = SkewedClock()
    pipeline = _pipeline(hanging_gcs, clock=clock, NOTIFY_BACKEND="console", NOTIFY_CONFIG=str(config))
    pipeline.backend = UsesTheTimeUp(clock, DEADLINE)  # the first send ends at the deadline

    handled = _handle_in_a_thread(pipeline, storage_cloud_event(event_id="two-rules"))

    assert isinstance(handled.error, RetryLater), handled.error  # the second is redelivered
    first, second = _outcome_lines(capsys)
    assert (first["rule"], first["outcome"]) == ("first", "sent")
    assert (second["rule"], second["outcome"], second["severity"]) == ("second", "retrying", "WARNING")
    assert "no time left" in second["message"]
    claimed = {request.object_name for request in hanging_gcs.requests}
    assert f"ledger/{first['notification_id']}" in claimed
    assert f"ledger/{second['notification_id']}" not in claimed  # was: claimed, then released unsent


def test_calls_after_the_send_end_within_the_grace_past_the_deadline(hanging_gcs, httpserver, capsys):
    httpserver.expect_request("/v3/mail/send").respond_with_data("", status=202, headers={"X-Message-Id": "m-2"})
    hanging_gcs.hangs = lambda request: request.query.get("ifGenerationMatch") not in (None, "0")  # the marks
    pipeline = _pipeline(
        hanging_gcs, SENDGRID_API_KEY=SECRET_KEY, SENDGRID_API_HOST=httpserver.url_for("").rstrip("/"),
    )  # fmt: skip
    # 8 s of retries a call, as deployed: only the grace stops them.
    bucket = _no_wait(state_bucket(pipeline.settings))
    bucket.timeout, bucket.retry_budget = QUICK_TIMEOUT, RETRY_BUDGET
    pipeline.ledger = GcsLedger(bucket)

    handled = _handle_in_a_thread(pipeline, storage_cloud_event(event_id="hung-mark-grace"))

    assert [o.outcome for o in handled.result] == ["sent"]
    assert handled.seconds < DEADLINE + QUICK_GRACE + 1.0, handled.seconds  # not three marks of 8 s each
    (line,) = _outcome_lines(capsys)
    assert "state bucket notifier-state" in line["ledger_error"]
