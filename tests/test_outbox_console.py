"""The local backends: .eml files any mail client opens, and the console."""

from __future__ import annotations

import io
import time

from notifier.addresses import Address
from notifier.mail import create_backend
from notifier.mail.base import Envelope, Message
from notifier.mail.console import ConsoleBackend
from notifier.mail.outbox import OutboxBackend
from tests.conftest import read_eml, settings_for

MESSAGE = Message(
    sender=Address("alerts@example.com", "Storage Alerts"),
    envelopes=(Envelope(to=(Address("ops@example.com"), Address("jane@example.com", "Doe, Jane"))),),
    subject="Uploaded: données/q3 ✓.csv (acme)",
    text="Plain text with ünïcode and a long line " + "x" * 200 + "\n",
    html="<p>HTML with ünïcode</p>",
    notification_id="0123456789abcdef0123456789abcdef",
    categories=("storage-notifier", "finalize"),
)


def test_outbox_writes_an_rfc5322_file_that_parses_back(tmp_path):
    receipt = OutboxBackend(tmp_path / "out").send(MESSAGE, deadline=time.monotonic() + 10)

    (path,) = (tmp_path / "out").glob("*.eml")
    assert receipt.message_id == str(path)
    email = read_eml(path)
    assert email["From"] == "Storage Alerts <alerts@example.com>"
    assert [a.addr_spec for a in email["To"].addresses] == ["ops@example.com", "jane@example.com"]
    assert email["To"].addresses[1].display_name == "Doe, Jane"
    assert email["Subject"] == MESSAGE.subject
    assert email["Date"].datetime.tzinfo is not None
    assert email["Message-ID"] == f"<{MESSAGE.notification_id}@storage-notifier>"
    assert email["X-Notification-Id"] == MESSAGE.notification_id
    assert email.get_content_type() == "multipart/alternative"
    parts = [p.get_content_type() for p in email.iter_parts()]
    assert parts == ["text/plain", "text/html"], "plain first, so clients prefer the HTML"
    assert email.get_body(("plain",)).get_content().replace("\r\n", "\n") == MESSAGE.text
    assert email.get_body(("html",)).get_content().strip() == MESSAGE.html
    raw = path.read_bytes()
    assert b"\r\n" in raw and all(len(line) <= 998 for line in raw.split(b"\r\n"))
    assert not list((tmp_path / "out").glob(".*.tmp")), "no temporary file left behind"


def test_each_send_gets_its_own_file(tmp_path):
    backend = OutboxBackend(tmp_path)
    backend.send(MESSAGE, deadline=0)
    backend.send(MESSAGE, deadline=0)
    assert len(list(tmp_path.glob("*.eml"))) == 2


def test_console_prints_the_whole_message():
    stream = io.StringIO()
    receipt = ConsoleBackend(stream).send(MESSAGE, deadline=0)
    printed = stream.getvalue()
    assert receipt.backend == "console"
    assert "X-Notification-Id: 0123456789abcdef0123456789abcdef" in printed
    assert "To: ops@example.com" in printed


def _backend_for(**env):
    settings = settings_for(**env)
    return create_backend(settings.backend, settings.provider, settings.retry)


def test_backend_choice_follows_settings(tmp_path):
    assert _backend_for(NOTIFY_OUTBOX_DIR=str(tmp_path)).name == "outbox"
    assert _backend_for(NOTIFY_BACKEND="console").name == "console"
    assert _backend_for(SENDGRID_API_KEY="SG.x").name == "sendgrid"
    assert _backend_for(SENDGRID_API_KEY="SG.x", NOTIFY_BACKEND="outbox").name == "outbox"
