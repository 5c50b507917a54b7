"""What the pipeline and the flush record in the history (notifier/ledger/history.py) once a
delivery has its outcome: a Sending for sent, dead-lettered, partially-sent, retrying after a send
attempt and batched notifications, one per digest sent; and that a failing history never changes
an outcome (one WARNING line instead)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from notifier.ledger import LedgerError
from notifier.ledger.bucket import StateBucket
from notifier.ledger.gcs import GcsDeadLetters, GcsLedger
from notifier.ledger.history import MemoryHistory, Sending, object_key
from notifier.ledger.local import LocalDeadLetters
from notifier.ledger.memory import MemoryLedger
from notifier.mail.base import DeliveryError, Receipt, Refusal
from notifier.pipeline import Pipeline, RetryLater
from tests.conftest import settings_for, storage_cloud_event
from tests.fake_gcs_server import STATE_BUCKET
from tests.test_digest_flush import MINUTE, T0, W0, World
from tests.test_pipeline import FakeClock, ScriptedBackend

ROOT = Path(__file__).parent.parent
EVENT_TIME = "2026-11-29T07:59:00Z"


def _pipeline(*results, history=None, ledger=None, dead_letters=None, clock=None, **env):
    backend = ScriptedBackend(*results)
    pipeline = Pipeline(
        settings_for(NOTIFY_TO="ops@example.com,ann@example.com", **env), backend=backend, clock=clock or FakeClock(),
        ledger=ledger or MemoryLedger(), history=history,
        dead_letters=dead_letters or LocalDeadLetters(Path(tempfile.mkdtemp(prefix="deadletters-"))),
    )  # fmt: skip
    pipeline.sleep = lambda _seconds: None
    return pipeline, backend


def _event(name: str = "reports/q3.csv", **overrides):
    values = {"generation": "42", "event_id": "evt-42", "updated": EVENT_TIME, **overrides}
    return storage_cloud_event("finalize", bucket="acme", name=name, **values)


def _lines(capsys) -> list[dict]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def _only(history: MemoryHistory) -> Sending:
    (sending,) = history.by_object("acme", "reports/q3.csv")
    assert history.by_id(sending.notification_id) == sending
    return sending


def test_a_sent_notification_is_recorded_with_what_status_shows():
    history = MemoryHistory()
    pipeline, _ = _pipeline(Receipt("scripted", "sg-1", attempts=2), history=history)
    (outcome,) = pipeline.handle(_event())
    sending = _only(history)
    assert sending.notification_id == outcome.notification_id
    assert (sending.bucket, sending.object, sending.generation, sending.event_id, sending.kind) == (
        "acme", "reports/q3.csv", 42, "evt-42", "finalize",
    )  # fmt: skip
    assert (sending.outcome, sending.message_id, sending.attempts, sending.error) == ("sent", "sg-1", 2, "")
    assert (sorted(sending.recipients), sending.recipient_count) == (["ann@example.com", "ops@example.com"], 2)
    assert sending.event_time.startswith("2026-11-29T07:59:00")
    assert datetime.fromisoformat(sending.at).tzinfo is not None and sending.digest is None


def test_the_recorded_rule_is_the_outcome_lines(capsys):
    history = MemoryHistory()
    pipeline, _ = _pipeline(Receipt("scripted", "sg-1"), history=history)
    pipeline.handle(_event())
    (line,) = _lines(capsys)
    assert _only(history).rule == line["rule"]


def test_a_dead_lettered_notification_is_recorded_with_its_error():
    history = MemoryHistory()
    error = DeliveryError("SendGrid answered 400: bad request", transient=False, status=400, attempts=1)
    pipeline, _ = _pipeline(error, history=history)
    pipeline.handle(_event())
    sending = _only(history)
    assert (sending.outcome, sending.error) == ("dead-lettered", "SendGrid answered 400: bad request")


def test_a_partial_send_is_recorded_as_partially_sent():
    history = MemoryHistory()
    receipt = Receipt("scripted", "smtp-1", refused=(Refusal("ann@example.com", 550, "no such user"),))
    pipeline, _ = _pipeline(receipt, history=history)
    pipeline.handle(_event())
    sending = _only(history)
    assert (sending.outcome, sending.message_id) == ("partially-sent", "smtp-1")
    assert "ann@example.com: 550 no such user" in sending.error


def test_a_retry_after_a_send_attempt_is_recorded_and_a_retry_without_one_is_not():
    history = MemoryHistory()
    transient = DeliveryError("SendGrid answered 503", transient=True, status=503, attempts=3)
    pipeline, _ = _pipeline(transient, history=history)
    with pytest.raises(RetryLater):
        pipeline.handle(_event())
    sending = _only(history)
    assert (sending.outcome, sending.attempts) == ("retrying", 3)

    class DownLedger(MemoryLedger):
        def claim(self, notification_id, **options):
            raise LedgerError("state bucket notifier-state: ConnectionError")

    untried = MemoryHistory()
    pipeline, backend = _pipeline(history=untried, ledger=DownLedger())
    with pytest.raises(RetryLater):
        pipeline.handle(_event())
    assert untried.by_object("acme", "reports/q3.csv") == [] and backend.sent == []


def test_duplicates_ignored_and_expired_events_are_not_recorded():
    history = MemoryHistory()
    pipeline, _ = _pipeline(Receipt("scripted", "sg-1"), history=history)
    pipeline.handle(_event())
    first = _only(history)
    (duplicate,) = pipeline.handle(_event(event_id="evt-42-again"))
    assert duplicate.outcome == "duplicate"
    assert _only(history) == first, "the redelivery left the sent one as it was"
    ignoring, _ = _pipeline(history=(ignored := MemoryHistory()))
    assert [o.outcome for o in ignoring.handle(_event("reports/", size="0"))] == ["ignored"]  # a folder
    expiring, _ = _pipeline(history=ignored, NOTIFY_MAX_EVENT_AGE="1h")
    assert [o.outcome for o in expiring.handle(_event(updated="2020-01-01T00:00:00Z"))] == ["expired"]
    assert ignored.by_object("acme", "reports/q3.csv") == [] and ignored.by_object("acme", "reports/") == []


def test_a_replay_replaces_the_dead_lettered_sending(tmp_path):
    history, dead_letters = MemoryHistory(), LocalDeadLetters(tmp_path / "dead")
    error = DeliveryError("the SendGrid API key is invalid or revoked (HTTP 401)", transient=False, status=401)
    pipeline, _ = _pipeline(error, Receipt("scripted", "sg-replayed"), history=history, dead_letters=dead_letters)
    pipeline.handle(_event())
    assert _only(history).outcome == "dead-lettered"
    (letter,) = dead_letters.list()
    (replayed,) = pipeline.replay(letter)
    assert replayed.outcome == "sent"
    sending = _only(history)
    assert (sending.outcome, sending.message_id, sending.error) == ("sent", "sg-replayed", "")


def test_a_held_event_is_recorded_as_batched_with_its_group_window_and_held_id(tmp_path):
    world = World(tmp_path)
    assert world.event(1) == ["batched"]
    (entry,) = world.held()
    (sending,) = world.pipeline.history.by_object("burst", "in/1.csv")
    assert (sending.outcome, sending.generation) == ("batched", 1001)
    assert dict(sending.digest) == {"group": entry.group.key, "window": entry.window, "held_id": entry.notification_id}
    assert world.event(1) == ["duplicate"]
    assert world.pipeline.history.by_object("burst", "in/1.csv") == [sending]


def test_a_digest_sent_is_recorded_once_and_filed_under_each_of_its_windows(tmp_path):
    world = World(tmp_path)
    world.event(1)
    world.event(2, at=T0.replace(minute=1))
    group = world.group()
    (result,) = world.flush(everything=True)
    assert result.outcome == "sent"
    (message,) = world.backend.sent
    history = world.pipeline.history
    (digest,) = history.digests(group.key, W0)
    assert history.digests(group.key, W0 + MINUTE) == [digest]
    assert (digest.notification_id, digest.kind, digest.outcome, digest.message_id) == (
        message.notification_id, "digest", "sent", "msg-1",
    )  # fmt: skip
    assert dict(digest.digest) == {"group": group.key, "windows": [W0, W0 + MINUTE], "events": 2}
    assert (digest.bucket, digest.object, digest.rule) == ("burst", "", "burst")
    assert digest.recipients == ("ops@example.com",)
    assert history.by_id(message.notification_id) == digest
    assert history.by_object("burst", "") == []


class FailingHistory(MemoryHistory):
    def record(self, sending: Sending) -> None:
        raise LedgerError("state bucket notifier-state: 503 backend error")


def test_a_failing_history_leaves_the_outcome_alone_and_says_so_once(capsys):
    pipeline, backend = _pipeline(Receipt("scripted", "sg-1"), history=FailingHistory())
    (outcome,) = pipeline.handle(_event())
    assert outcome.outcome == "sent" and len(backend.sent) == 1
    sent, warning = _lines(capsys)
    assert sent["outcome"] == "sent"
    assert warning["severity"] == "WARNING" and "outcome" not in warning
    assert warning["message"].startswith("history not recorded: ")
    assert "503 backend error" in warning["message"]
    assert warning["notification_id"] == outcome.notification_id


def test_a_failing_history_leaves_a_digest_sent(tmp_path, capsys):
    world = World(tmp_path)
    world.pipeline.history = FailingHistory()
    world.event(1)
    capsys.readouterr()
    (result,) = world.flush(everything=True)
    assert result.outcome == "sent" and world.held() == []
    sent, warning = _lines(capsys)
    assert sent["outcome"] == "sent" and warning["message"].startswith("history not recorded: ")
    assert warning["notification_id"] == world.backend.sent[0].notification_id


def test_with_the_state_bucket_the_sending_is_in_it(fake_gcs):
    bucket = StateBucket(STATE_BUCKET, os.environ["STORAGE_EMULATOR_HOST"], retry_budget=0.0)
    state = {"ledger": GcsLedger(bucket), "dead_letters": GcsDeadLetters(bucket)}
    pipeline, _ = _pipeline(Receipt("scripted", "sg-1"), clock=time.monotonic, **state)  # the state deadline's clock
    (outcome,) = pipeline.handle(_event())
    key = object_key("acme", "reports/q3.csv")
    marker = f"history/objects/{key}/{2**63 - 1 - 42:019d}-{outcome.notification_id}"  # newest first by name
    assert fake_gcs.names(STATE_BUCKET, "history/objects/") == [marker]
    stored = fake_gcs.read_json(STATE_BUCKET, marker)  # the marker is the sending (its claim's record says where)
    assert (stored["outcome"], stored["message_id"], stored["generation"]) == ("sent", "sg-1", 42)


_COLD_START = """
import json, sys
from notifier.pipeline import Pipeline
from tests.conftest import settings_for, storage_cloud_event
pipeline = Pipeline(settings_for(NOTIFY_BACKEND="console", NOTIFY_LEDGER_FILE=sys.argv[1]))
at_start = "notifier.ledger.history" in sys.modules or "notifier.ledger.sqlite_history" in sys.modules
(outcome,) = pipeline.handle(storage_cloud_event(generation="7"))
print(json.dumps({"at_start": at_start, "outcome": outcome.outcome, "id": outcome.notification_id}))
"""


def test_the_history_is_loaded_after_the_first_outcome_not_at_start(tmp_path):
    ledger_file = tmp_path / "ledger.sqlite3"
    done = subprocess.run([sys.executable, "-c", _COLD_START, str(ledger_file)], capture_output=True, text=True,
                          cwd=ROOT, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["at_start"], result["outcome"]) == (False, "sent")
    from notifier.ledger.sqlite_history import SqliteHistory

    assert SqliteHistory(ledger_file).by_id(result["id"]).outcome == "sent"


def test_recorded_times_are_utc():
    history = MemoryHistory()
    pipeline, _ = _pipeline(Receipt("scripted", "sg-1"), history=history)
    pipeline.handle(_event())
    assert datetime.fromisoformat(_only(history).at).utcoffset() == UTC.utcoffset(None)


TWO_RULES = """
[[rules]]
name = "reports"
buckets = ["acme"]
to = ["ops@example.com"]

[[rules]]
name = "audit"
buckets = ["acme"]
to = ["audit@example.com"]
"""


def test_an_events_sendings_are_recorded_after_its_last_send(tmp_path):
    """No send waits for the history: an event matching two rules sends both, then records both."""
    config = tmp_path / "notify.toml"
    config.write_text(TWO_RULES, encoding="utf-8")
    happened: list[str] = []

    class OrderedHistory(MemoryHistory):
        def record(self, sending: Sending) -> None:
            happened.append(f"recorded {sending.rule}")
            super().record(sending)

    history = OrderedHistory()
    pipeline, backend = _pipeline(Receipt("scripted", "sg-1"), Receipt("scripted", "sg-2"), history=history,
                                  NOTIFY_CONFIG=str(config))  # fmt: skip
    sent = backend.send
    backend.send = lambda message, *, deadline: happened.append("sent") or sent(message, deadline=deadline)
    assert [o.outcome for o in pipeline.handle(_event())] == ["sent", "sent"]
    assert happened == ["sent", "sent", "recorded reports", "recorded audit"]
    assert sorted(s.rule for s in history.by_object("acme", "reports/q3.csv")) == ["audit", "reports"]


# --- review 17 r2: dead-lettered digests, the history's budget, a replay's previous outcome -------


def test_a_dead_lettered_digest_is_recorded_with_its_error_under_its_letters_id(tmp_path):
    world = World(tmp_path)
    world.event(1)
    world.event(2)
    group = world.group()
    world.backend.failures.append(DeliveryError("mailbox unknown", transient=False, status=400))
    (result,) = world.flush(everything=True)
    assert result.outcome == "dead-lettered"
    (letter,) = world.dead_letters.list()
    (digest,) = world.pipeline.history.digests(group.key, W0)
    assert (digest.notification_id, digest.kind, digest.outcome, digest.error) == (
        letter.notification_id, "digest", "dead-lettered", "mailbox unknown",
    )  # fmt: skip
    assert dict(digest.digest) == {"group": group.key, "windows": [W0], "events": 2}


FOUR_RULES = "".join(f'[[rules]]\nname = "r{i}"\nbuckets = ["acme"]\nto = ["u{i}@example.com"]\n\n' for i in range(4))


def test_after_a_history_write_fails_the_events_other_sendings_are_not_tried_and_one_line_names_them(tmp_path, capsys):
    config = tmp_path / "notify.toml"
    config.write_text(FOUR_RULES, encoding="utf-8")
    tried: list[str] = []

    class DownHistory(MemoryHistory):
        def record(self, sending: Sending) -> None:
            tried.append(sending.notification_id)
            raise LedgerError("state bucket notifier-state: timed out")

    receipts = [Receipt("scripted", f"sg-{i}") for i in range(4)]
    pipeline, _ = _pipeline(*receipts, history=DownHistory(), NOTIFY_CONFIG=str(config))
    outcomes = pipeline.handle(_event())
    assert [o.outcome for o in outcomes] == ["sent"] * 4
    assert tried == [outcomes[0].notification_id], "one failure: the other writes are skipped"
    (warning,) = [line for line in _lines(capsys) if line["severity"] == "WARNING"]
    assert warning["message"].startswith("history not recorded: state bucket notifier-state: timed out")
    assert warning["notification_id"] == outcomes[0].notification_id
    assert warning["not_recorded"] == [o.notification_id for o in outcomes]


def test_an_events_history_writes_share_one_short_budget_never_past_the_state_deadline(tmp_path):
    from notifier.ledger.base import current_deadline

    config = tmp_path / "notify.toml"
    config.write_text(TWO_RULES, encoding="utf-8")
    seen: list[tuple[float | None, float]] = []
    clock = FakeClock()

    class TimedHistory(MemoryHistory):
        def record(self, sending: Sending) -> None:
            seen.append((current_deadline(), clock.now))
            super().record(sending)

    pipeline, backend = _pipeline(Receipt("scripted", "sg-1"), Receipt("scripted", "sg-2"), history=TimedHistory(),
                                  clock=clock, NOTIFY_CONFIG=str(config))  # fmt: skip
    pipeline.handle(_event())
    (first, at_first), (second, _) = seen
    assert first == second, "one budget for the event's writes, not one each"
    assert first is not None and 0 < first - at_first <= 3.0, (first, at_first)

    # Late: the delivery's time (its deadline and grace) ends before the budget would.
    seen.clear()
    pipeline, backend = _pipeline(Receipt("scripted", "sg-3"), history=TimedHistory(), clock=clock)
    pipeline.state_grace = 0.5
    sent = backend.send
    backend.send = lambda message, *, deadline: setattr(clock, "now", deadline - 1) or sent(message, deadline=deadline)
    pipeline.handle(_event(event_id="evt-43", generation="43"))
    ((until, _),) = seen
    assert until == backend.deadlines[0] + 0.5, "the state deadline's end, not later"


def test_a_replays_sending_keeps_the_dead_letters_outcome_as_its_previous(tmp_path):
    history, dead_letters = MemoryHistory(), LocalDeadLetters(tmp_path / "dead")
    error = DeliveryError("the SendGrid API key is invalid or revoked (HTTP 401)", transient=False, status=401)
    pipeline, _ = _pipeline(error, Receipt("scripted", "sg-replayed"), history=history, dead_letters=dead_letters)
    pipeline.handle(_event())
    (letter,) = dead_letters.list()
    pipeline.replay(letter)
    sending = _only(history)
    assert sending.outcome == "sent"
    assert dict(sending.previous) == {
        "outcome": "dead-lettered", "error": "the SendGrid API key is invalid or revoked (HTTP 401)",
        "at": letter.created,
    }  # fmt: skip
    assert Sending.from_json(sending.to_json()) == sending


def test_a_replayed_partial_sends_previous_names_who_was_refused(tmp_path):
    history, dead_letters = MemoryHistory(), LocalDeadLetters(tmp_path / "dead")
    partial = Receipt("scripted", "smtp-1", refused=(Refusal("ann@example.com", 550, "no such user"),))
    pipeline, _ = _pipeline(partial, Receipt("scripted", "smtp-2"), history=history, dead_letters=dead_letters)
    pipeline.handle(_event())
    (letter,) = dead_letters.list()
    pipeline.replay(letter)
    sending = _only(history)
    assert (sending.outcome, sending.previous["outcome"]) == ("sent", "partially-sent")
    assert sending.previous["refused_recipients"] == ["ann@example.com"]
    assert "ann@example.com: 550 no such user" in sending.previous["error"]
    assert sending.previous["at"] == letter.created


def test_a_replayed_digest_keeps_its_dead_lettered_record_as_its_previous(tmp_path):
    world = World(tmp_path)
    world.event(1)
    world.event(2)
    world.backend.failures.append(DeliveryError("mailbox unknown", transient=False, status=400))
    world.flush(everything=True)
    (letter,) = world.dead_letters.list()
    dead = world.pipeline.history.by_id(letter.notification_id)
    assert [o.outcome for o in world.pipeline.replay(letter)] == ["sent"]
    sending = world.pipeline.history.by_id(letter.notification_id)
    assert (sending.kind, sending.outcome, sending.message_id) == ("digest", "sent", "msg-1")
    assert dict(sending.previous) == {"outcome": "dead-lettered", "error": "mailbox unknown", "at": dead.at}
