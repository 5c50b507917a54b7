"""``make sandbox`` plays SendGrid's signed Event Webhook: the poster's batches verify with the
real ``EventWebhook`` and the run's public key; the pieces end to end (the event function and
``sendgrid_events`` under functions-framework, the state bucket on fake-gcs-server, as the sandbox
runs them) make ``status`` show delivered and bounce; and the whole sandbox, as a user runs it."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.policy import SMTP
from pathlib import Path
from typing import Any

from cloudevents.conversion import to_binary
from sendgrid.helpers.eventwebhook import EventWebhook
from werkzeug import Response

from notifier import feedback
from notifier.tools.processes import free_port
from notifier.tools.sandbox_flush import AfterAnswer, FlushScheduler, running_flush_function
from notifier.tools.sandbox_output import say
from notifier.tools.sandbox_sendgrid import (
    BOUNCE_REASON,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SendGridPlayer,
    Sent,
    SigningKey,
    running_webhook,
    sent_from_line,
    webhook_line,
)
from tests.conftest import read_eml, storage_cloud_event
from tests.fake_gcs_server import STATE_BUCKET
from tests.test_sandbox import (
    ROOT,
    clean_env,
    needs_emulator,
    nothing_left,
    port_is_free,
    start,
    stop_all,
    tagged_processes,
)

NOW = 1_800_000_000
ID = "0123456789abcdef0123456789abcdef"
TO = "Data Team <data-team@example.com>, ops@bounce.test"


def eml(outbox: Path, notification_id: str = ID, to: str = "Data Team <data-team@example.com>",
        cc: str = "ops@bounce.test", name: str = "") -> Path:  # fmt: skip
    """A copy as the outbox writes it: the headers the poster reads."""
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = "alerts@example.com", to, "Uploaded"
    if cc:
        message["Cc"] = cc
    message["X-Notification-Id"] = notification_id
    message.set_content("hello")
    outbox.mkdir(exist_ok=True)
    path = outbox / (name or f"20261129T080102.000001Z-{notification_id}.eml")
    path.write_bytes(message.as_bytes(policy=SMTP))
    return path


def sent_line(message_id: str, notification_id: str = ID) -> str:
    return json.dumps({"severity": "INFO", "outcome": "sent", "kind": "finalize", "bucket": "acme",
                       "object": "reports/q3.csv", "notification_id": notification_id, "message_id": message_id,
                       "recipients": 2})  # fmt: skip


class Said(list):
    def __call__(self, line: str) -> None:
        self.append(line)


def test_the_batch_is_signed_as_sendgrid_signs_and_shaped_as_its_events(httpserver, tmp_path):
    key, said = SigningKey.generate(), Said()
    httpserver.expect_oneshot_request("/", method="POST").respond_with_json({"recorded": 4})
    path = eml(tmp_path / "outbox")
    player = SendGridPlayer(httpserver.url_for("/"), key, tmp_path / "outbox", log="sendgrid-events.log", say=said,
                            clock=lambda: NOW)  # fmt: skip

    player.offer('{"severity": "INFO", "message": "not an outcome"}')
    player.offer(sent_line(str(path)))
    player._sent.put(None)  # the end of the queue: run() returns instead of waiting for more
    player.run()

    ((request, _),) = httpserver.log
    body, headers = request.get_data(), request.headers
    assert headers[TIMESTAMP_HEADER] == str(NOW)
    # SendGrid's own helper, given the key as SendGrid shows it, accepts it; and so does the webhook's check.
    assert EventWebhook(key.public).verify_signature(body.decode(), headers[SIGNATURE_HEADER], str(NOW))
    assert feedback.verify(key.public, body, headers[SIGNATURE_HEADER], str(NOW), NOW + 5) == body.decode()
    assert not EventWebhook(SigningKey.generate().public).verify_signature(
        body.decode(), headers[SIGNATURE_HEADER], str(NOW)
    )
    events = json.loads(body)
    assert [(e["event"], e["email"]) for e in events] == [
        ("processed", "data-team@example.com"), ("processed", "ops@bounce.test"),
        ("delivered", "data-team@example.com"), ("bounce", "ops@bounce.test"),
    ]  # fmt: skip
    assert {e["notification_id"] for e in events} == {ID}  # custom_args at top level, as SendGrid puts them
    assert len({e["sg_event_id"] for e in events}) == 4
    assert [e["timestamp"] for e in events] == [NOW - 1, NOW - 1, NOW, NOW]  # processed a second before
    # Each names the message its copy was recorded as (the receipt's path), as SendGrid's name its X-Message-Id.
    assert all(e["sg_message_id"].startswith(str(path) + ".") for e in events)
    assert (events[3]["type"], events[3]["reason"]) == ("bounce", BOUNCE_REASON)
    assert said == [
        "delivered finalize gs://acme/reports/q3.csv → data-team@example.com",
        f"bounce    finalize gs://acme/reports/q3.csv → ops@bounce.test: {BOUNCE_REASON}",
    ]


def test_only_copies_of_that_notification_are_read_and_each_address_once(httpserver, tmp_path):
    outbox = tmp_path / "outbox"
    ours = eml(outbox, to="ann@example.com, Bob <bob@example.com>", cc="ann@example.com", name="a.eml")
    planted = eml(outbox, notification_id="f" * 32, to="mallory@example.com", cc="", name="b.eml")
    httpserver.expect_oneshot_request("/", method="POST").respond_with_json({})
    player = SendGridPlayer(httpserver.url_for("/"), SigningKey.generate(), outbox, log="l", say=Said())

    player.play(Sent(ID, f"{ours},{planted}", "finalize", "acme", "x"))

    events = json.loads(httpserver.log[0][0].get_data())
    assert [e["email"] for e in events if e["event"] == "delivered"] == ["ann@example.com", "bob@example.com"]


def test_a_5xx_is_retried_and_a_refusal_is_said_with_the_log_to_read(httpserver, tmp_path):
    said, waits = Said(), []
    httpserver.expect_ordered_request("/", method="POST").respond_with_response(Response("down", 503))
    httpserver.expect_ordered_request("/", method="POST").respond_with_json({})
    httpserver.expect_ordered_request("/", method="POST").respond_with_response(Response('{"error": "bad"}', 403))
    player = SendGridPlayer(httpserver.url_for("/"), SigningKey.generate(), tmp_path, log="logs/sg.log", say=said,
                            wait=lambda seconds: waits.append(seconds) or False)  # fmt: skip
    sent = Sent(ID, str(eml(tmp_path, cc="")), "finalize", "acme", "x")

    player.play(sent)
    assert (len(httpserver.log), waits, said) == (2, [1.0], ["delivered finalize gs://acme/x → data-team@example.com"])
    player.play(sent)  # a 4xx is not retried: the webhook said no
    assert len(httpserver.log) == 3
    assert said[-1] == f'  error: the Event Webhook answered 403 to the delivery events of {ID}: {{"error": "bad"}};' \
        " its log: logs/sg.log"  # fmt: skip


def test_events_the_webhook_did_not_take_as_ours_are_not_said_delivered(httpserver, tmp_path):
    said = Said()
    httpserver.expect_oneshot_request("/", method="POST").respond_with_json(
        {"received": 2, "recorded": 0, "unknown": 2}
    )
    player = SendGridPlayer(httpserver.url_for("/"), SigningKey.generate(), tmp_path, log="sg.log", say=said)

    player.play(Sent(ID, str(eml(tmp_path, cc="")), "finalize", "acme", "x"))

    assert said == [f"  warning: the Event Webhook does not know notification {ID}: its delivery events were ignored;"
                    " its log: sg.log"]  # fmt: skip


def test_only_a_sent_outcome_with_a_notification_id_is_played():
    assert sent_from_line(sent_line("/o/x.eml")) == Sent(ID, "/o/x.eml", "finalize", "acme", "reports/q3.csv")
    assert sent_from_line(sent_line("/o/x.eml").replace('"sent"', '"retrying"')) is None
    assert sent_from_line(sent_line("/o/x.eml", notification_id="not-an-id")) is None
    assert sent_from_line("[INFO] Booting worker") is None


def _status(env: dict[str, str], *argv: str) -> dict[str, Any]:
    done = subprocess.run([sys.executable, "-m", "notifier", "status", *argv, "--json"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 0, done
    return json.loads(done.stdout)


def test_the_pieces_end_to_end_status_shows_delivered_and_the_bounce(function_server_factory, fake_gcs, tmp_path):
    """As the sandbox runs them: the event function and sendgrid_events (the sandbox's own
    running_webhook) on the state bucket (fake-gcs-server), the poster fed the function's lines."""
    state = {"NOTIFY_STATE_BUCKET": STATE_BUCKET, "STORAGE_EMULATOR_HOST": fake_gcs.url, "NOTIFY_BACKEND": "outbox",
             "NOTIFY_TO": TO}  # fmt: skip
    function = function_server_factory(**state)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "SENDGRID_"))}
    env |= {**state, "NOTIFY_FROM": "Storage Alerts <alerts@example.com>", "NOTIFY_OUTBOX_DIR": str(function.outbox)}
    key, said = SigningKey.generate(), Said()
    log_path = tmp_path / "sendgrid-events.log"
    port = free_port()
    with log_path.open("wb") as log, running_webhook(port, env, key.public, log, say=said) as url:
        webhook = f"sendgrid_events --source {ROOT / 'main.py'} --host 127.0.0.1 --port {port}"
        assert [cmd for cmd in _processes().values() if webhook in cmd]
        status, _ = function.post(*reversed(to_binary(storage_cloud_event(name="reports/q3.csv"))))
        assert status == 200
        (line,) = [json.dumps(e) for e in function.new_log_lines() if e.get("outcome") == "sent"]
        player = SendGridPlayer(url, key, function.outbox, log=str(log_path), say=said)
        player.offer(line)
        player._sent.put(None)
        player.run()
        (notification,) = _status(env, "gs://acme/reports/q3.csv")["notifications"]
        assert (notification["notification_id"], notification["outcome"]) == (
            json.loads(line)["notification_id"],
            "sent",
        )
        assert sorted((e["event"], e["email"]) for e in notification["events"]) == [
            ("bounce", "ops@bounce.test"), ("delivered", "data-team@example.com"),
            ("processed", "data-team@example.com"), ("processed", "ops@bounce.test"),
        ]  # fmt: skip
        # The events name the messages recorded as sent: no duplicate email is said to have gone out.
        assert all(m["recorded"] for m in notification["messages"]), notification["messages"]
        player.play(sent_from_line(line))  # SendGrid retrying the same events (new ids, as the poster makes them)
        text = subprocess.run([sys.executable, "-m", "notifier", "status", "gs://acme/reports/q3.csv"], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=60).stdout  # fmt: skip
        assert re.search(r"bounce\s+ops@bounce\.test\s+550 5\.1\.1 The email account", text), text
    warnings = [json.loads(x) for x in log_path.read_text().splitlines() if x.startswith("{")]
    assert [w["recipient"] for w in warnings if w.get("outcome") == "bounced"] == ["ops@bounce.test"] * 2
    (rule,) = {w["rule"] for w in warnings if w.get("outcome") == "bounced"}  # the Sending's: "default" without rules
    whose = f"notification {notification['notification_id']}, rule {rule}"
    assert said.count(f"  warning: bounced: ops@bounce.test: {BOUNCE_REASON} ({whose})") == 2
    assert [cmd for cmd in _processes().values() if webhook in cmd] == []  # the webhook server is stopped
    assert port_is_free(port)


def _processes() -> dict[int, str]:
    found = {}
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                found[int(proc.name)] = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
    return found


@needs_emulator
def test_the_sandbox_plays_sendgrid_and_its_status_line_shows_delivered_and_bounce(tmp_path: Path) -> None:
    sandbox, tag = tmp_path / "sandbox", uuid.uuid4().hex
    home, user_home = tmp_path / "home", tmp_path / "user-home"
    home.mkdir()
    user_home.mkdir()
    command = [sys.executable, "-m", "notifier", "sandbox", "--dir", str(sandbox)]
    process, lines = start(command, clean_env(tag, home, NOTIFY_TO=TO))
    try:
        lines.wait_for(r"^Ctrl-C stops everything", 120)
        export = lines.wait_for(r"^export (CLOUDSDK_CONFIG=.*)$", 0)[1]
        user = clean_env(tag, user_home, **dict(part.split("=", 1) for part in shlex.split(export)))
        status_line = lines.wait_for(r"^(env .* -m notifier status gs://sandbox-uploads/reports/report\.csv)  #", 0)[1]
        upload = lines.wait_for(r"^  (gsutil cp .*)$", 0)[1]
        done = subprocess.run(shlex.split(upload), cwd=ROOT, env=user, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr

        lines.wait_for(r"^delivered finalize gs://sandbox-uploads/reports/report\.csv → data-team@example\.com$", 30)
        lines.wait_for(
            r"^bounce    finalize gs://sandbox-uploads/reports/report\.csv → ops@bounce\.test: 550 5\.1\.1", 5
        )
        lines.wait_for(r"^  warning: bounced: ops@bounce\.test: 550 5\.1\.1", 10)
        # The printed status line, run as typed in the second terminal.
        shown = subprocess.run(shlex.split(status_line), cwd=ROOT, env=user, capture_output=True, text=True,
                               timeout=60)  # fmt: skip
        assert shown.returncode == 0, shown
        assert re.search(r"delivered\s+data-team@example\.com", shown.stdout), shown.stdout
        assert re.search(r"bounce\s+ops@bounce\.test\s+550 5\.1\.1", shown.stdout), shown.stdout
        assert "sent" in shown.stdout

        ports = {int(p) for p in re.findall(r"--port (\d+)", " ".join(tagged_processes(tag).values()))}
        assert len(ports) == 3, tagged_processes(tag)  # the function, the flush and the webhook
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=60) == 0
        assert "the Event Webhook function have exited" in lines.rest()
        nothing_left(tag, session=process.pid)
        assert [port for port in ports if not port_is_free(port)] == []
    finally:
        stop_all(process, tag)


# --- digests the flush sends get their delivery events too; the terminal names the notification ----

DIGEST_RULES = '[[rules]]\nname = "bulk"\ninclude = ["bulk/**"]\ndigest = "1m"\n'


class _Once:
    """The scheduler's waits, answered at once: one run, then stopped."""

    def __init__(self) -> None:
        self.asked = 0

    def __call__(self, seconds: float) -> bool:
        self.asked += 1
        return self.asked > 1


def _until(condition: Any, seconds: float = 30.0) -> None:
    """A bound that says "not stuck": the player posts from its own thread."""
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not done in time"
        time.sleep(0.05)


def test_a_digest_the_flush_sends_gets_processed_delivered_and_bounce(function_server_factory, fake_gcs, tmp_path):
    rules = tmp_path / "notify.toml"
    rules.write_text(DIGEST_RULES)
    state = {"NOTIFY_STATE_BUCKET": STATE_BUCKET, "STORAGE_EMULATOR_HOST": fake_gcs.url, "NOTIFY_BACKEND": "outbox",
             "NOTIFY_TO": TO, "NOTIFY_CONFIG": str(rules)}  # fmt: skip
    function = function_server_factory(**state)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "SENDGRID_"))}
    env |= {**state, "NOTIFY_FROM": "Storage Alerts <alerts@example.com>", "NOTIFY_OUTBOX_DIR": str(function.outbox)}
    minutes_ago = (datetime.now(UTC) - timedelta(minutes=5)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    for i in range(2):  # held under the digest rule, their window already due
        event = storage_cloud_event(name=f"bulk/f{i}.csv", event_id=f"bulk-{i}", updated=minutes_ago)
        assert function.post(*reversed(to_binary(event)))[0] == 200
    assert [e["outcome"] for e in function.new_log_lines() if "outcome" in e] == ["batched", "batched"]

    key, said = SigningKey.generate(), Said()
    gate: AfterAnswer[Sent] = AfterAnswer(sent_from_line)
    with (
        (tmp_path / "sendgrid-events.log").open("wb") as webhook_log,
        (tmp_path / "flush.log").open("wb") as flush_log,
        running_webhook(free_port(), env, key.public, webhook_log, say=said) as url,
        running_flush_function(free_port(), env, flush_log, also=gate.offer) as flush_url,
    ):
        player = SendGridPlayer(url, key, function.outbox, log="sendgrid-events.log", say=said)
        gate.attach(player.queue)
        player.start()
        FlushScheduler(flush_url, outbox="outbox", log="flush.log", say=said, wait=_Once(), gate=gate).run()
        _until(lambda: sum(line.startswith(("delivered ", "bounce ")) for line in said) == 2
               and any("warning: bounced" in line for line in said))  # fmt: skip
        player.stop()

    (digest_id,) = {read_eml(path)["X-Notification-Id"] for path in function.outbox.glob("*.eml")}  # one digest
    from notifier.config import load_settings
    from notifier.ledger import create_history, create_state

    history = create_history(create_state(load_settings(env))[0])
    assert sorted((e.event, e.email) for e in history.events(digest_id)) == [
        ("bounce", "ops@bounce.test"), ("delivered", "data-team@example.com"),
        ("processed", "data-team@example.com"), ("processed", "ops@bounce.test"),
    ]  # fmt: skip
    assert any(re.fullmatch(r"delivered digest   rule bulk\b.* → data-team@example\.com", line) for line in said), said
    assert any(re.fullmatch(r"bounce    digest   rule bulk\b.* → ops@bounce\.test: 550 5\.1\.1.*", line)
               for line in said), said  # fmt: skip
    assert f"  warning: bounced: ops@bounce.test: {BOUNCE_REASON} (notification {digest_id}, rule bulk)" in said


def test_lines_of_a_flush_under_way_are_handed_on_once_it_answered():
    handed: list[str] = []
    gate: AfterAnswer[str] = AfterAnswer(lambda line: line if line.startswith("sent") else None)
    gate.offer("sent a")  # before the player is there: kept for it
    gate.attach(handed.append)
    assert handed == ["sent a"]
    gate.begin()
    gate.offer("sent b")
    gate.offer("other")
    assert handed == ["sent a"], "the flush records the digest's Sending after its line: not known yet"
    gate.end()
    gate.offer("sent c")  # read after the answer: its run is done
    assert handed == ["sent a", "sent b", "sent c"]


def test_the_webhooks_warning_names_the_notification_and_its_rule():
    warning = {"severity": "WARNING", "message": "dropped: ann@example.com: Bounced Address", "outcome": "dropped",
               "notification_id": ID, "rule": "reports\x1b[2J", "recipient": "ann@example.com"}  # fmt: skip
    assert webhook_line(json.dumps(warning), ROOT) == (
        f"  warning: dropped: ann@example.com: Bounced Address (notification {ID}, rule reports\\x1b[2J)"
    )
    del warning["rule"]
    assert webhook_line(json.dumps(warning), ROOT) == (
        f"  warning: dropped: ann@example.com: Bounced Address (notification {ID})"
    )
    other = {"severity": "WARNING", "message": "webhook rejected: bad signature", "webhook": "rejected"}
    assert webhook_line(json.dumps(other), ROOT) == "  warning: webhook rejected: bad signature"


def test_the_flush_scheduler_prints_whole_lines_beside_the_other_threads():
    assert FlushScheduler("http://127.0.0.1:1", outbox="o", log="l")._say is say
