"""NOTIFY_REDIRECT_TO as a backend wrapper: one address gets every copy, told whom it was meant for."""

from __future__ import annotations

import pytest

from notifier.addresses import Address
from notifier.ledger.local import LocalDeadLetters
from notifier.ledger.memory import MemoryLedger
from notifier.mail.base import Backend, Envelope, Message, Receipt
from notifier.mail.redirect import RedirectBackend
from notifier.payloads import build_request
from notifier.pipeline import Pipeline
from notifier.tools.cli import main
from tests.conftest import read_eml, settings_for, storage_cloud_event

QA = Address("qa@example.com", "QA")


class Recording(Backend):
    name = "recording"

    def __init__(self) -> None:
        self.sent: list[tuple[Message, float]] = []

    def send(self, message: Message, *, deadline: float) -> Receipt:
        self.sent.append((message, deadline))
        return Receipt(self.name, f"id-{len(self.sent)}")


def _message(*envelopes: Envelope, headers: dict[str, str] | None = None) -> Message:
    return Message(
        sender=Address("alerts@example.com"), envelopes=envelopes, subject="Uploaded: q3.csv", text="text\n",
        html="<p>html</p>", notification_id="n" * 32, categories=("storage-notifier", "finalize"),
        headers=headers or {},
    )  # fmt: skip


def test_every_envelope_becomes_one_copy_to_the_redirect_address():
    inner = Recording()
    a, b, c = (Address(f"{x}@example.com") for x in "abc")
    message = _message(Envelope(to=(a,)), Envelope(to=(b,), cc=(c,), bcc=(a,)), headers={"X-Keep": "yes"})

    receipt = RedirectBackend(inner, QA).send(message, deadline=12.5)

    ((sent, deadline),) = inner.sent
    assert receipt == Receipt("recording", "id-1")
    assert deadline == 12.5
    assert sent.envelopes == (Envelope(to=(QA,)),)
    assert dict(sent.headers) == {
        "X-Keep": "yes",
        "X-Original-Recipients": "a@example.com, b@example.com, c@example.com",
    }
    assert (sent.subject, sent.text, sent.html, sent.notification_id) == (
        message.subject, message.text, message.html, message.notification_id,
    )  # fmt: skip


def test_the_wrapper_logs_under_the_inner_backends_name():
    assert RedirectBackend(Recording(), QA).name == "recording"


def test_the_original_recipients_header_is_one_bounded_line():
    many = tuple(Envelope(to=(Address(f"person{i:04}@example.com"),)) for i in range(500))

    RedirectBackend(inner := Recording(), QA).send(_message(*many), deadline=1.0)

    header = inner.sent[0][0].headers["X-Original-Recipients"]
    assert len(header) == 2000 and header.endswith("…")
    assert header.startswith("person0000@example.com, person0001@example.com")
    assert not any(ch in header for ch in "\r\n")


def test_the_deployed_function_redirects_and_says_for_whom(function_server_factory):
    server = function_server_factory(NOTIFY_TO="a@example.com, b@example.com", NOTIFY_REDIRECT_TO="qa@example.com")

    status, _ = server.post(*reversed(build_request("finalize", "acme", "reports/q3.csv", size=10)))

    assert status == 200
    (path,) = server.emails()  # one copy, not one per intended recipient
    email = read_eml(path)
    assert email["To"] == "qa@example.com"
    assert email["X-Original-Recipients"] == "a@example.com, b@example.com"
    text = email.get_body(("plain",)).get_content()
    assert "[Redirected for testing: meant for a@example.com, b@example.com]" in text
    (line,) = [line for line in server.new_log_lines() if line.get("outcome")]
    assert (line["outcome"], line["backend"], line["recipients"]) == ("sent", "outbox", 2)


@pytest.mark.usefixtures("clean_notifier_env")
def test_preview_and_route_show_the_redirect_the_function_would_apply(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NOTIFY_FROM", "alerts@example.com")
    monkeypatch.setenv("NOTIFY_TO", "a@example.com, b@example.com")
    monkeypatch.setenv("NOTIFY_REDIRECT_TO", "qa@example.com")

    assert main(["preview", "finalize", "gs://acme/reports/q3.csv", "--out", str(tmp_path)]) == 0
    assert main(["route", "finalize", "gs://acme/reports/q3.csv"]) == 0

    (eml,) = tmp_path.glob("*.eml")
    email = read_eml(eml)
    assert email["To"] == "qa@example.com"
    assert email["X-Original-Recipients"] == "a@example.com, b@example.com"
    assert "1 recipient(s)" in capsys.readouterr().out  # the one copy the function would send


def test_a_backend_a_test_injects_is_redirected_too(tmp_path):
    inner = Recording()
    settings = settings_for(NOTIFY_TO="a@example.com, b@example.com", NOTIFY_REDIRECT_TO="qa@example.com")
    pipeline = Pipeline(settings, backend=inner, ledger=MemoryLedger(), dead_letters=LocalDeadLetters(tmp_path))

    (outcome,) = pipeline.handle(storage_cloud_event())

    assert outcome.outcome == "sent"
    ((message, _),) = inner.sent
    assert message.envelopes == (Envelope(to=(Address("qa@example.com"),)),)
    assert message.headers["X-Original-Recipients"] == "a@example.com, b@example.com"
    assert "meant for a@example.com, b@example.com" in message.html
