"""SendGrid's signed Event Webhook in one process: notifier.webhook's edge on a Flask app and
notifier.feedback's logic, batches signed with a real P-256 key pair exactly as SendGrid signs."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from flask import Flask, request

from notifier import feedback, tracing, webhook
from notifier.config import ConfigError
from notifier.ledger import history as history_module
from notifier.ledger.base import LedgerError
from notifier.ledger.history import (
    MAX_EVENTS_PER_NOTIFICATION,
    MAX_TEXT,
    DeliveryEvent,
    History,
    MemoryHistory,
    NoHistory,
    Sending,
)
from notifier.ledger.memory import MemoryLedger
from notifier.ledger.sqlite import SqliteLedger
from notifier.ledger.sqlite_history import SqliteHistory
from notifier.pipeline import Pipeline
from tests.conftest import settings_for, storage_cloud_event

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_800_000_000
OURS, OTHER = "a" * 32, "b" * 32


@dataclass(frozen=True)
class KeyPair:
    private: ec.EllipticCurvePrivateKey
    public: str  # as SendGrid shows it: base64 of the DER SubjectPublicKeyInfo


def key_pair() -> KeyPair:
    private = ec.generate_private_key(ec.SECP256R1())
    der = private.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return KeyPair(private, base64.b64encode(der).decode())


def signed(key: KeyPair, body: bytes, timestamp: int | str = NOW) -> dict[str, str]:
    """SendGrid's headers: ECDSA-SHA256 over timestamp + body, the DER signature in base64."""
    signature = key.private.sign(str(timestamp).encode() + body, ec.ECDSA(hashes.SHA256()))
    return {webhook.SIGNATURE_HEADER: base64.b64encode(signature).decode(), webhook.TIMESTAMP_HEADER: str(timestamp)}


def sg_event(event: str, notification_id: str | None = OURS, n: int = 1, **fields: Any) -> dict[str, Any]:
    item = {"event": event, "sg_event_id": f"{event}-{n}", "timestamp": NOW - 60, "email": "ann@example.com",
            "sg_message_id": "sg-msg-1.filter", **fields}  # fmt: skip
    if notification_id is not None:
        item["notification_id"] = notification_id
    return item


def batch(*items: Any) -> bytes:
    return json.dumps(list(items)).encode()


def sending(notification_id: str = OURS, rule: str = "reports") -> Sending:
    return Sending(notification_id, "acme", "reports/q3.csv", 7, "evt-1", "finalize", rule, ("ann@example.com",), 1,
                   "sent", "2026-11-29T08:00:00+00:00", message_id="sg-msg-1")  # fmt: skip


class Hook:
    """The webhook's edge installed on a Flask app, as main.py's sendgrid_events serves it."""

    def __init__(
        self, key: str | None, history: History | None = None, now: Callable[[], float] = lambda: NOW,
        env: dict[str, str] | None = None,
    ) -> None:  # fmt: skip
        env = {"NOTIFY_BACKEND": "console", **(env or {})} | ({"SENDGRID_WEBHOOK_PUBLIC_KEY": key} if key else {})
        self.pipeline = Pipeline(settings_for(**env), ledger=MemoryLedger())
        self.pipeline.history = history if history is not None else MemoryHistory()  # type: ignore[attr-defined]
        app = Flask("sendgrid_events")
        webhook.install(app, self.pipeline, now=now)
        app.add_url_rule("/", "hook", lambda: webhook.answer(self.pipeline, request, now=now), methods=["GET", "POST"])
        self.client = app.test_client()

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        answer = self.client.post("/", data=body, headers={"Content-Type": "application/json", **headers})
        return answer.status_code, answer.get_json(silent=True) or {}


def lines(capsys: pytest.CaptureFixture) -> list[dict[str, Any]]:
    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


@pytest.fixture
def key() -> KeyPair:
    return key_pair()


@pytest.fixture
def history() -> MemoryHistory:
    known = MemoryHistory()
    known.record(sending())
    return known


def test_a_signed_batch_is_recorded_once_even_when_posted_twice(key, history, capsys):
    hook = Hook(key.public, history)
    body = batch(sg_event("processed"), sg_event("delivered"), sg_event("bounce", reason="550 no such user"))
    status, counts = hook.post(body, signed(key, body))
    assert (status, counts) == (
        200,
        {"received": 3, "recorded": 3, "duplicates": 0, "not_kept": 0, "unknown": 0, "ignored": 0},
    )
    first = lines(capsys)
    assert [line["outcome"] for line in first if "outcome" in line] == ["bounced"]
    status, counts = hook.post(body, signed(key, body))
    assert (status, counts["recorded"], counts["duplicates"]) == (200, 0, 3)
    assert [line for line in lines(capsys) if line["severity"] == "WARNING"] == [], "a retried batch warned twice"
    assert sorted(e.event for e in history.events(OURS)) == ["bounce", "delivered", "processed"]


def test_bounce_dropped_and_spam_each_say_who_and_why(key, history, capsys):
    body = batch(sg_event("bounce", reason="550 5.1.1 unknown", type="bounce", status="5.1.1"),
                 sg_event("dropped", reason="Bounced Address"), sg_event("spamreport"))  # fmt: skip
    status, _ = Hook(key.public, history).post(body, signed(key, body))
    warnings = [line for line in lines(capsys) if line["severity"] == "WARNING"]
    assert status == 200
    assert [(w["outcome"], w["recipient"], w["rule"], w["notification_id"]) for w in warnings] == [
        ("bounced", "ann@example.com", "reports", OURS), ("dropped", "ann@example.com", "reports", OURS),
        ("spam", "ann@example.com", "reports", OURS),
    ]  # fmt: skip
    assert [w.get("reason") for w in warnings] == ["550 5.1.1 unknown", "Bounced Address", ""]


@pytest.mark.parametrize(
    "tamper",
    ["body", "wrong key", "stale", "future", "no signature", "no timestamp", "garbage signature", "bad der",
     "not utf-8", "timestamp not digits"],
)  # fmt: skip
def test_anything_sendgrid_did_not_sign_is_403_with_one_warning_and_nothing_recorded(key, history, capsys, tamper):
    body = batch(sg_event("delivered"))
    headers = signed(key, body)
    if tamper == "body":
        body = body.replace(b"delivered", b"bounce")
    elif tamper == "wrong key":
        headers = signed(key_pair(), body)
    elif tamper in ("stale", "future"):
        headers = signed(key, body, NOW - 601 if tamper == "stale" else NOW + 601)
    elif tamper.startswith("no "):
        del headers[webhook.SIGNATURE_HEADER if tamper == "no signature" else webhook.TIMESTAMP_HEADER]
    elif tamper == "garbage signature":
        headers[webhook.SIGNATURE_HEADER] = "!!not base64!!"
    elif tamper == "bad der":
        headers[webhook.SIGNATURE_HEADER] = base64.b64encode(b"\x30\x02\x01").decode()
    elif tamper == "not utf-8":
        body = b'[{"event": "delivered", "email": "\xff"}]'
        headers = signed(key, body)
    else:
        headers = signed(key, body, "1e9")
    status, answer = Hook(key.public, history).post(body, headers)
    logged = lines(capsys)
    assert status == 403, answer
    assert [(line["severity"], line["webhook"]) for line in logged] == [("WARNING", "rejected")]
    assert logged[0]["reason"]
    assert history.events(OURS) == []


def test_the_skew_allowed_is_ten_minutes_either_way(key, history):
    body = batch(sg_event("delivered"))
    for timestamp in (NOW - 600, NOW + 600):
        assert Hook(key.public, history).post(body, signed(key, body, timestamp))[0] == 200


def test_without_a_key_the_webhook_is_not_installed_and_says_which_variable(capsys):
    with pytest.raises(ConfigError, match="SENDGRID_WEBHOOK_PUBLIC_KEY: required by sendgrid_events"):
        Hook(None)
    (line,) = lines(capsys)
    assert line["severity"] == "CRITICAL"
    assert "SENDGRID_WEBHOOK_PUBLIC_KEY" in line["message"]


def test_only_post_is_answered(key):
    answer = Hook(key.public).client.get("/")
    assert (answer.status_code, answer.headers["Allow"]) == (405, "POST")


def test_a_body_over_a_mebibyte_is_413(key, capsys):
    body = b"[" + b" " * webhook.MAX_BODY + b"]"
    status, _ = Hook(key.public).post(body, signed(key, body))
    assert status == 413
    assert [line["severity"] for line in lines(capsys)] == ["WARNING"]


def test_unknown_ids_and_events_we_do_not_record_are_counted_and_ignored(key, history):
    body = batch(sg_event("delivered", OTHER), sg_event("delivered", None), sg_event("group_unsubscribe"),
                 sg_event("delivered", "not-an-id"), sg_event("delivered", sg_event_id=None))  # fmt: skip
    status, counts = Hook(key.public, history).post(body, signed(key, body))
    assert (status, counts) == (
        200,
        {"received": 5, "recorded": 0, "duplicates": 0, "not_kept": 0, "unknown": 3, "ignored": 2},
    )
    assert history.events(OTHER) == []


def test_an_id_the_ledger_knows_is_ours_without_a_sending(key, monkeypatch):
    recorded = MemoryHistory()
    hook = Hook(key.public, recorded)
    monkeypatch.setattr(hook.pipeline.ledger, "lookup", lambda i: {"state": "sent"} if i == OURS else None)
    body = batch(sg_event("delivered"), sg_event("delivered", OTHER))
    assert hook.post(body, signed(key, body))[1]["recorded"] == 1
    assert [e.event for e in recorded.events(OURS)] == ["delivered"]


@pytest.mark.parametrize(
    ("body", "problem"),
    [(b'{"event": "delivered"}', "is an object; expected a JSON array"), (b"[1, 2]", "item 0"), (b"[" * 100_000, "nested too deeply"),
     (b"not json", "not JSON"), (batch(*[{}] * (feedback.MAX_EVENTS + 1)), "10,001 events")],
)  # fmt: skip
def test_a_signed_body_that_is_not_an_event_batch_is_400(key, capsys, body, problem):
    status, answer = Hook(key.public).post(body, signed(key, body))
    (line,) = lines(capsys)
    assert (status, line["severity"], line["webhook"]) == (400, "WARNING", "malformed")
    assert problem in answer["error"]


def test_hostile_fields_are_bounded_and_never_a_500(key, history):
    huge = "x" * 200_000
    body = batch(sg_event("bounce", reason=huge, email={"nested": [[["junk"]]]}, url=[huge], status=True),
                 sg_event("click", sg_event_id="y" * 50_000, timestamp="yesterday"))  # fmt: skip
    status, counts = Hook(key.public, history).post(body, signed(key, body))
    assert (status, counts["recorded"]) == (200, 2)
    bounce, click = sorted(history.events(OURS), key=lambda e: e.event)
    assert (len(bounce.reason), bounce.email, dict(bounce.detail).get("url"), "status" in bounce.detail) == (
        MAX_TEXT, "", None, False)  # fmt: skip
    assert click.sg_event_id.startswith("sha256-") and len(click.sg_event_id) <= 100
    assert click.timestamp == NOW, "an event without a timestamp of its own gets the signed one"
    assert all(DeliveryEvent.from_json(e.to_json()) == e for e in (bounce, click)), "stored as the store reads back"


def test_a_state_bucket_down_is_503_so_that_sendgrid_retries(key, history, capsys):
    def down(notification_id: str, events: Any) -> int:
        raise LedgerError("state bucket unavailable")

    history.add_events = down  # type: ignore[method-assign]
    body = batch(sg_event("delivered"))
    status, _ = Hook(key.public, history).post(body, signed(key, body))
    assert status == 503
    assert [line["severity"] for line in lines(capsys)] == ["ERROR"]


def test_many_notifications_in_one_batch_are_each_recorded(key):
    ids = [f"{i:032x}" for i in range(40)]
    known = MemoryHistory()
    for notification_id in ids:
        known.record(sending(notification_id))
    body = batch(*[sg_event("delivered", i) for i in ids], *[sg_event("open", i) for i in ids])
    status, counts = Hook(key.public, known).post(body, signed(key, body))
    assert (status, counts["recorded"]) == (200, 80)
    assert all(len(known.events(i)) == 2 for i in ids)


def test_the_pipeline_makes_its_history_beside_the_ledger_once(tmp_path):
    pipeline = Pipeline(settings_for(NOTIFY_BACKEND="console"), ledger=SqliteLedger(tmp_path / "ledger.sqlite3"))
    found = pipeline.history
    assert isinstance(found, SqliteHistory) and found.path == tmp_path / "ledger.sqlite3"
    assert pipeline.history is found


def test_beside_a_ledger_in_memory_no_history_is_kept_or_even_built(monkeypatch):
    """Per-instance memory (deployed without a state bucket): no status or webhook could read it."""
    pipeline = Pipeline(settings_for(NOTIFY_BACKEND="console"), ledger=MemoryLedger())
    assert isinstance(pipeline.history, NoHistory)
    built = []
    monkeypatch.setattr(history_module, "notification_sending", lambda *a, **k: built.append(a))
    assert pipeline.handle(storage_cloud_event(event_id="kept-nowhere")) != []
    assert built == []


_LOAD_EVENT_TARGET = """
import json, sys
import functions_framework
app = functions_framework.create_app("handle_storage_event", "main.py", "cloudevent")
print(json.dumps(sorted(n for n in sys.modules if n.startswith(("cryptography", "notifier.feedback",
                                                                "notifier.webhook", "sendgrid.helpers.eventwebhook")))))
"""


def test_the_event_function_never_loads_cryptography_or_the_webhook():
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "SENDGRID_"))}
    env |= {"NOTIFY_BACKEND": "console", "NOTIFY_FROM": "Alerts <alerts@example.com>", "NOTIFY_TO": "ops@example.com"}
    done = subprocess.run([sys.executable, "-c", _LOAD_EVENT_TARGET], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


# --- bounds, one call per notification, the id cache, start-up checks, traces, early refusals ----


def _warnings(capsys: pytest.CaptureFixture) -> list[dict[str, Any]]:
    return [line for line in lines(capsys) if line["severity"] == "WARNING"]


def test_opens_at_their_cap_leave_room_for_a_bounce_and_are_not_called_duplicates(key, history, capsys):
    hook = Hook(key.public, history)
    opens = batch(*[sg_event("open", n=n) for n in range(MAX_EVENTS_PER_NOTIFICATION + 1)])
    status, counts = hook.post(opens, signed(key, opens))
    assert (status, counts["recorded"], counts["duplicates"], counts["not_kept"]) == (
        200, MAX_EVENTS_PER_NOTIFICATION, 0, 1)  # fmt: skip
    capsys.readouterr()
    body = batch(sg_event("bounce", reason="550 no such user"), sg_event("click"))
    status, counts = hook.post(body, signed(key, body))
    assert (status, counts) == (
        200, {"received": 2, "recorded": 1, "duplicates": 0, "not_kept": 1, "unknown": 0, "ignored": 0})  # fmt: skip
    assert [(w["outcome"], w["reason"]) for w in _warnings(capsys)] == [("bounced", "550 no such user")]
    assert "bounce" in [e.event for e in history.events(OURS)]


def test_a_bounce_over_its_own_bound_is_not_kept_yet_still_warned(key, history, capsys, monkeypatch):
    monkeypatch.setattr(history_module, "MAX_ONCE_EVENTS_PER_NOTIFICATION", 2, raising=False)
    body = batch(sg_event("delivered"), sg_event("bounce", n=1, email="bob@example.com"),
                 sg_event("dropped", n=1, email="cy@example.com", reason="Bounced Address"))  # fmt: skip
    status, counts = Hook(key.public, history).post(body, signed(key, body))
    assert (status, counts) == (
        200, {"received": 3, "recorded": 2, "duplicates": 0, "not_kept": 1, "unknown": 0, "ignored": 0})  # fmt: skip
    warned = _warnings(capsys)
    assert [(w["outcome"], w["recipient"], w.get("kept")) for w in warned] == [
        ("bounced", "bob@example.com", None), ("dropped", "cy@example.com", False)]  # fmt: skip
    assert len(history.events(OURS)) == 2


def test_each_notification_is_added_in_one_call_and_only_its_new_alarms_warn(key, history, capsys):
    calls: list[tuple[str, int]] = []
    add = history.add_events

    def counted(notification_id: str, events: Any) -> Any:
        calls.append((notification_id, len(events)))
        return add(notification_id, events)

    history.add_events = counted  # type: ignore[method-assign]
    hook = Hook(key.public, history)
    first = batch(sg_event("bounce", n=1), sg_event("delivered"))
    hook.post(first, signed(key, first))
    capsys.readouterr()
    body = batch(sg_event("bounce", n=1), sg_event("bounce", n=2, email="bob@example.com"), sg_event("dropped"),
                 sg_event("delivered"), sg_event("open"))  # fmt: skip
    status, counts = hook.post(body, signed(key, body))
    assert (status, counts["recorded"], counts["duplicates"]) == (200, 3, 2)
    assert calls == [(OURS, 2), (OURS, 5)]
    assert [(w["outcome"], w["sg_event_id"]) for w in _warnings(capsys)] == [
        ("bounced", "bounce-2"),
        ("dropped", "dropped-1"),
    ]


def test_each_id_is_looked_up_once_per_instance_whether_known_or_not(key, history):
    reads: Counter[tuple[str, str]] = Counter()
    by_id = history.by_id
    history.by_id = lambda i: reads.update([("by_id", i)]) or by_id(i)  # type: ignore[method-assign]
    hook = Hook(key.public, history)
    lookup = hook.pipeline.ledger.lookup
    hook.pipeline.ledger.lookup = lambda i: reads.update([("lookup", i)]) or lookup(i)  # type: ignore[method-assign]
    for n in (1, 2):
        body = batch(sg_event("delivered", OURS, n=n), sg_event("delivered", OTHER, n=n))
        status, counts = hook.post(body, signed(key, body))
        assert (status, counts["recorded"], counts["unknown"]) == (200, 1, 1)
    assert reads == {("by_id", OURS): 1, ("by_id", OTHER): 1, ("lookup", OTHER): 1}


def test_the_id_cache_is_bounded_and_forgets_after_its_time():
    now = [0.0]
    cache = feedback.IdCache(max_ids=2, seconds=600, clock=lambda: now[0])
    cache.put(OURS, feedback.Lookup(known=True, rule="reports"))
    cache.put(OTHER, feedback.Lookup(known=False))
    assert (cache.get(OURS), cache.get(OTHER)) == (feedback.Lookup(True, "reports"), feedback.Lookup(False))
    cache.put("c" * 32, feedback.Lookup(known=False))
    assert cache.get(OURS) is None, "the oldest is forgotten beyond the bound"
    now[0] = 601
    assert cache.get(OTHER) is None and cache.get("c" * 32) is None, "and every one after ten minutes"


def test_an_unknown_id_is_asked_again_after_a_minute_a_known_one_after_ten():
    now = [0.0]
    cache = feedback.IdCache(clock=lambda: now[0])
    cache.put(OURS, feedback.Lookup(known=True, rule="reports"))
    cache.put(OTHER, feedback.Lookup(known=False))
    now[0] = feedback.UNKNOWN_ID_SECONDS + 1  # a digest's record may land after its first events
    assert (cache.get(OURS), cache.get(OTHER)) == (feedback.Lookup(True, "reports"), None)


def test_an_id_that_could_not_be_checked_is_503_and_the_retry_records_the_rest_once(key, history, capsys):
    history.record(sending(OTHER))
    failing = {OTHER}
    by_id = history.by_id

    def flaky(notification_id: str) -> Sending | None:
        if notification_id in failing:
            raise LedgerError("state bucket notifier-state: TimeoutError: no complete answer in time")
        return by_id(notification_id)

    history.by_id = flaky  # type: ignore[method-assign]
    hook = Hook(key.public, history)
    body = batch(sg_event("bounce", OURS), sg_event("bounce", OTHER, email="bob@example.com"))
    status, _ = hook.post(body, signed(key, body))
    logged = lines(capsys)
    assert status == 503
    assert [(line["severity"], line.get("outcome"), line.get("recipient")) for line in logged if "webhook" not in line] == [
        ("WARNING", "bounced", "ann@example.com")]  # fmt: skip
    (error,) = [line for line in logged if line["severity"] == "ERROR"]
    assert (error["webhook"], error["unchecked"], error["unrecorded"]) == ("retrying", 1, 0)
    failing.clear()
    status, counts = hook.post(body, signed(key, body))
    assert (status, counts["recorded"], counts["duplicates"]) == (200, 1, 1)
    assert [(w["outcome"], w["recipient"]) for w in _warnings(capsys)] == [("bounced", "bob@example.com")]


def test_a_key_that_does_not_load_refuses_to_start_naming_the_variable(key, capsys):
    der = bytearray(base64.b64decode(key.public))
    der[-1] ^= 1  # one character mistyped: still P-256's form, no longer a point of its curve
    off_curve = base64.b64encode(bytes(der)).decode()
    assert settings_for(NOTIFY_BACKEND="console", SENDGRID_WEBHOOK_PUBLIC_KEY=off_curve).webhook_public_key == off_curve
    with pytest.raises(ConfigError, match="SENDGRID_WEBHOOK_PUBLIC_KEY"):
        Hook(off_curve)
    (line,) = lines(capsys)
    assert line["severity"] == "CRITICAL"
    assert line["message"].startswith("storage-notifier cannot start: SENDGRID_WEBHOOK_PUBLIC_KEY:")


def test_deployed_without_a_state_bucket_it_refuses_to_start_naming_the_variable(key, capsys):
    with pytest.raises(ConfigError, match="NOTIFY_STATE_BUCKET"):
        Hook(key.public, env={"K_SERVICE": "sendgrid-events"})
    (line,) = lines(capsys)
    assert line["severity"] == "CRITICAL"
    assert "NOTIFY_STATE_BUCKET" in line["message"]
    Hook(key.public, env={"K_SERVICE": "sendgrid-events", "NOTIFY_STATE_BUCKET": "notifier-state"})


def test_alarm_lines_from_every_thread_carry_the_request_s_trace(key, capsys):
    known = MemoryHistory()
    ids = [f"{n:032x}" for n in range(1, 5)]
    for notification_id in ids:
        known.record(sending(notification_id))
    hook = Hook(key.public, known)
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    token = tracing.begin("my-project-1", tracing.parse_traceparent(f"00-{trace_id}-b7ad6b7169203331-01"))
    try:
        body = batch(*[sg_event("bounce", i) for i in ids])
        assert hook.post(body, signed(key, body))[0] == 200
    finally:
        tracing.end(token)
    warned = _warnings(capsys)
    assert len(warned) == len(ids)
    assert {w.get(tracing.TRACE_FIELD) for w in warned} == {f"projects/my-project-1/traces/{trace_id}"}


@pytest.mark.parametrize("tamper", ["no headers", "stale", "future", "not digits", "not base64", "too long"])
def test_headers_sendgrid_never_sends_are_403_before_the_body_is_read(key, capsys, tamper):
    body = b"[" + b" " * webhook.MAX_BODY + b"]"  # over the limit: read, it would be a 413
    headers = {
        "no headers": {},
        "stale": signed(key, body, NOW - 601),
        "future": signed(key, body, NOW + 601),
        "not digits": {**signed(key, body), webhook.TIMESTAMP_HEADER: "-5"},
        "not base64": {**signed(key, body), webhook.SIGNATURE_HEADER: "%%%"},
        "too long": {**signed(key, body), webhook.SIGNATURE_HEADER: "A" * 8000},
    }[tamper]
    status, answer = Hook(key.public).post(body, headers)
    logged = lines(capsys)
    assert status == 403, answer
    assert [(line["severity"], line["webhook"]) for line in logged] == [("WARNING", "rejected")]
