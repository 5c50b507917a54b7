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

import pytest
from cloudevents.conversion import to_binary

from bench.gcs_faults import GcsFaultProxy, ProxiedRequest
from notifier.ledger import ClaimStatus
from notifier.ledger.gcs import DEFAULT_RETRY, GcsDeadLetters, GcsLedger, storage_client
from notifier.pipeline import Pipeline, RetryLater
from notifier.tools.localcloud import FakeGcsServer
from tests.conftest import SECRET_KEY, settings_for, storage_cloud_event
from tests.fake_gcs_server import STATE_BUCKET, clean_slate

DEADLINE = 2.0  # NOTIFY_DEADLINE_SECONDS in these tests
BOUND = 3 * DEADLINE  # generous: "not stuck"; before the fix a hung call took 11 s (claim) to 60 s (dead letter)
NO_WAIT = DEFAULT_RETRY.with_delay(initial=0.0, maximum=0.0)  # the client's retries, without real sleeps


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


def _pipeline(proxy: HangingProxy, deadline: float = DEADLINE, **env: str) -> Pipeline:
    settings = settings_for(
        NOTIFY_STATE_BUCKET=STATE_BUCKET, STORAGE_EMULATOR_HOST=proxy.url, NOTIFY_DEADLINE_SECONDS=str(deadline), **env
    )
    bucket = storage_client(settings).bucket(STATE_BUCKET)
    pipeline = Pipeline(
        settings, ledger=GcsLedger(bucket, retry=NO_WAIT), dead_letters=GcsDeadLetters(bucket, retry=NO_WAIT)
    )
    pipeline.sleep = lambda seconds: None
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
    claim = GcsLedger(storage_client(pipeline.settings).bucket(STATE_BUCKET)).claim(line["notification_id"],
                                                                                    lease_seconds=60)  # fmt: skip
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
