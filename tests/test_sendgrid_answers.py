"""The SendGrid backend against answers no well-behaved server gives: a redirect, an interim 1xx
as the only answer, a 202 whose body breaks off, a message id with junk in it. A raw-socket
server writes each answer byte for byte and counts the requests it read."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from notifier.mail.base import DeliveryError
from notifier.mail.sendgrid import SendGridBackend
from tests.conftest import SECRET_KEY, settings_for
from tests.test_sendgrid import MESSAGE


class RawSendGrid:
    """Reads each request whole (head and Content-Length body), answers with ``answer`` bytes
    (then closes, or trickles the body when ``trickle``), and counts the requests."""

    def __init__(self, answer: bytes, *, trickle: bytes = b"") -> None:
        self.answer, self.trickle = answer, trickle
        self.requests = 0
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stopped.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = connection.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = next(
                int(line.split(b":")[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")
            )
            while len(body) < length:
                body += connection.recv(65536)
            self.requests += 1
            connection.sendall(self.answer)
            for byte in self.trickle:  # each read quick, the whole never in time
                if self._stopped.wait(0.2):
                    return
                connection.sendall(bytes([byte]))

    def close(self) -> None:
        self._stopped.set()
        self._listener.close()


@pytest.fixture
def sendgrid_answering():
    servers = []

    def start(answer: bytes, **options) -> tuple[RawSendGrid, SendGridBackend]:
        server = RawSendGrid(answer, **options)
        servers.append(server)
        settings = settings_for(SENDGRID_API_KEY=SECRET_KEY, SENDGRID_API_HOST=server.url, NOTIFY_MAX_ATTEMPTS="3")
        backend = SendGridBackend(settings.provider, settings.retry)
        backend.sleep = lambda seconds: None
        return server, backend

    yield start
    for server in servers:
        server.close()


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_a_redirect_sent_nothing_so_it_is_a_permanent_failure_naming_the_host_setting(sendgrid_answering, status):
    answer = f"HTTP/1.1 {status} Moved\r\nLocation: https://elsewhere.example/v3/mail/send\r\nContent-Length: 0\r\n\r\n"
    server, backend = sendgrid_answering(answer.encode())

    with pytest.raises(DeliveryError, match="SENDGRID_API_HOST") as caught:  # was: a Receipt, "sent"
        backend.send(MESSAGE, deadline=time.monotonic() + 10)

    assert (caught.value.transient, caught.value.status, server.requests) == (False, status, 1)


def test_an_interim_answer_as_the_only_answer_is_retried_not_taken_for_sent(sendgrid_answering):
    server, backend = sendgrid_answering(b"HTTP/1.1 103 Early Hints\r\nLink: </x>\r\n\r\n")

    with pytest.raises(DeliveryError) as caught:  # was: a Receipt, "sent"
        backend.send(MESSAGE, deadline=time.monotonic() + 10)

    # Tried again (the count on the server's side may miss an attempt that found its connection closed).
    assert (caught.value.transient, caught.value.attempts) == (True, 3) and server.requests >= 2


def test_a_202_whose_body_breaks_off_is_sent_once_not_again(sendgrid_answering):
    # Content-Length 100, 3 bytes, then the connection closes: SendGrid took the email.
    answer = b"HTTP/1.1 202 Accepted\r\nX-Message-Id: sg-cut\r\nContent-Length: 100\r\n\r\nabc"
    server, backend = sendgrid_answering(answer)

    receipt = backend.send(MESSAGE, deadline=time.monotonic() + 10)

    assert (receipt.message_id, receipt.attempts, server.requests) == ("sg-cut", 1, 1)  # was: 3 requests


def test_a_202_whose_body_trickles_past_the_deadline_is_sent_once_not_again(sendgrid_answering):
    answer = b"HTTP/1.1 202 Accepted\r\nX-Message-Id: sg-slow\r\nContent-Length: 40\r\n\r\n"
    server, backend = sendgrid_answering(answer, trickle=b"x" * 40)

    receipt = backend.send(MESSAGE, deadline=time.monotonic() + 1.0)

    assert (receipt.message_id, server.requests) == ("sg-slow", 1)  # was: "timed out", and sent again


def test_a_500_whose_body_breaks_off_is_still_retried(sendgrid_answering):
    server, backend = sendgrid_answering(b"HTTP/1.1 500 Oops\r\nContent-Length: 100\r\n\r\nabc")

    with pytest.raises(DeliveryError, match="answered 500") as caught:
        backend.send(MESSAGE, deadline=time.monotonic() + 10)

    assert (caught.value.transient, caught.value.attempts) == (True, 3) and server.requests >= 2


def test_a_message_id_keeps_only_the_characters_sendgrid_uses(sendgrid_answering):
    answer = b"HTTP/1.1 202 Accepted\r\nX-Message-Id: abc\x1b[31mRED\x07,evil\r\nContent-Length: 0\r\n\r\n"
    _, backend = sendgrid_answering(answer)

    receipt = backend.send(MESSAGE, deadline=time.monotonic() + 10)

    assert receipt.message_id == "abc[31mREDevil"  # no escape, no bell, no comma faking a second id


@pytest.mark.parametrize("deployed", [{}, {"K_SERVICE": "notifier"}])
def test_the_key_never_goes_over_plain_http_to_another_machine(deployed):
    from notifier.config import ConfigError

    env = {"SENDGRID_API_KEY": SECRET_KEY, **deployed}
    with pytest.raises(ConfigError) as caught:  # was: accepted, the key sent in cleartext
        settings_for(SENDGRID_API_HOST="http://api.sendgrid.com", **env)
    (problem,) = caught.value.problems
    assert problem.startswith("SENDGRID_API_HOST: http:// only to this machine") and "the API key" in problem
    for allowed in ("https://api.eu.sendgrid.com", "http://127.0.0.1:8080", "http://localhost:9", "http://[::1]:8"):
        assert settings_for(SENDGRID_API_HOST=allowed, **env).provider.api_host == allowed
