"""The SMTP backend against a real local SMTP server (aiosmtpd): plain, STARTTLS with login, and
implicit TLS; 4xx retried, 5xx not; tenacity's sleep recorded, never slept."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import time
from email import message_from_bytes, policy

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from notifier.addresses import Address
from notifier.mail.base import Attachment, DeliveryError, Envelope, Message
from notifier.mail.smtp import SmtpBackend
from notifier.tools.processes import free_port
from tests.conftest import settings_for

PASSWORD = "smtp-secret-never-printed-4711"
MESSAGE = Message(
    sender=Address("alerts@example.com", "Storage Alerts"),
    envelopes=(Envelope(to=(Address("a@example.com"),)), Envelope(to=(Address("b@example.com"),))),
    subject="Uploaded: reports/q3.csv (acme)",
    text="plain\n",
    html="<p>html</p>",
    notification_id="0123456789abcdef0123456789abcdef",
    categories=("storage-notifier", "finalize"),
    attachments=(Attachment("q3.csv", "text/csv", b"a,b\n1,2\n"),),
)


class Recorder:
    """An aiosmtpd handler that answers from a script (one reply per DATA), then 250."""

    def __init__(self, replies=()):
        self.replies = list(replies)
        self.received = []

    async def handle_DATA(self, server, session, envelope):
        if self.replies:
            return self.replies.pop(0)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), envelope.content))
        return "250 OK"


def _authenticate(server, session, envelope, mechanism, auth_data):
    ok = auth_data.login == b"mailer" and auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok, handled=False)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1; the client trusts it through SSL_CERT_FILE."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )  # fmt: skip
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return folder / "cert.pem", folder / "key.pem"


def _server_context(tls_files):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(*map(str, tls_files))
    return context


@pytest.fixture
def smtp_server(request):
    controllers = []

    def start(handler, **options):
        controller = Controller(handler, hostname="127.0.0.1", port=free_port(), **options)
        controller.start()
        controllers.append(controller)
        return controller

    yield start
    for controller in controllers:
        controller.stop()


def _backend(url, **env):
    settings = settings_for(NOTIFY_BACKEND="smtp", SMTP_URL=url, SMTP_PASSWORD=PASSWORD, **env)
    backend = SmtpBackend(settings.provider, settings.retry)
    backend.sleeps = []
    backend.sleep = backend.sleeps.append
    return backend


def _port(controller):
    return controller.port


def _deadline():
    return time.monotonic() + 30


def test_plain_relay_gets_one_message_per_envelope_with_the_attachment(smtp_server):
    handler = Recorder()
    controller = smtp_server(handler)
    receipt = _backend(f"smtp://127.0.0.1:{_port(controller)}?tls=none").send(MESSAGE, deadline=_deadline())

    assert receipt.backend == "smtp"
    assert [rcpts for _, rcpts, _ in handler.received] == [["a@example.com"], ["b@example.com"]]
    email = message_from_bytes(handler.received[0][2], policy=policy.default)
    assert email["X-Notification-Id"] == MESSAGE.notification_id
    assert email["To"] == "a@example.com", "each copy shows only its own recipient"
    (attachment,) = list(email.iter_attachments())
    assert (attachment.get_filename(), attachment.get_content()) == ("q3.csv", "a,b\n1,2\n")


def test_starttls_with_login(smtp_server, tls_files, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files[0]))
    handler = Recorder()
    controller = smtp_server(
        handler, tls_context=_server_context(tls_files), require_starttls=True, authenticator=_authenticate,
        auth_require_tls=True,
    )  # fmt: skip
    _backend(f"smtp://mailer@127.0.0.1:{_port(controller)}").send(MESSAGE, deadline=_deadline())
    assert len(handler.received) == 2


def test_implicit_tls(smtp_server, tls_files, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_files[0]))
    handler = Recorder()
    controller = smtp_server(handler, ssl_context=_server_context(tls_files))
    _backend(f"smtps://127.0.0.1:{_port(controller)}").send(MESSAGE, deadline=_deadline())
    assert len(handler.received) == 2


def test_an_untrusted_certificate_is_refused(smtp_server, tls_files):
    controller = smtp_server(Recorder(), ssl_context=_server_context(tls_files))
    with pytest.raises(DeliveryError) as caught:
        _backend(f"smtps://127.0.0.1:{_port(controller)}", NOTIFY_MAX_ATTEMPTS="1").send(MESSAGE, deadline=_deadline())
    assert "CERTIFICATE_VERIFY_FAILED" in str(caught.value)


def test_4xx_is_retried_and_already_sent_envelopes_are_not_sent_again(smtp_server):
    handler = Recorder()
    controller = smtp_server(handler)
    original = handler.handle_DATA
    calls = []

    async def flaky(server, session, envelope):
        calls.append(list(envelope.rcpt_tos))
        if len(calls) == 2:
            return "451 4.3.0 Try again later"
        return await original(server, session, envelope)

    handler.handle_DATA = flaky
    backend = _backend(f"smtp://127.0.0.1:{_port(controller)}?tls=none")
    receipt = backend.send(MESSAGE, deadline=_deadline())

    assert calls == [["a@example.com"], ["b@example.com"], ["b@example.com"]]
    assert [rcpts for _, rcpts, _ in handler.received] == [["a@example.com"], ["b@example.com"]]
    assert receipt.attempts == 2
    assert len(backend.sleeps) == 1


def test_5xx_is_permanent_and_not_retried(smtp_server):
    handler = Recorder(["550 5.7.1 Relaying denied"])
    controller = smtp_server(handler)
    backend = _backend(f"smtp://127.0.0.1:{_port(controller)}?tls=none")
    with pytest.raises(DeliveryError) as caught:
        backend.send(MESSAGE, deadline=_deadline())
    assert (caught.value.transient, caught.value.status, caught.value.attempts) == (False, 550, 1)
    assert "Relaying denied" in str(caught.value)
    assert backend.sleeps == []


def test_a_wrong_password_says_what_to_fix_and_never_shows_it(smtp_server):
    controller = smtp_server(Recorder(), authenticator=_authenticate, auth_require_tls=False)
    backend = _backend(f"smtp://intruder@127.0.0.1:{_port(controller)}?tls=none")
    with pytest.raises(DeliveryError) as caught:
        backend.send(MESSAGE, deadline=_deadline())
    assert (caught.value.transient, caught.value.status, caught.value.attempts) == (False, 535, 1)
    assert "SMTP_PASSWORD" in str(caught.value)
    assert PASSWORD not in str(caught.value)


def test_an_unreachable_server_is_transient():
    backend = _backend("smtp://127.0.0.1:9?tls=none", NOTIFY_MAX_ATTEMPTS="2")
    with pytest.raises(DeliveryError, match="unreachable") as caught:
        backend.send(MESSAGE, deadline=_deadline())
    assert (caught.value.transient, caught.value.attempts) == (True, 2)


@pytest.mark.parametrize(
    ("env", "problem"),
    [
        ({"NOTIFY_BACKEND": "smtp"}, "SMTP_URL: required when NOTIFY_BACKEND is smtp"),
        ({"SMTP_URL": f"smtp://u:{PASSWORD}@host"}, "SMTP_URL: holds a password; put it in SMTP_PASSWORD"),
        ({"SMTP_URL": "mailto:x"}, "SMTP_URL: expected smtp://[user@]host[:port]"),
    ],
)
def test_smtp_configuration_errors(env, problem):
    from notifier.config import ConfigError, load_settings

    with pytest.raises(ConfigError) as caught:
        load_settings({"NOTIFY_FROM": "a@example.com", "NOTIFY_TO": "b@example.com", **env})
    assert any(p.startswith(problem) for p in caught.value.problems), caught.value.problems
    assert PASSWORD not in str(caught.value)


def test_smtp_url_selects_the_backend():
    from notifier.config import load_settings

    settings = load_settings(
        {"SMTP_URL": "smtp://relay.example.com", "NOTIFY_FROM": "a@example.com", "NOTIFY_TO": "b@example.com"}
    )
    assert settings.backend == "smtp"
