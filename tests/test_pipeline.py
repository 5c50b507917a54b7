"""The pipeline in-process: one outcome line per notification, and RetryLater only when it helps."""

from __future__ import annotations

import json
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from notifier.addresses import Address
from notifier.events import decode
from notifier.ledger import LedgerError
from notifier.ledger.local import LocalDeadLetters
from notifier.ledger.memory import MemoryLedger
from notifier.mail.base import Backend, DeliveryError, Receipt
from notifier.pipeline import Pipeline, RetryLater
from notifier.rules import Conditions, Delivery, Recipients, Rule, notification_id
from tests.conftest import settings_for, storage_cloud_event


class ScriptedBackend(Backend):
    """Answers each send with the next scripted result: a Receipt or an exception to raise."""

    name = "scripted"

    def __init__(self, *results):
        self.results = list(results)
        self.sent = []
        self.deadlines = []

    def send(self, message, *, deadline):
        self.sent.append(message)
        self.deadlines.append(deadline)
        result = self.results.pop(0)
        if isinstance(result, BaseException):
            raise result
        return result


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        self.now += 0.25
        return self.now


def _pipeline(*results, dead_letters=None, **env):
    backend = ScriptedBackend(*results)
    pipeline = Pipeline(
        settings_for(**env),
        backend=backend,
        clock=FakeClock(),
        ledger=MemoryLedger(),
        dead_letters=dead_letters or LocalDeadLetters(Path(tempfile.mkdtemp(prefix="deadletters-"))),
    )
    pipeline.sleeps = []
    pipeline.sleep = pipeline.sleeps.append
    return pipeline, backend


def _lines(capsys):
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_sent_event_logs_one_line_with_every_field(capsys):
    pipeline, backend = _pipeline(Receipt("scripted", "msg-1", attempts=2))

    pipeline.handle(storage_cloud_event("finalize", bucket="acme", name="r/q3.csv", event_id="e1"))

    (line,) = _lines(capsys)
    assert line["severity"] == "INFO"
    assert line["outcome"] == "sent"
    assert (line["event_id"], line["bucket"], line["object"], line["kind"]) == (
        "e1",
        "acme",
        "r/q3.csv",
        "finalize",
    )
    assert line["notification_id"] == backend.sent[0].notification_id
    assert (line["backend"], line["attempts"], line["message_id"]) == ("scripted", 2, "msg-1")
    assert line["duration_ms"] == 500.0  # the fake clock moves 0.25 s a reading: start, before sending, end
    assert "gs://acme/r/q3.csv" in line["message"]


def test_invalid_event_logs_one_error_and_is_acknowledged(capsys):
    pipeline, backend = _pipeline()
    event = storage_cloud_event(size="lots")

    (outcome,) = pipeline.handle(event)

    assert outcome.outcome == "invalid"
    (line,) = _lines(capsys)
    assert (line["severity"], line["outcome"], line["event_id"]) == ("ERROR", "invalid", "evt-1")
    assert "data.size" in line["message"]
    assert backend.sent == []


def test_transient_failure_logs_retrying_and_raises_so_the_platform_redelivers(capsys):
    pipeline, _ = _pipeline(DeliveryError("SendGrid answered 503", transient=True, status=503, attempts=5))

    with pytest.raises(RetryLater):
        pipeline.handle(storage_cloud_event())

    (line,) = _lines(capsys)
    assert (line["severity"], line["outcome"], line["status"], line["attempts"]) == (
        "WARNING",
        "retrying",
        503,
        5,
    )


def test_permanent_failure_is_logged_as_error_and_acknowledged(capsys):
    error = DeliveryError("the SendGrid API key is invalid or revoked (HTTP 401)", transient=False, status=401)
    pipeline, _ = _pipeline(error)

    (outcome,) = pipeline.handle(storage_cloud_event())

    assert outcome.outcome == "dead-lettered"
    (line,) = _lines(capsys)
    assert (line["severity"], line["outcome"], line["status"]) == ("ERROR", "dead-lettered", 401)
    assert "invalid or revoked" in line["message"]


def test_unexpected_error_is_logged_with_traceback_and_not_retried_forever(capsys):
    pipeline, _ = _pipeline(RuntimeError("bug"))

    (outcome,) = pipeline.handle(storage_cloud_event())

    assert outcome.outcome == "dead-lettered"
    (line,) = _lines(capsys)
    assert line["severity"] == "ERROR"
    assert "RuntimeError: bug" in line["message"]
    assert "Traceback" in line["traceback"]


def test_backend_gets_a_deadline_from_the_start_of_the_event(capsys):
    pipeline, backend = _pipeline(Receipt("scripted", "m"), NOTIFY_DEADLINE_SECONDS="30")

    pipeline.handle(storage_cloud_event())

    assert backend.deadlines == [1000.25 + 30]


def test_message_carries_sender_recipients_id_and_category():
    pipeline, backend = _pipeline(Receipt("scripted", "m"), NOTIFY_TO="a@example.com, B <b@example.com>")

    pipeline.handle(storage_cloud_event("archive"))

    (message,) = backend.sent
    assert [[a.email for a in e.to] for e in message.envelopes] == [["a@example.com"], ["b@example.com"]]
    assert message.sender == Address("alerts@example.com", "Alerts")
    assert "archive" in message.categories
    assert len(message.notification_id) == 32


def test_notification_id_is_stable_for_redelivery_and_distinct_otherwise():
    event = decode(storage_cloud_event(event_id="first", generation="7"))
    redelivered = decode(storage_cloud_event(event_id="another-delivery", generation="7", size="999"))
    other = decode(storage_cloud_event(event_id="first", generation="8"))
    sender = Address("alerts@example.com")

    def rule(name, *to):
        return Rule(name, Conditions(), Delivery(Recipients(sender, to=tuple(Address(*a) for a in to))))

    ops = rule("r", ("ops@example.com",), ("data@example.com",))
    reordered = rule("r", ("DATA@example.com", "Data"), ("ops@example.com",))

    assert notification_id(event, ops) == notification_id(redelivered, ops) == notification_id(event, reordered)
    assert notification_id(event, ops) != notification_id(other, ops)
    assert notification_id(event, ops) != notification_id(event, rule("r", ("ops@example.com",)))
    assert notification_id(event, ops) != notification_id(
        event, rule("other-rule", *[(a.email,) for a in ops.delivery.recipients.to])
    )


# --- the ledger in the pipeline ---------------------------------------------------------------


def test_a_redelivered_event_is_a_duplicate_not_a_second_email(capsys):
    pipeline, backend = _pipeline(Receipt("scripted", "sg-1"))
    event = storage_cloud_event(event_id="first-delivery", generation="42")

    pipeline.handle(event)
    (outcome,) = pipeline.handle(storage_cloud_event(event_id="second-delivery", generation="42"))

    assert outcome.outcome == "duplicate"
    assert len(backend.sent) == 1
    sent, duplicate = _lines(capsys)
    assert (sent["outcome"], duplicate["outcome"], duplicate["message_id"]) == ("sent", "duplicate", "sg-1")
    assert duplicate["notification_id"] == sent["notification_id"]


def test_a_notification_claimed_elsewhere_is_redelivered_later_not_dropped(capsys):
    pipeline, backend = _pipeline()
    event = storage_cloud_event(generation="42")
    (notification,) = pipeline.settings.rules.route(decode(event))
    pipeline.ledger.claim(notification.id, lease_seconds=600)  # another instance is sending it

    with pytest.raises(RetryLater):
        pipeline.handle(event)

    (line,) = _lines(capsys)
    assert (line["outcome"], line["severity"]) == ("retrying", "WARNING")
    assert "another delivery holds the claim" in line["message"]
    assert backend.sent == []


def test_a_transient_failure_releases_the_claim_for_the_redelivery(capsys):
    pipeline, backend = _pipeline(DeliveryError("503", transient=True, status=503), Receipt("scripted", "sg-2"))
    event = storage_cloud_event(generation="42")
    with pytest.raises(RetryLater):
        pipeline.handle(event)
    (outcome,) = pipeline.handle(event)
    assert outcome.outcome == "sent"
    assert len(backend.sent) == 2


def test_a_permanent_failure_is_dead_lettered_then_replayed_once(capsys, tmp_path):
    dead_letters = LocalDeadLetters(tmp_path / "dead")
    error = DeliveryError("the SendGrid API key is invalid or revoked (HTTP 401)", transient=False, status=401)
    pipeline, backend = _pipeline(error, Receipt("scripted", "sg-replayed"), dead_letters=dead_letters)
    event = storage_cloud_event(generation="42", name="reports/q3.csv")

    (first,) = pipeline.handle(event)
    (again,) = pipeline.handle(event)  # the platform redelivers: still no second attempt
    (letter,) = dead_letters.list()
    (replayed,) = pipeline.replay(letter)
    (replayed_again,) = pipeline.replay(letter)  # e.g. two operators ran replay: one email

    assert [first.outcome, again.outcome, replayed.outcome, replayed_again.outcome] == [
        "dead-lettered", "duplicate", "sent", "duplicate",
    ]  # fmt: skip
    assert letter.record["error"] == str(error)
    assert letter.record["message"]["subject"] == "Uploaded: reports/q3.csv (acme)"
    assert len(backend.sent) == 2  # the failed try and the replay
    assert backend.sent[1] == backend.sent[0], "the replay renders the same message again from the event"
    assert list(dead_letters.list()) == []
    lines = _lines(capsys)
    assert lines[0]["dead_letter"].endswith(f"{letter.notification_id}.json")
    assert "already dead-lettered" in lines[1]["message"]


class BrokenLedger(MemoryLedger):
    def __init__(self, fail):
        super().__init__()
        self.fail = fail

    def claim(self, *args, **kwargs):
        if "claim" in self.fail:
            raise LedgerError("state bucket s: 503 Service Unavailable")
        return super().claim(*args, **kwargs)

    def mark_sent(self, *args):
        if "mark_sent" in self.fail:
            raise LedgerError("state bucket s: timeout")
        super().mark_sent(*args)


def test_an_unreachable_ledger_means_retry_later_not_send_blind(capsys):
    pipeline, backend = _pipeline()
    pipeline.ledger = BrokenLedger({"claim"})
    with pytest.raises(RetryLater):
        pipeline.handle(storage_cloud_event())
    (line,) = _lines(capsys)
    assert line["outcome"] == "retrying"
    assert "ledger unavailable" in line["message"]
    assert backend.sent == []


def test_a_ledger_failure_after_sending_is_reported_on_the_sent_line(capsys):
    pipeline, _ = _pipeline(Receipt("scripted", "sg-1"))
    pipeline.ledger = BrokenLedger({"mark_sent"})
    (outcome,) = pipeline.handle(storage_cloud_event())
    assert outcome.outcome == "sent"
    (line,) = _lines(capsys)
    assert line["ledger_error"] == "state bucket s: timeout"


def test_a_dead_letter_that_cannot_be_stored_is_left_to_the_platform_not_lost(capsys, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    error = DeliveryError("HTTP 400: from.email: invalid", transient=False, status=400)
    pipeline, _ = _pipeline(error, Receipt("scripted", "sg-later"), dead_letters=LocalDeadLetters(blocked / "dead"))
    event = storage_cloud_event(generation="5")

    with pytest.raises(RetryLater):
        pipeline.handle(event)
    (outcome,) = pipeline.handle(event)  # the redelivery (here, the cause went away): sent, not "duplicate"

    first, second = _lines(capsys)
    assert (first["outcome"], first["severity"]) == ("retrying", "ERROR")
    assert "dead letter could not be stored" in first["message"]
    assert first["subject"].startswith("Uploaded:")
    assert (outcome.outcome, second["outcome"]) == ("sent", "sent")


def test_a_lost_sent_mark_is_retried(capsys):
    pipeline, _ = _pipeline(Receipt("scripted", "sg-1"))
    ledger = BrokenLedger({"mark_sent"})
    fails = iter([True, False])
    original = MemoryLedger.mark_sent

    def flaky(self, *args):
        if next(fails):
            raise LedgerError("state bucket s: timeout")
        original(self, *args)

    ledger.mark_sent = flaky.__get__(ledger)
    pipeline.ledger = ledger
    event = storage_cloud_event(generation="6")
    pipeline.handle(event)
    (line,) = _lines(capsys)
    assert "ledger_error" not in line
    assert pipeline.handle(event)[0].outcome == "duplicate"
    assert pipeline.sleeps == [0.2]


@pytest.mark.parametrize(("age_hours", "outcome"), [(1, "sent"), (23, "sent"), (25, "expired")])
def test_events_older_than_the_age_limit_expire(capsys, age_hours, outcome):
    pipeline, backend = _pipeline(Receipt("scripted", "m"), NOTIFY_MAX_EVENT_AGE="24h")
    happened = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    pipeline._wall_clock = lambda: happened + timedelta(hours=age_hours)  # as if injected
    event = storage_cloud_event()
    event["time"] = happened.isoformat()

    (result,) = pipeline.handle(event)

    assert result.outcome == outcome
    assert len(backend.sent) == (outcome == "sent")


def test_locally_there_is_no_age_limit_and_deployed_it_is_a_day():
    from notifier.config import load_settings

    assert settings_for().max_event_age is None
    assert load_settings({"K_SERVICE": "f", "SENDGRID_API_KEY": "SG.x", "NOTIFY_FROM": "a@example.com",
                          "NOTIFY_TO": "b@example.com"}).max_event_age == 86400  # fmt: skip


class _SlowLedger(MemoryLedger):
    """A claim that takes ``seconds`` of the pipeline's clock, as a slow state bucket does."""

    def __init__(self, clock, seconds):
        super().__init__()
        self.clock, self.seconds = clock, seconds

    def claim(self, *args, **kwargs):
        self.clock.now += self.seconds
        return super().claim(*args, **kwargs)


def test_no_send_starts_once_the_deadline_is_all_but_gone_and_the_claim_is_released(capsys):
    # A send cut off at the deadline may have been accepted: the redelivery would then send a copy.
    pipeline, backend = _pipeline(Receipt("scripted", "m"), NOTIFY_DEADLINE_SECONDS="30")
    pipeline.ledger = _SlowLedger(pipeline._clock, 29.5)

    with pytest.raises(RetryLater):
        pipeline.handle(storage_cloud_event())

    assert backend.sent == []
    (line,) = _lines(capsys)
    assert (line["outcome"], line["attempts"]) == ("retrying", 0)
    assert "no time left" in line["error"]
    pipeline.ledger.seconds = 0  # the redelivery, on a quick ledger: the claim was released
    pipeline.handle(storage_cloud_event())
    assert len(backend.sent) == 1
