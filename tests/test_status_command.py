"""python -m notifier status (issue 17 part 2): what became of each notification, by object or by
id, from the history the pipeline, the flush and the Event Webhook record (notifier/ledger/history.py),
corrected by the ledger's current state; first with the history in memory (injected), then as a user
runs it against the SQLite ledger's file and against the state bucket (fake-gcs-server)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from notifier.digest import Group, HeldEntry, key_for
from notifier.ledger import LedgerError
from notifier.ledger.digests import MemoryDigestStore
from notifier.ledger.history import DeliveryEvent, History, MemoryHistory, Sending
from notifier.ledger.memory import MemoryLedger
from notifier.mail.base import DeliveryError
from notifier.tools.cli import main
from notifier.tools.status_command import Query, answer
from tests.conftest import settings_for, storage_cloud_event
from tests.fake_gcs_server import STATE_BUCKET
from tests.test_digest_flush import MINUTE, W0, World

ID_1, ID_2, ID_3, DIGEST_ID = "1" * 32, "2" * 32, "3" * 32, "d" * 32
T0 = 1_795_000_000  # 2026-11-18 ... UTC: the events' times below are offsets from it
RULES = """
[[rules]]
name = "reports"
events = ["finalize"]
include = ["reports/**"]
to = ["ann@example.com", "bob@example.com"]

[[rules]]
name = "burst"
events = ["finalize"]
include = ["uploads/**"]
to = ["ops@example.com"]
digest = "10m"
"""


def _utc(seconds: int) -> str:
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%d %H:%M:%S} UTC"


def _sending(notification_id: str = ID_1, **fields: Any) -> Sending:
    values: dict[str, Any] = {
        "notification_id": notification_id, "bucket": "acme", "object": "reports/q3.csv", "generation": 7,
        "event_id": "evt-7", "kind": "finalize", "rule": "reports", "recipients": ("ann@example.com",
        "bob@example.com"), "recipient_count": 2, "outcome": "sent", "at": "2026-11-18T20:13:25+00:00",
        "event_time": "2026-11-18T20:13:20+00:00", "message_id": "sg-msg-1", "attempts": 1, **fields,
    }  # fmt: skip
    return Sending(**values)


def _event(n: int, event: str, email: str, reason: str = "", **detail: str) -> DeliveryEvent:
    return DeliveryEvent(f"sg-{n}", event, T0 + n, email, reason, detail)


class _LedgerSays(MemoryLedger):
    """A ledger whose records are given: what ``status`` reads with ``lookup``."""

    def __init__(self, records: dict[str, dict[str, Any]]) -> None:
        super().__init__()
        self.records = records

    def lookup(self, notification_id: str) -> dict[str, Any] | None:
        return self.records.get(notification_id)


def _answer(capsys, query: Query, history: History, *, ledger=None, digests=None, as_json=False,
            settings=None, now: float = T0 + 100) -> tuple[int, str, str]:  # fmt: skip
    settings = settings or settings_for()
    code = answer(query, settings, ledger or MemoryLedger(), history, digests, as_json=as_json, now=now)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- with the history injected ------------------------------------------------------------------


def test_a_sent_notification_shows_its_recipients_outcome_and_delivery_events_in_time_order(capsys):
    history = MemoryHistory()
    history.record(_sending())
    history.add_events(
        ID_1,
        [
            _event(9, "bounce", "bob@example.com", "550 5.1.1 unknown user", type="bounce"),
            _event(2, "processed", "ann@example.com"),
            _event(5, "delivered", "ann@example.com"),
        ],
    )

    code, out, err = _answer(capsys, Query(bucket="acme", name="reports/q3.csv"), history)

    assert (code, err) == (0, "")
    assert f"notification {ID_1}" in out
    assert "gs://acme/reports/q3.csv generation 7 (finalize)" in out
    assert "rule:        reports" in out
    assert "recipients:  2: ann@example.com, bob@example.com" in out
    assert "outcome:     sent" in out
    assert "message id:  sg-msg-1" in out
    lines = [line.strip() for line in out.splitlines()]
    events = [line for line in lines if line.startswith(_utc(T0)[:10]) and "@" in line]
    assert events == [
        f"{_utc(T0 + 2)}  processed   ann@example.com",
        f"{_utc(T0 + 5)}  delivered   ann@example.com",
        f"{_utc(T0 + 9)}  bounce      bob@example.com  550 5.1.1 unknown user (bounce)",
    ]


def test_json_is_a_stable_document_with_the_events(capsys):
    history = MemoryHistory()
    history.record(_sending())
    history.add_events(ID_1, [_event(5, "delivered", "ann@example.com")])

    code, out, _ = _answer(capsys, Query(notification_id=ID_1), history, as_json=True)

    assert code == 0
    document = json.loads(out)
    (found,) = document["notifications"]
    expected = {
        "notification_id": ID_1, "bucket": "acme", "object": "reports/q3.csv", "generation": 7, "kind": "finalize",
        "rule": "reports", "recipients": ["ann@example.com", "bob@example.com"], "recipient_count": 2,
        "outcome": "sent", "ledger_state": None, "message_id": "sg-msg-1", "attempts": 1, "error": "",
        "digest": None,
    }  # fmt: skip
    assert {k: found[k] for k in expected} == expected
    assert found["events"] == [
        {
            "event": "delivered",
            "time": datetime.fromtimestamp(T0 + 5, UTC).isoformat(),
            "email": "ann@example.com",
            "reason": "",
            "sg_event_id": "sg-5",
            "message_id": "",  # the event names no message (sg_message_id)
            "detail": {},
        }
    ]
    assert found["messages"] == [{"message_id": "sg-msg-1", "recorded": True, "events": 0}]


def test_every_generation_of_an_object_is_shown_oldest_first_each_with_its_notifications(capsys):
    history = MemoryHistory()
    history.record(_sending(ID_2, generation=9, at="2026-11-18T21:00:00+00:00"))
    history.record(_sending(ID_1, generation=7))
    history.record(_sending(ID_3, generation=7, rule="audit", at="2026-11-18T20:13:26+00:00"))
    history.record(_sending("4" * 32, object="reports/other.csv"))

    code, out, _ = _answer(capsys, Query(bucket="acme", name="reports/q3.csv"), history)

    assert code == 0
    ids = [line.split()[1] for line in out.splitlines() if line.startswith("notification ")]
    assert ids == [ID_1, ID_3, ID_2]
    headings = [line for line in out.splitlines() if line.startswith("gs://")]
    assert headings == ["gs://acme/reports/q3.csv generation 7: 2 notification(s)",
                        "gs://acme/reports/q3.csv generation 9: 1 notification(s)"]  # fmt: skip


@pytest.mark.parametrize(
    ("recorded", "record", "shown"),
    [
        ("dead-lettered", {"state": "sent", "message_id": "sg-replayed"}, "sent (recorded dead-lettered"),
        ("retrying", {"state": "claimed", "lease_until": T0 + 160}, "sending now (a delivery holds its claim"),
        ("retrying", {"state": "dead"}, "dead-lettered (recorded retrying"),
        ("sent", {"state": "sent", "message_id": "sg-msg-1"}, "sent"),
    ],
)
def test_the_outcome_is_corrected_by_the_ledgers_current_state(capsys, recorded, record, shown):
    history = MemoryHistory()
    history.record(_sending(outcome=recorded, message_id="" if recorded != "sent" else "sg-msg-1"))
    ledger = _LedgerSays({ID_1: record})

    code, out, _ = _answer(capsys, Query(notification_id=ID_1), history, ledger=ledger)

    assert code == 0
    (line,) = [line for line in out.splitlines() if line.startswith("  outcome:")]
    assert line.removeprefix("  outcome:").strip().startswith(shown), line
    if record.get("message_id"):
        assert f"message id:  {record['message_id']}" in out


def test_a_ledger_record_without_history_is_still_shown(capsys):
    ledger = _LedgerSays({ID_1: {"state": "sent", "message_id": "sg-old"}})

    code, out, _ = _answer(capsys, Query(notification_id=ID_1), MemoryHistory(), ledger=ledger)

    assert code == 0
    assert "outcome:     sent" in out and "message id:  sg-old" in out
    assert "no history recorded" in out


def test_nothing_found_says_what_to_check_and_exits_1(capsys):
    code, out, _ = _answer(capsys, Query(bucket="acme", name="reports/none.csv"), MemoryHistory())

    assert code == 1
    assert "Nothing recorded for gs://acme/reports/none.csv" in out
    assert "python -m notifier route finalize gs://acme/reports/none.csv" in out
    assert "deploy/logs.sh" in out


def test_untrusted_text_is_escaped_for_the_terminal(capsys):
    history = MemoryHistory()
    history.record(_sending(rule="r\x1b[2Jx", error="boom\x1b]0;owned\x07", outcome="dead-lettered"))
    history.add_events(ID_1, [_event(3, "bounce", "bob@example.com", "bad\u202eevil\r\nfake line")])

    code, out, _ = _answer(capsys, Query(notification_id=ID_1), history)

    assert code == 0
    assert "\x1b" not in out and "\u202e" not in out and "\x07" not in out and "\r" not in out
    assert "r\\x1b[2Jx" in out and "bad\\u202eevil\\r\\nfake line" in out


def _held(when: int, window: int, settings) -> tuple[MemoryHistory, MemoryDigestStore, Group]:
    group = Group(key_for(settings.rules.by_name("burst"), ()), "burst")
    history, store = MemoryHistory(), MemoryDigestStore()
    history.record(_sending(object="uploads/a.csv", rule="burst", outcome="batched", message_id="", attempts=0,
                            digest={"group": group.key, "window": window, "held_id": "e" * 32}))  # fmt: skip
    entry = HeldEntry(group, window, "e" * 32, "finalize", "acme", "uploads/a.csv",
                      time=datetime.fromtimestamp(when, UTC), generation=7)  # fmt: skip
    store.hold(entry, {"kind": "finalize"})
    return history, store, group


def test_a_held_event_says_which_digest_holds_it_and_when_it_is_due(capsys, tmp_path):
    window = T0 // 600 * 600
    settings = _settings(tmp_path)
    history, store, _ = _held(T0, window, settings)

    code, out, _ = _answer(capsys, Query(notification_id=ID_1), history, digests=store, settings=settings)

    assert code == 0, out
    assert "outcome:     batched" in out
    (line,) = [line for line in out.splitlines() if "held for a digest" in line]
    assert "rule burst" in line
    assert f"{datetime.fromtimestamp(window, UTC):%H:%M}–{datetime.fromtimestamp(window + 600, UTC):%H:%M} UTC" in line
    assert "due " in line


def test_an_event_sent_in_a_digest_shows_that_digest_and_its_delivery_events(capsys, tmp_path):
    window = T0 // 600 * 600
    history, store, group = _held(T0, window, _settings(tmp_path))
    store.remove(store.pending().entries)  # the flush sent it
    history.record(_sending(DIGEST_ID, object="", kind="digest", rule="burst", message_id="sg-digest",
                            generation=None, digest={"group": group.key, "windows": [window], "events": 3}))  # fmt: skip
    history.add_events(DIGEST_ID, [_event(700, "delivered", "ops@example.com")])

    code, out, _ = _answer(capsys, Query(notification_id=ID_1), history, digests=store, settings=_settings(tmp_path),
                           as_json=False)  # fmt: skip

    assert code == 0, out
    assert f"sent in digest {DIGEST_ID} (message id sg-digest)" in out
    assert f"{_utc(T0 + 700)}  delivered   ops@example.com" in out

    code, out, _ = _answer(capsys, Query(notification_id=ID_1), history, digests=store, settings=_settings(tmp_path),
                           as_json=True)  # fmt: skip
    (found,) = json.loads(out)["notifications"]
    assert found["digest"]["state"] == "sent"
    (digest,) = found["digest"]["digests"]
    assert (digest["notification_id"], digest["message_id"]) == (DIGEST_ID, "sg-digest")
    assert [e["event"] for e in digest["events"]] == ["delivered"]


def _settings(tmp_path: Path):
    (tmp_path / "notify.toml").write_text(RULES, encoding="utf-8")
    return settings_for(NOTIFY_CONFIG=str(tmp_path / "notify.toml"), NOTIFY_LEDGER_FILE=str(tmp_path / "l.sqlite3"))


# --- the command line ---------------------------------------------------------------------------


def test_status_needs_an_object_or_a_32_hex_id(clean_notifier_env, capsys):
    assert main(["status", "--id", "not-an-id"]) == 1
    assert "--id: expected a notification id of 32 hex digits" in capsys.readouterr().err
    assert main(["status"]) == 1
    assert "gs://BUCKET/OBJECT or --id" in capsys.readouterr().err
    assert main(["status", "acme/x"]) == 1
    assert "expected gs://BUCKET/OBJECT" in capsys.readouterr().err


@pytest.fixture
def deployment(clean_notifier_env, tmp_path, monkeypatch):
    """A local deployment's environment: the rules above, the outbox, the SQLite ledger's file."""
    (tmp_path / "notify.toml").write_text(RULES, encoding="utf-8")
    env = {
        "NOTIFY_CONFIG": str(tmp_path / "notify.toml"), "NOTIFY_BACKEND": "outbox",
        "NOTIFY_OUTBOX_DIR": str(tmp_path / "out"), "NOTIFY_LEDGER_FILE": str(tmp_path / "ledger.sqlite3"),
        "NOTIFY_DEAD_LETTER_DIR": str(tmp_path / "dead"), "NOTIFY_FROM": "Alerts <alerts@example.com>",
    }  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return tmp_path


def _delivered_with_feedback(name: str, generation: int) -> tuple[str, History]:
    """Deliver a finalize event of ``name`` as the function does (the ledger records it sent), then
    record its Sending and SendGrid's events for it (ann delivered, bob bounced) through the History
    API, where the deployment keeps them; the notification id."""
    from notifier.ledger import create_history
    from notifier.pipeline import Pipeline

    pipeline = Pipeline.from_environment()
    event = storage_cloud_event(name=name, event_id=f"evt-{generation}", generation=str(generation))
    (outcome,) = pipeline.handle(event)
    assert outcome.outcome == "sent"
    history = create_history(pipeline.ledger)
    notification_id = outcome.notification_id or ""
    history.record(_sending(notification_id, object=name, generation=generation, message_id=outcome.message_id or "",
                            event_id=f"evt-{generation}"))  # fmt: skip
    history.add_events(notification_id, [
        _event(generation, "delivered", "ann@example.com"),
        _event(generation + 1, "bounce", "bob@example.com", "550 5.1.1 The email account does not exist", type="bounce"),
    ])  # fmt: skip
    return notification_id, history


def _status(capsys, *argv: str) -> tuple[int, str, str]:
    """Exit status, the command's own lines (JSON log lines go to stderr), and stderr."""
    code = main(["status", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _check_delivered_and_bounced(capsys, notification_id: str, other_id: str) -> None:
    capsys.readouterr()  # the deliveries' log lines
    code, out, err = _status(capsys, "gs://acme/reports/q3.csv")
    assert code == 0, err
    assert f"notification {notification_id}" in out and other_id not in out
    assert f"{_utc(T0 + 20)}  delivered   ann@example.com" in out
    assert f"{_utc(T0 + 21)}  bounce      bob@example.com  550 5.1.1 The email account does not exist (bounce)" in out

    code, out, err = _status(capsys, "--id", notification_id, "--json")
    assert code == 0, err
    (found,) = json.loads(out)["notifications"]
    assert (found["notification_id"], found["ledger_state"], found["outcome"]) == (notification_id, "sent", "sent")
    assert [(e["event"], e["email"]) for e in found["events"]] == [("delivered", "ann@example.com"),
                                                                    ("bounce", "bob@example.com")]  # fmt: skip
    assert [e["email"] for e in json.loads(_status(capsys, "--id", other_id, "--json")[1])["notifications"][0]
            ["events"]] == ["ann@example.com", "bob@example.com"]  # fmt: skip


def test_status_reads_the_sqlite_ledgers_file(deployment, capsys):
    notification_id, _ = _delivered_with_feedback("reports/q3.csv", 20)
    other_id, _ = _delivered_with_feedback("reports/q4.csv", 40)

    _check_delivered_and_bounced(capsys, notification_id, other_id)


def test_status_reads_the_state_bucket_on_fake_gcs_server(deployment, fake_gcs, capsys, monkeypatch):
    monkeypatch.delenv("NOTIFY_LEDGER_FILE")
    monkeypatch.setenv("NOTIFY_STATE_BUCKET", STATE_BUCKET)
    notification_id, _ = _delivered_with_feedback("reports/q3.csv", 20)
    other_id, _ = _delivered_with_feedback("reports/q4.csv", 40)
    assert fake_gcs.names(STATE_BUCKET, prefix=f"history/events/{notification_id}/")  # where status reads them

    _check_delivered_and_bounced(capsys, notification_id, other_id)


def test_an_unreachable_state_bucket_is_an_error_naming_it(deployment, fake_gcs, capsys, monkeypatch):
    monkeypatch.delenv("NOTIFY_LEDGER_FILE")
    monkeypatch.setenv("NOTIFY_STATE_BUCKET", STATE_BUCKET)
    fake_gcs.fail_next.extend([403] * 5)

    code, _, err = _status(capsys, "gs://acme/reports/q3.csv")

    assert code == 1
    (line,) = [line for line in err.splitlines() if line.startswith("error:")]
    assert f"the state bucket gs://{STATE_BUCKET}" in line and "403" in line, line


def test_a_planted_history_record_is_skipped_and_counted(deployment, fake_gcs, capsys, monkeypatch):
    monkeypatch.delenv("NOTIFY_LEDGER_FILE")
    monkeypatch.setenv("NOTIFY_STATE_BUCKET", STATE_BUCKET)
    fake_gcs.put(STATE_BUCKET, f"history/ids/{ID_1}", b'{"notification_id": "planted\\u001b[2J"}')

    code, out, _ = _status(capsys, "--id", ID_1)

    assert code == 1
    assert f"Nothing recorded for notification {ID_1}" in out
    assert "1 record(s) in the history are not as the notifier writes them: skipped." in out


def test_without_a_ledger_file_yet_nothing_is_created(deployment, capsys):
    code, out, _ = _status(capsys, "--id", ID_1)

    assert code == 1
    assert "there is no ledger file at" in out
    assert not (deployment / "ledger.sqlite3").exists()


def test_without_a_state_bucket_or_ledger_file_it_says_why_it_cannot_tell(deployment, capsys, monkeypatch):
    monkeypatch.delenv("NOTIFY_LEDGER_FILE")
    monkeypatch.setenv("K_SERVICE", "storage-notifier")  # deployed: no local ledger file by default
    monkeypatch.setenv("NOTIFY_BACKEND", "console")

    code, _, err = _status(capsys, "--id", ID_1)

    assert code == 1
    assert "no state bucket (NOTIFY_STATE_BUCKET) or ledger file (NOTIFY_LEDGER_FILE)" in err


# --- review 17 r2: digests alone, dead-lettered or parked; final outcomes; replays; --json ---------


def _flow_status(capsys, world, name: str = "in/1.csv") -> str:
    """``status gs://burst/<name>`` as the world's deployment would answer it (log lines dropped)."""
    capsys.readouterr()
    code, out, _ = _answer(capsys, Query(bucket="burst", name=name), world.pipeline.history, ledger=world.ledger,
                           digests=world.store, settings=world.pipeline.settings, now=W0 + 10 * MINUTE)  # fmt: skip
    assert code == 0, out
    return out


def test_an_event_alone_in_its_window_shows_the_email_the_flush_sent_for_it(capsys, tmp_path):
    world = World(tmp_path)
    world.event(1)
    (result,) = world.flush(everything=True)
    assert result.outcome == "sent"
    (message,) = world.backend.sent  # the ordinary email, under the id the event was held under

    out = _flow_status(capsys, world)

    assert f"sent in digest {message.notification_id} (message id msg-1" in out, out
    assert "no digest recorded" not in out


def test_a_dead_lettered_digest_says_replay_sends_it_and_why_until_it_is_replayed(capsys, tmp_path):
    world = World(tmp_path)
    world.event(1)
    world.event(2)
    world.backend.failures.append(DeliveryError("mailbox unknown", transient=False, status=400))
    (result,) = world.flush(everything=True)
    assert result.outcome == "dead-lettered"
    (letter,) = world.dead_letters.list()

    out = _flow_status(capsys, world)

    (line,) = [line for line in out.splitlines() if "held for a digest" in line]
    assert "digest dead-lettered: `python -m notifier replay` sends it" in line, line
    assert "(pending)" not in line and "due " not in line
    assert f"digest {letter.notification_id} dead-lettered at " in out and "mailbox unknown" in out

    assert [o.outcome for o in world.pipeline.replay(letter)] == ["sent"]
    out = _flow_status(capsys, world)
    assert f"sent in digest {letter.notification_id} (message id msg-1" in out, out
    assert "by replay; before: dead-lettered at " in out and "mailbox unknown" in out
    assert "replay sends it" not in out


def test_a_parked_window_is_said_even_when_its_digests_history_was_not_recorded(capsys, tmp_path):
    class NoDigests(MemoryHistory):  # the dead-lettered digest's write failed (or predates the history)
        def record(self, sending: Sending) -> None:
            if sending.kind == "digest":
                raise LedgerError("state bucket notifier-state: 503")
            super().record(sending)

    world = World(tmp_path)
    world.pipeline.history = NoDigests()
    world.event(1)
    world.event(2)
    world.backend.failures.append(DeliveryError("mailbox unknown", transient=False, status=400))
    world.flush(everything=True)

    out = _flow_status(capsys, world)

    (line,) = [line for line in out.splitlines() if "held for a digest" in line]
    assert "digest dead-lettered: `python -m notifier replay` sends it" in line, line


@pytest.mark.parametrize(
    ("recorded", "said"),
    [
        ("sent", "the ledger's sent mark was not recorded"),
        ("dead-lettered", "the ledger's dead mark was not recorded"),
        ("partially-sent", "the ledger's dead mark was not recorded"),
    ],
)
def test_a_final_outcome_is_kept_when_the_ledger_still_holds_the_claim(capsys, recorded, said):
    history = MemoryHistory()
    history.record(_sending(outcome=recorded))
    ledger = _LedgerSays({ID_1: {"state": "claimed", "lease_until": T0 + 160}})

    code, out, _ = _answer(capsys, Query(notification_id=ID_1), history, ledger=ledger)

    assert code == 0
    (line,) = [line for line in out.splitlines() if line.startswith("  outcome:")]
    assert line.removeprefix("  outcome:").strip().startswith(recorded), line
    assert said in line and "sending now" not in line


def test_a_replayed_notification_shows_what_happened_before_the_replay(capsys):
    history = MemoryHistory()
    before = {"outcome": "partially-sent", "error": "smtp refused 1 of 2 recipient(s): bob@example.com: 550 no",
              "at": "2026-11-18T20:10:00+00:00", "refused_recipients": ["bob@example.com"]}  # fmt: skip
    history.record(_sending(previous=before))

    code, out, _ = _answer(capsys, Query(notification_id=ID_1), history)

    assert code == 0
    (line,) = [line for line in out.splitlines() if line.startswith("  outcome:")]
    assert line == (
        "  outcome:     sent at 2026-11-18 20:13:25 UTC by replay; before: partially-sent at 2026-11-18 20:10:00 UTC:"
        " smtp refused 1 of 2 recipient(s): bob@example.com: 550 no"
    ), line
    code, out, _ = _answer(capsys, Query(notification_id=ID_1), history, as_json=True)
    assert json.loads(out)["notifications"][0]["previous"] == before


def test_a_planted_previous_outcome_makes_the_record_unreadable():
    good = _sending(previous={"outcome": "dead-lettered", "error": "e", "at": "2026-11-18T20:10:00+00:00"})
    assert Sending.from_json(good.to_json()) == good
    for planted in ({"outcome": 7}, {"outcome": "x", "error": "e" * 5000}, ["dead-lettered"],
                    {"outcome": "x", "refused_recipients": ["a@example.com"] * 51}):  # fmt: skip
        assert Sending.from_json({**good.to_json(), "previous": planted}) is None, planted


def test_a_retrying_record_with_nothing_after_it_says_what_that_means(capsys):
    history = MemoryHistory()
    history.record(_sending(outcome="retrying", message_id="", attempts=3, error="SendGrid answered 503"))

    code, out, _ = _answer(capsys, Query(notification_id=ID_1), history)

    assert code == 0
    (line,) = [line for line in out.splitlines() if line.startswith("  outcome:")]
    assert line.removeprefix("  outcome:").strip().startswith("retrying"), line
    assert "the platform redelivers" in line and "expired or was dropped" in line and "deploy/logs.sh" in line


def test_json_escapes_control_and_bidi_characters(capsys):
    history = MemoryHistory()
    name = "x/\u202eevil\x1b[2J\x07\u009b31m"
    history.record(_sending(object=name))

    code, out, _ = _answer(capsys, Query(bucket="acme", name=name), history, as_json=True)

    assert code == 0
    assert not any(c in out for c in ("\u202e", "\x1b", "\x07", "\u009b")), repr(out[:300])
    assert json.loads(out)["notifications"][0]["object"] == name


# --- past the bound of notifications per object (review r2 #3) ----------------------------------


def test_an_object_with_1200_generations_shows_the_newest_1000_and_says_so(deployment, capsys):
    from notifier.ledger.sqlite_history import SqliteHistory

    store = SqliteHistory(deployment / "ledger.sqlite3")
    for generation in range(1, 1201):
        store.record(_sending(f"{generation:032x}", generation=generation, event_id=f"evt-{generation}"))

    code, out, err = _status(capsys, "gs://acme/reports/q3.csv")

    assert code == 0, err
    shown = [int(line.split(" generation ")[1].split(":")[0]) for line in out.splitlines() if line.startswith("gs://")]
    assert shown == list(range(201, 1201))
    assert "showing the newest 1000 of more than 1000 notification(s)" in out
    document = json.loads(_status(capsys, "gs://acme/reports/q3.csv", "--json")[1])
    assert document["truncated"] is True and len(document["notifications"]) == 1000


def test_an_object_within_the_bound_says_nothing_of_truncation(capsys):
    history = MemoryHistory()
    history.record(_sending())

    code, out, _ = _answer(capsys, Query(bucket="acme", name="reports/q3.csv"), history)
    assert code == 0 and "showing the newest" not in out
    _, out, _ = _answer(capsys, Query(bucket="acme", name="reports/q3.csv"), history, as_json=True)
    assert json.loads(out)["truncated"] is False


def test_planted_markers_past_the_bound_do_not_hide_the_genuine_record(deployment, fake_gcs, capsys, monkeypatch):
    """Planted names of another form than ours (here the ids alone, sorting before every genuine
    marker, whose first digit is 9 for any generation below 10**18) cost no read and take no place
    among the 1,000 read: twice that many are skipped and counted. (2,000, not 10,000: fake-gcs-server
    takes uploads ever more slowly as a bucket fills, and the bound is what is tested.)"""
    from concurrent.futures import ThreadPoolExecutor
    from urllib.parse import quote

    import urllib3

    from notifier.ledger.gcs_history import GcsHistory
    from notifier.ledger.history import MAX_SENDINGS_PER_OBJECT, object_key
    from tests.test_history_stores import _state_bucket

    monkeypatch.delenv("NOTIFY_LEDGER_FILE")
    monkeypatch.setenv("NOTIFY_STATE_BUCKET", STATE_BUCKET)
    GcsHistory(_state_bucket()).record(_sending())
    folder = f"history/objects/{object_key('acme', 'reports/q3.csv')}/"
    planted = 2 * MAX_SENDINGS_PER_OBJECT
    names = [quote(f"{folder}{i:032x}", safe="") for i in range(planted)]
    bucket_url, http = f"{fake_gcs.server.url}/storage/v1/b/{STATE_BUCKET}/o", urllib3.PoolManager(maxsize=16)
    upload = f"{fake_gcs.server.url}/upload/storage/v1/b/{STATE_BUCKET}/o?uploadType=media&name="
    with ThreadPoolExecutor(16) as pool:  # straight to the server (not through the recording proxy): fast
        assert set(pool.map(lambda name: http.request("POST", upload + name, body=b"").status, names)) == {200}
    try:
        code, out, err = _status(capsys, "gs://acme/reports/q3.csv")
    finally:
        with ThreadPoolExecutor(16) as pool:
            list(pool.map(lambda name: http.request("DELETE", f"{bucket_url}/{name}"), names))

    assert code == 0, err
    assert f"notification {ID_1}" in out and "showing the newest" not in out
    assert f"{planted} record(s) in the history are not as the notifier writes them: skipped." in out


# --- review 17 r3: a duplicate send told apart; a stable order; a dead letter's attempts ---------


def _at(second: int, event: str, email: str, message: str, name: str, reason: str = "") -> DeliveryEvent:
    """An event at ``T0 + second`` of SendGrid's message ``message`` (its sg_message_id: the
    X-Message-Id, a dot, the filter's suffix), recorded as ``name``."""
    return DeliveryEvent(name, event, T0 + second, email, reason, {"sg_message_id": f"{message}.filter0001.1.0"})


def _one_message(message: str, tag: str) -> list[DeliveryEvent]:
    return [
        _at(2, "processed", "ann@example.com", message, f"{tag}-p-ann"),
        _at(2, "processed", "bob@example.com", message, f"{tag}-p-bob"),
        _at(3, "delivered", "ann@example.com", message, f"{tag}-d-ann"),
        _at(3, "bounce", "bob@example.com", message, f"{tag}-b-bob", "550 5.1.1 no such user"),
    ]


def test_an_accepted_attempt_whose_answer_was_lost_is_told_apart_as_a_duplicate(capsys):
    """SendGrid took the first attempt, its answer timed out, the retry was sent too: two messages."""
    history = MemoryHistory()
    history.record(_sending(message_id="XID-1", attempts=2))
    history.add_events(ID_1, _one_message("XID-0", "first") + _one_message("XID-1", "second"))

    code, out, _ = _answer(capsys, Query(notification_id=ID_1), history)

    assert code == 0
    assert (
        "SendGrid reported 2 messages for this notification: an attempt whose answer was lost was accepted too"
        " (a duplicate email)"
    ) in out, out
    lines = out.splitlines()
    start = lines.index("  delivery events:")
    each = [
        f"{_utc(T0 + 2)}  processed   ann@example.com",
        f"{_utc(T0 + 2)}  processed   bob@example.com",
        f"{_utc(T0 + 3)}  delivered   ann@example.com",
        f"{_utc(T0 + 3)}  bounce      bob@example.com  550 5.1.1 no such user",
    ]
    assert [line.strip() for line in lines[start + 1 :]] == [
        "message XID-1 (the recorded one):",
        *each,
        "message XID-0:",
        *each,
    ], out

    _, out, _ = _answer(capsys, Query(notification_id=ID_1), history, as_json=True)
    (found,) = json.loads(out)["notifications"]
    assert [(e["message_id"], e["sg_event_id"]) for e in found["events"]][:3] == [
        ("XID-0", "first-p-ann"), ("XID-1", "second-p-ann"), ("XID-0", "first-p-bob")
    ]  # fmt: skip
    assert found["messages"] == [
        {"message_id": "XID-1", "recorded": True, "events": 4},
        {"message_id": "XID-0", "recorded": False, "events": 4},
    ]


def test_the_events_of_the_recorded_message_alone_are_listed_without_a_duplicate_said(capsys):
    history = MemoryHistory()
    history.record(_sending(message_id="XID-1", attempts=2))
    history.add_events(ID_1, _one_message("XID-1", "only"))

    _, out, _ = _answer(capsys, Query(notification_id=ID_1), history)

    assert "messages for this notification" not in out and "message XID-1" not in out, out
    assert f"    {_utc(T0 + 2)}  processed   ann@example.com" in out.splitlines()
    _, out, _ = _answer(capsys, Query(notification_id=ID_1), history, as_json=True)
    assert json.loads(out)["notifications"][0]["messages"] == [{"message_id": "XID-1", "recorded": True, "events": 4}]


def test_events_of_the_same_second_follow_a_messages_life_then_the_address(capsys):
    history = MemoryHistory()
    history.record(_sending())
    life = ["processed", "deferred", "delivered", "open", "click", "spamreport"]
    # sg_event_ids sort against that order: a listing by id would show them backwards
    events = [_at(5, name, "ann@example.com", "sg-msg-1", f"z{9 - i}") for i, name in enumerate(life)]
    events += [_at(5, "bounce", "bob@example.com", "sg-msg-1", "a0"), _at(5, "processed", "bob@example.com",
                                                                          "sg-msg-1", "a1")]  # fmt: skip
    history.add_events(ID_1, events)

    _, out, _ = _answer(capsys, Query(notification_id=ID_1), history)

    shown = [line.split()[3:5] for line in out.splitlines() if line.startswith(f"    {_utc(T0 + 5)[:10]}")]
    assert shown == [["processed", "ann@example.com"], ["processed", "bob@example.com"],
                     ["deferred", "ann@example.com"], ["delivered", "ann@example.com"],
                     ["bounce", "bob@example.com"], ["open", "ann@example.com"], ["click", "ann@example.com"],
                     ["spamreport", "ann@example.com"]], out  # fmt: skip
    _, out, _ = _answer(capsys, Query(notification_id=ID_1), history, as_json=True)
    assert [[e["event"], e["email"]] for e in json.loads(out)["notifications"][0]["events"]] == shown


PLAIN = """
[[rules]]
name = "plain"
buckets = ["plain"]
to = ["ops@example.com"]
"""


def test_a_dead_lettered_notification_shows_its_attempts_and_that_replay_sends_it(capsys, tmp_path):
    world = World(tmp_path, rules=PLAIN)
    world.backend.failures.append(DeliveryError("from.email: invalid", transient=False, status=400, attempts=3))
    assert world.event(1, bucket="plain") == ["dead-lettered"]

    capsys.readouterr()  # the outcome line
    code, out, _ = _answer(capsys, Query(bucket="plain", name="in/1.csv"), world.pipeline.history,
                           ledger=world.ledger, settings=world.pipeline.settings)  # fmt: skip

    assert code == 0, out
    assert "  attempts:    3" in out.splitlines(), out
    (line,) = [line for line in out.splitlines() if "python -m notifier replay" in line]
    assert "`python -m notifier replay` sends it once the cause is fixed" in line, out


def test_a_dead_letter_whose_lost_answer_was_accepted_says_the_email_went_out(capsys):
    """The first attempt was accepted but its answer lost; the retry was refused: dead-lettered, yet
    SendGrid delivered the first (a replay would send a second copy)."""
    history = MemoryHistory()
    history.record(_sending(outcome="dead-lettered", message_id="", attempts=2, error="SendGrid answered 400"))
    history.add_events(ID_1, _one_message("XID-0", "first"))

    _, out, _ = _answer(capsys, Query(notification_id=ID_1), history)

    assert (
        "SendGrid reported 1 message(s) for this notification, though none is recorded as sent: an attempt whose"
        " answer was lost was accepted (the email went out)"
    ) in out, out
    assert "    message XID-0:" in out.splitlines() and "(the recorded one)" not in out


def test_a_recorded_message_id_with_a_dot_still_claims_its_events(capsys):
    """SendGrid's ids have no dot, but what X-Message-Id carried is what is recorded: an event whose
    sg_message_id begins with it (and a dot) is that message's."""
    history = MemoryHistory()
    history.record(_sending(message_id="XID-q3.csv-1"))
    history.add_events(ID_1, _one_message("XID-q3.csv-1", "only"))

    _, out, _ = _answer(capsys, Query(notification_id=ID_1), history, as_json=True)

    (found,) = json.loads(out)["notifications"]
    assert found["messages"] == [{"message_id": "XID-q3.csv-1", "recorded": True, "events": 4}]
    assert {e["message_id"] for e in found["events"]} == {"XID-q3.csv-1"}


def test_events_naming_no_message_come_last_when_the_events_are_grouped(capsys):
    history = MemoryHistory()
    history.record(_sending(message_id="XID-1"))
    history.add_events(ID_1, [*_one_message("XID-0", "first")[:1], _event(1, "deferred", "ann@example.com")])

    _, out, _ = _answer(capsys, Query(notification_id=ID_1), history)

    lines = [line.strip() for line in out.splitlines()]
    start = lines.index("delivery events:")
    assert lines[start + 1 :] == [
        "message XID-1 (the recorded one):",
        "message XID-0:",
        f"{_utc(T0 + 2)}  processed   ann@example.com",
        "naming no message:",
        f"{_utc(T0 + 1)}  deferred    ann@example.com",
    ], out
