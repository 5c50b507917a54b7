"""The SendGrid backend over notifier.httpclient against a local HTTP server playing SendGrid;
tenacity's sleep recorded."""

from __future__ import annotations

import dataclasses
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from werkzeug import Response

from notifier import httpclient
from notifier.addresses import Address
from notifier.mail.base import DeliveryError, Envelope, Message
from notifier.mail.sendgrid import SendGridBackend
from tests.conftest import SECRET_KEY, settings_for

MESSAGE = Message(
    sender=Address("alerts@example.com", "Storage Alerts"),
    envelopes=(Envelope(to=(Address("ops@example.com"), Address("data@example.com", "Data Team"))),),
    subject="Uploaded: reports/q3.csv (acme)",
    text="plain body\n",
    html="<p>html body</p>",
    notification_id="0123456789abcdef0123456789abcdef",
    categories=("storage-notifier", "finalize"),
)


@pytest.fixture
def backend_for(httpserver):
    def make(**env):
        settings = settings_for(
            SENDGRID_API_KEY=SECRET_KEY, SENDGRID_API_HOST=httpserver.url_for("").rstrip("/"), **env
        )
        backend = SendGridBackend(settings.provider, settings.retry)
        backend.sleeps = []
        backend.sleep = backend.sleeps.append
        return backend

    return make


def _deadline(seconds=60.0):
    return time.monotonic() + seconds


def test_202_is_sent_once_with_the_payload_sendgrid_expects(httpserver, backend_for):
    httpserver.expect_oneshot_request("/v3/mail/send", method="POST").respond_with_data(
        "", status=202, headers={"X-Message-Id": "abc123"}
    )
    backend = backend_for()

    receipt = backend.send(MESSAGE, deadline=_deadline())

    assert (receipt.backend, receipt.message_id, receipt.attempts) == ("sendgrid", "abc123", 1)
    ((request, _),) = httpserver.log
    assert request.headers["Authorization"] == f"Bearer {SECRET_KEY}"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Accept"] == "application/json"
    assert request.headers["User-Agent"].startswith("storage-notifier")
    body = request.get_json()
    assert body["from"] == {"email": "alerts@example.com", "name": "Storage Alerts"}
    assert body["personalizations"][0]["to"] == [
        {"email": "ops@example.com"},
        {"email": "data@example.com", "name": "Data Team"},
    ]
    assert body["subject"] == MESSAGE.subject
    assert [c["type"] for c in body["content"]] == ["text/plain", "text/html"]
    assert body["headers"]["X-Notification-Id"] == MESSAGE.notification_id
    assert body["custom_args"] == {"notification_id": MESSAGE.notification_id}
    assert sorted(body["categories"]) == ["finalize", "storage-notifier"]
    assert backend.sleeps == []


def test_400_is_permanent_not_retried_and_carries_sendgrids_error_body(httpserver, backend_for):
    httpserver.expect_request("/v3/mail/send").respond_with_json(
        {
            "errors": [
                {
                    "message": "Does not contain a valid address.",
                    "field": "personalizations.0.to.0.email",
                    "help": "http://sendgrid.com/docs",
                }
            ]
        },
        status=400,
    )
    backend = backend_for()

    with pytest.raises(DeliveryError) as caught:
        backend.send(MESSAGE, deadline=_deadline())

    error = caught.value
    assert (error.transient, error.status, error.attempts) == (False, 400, 1)
    assert "personalizations.0.to.0.email: Does not contain a valid address." in str(error)
    assert len(httpserver.log) == 1
    assert backend.sleeps == []


@pytest.mark.parametrize(
    ("status", "hint"),
    [
        (401, "invalid or revoked"),
        (403, "Mail Send permission"),
        (404, "SENDGRID_API_HOST"),
        (413, "30 MB"),
    ],
)
def test_other_permanent_statuses_are_not_retried_and_say_what_to_do(httpserver, backend_for, status, hint):
    httpserver.expect_request("/v3/mail/send").respond_with_json({"errors": [{"message": "nope"}]}, status=status)
    backend = backend_for()

    with pytest.raises(DeliveryError, match=hint) as caught:
        backend.send(MESSAGE, deadline=_deadline())

    assert caught.value.transient is False
    assert len(httpserver.log) == 1
    assert SECRET_KEY not in str(caught.value)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_server_errors_are_retried_with_jittered_backoff_up_to_max_attempts(httpserver, backend_for, status):
    httpserver.expect_request("/v3/mail/send").respond_with_data("oops", status=status)
    backend = backend_for(NOTIFY_MAX_ATTEMPTS="4")

    with pytest.raises(DeliveryError) as caught:
        backend.send(MESSAGE, deadline=_deadline())

    assert (caught.value.transient, caught.value.status, caught.value.attempts) == (True, status, 4)
    assert len(httpserver.log) == 4
    assert len(backend.sleeps) == 3
    assert all(0 <= s <= 8 for s in backend.sleeps)


def test_transient_error_then_success_returns_the_receipt_of_the_success(httpserver, backend_for):
    httpserver.expect_ordered_request("/v3/mail/send").respond_with_data("", status=503)
    httpserver.expect_ordered_request("/v3/mail/send").respond_with_data("", status=500)
    httpserver.expect_ordered_request("/v3/mail/send").respond_with_data("", status=202, headers={"X-Message-Id": "m3"})
    backend = backend_for()

    receipt = backend.send(MESSAGE, deadline=_deadline())

    assert (receipt.message_id, receipt.attempts) == ("m3", 3)
    assert len(backend.sleeps) == 2


def test_429_waits_until_x_ratelimit_reset(httpserver, backend_for):
    reset = int(time.time()) + 7
    httpserver.expect_ordered_request("/v3/mail/send").respond_with_json(
        {"errors": [{"message": "too many requests"}]},
        status=429,
        headers={"X-RateLimit-Limit": "600", "X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)},
    )
    httpserver.expect_ordered_request("/v3/mail/send").respond_with_data("", status=202)
    backend = backend_for()

    receipt = backend.send(MESSAGE, deadline=_deadline())

    assert receipt.attempts == 2
    (slept,) = backend.sleeps
    assert reset - time.time() - 1 <= slept <= reset - time.time() + 0.6


def test_429_honours_retry_after_seconds(httpserver, backend_for):
    httpserver.expect_ordered_request("/v3/mail/send").respond_with_data("", status=429, headers={"Retry-After": "3"})
    httpserver.expect_ordered_request("/v3/mail/send").respond_with_data("", status=202)
    backend = backend_for()

    backend.send(MESSAGE, deadline=_deadline())

    (slept,) = backend.sleeps
    assert 3 <= slept <= 3.5


def test_rate_limit_wait_past_the_deadline_gives_up_at_once_so_the_platform_retries(httpserver, backend_for):
    httpserver.expect_request("/v3/mail/send").respond_with_data("", status=429, headers={"Retry-After": "30"})
    backend = backend_for()

    with pytest.raises(DeliveryError) as caught:
        backend.send(MESSAGE, deadline=_deadline(10))

    assert (caught.value.transient, caught.value.status, caught.value.attempts) == (True, 429, 1)
    assert backend.sleeps == []


def test_a_hung_connection_times_out_and_is_retried(httpserver, backend_for):
    release = threading.Event()

    def hang(_request):
        release.wait(5)
        return Response("", status=202)

    httpserver.expect_request("/v3/mail/send").respond_with_handler(hang)
    backend = backend_for(SENDGRID_TIMEOUT_SECONDS="0.3", NOTIFY_MAX_ATTEMPTS="2")
    try:
        started = time.monotonic()
        with pytest.raises(DeliveryError, match="timed out") as caught:
            backend.send(MESSAGE, deadline=_deadline())
        elapsed = time.monotonic() - started
    finally:
        release.set()

    assert (caught.value.transient, caught.value.attempts) == (True, 2)
    assert len(backend.sleeps) == 1
    assert elapsed < 4, "the client must not wait for the hung server"


def test_connection_refused_is_transient():
    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        closed = f"http://127.0.0.1:{sock.getsockname()[1]}"
    settings = settings_for(SENDGRID_API_KEY=SECRET_KEY, SENDGRID_API_HOST=closed, NOTIFY_MAX_ATTEMPTS="3")
    backend = SendGridBackend(settings.provider, settings.retry)
    sleeps = []
    backend.sleep = sleeps.append

    with pytest.raises(DeliveryError, match="unreachable") as caught:
        backend.send(MESSAGE, deadline=_deadline())

    assert (caught.value.transient, caught.value.attempts) == (True, 3)
    assert len(sleeps) == 2


@pytest.fixture
def trickling_sendgrid(httpserver):
    """Answers ``status`` with a body of a space every 0.2 s (each read quick, the whole never in
    time); returns the notification ids of the requests it got. Released when the test ends."""
    release = threading.Event()

    def start(status: int) -> list[str]:
        posts = []  # this test's own: a request an earlier test left pending may still reach the server

        def trickle(request):
            posts.append(request.get_json(silent=True)["custom_args"]["notification_id"])

            def body():
                for _ in range(20):
                    if release.wait(0.2):
                        return
                    yield b" "

            return Response(body(), status=status, direct_passthrough=True)

        httpserver.expect_request("/v3/mail/send").respond_with_handler(trickle)
        return posts

    yield start
    release.set()


def test_a_trickling_answer_is_cut_off_at_the_deadline(trickling_sendgrid, backend_for):
    posts = trickling_sendgrid(202)
    message = dataclasses.replace(MESSAGE, notification_id="7" * 32)
    backend = backend_for(SENDGRID_TIMEOUT_SECONDS="1")
    started = time.monotonic()
    receipt = backend.send(message, deadline=_deadline(1.5))
    elapsed = time.monotonic() - started

    # A 202 whose body never ends: SendGrid took the email, so it is sent (once: sending it again
    # would send it twice, tests/test_sendgrid_answers.py); only the wait is cut at the deadline.
    assert (receipt.attempts, posts.count(message.notification_id)) == (1, 1)
    assert elapsed < 2.5, "each read was quick, but the whole answer must not outlast the deadline"


def test_a_trickling_error_answer_is_cut_off_at_the_deadline_and_retried_by_the_platform(
    trickling_sendgrid, backend_for
):
    trickling_sendgrid(503)
    backend = backend_for(SENDGRID_TIMEOUT_SECONDS="1")
    started = time.monotonic()
    with pytest.raises(DeliveryError, match="answered 503") as caught:
        backend.send(MESSAGE, deadline=_deadline(1.5))
    elapsed = time.monotonic() - started

    assert caught.value.transient is True
    assert elapsed < 2.5, "each read was quick, but the whole answer must not outlast the deadline"


def test_backoff_is_jittered(httpserver, backend_for):
    httpserver.expect_request("/v3/mail/send").respond_with_data("", status=500)
    runs = []
    for _ in range(2):
        backend = backend_for(NOTIFY_MAX_ATTEMPTS="5")
        with pytest.raises(DeliveryError):
            backend.send(MESSAGE, deadline=_deadline())
        runs.append(backend.sleeps)
    assert runs[0] != runs[1], "identical waits would make every instance retry in lock-step"


@pytest.fixture
def request_timeouts(monkeypatch):
    """The timeout each request is sent with, recorded."""
    seen = []
    original = httpclient.request

    def spy(method, url, *, timeout, **options):
        seen.append(timeout)
        return original(method, url, timeout=timeout, **options)

    monkeypatch.setattr(httpclient, "request", spy)
    return seen


def test_the_request_timeout_never_reaches_past_the_deadline(httpserver, backend_for, request_timeouts):
    httpserver.expect_request("/v3/mail/send").respond_with_data("", status=202)

    backend_for().send(MESSAGE, deadline=_deadline(3))

    (timeout,) = request_timeouts
    assert 2 < timeout <= 3


@pytest.fixture
def keep_alive_stand_in():
    """A stand-in answering 202 over HTTP/1.1 keep-alive (werkzeug's closes after each answer);
    its ``ports`` are the client ports of the requests it saw."""
    ports: list[int] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["Content-Length"]))
            ports.append(self.client_address[1])
            self.send_response(202)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    server.ports = ports
    yield server
    server.shutdown()
    server.server_close()


def test_successive_sends_share_one_kept_alive_connection(keep_alive_stand_in):
    # Was: the SDK client is created once per instance. Now no client: the connection is what is kept.
    host = f"http://127.0.0.1:{keep_alive_stand_in.server_address[1]}"
    settings = settings_for(SENDGRID_API_KEY=SECRET_KEY, SENDGRID_API_HOST=host)
    backend = SendGridBackend(settings.provider, settings.retry)
    for _ in range(3):
        backend.send(MESSAGE, deadline=_deadline())
    assert len(keep_alive_stand_in.ports) == 3
    assert len(set(keep_alive_stand_in.ports)) == 1


def test_default_timeout_is_ten_seconds_and_is_passed_on_every_request(httpserver, backend_for, request_timeouts):
    backend = backend_for()
    httpserver.expect_request("/v3/mail/send").respond_with_data("", status=202)

    backend.send(MESSAGE, deadline=_deadline())

    assert request_timeouts == [10.0]


def _message_with(envelopes, **fields):
    return Message(**{**{f: getattr(MESSAGE, f) for f in Message.__slots__}, "envelopes": tuple(envelopes), **fields})


def test_each_envelope_is_a_personalization_and_reply_to_is_set(httpserver, backend_for):
    httpserver.expect_request("/v3/mail/send").respond_with_data("", status=202, headers={"X-Message-Id": "m"})
    a, b, c = Address("a@example.com"), Address("b@example.com", "Bee"), Address("c@example.com")
    message = _message_with(
        [Envelope(to=(a,)), Envelope(to=(b,), cc=(c,), bcc=(Address("d@example.com"),))],
        reply_to=Address("help@example.com", "Help"),
    )

    backend_for().send(message, deadline=_deadline())

    ((request, _),) = httpserver.log
    body = request.get_json()
    assert body["personalizations"] == [
        {"to": [{"email": "a@example.com"}]},
        {"to": [{"email": "b@example.com", "name": "Bee"}], "cc": [{"email": "c@example.com"}],
         "bcc": [{"email": "d@example.com"}]},
    ]  # fmt: skip
    assert body["reply_to"] == {"email": "help@example.com", "name": "Help"}


@pytest.mark.parametrize(
    ("envelopes", "requests"),
    [
        ([Envelope(to=(Address(f"u{i}@example.com"),)) for i in range(1000)], [1000]),
        ([Envelope(to=(Address(f"u{i}@example.com"),)) for i in range(2500)], [1000, 1000, 500]),
        ([Envelope(to=tuple(Address(f"u{i}@example.com") for i in range(1500)))], [1000, 500]),
        (
            [Envelope(to=(Address("boss@example.com"),), bcc=tuple(Address(f"u{i}@example.com") for i in range(1200)))],
            [1000, 202],
        ),
    ],
)
def test_more_than_1000_recipients_are_split_across_requests(httpserver, backend_for, envelopes, requests):
    httpserver.expect_request("/v3/mail/send").respond_with_data("", status=202, headers={"X-Message-Id": "id"})

    receipt = backend_for().send(_message_with(envelopes), deadline=_deadline())

    counts = []
    for request, _ in httpserver.log:
        body = request.get_json()
        counts.append(sum(len(p.get(f, [])) for p in body["personalizations"] for f in ("to", "cc", "bcc")))
        assert all(p.get("to") for p in body["personalizations"]), "SendGrid needs a To in every envelope"
    assert counts == requests
    assert receipt.attempts == len(requests)
    assert receipt.message_id == ",".join(["id"] * len(requests))


def test_a_revoked_key_names_the_secret_to_update(httpserver, backend_for):
    httpserver.expect_request("/v3/mail/send").respond_with_json({"errors": [{"message": "bad key"}]}, status=401)
    with pytest.raises(DeliveryError) as caught:
        backend_for(NOTIFY_KEY_SECRET="sendgrid-api-key").send(MESSAGE, deadline=_deadline())
    assert "update the Secret Manager secret 'sendgrid-api-key' (deploy/setup.sh), redeploy, then replay" in str(
        caught.value
    )
