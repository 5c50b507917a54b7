"""Issue 12, items 2 and 3: the SendGrid key (and the SMTP password) is never written anywhere.

A SendGrid, or a proxy in between, that echoes the request's Authorization header in its error
body must not get the key into an error text, a dead-letter file or a log line: not whole, not
JSON-escaped, not percent-encoded, not base64-encoded, and not as a prefix longer than 8
characters (what is left when a body is cut short through the key).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote, quote_plus

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cloudevents.conversion import to_binary
from werkzeug import Request, Response

from notifier import config
from notifier import log as log_module
from notifier.addresses import Address
from notifier.config import ConfigError, load_settings
from notifier.ledger.local import LocalDeadLetters
from notifier.ledger.memory import MemoryLedger
from notifier.mail import scrub as mail_scrub
from notifier.mail.base import DeliveryError, Envelope, Message
from notifier.mail.sendgrid import SendGridBackend
from notifier.mail.smtp import SmtpBackend
from notifier.pipeline import DEAD_LETTERED, RETRYING, Pipeline, RetryLater
from notifier.tools.processes import free_port
from tests.conftest import SECRET_KEY, key_leaks, secret_traces, settings_for, storage_cloud_event

ROOT = Path(__file__).resolve().parent.parent
MESSAGE = Message(
    sender=Address("alerts@example.com", "Storage Alerts"),
    envelopes=(Envelope(to=(Address("ops@example.com"),)),),
    subject="Uploaded: reports/q3.csv (acme)",
    text="plain body\n",
    html="<p>html body</p>",
    notification_id="0123456789abcdef0123456789abcdef",
    categories=("storage-notifier", "finalize"),
)


def _leaks(text: str, secret: str = SECRET_KEY) -> list[str]:
    return key_leaks(text, secret_traces(secret))


# ---------------------------------------------------------------------------------------------
# What SendGrid, or something between, answers: each body echoes the request's Authorization.


def _quoted_everything(text: str) -> str:
    return "".join(f"%{b:02X}" for b in text.encode())


def _cut_through_the_key(auth: str, kept: int) -> str:
    """A non-JSON body in which the key starts ``kept`` characters before character 300."""
    filler = "proxy error " * 30
    lead = filler[: 300 - kept - len("Bearer ") - 1].rstrip() + " "
    lead = lead + "x" * (300 - kept - len("Bearer ") - len(lead))
    return f"{lead}{auth} and more text after the header"


ECHOES = {
    "json-errors-message": (400, lambda auth: json.dumps({"errors": [{"message": f"bad header {auth}"}]})),
    "json-errors-field": (401, lambda auth: json.dumps({"errors": [{"field": auth, "message": "invalid"}]})),
    "json-not-errors": (413, lambda auth: json.dumps({"request": {"headers": {"Authorization": auth}}})),
    "html-header-dump": (403, lambda auth: f"<html><pre>POST /v3/mail/send\nAuthorization: {auth}\n</pre></html>"),
    "cut-20-into-key": (400, lambda auth: _cut_through_the_key(auth, 20)),
    "cut-9-into-key": (404, lambda auth: _cut_through_the_key(auth, 9)),
    "percent-encoded": (400, lambda auth: f"redirected to /login?auth={quote(auth)}&h={_quoted_everything(auth)}"),
    "base64": (401, lambda auth: f"Proxy-Authorization: Basic {base64.b64encode(auth.encode()).decode()}"),
    "truncated-by-the-proxy": (400, lambda auth: json.dumps({"errors": [{"message": f"header: {auth[:30]}…"}]})),
}


def _echo(status: int, body_of) -> callable:
    def respond(request: Request) -> Response:
        return Response(body_of(request.headers["Authorization"]), status=status)

    return respond


@pytest.fixture
def sendgrid_settings(httpserver):
    def make(**env: str):
        host = httpserver.url_for("").rstrip("/")
        return settings_for(SENDGRID_API_KEY=SECRET_KEY, SENDGRID_API_HOST=host, NOTIFY_MAX_ATTEMPTS="1", **env)

    return make


def _sendgrid(settings) -> SendGridBackend:
    return SendGridBackend(settings.provider, settings.retry)


@pytest.mark.parametrize("echo", ECHOES)
def test_an_error_built_from_an_echoing_answer_holds_no_trace_of_the_key(httpserver, sendgrid_settings, echo):
    status, body_of = ECHOES[echo]
    httpserver.expect_request("/v3/mail/send").respond_with_handler(_echo(status, body_of))
    backend = _sendgrid(sendgrid_settings())

    with pytest.raises(DeliveryError) as caught:
        backend.send(MESSAGE, deadline=time.monotonic() + 30)

    assert caught.value.status == status
    assert _leaks(str(caught.value)) == [], str(caught.value)
    assert _leaks(caught.value.detail) == [], caught.value.detail
    assert "[redacted]" in str(caught.value), "the reader sees where the key was"


def test_a_transient_echo_is_clean_too(httpserver, sendgrid_settings):
    httpserver.expect_request("/v3/mail/send").respond_with_handler(_echo(503, lambda auth: f"upstream: {auth}"))
    backend = _sendgrid(sendgrid_settings())
    with pytest.raises(DeliveryError) as caught:
        backend.send(MESSAGE, deadline=time.monotonic() + 30)
    assert caught.value.transient is True
    assert _leaks(str(caught.value)) == []


def test_a_message_id_echoing_the_key_is_scrubbed_before_it_is_stored_or_logged(httpserver, sendgrid_settings):
    def accept(request: Request) -> Response:
        return Response("", status=202, headers={"X-Message-Id": f"id-{request.headers['Authorization']}"})

    httpserver.expect_request("/v3/mail/send").respond_with_handler(accept)
    receipt = _sendgrid(sendgrid_settings()).send(MESSAGE, deadline=time.monotonic() + 30)
    assert receipt.message_id == "id-Bearer [redacted]"


def test_the_cut_keeps_the_text_short_and_the_reason_readable(httpserver, sendgrid_settings):
    status, body_of = ECHOES["cut-20-into-key"]
    httpserver.expect_request("/v3/mail/send").respond_with_handler(_echo(status, body_of))
    with pytest.raises(DeliveryError) as caught:
        _sendgrid(sendgrid_settings()).send(MESSAGE, deadline=time.monotonic() + 30)
    assert caught.value.detail.startswith("proxy error proxy error")
    assert len(caught.value.detail) <= 300 + len("[redacted]")


# ---------------------------------------------------------------------------------------------
# Through the real pipeline: dead-letter files and log lines.


def test_dead_letters_and_log_lines_from_echoing_answers_hold_no_trace_of_the_key(
    httpserver, sendgrid_settings, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(log_module, "_secrets", [])  # no help from the log formatter: clean at the source
    dead_letters = LocalDeadLetters(tmp_path / "dead")
    pipeline = Pipeline(sendgrid_settings(), ledger=MemoryLedger(), dead_letters=dead_letters)

    for index, (status, body_of) in enumerate(ECHOES.values()):
        httpserver.clear()
        httpserver.expect_request("/v3/mail/send").respond_with_handler(_echo(status, body_of))
        (outcome,) = pipeline.handle(storage_cloud_event(name=f"echo-{index}.csv", event_id=f"echo-{index}"))
        assert outcome.outcome == DEAD_LETTERED
    httpserver.clear()
    httpserver.expect_request("/v3/mail/send").respond_with_handler(_echo(503, lambda auth: f"upstream: {auth}"))
    with pytest.raises(RetryLater):
        pipeline.handle(storage_cloud_event(name="transient.csv", event_id="transient"))

    files = sorted((tmp_path / "dead").glob("*.json"))
    assert len(files) == len(ECHOES)
    for path in files:
        record = json.loads(path.read_text(encoding="utf-8"))
        assert record["error"], path
        assert _leaks(path.read_text(encoding="utf-8")) == [], record["error"]
        assert _leaks(json.dumps(record["message"])) == []
    output = capsys.readouterr().out
    lines = [json.loads(line) for line in output.splitlines()]
    assert [line["outcome"] for line in lines] == [DEAD_LETTERED] * len(ECHOES) + [RETRYING]
    assert _leaks(output) == []


def test_the_pipeline_scrubs_an_error_a_backend_forgot_to_clean(tmp_path, capsys, monkeypatch):
    """Defence in depth: a backend bug that raises with the key in its text still stores none."""
    monkeypatch.setattr(log_module, "_secrets", [])

    class Careless(SendGridBackend):
        def send(self, message, *, deadline):
            raise DeliveryError(f"echo: Bearer {SECRET_KEY}", transient=False, status=400)

    settings = settings_for(SENDGRID_API_KEY=SECRET_KEY)
    pipeline = Pipeline(
        settings,
        backend=Careless(settings.provider, settings.retry),
        ledger=MemoryLedger(),
        dead_letters=LocalDeadLetters(tmp_path),
    )
    pipeline.handle(storage_cloud_event(event_id="careless"))

    (path,) = tmp_path.glob("*.json")
    assert "echo: Bearer [redacted]" in json.loads(path.read_text())["error"]
    assert _leaks(path.read_text()) == []
    assert _leaks(capsys.readouterr().out) == []


# ---------------------------------------------------------------------------------------------
# Through the real function over HTTP.


def test_the_function_over_http_writes_no_trace_of_the_key(function_server_factory, httpserver, tmp_path):
    dead = tmp_path / "dead"
    server = function_server_factory(
        SENDGRID_API_KEY=SECRET_KEY,
        SENDGRID_API_HOST=httpserver.url_for("").rstrip("/"),
        NOTIFY_MAX_ATTEMPTS="1",
        NOTIFY_DEAD_LETTER_DIR=str(dead),
    )
    for index, (status, body_of) in enumerate(ECHOES.values()):
        httpserver.clear()
        httpserver.expect_request("/v3/mail/send").respond_with_handler(_echo(status, body_of))
        headers, body = to_binary(storage_cloud_event(name=f"http-{index}.csv", event_id=f"http-{index}"))
        assert server.post(body, headers)[0] == 200

    outcomes = [line["outcome"] for line in server.new_log_lines() if "outcome" in line]
    assert outcomes == [DEAD_LETTERED] * len(ECHOES)
    files = list(dead.glob("*.json"))
    assert len(files) == len(ECHOES)
    for path in files:
        assert _leaks(path.read_text(encoding="utf-8")) == [], path.read_text(encoding="utf-8")
    assert _leaks(server.output()) == []


# ---------------------------------------------------------------------------------------------
# SMTP: the password, echoed by a relay in its replies.

PASSWORD = 'smtp-pa"ss/w+rd&=long-4711'


def _auth_plain(user: str) -> str:
    return base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()


class EchoingRelay:
    """Accepts the login, then refuses the message, quoting the password back in its reply."""

    def __init__(self, reply: str):
        self.reply = reply

    async def handle_DATA(self, server, session, envelope):
        return self.reply


def _accept(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=auth_data.password == PASSWORD.encode(), handled=False)


SMTP_ECHOES = {
    "raw": f"554 5.7.1 rejected, login was mailer/{PASSWORD}",
    "json": f"554 5.7.1 rejected: {json.dumps({'password': PASSWORD})}",
    "percent-encoded": f"554 5.7.1 rejected: see /why?p={quote(PASSWORD, safe='')}",
    "auth-plain": f"554 5.7.1 rejected after AUTH PLAIN {_auth_plain('mailer')}",
    "transient": f"451 4.3.0 try later, mailer/{PASSWORD}",
}


@pytest.mark.parametrize("echo", SMTP_ECHOES)
def test_smtp_errors_hold_no_trace_of_the_password(echo):
    controller = Controller(
        EchoingRelay(SMTP_ECHOES[echo]), hostname="127.0.0.1", port=free_port(), authenticator=_accept,
        auth_require_tls=False,
    )  # fmt: skip
    controller.start()
    try:
        settings = settings_for(
            NOTIFY_BACKEND="smtp", SMTP_URL=f"smtp://mailer@127.0.0.1:{controller.port}?tls=none",
            SMTP_PASSWORD=PASSWORD, NOTIFY_MAX_ATTEMPTS="1",
        )  # fmt: skip
        backend = SmtpBackend(settings.provider, settings.retry)
        with pytest.raises(DeliveryError) as caught:
            backend.send(MESSAGE, deadline=time.monotonic() + 30)
    finally:
        controller.stop()
    assert caught.value.status in (554, 451)
    assert _leaks(str(caught.value), PASSWORD) == [], str(caught.value)
    assert "[redacted]" in str(caught.value)


# ---------------------------------------------------------------------------------------------
# The scrubbing itself.

ODD_SECRET = 'p"a/s s+w=ö&rd<>-0123456789'


@pytest.mark.parametrize(
    "spelled",
    [
        ODD_SECRET,
        json.dumps(ODD_SECRET)[1:-1],
        json.dumps(ODD_SECRET, ensure_ascii=False)[1:-1],
        quote(ODD_SECRET, safe=""),
        quote(ODD_SECRET, safe="").lower(),
        quote(ODD_SECRET),
        quote_plus(ODD_SECRET),
        _quoted_everything(ODD_SECRET),
        base64.b64encode(ODD_SECRET.encode()).decode(),
        base64.b64encode(b"x" + ODD_SECRET.encode()).decode(),
        base64.b64encode(b"xy" + ODD_SECRET.encode() + b"z").decode(),
        base64.urlsafe_b64encode(b"Bearer " + ODD_SECRET.encode()).decode(),
        ODD_SECRET[:9],
        ODD_SECRET[:20] + "…",
    ],
)
def test_scrub_removes_every_spelling_of_a_secret(spelled):
    text = mail_scrub.scrub(f"before {spelled} after", [ODD_SECRET, None, ""])
    assert text.startswith("before ") and text.endswith(" after")
    assert "[redacted]" in text
    assert _leaks(text, ODD_SECRET) == []


def test_scrub_cuts_after_redacting_and_leaves_no_prefix_at_the_cut():
    text = "x" * 290 + SECRET_KEY + " tail"
    for limit in range(280, 320):
        cut = mail_scrub.scrub(text, [SECRET_KEY], limit=limit)
        assert _leaks(cut) == [], (limit, cut)
        assert len(cut) <= limit + len("[redacted]")


def test_scrub_leaves_text_without_secrets_alone():
    text = "SendGrid rejected the request (HTTP 400): personalizations.0.to.0.email: invalid"
    assert mail_scrub.scrub(text, [SECRET_KEY, None]) == text
    assert mail_scrub.scrub("x" * 400, [SECRET_KEY], limit=300) == "x" * 300
    eight = f"id {SECRET_KEY[:8]}"
    assert mail_scrub.scrub(eight, [SECRET_KEY]) == eight, "8 characters of the key are not a leak"


# ---------------------------------------------------------------------------------------------
# The suite-wide guard in tests/conftest.py catches what these tests might not think of.

GUARDED = """
import json
import sys

from tests.conftest import SECRET_KEY


def test_prints_the_key():
    print("key:", SECRET_KEY)


def test_prints_a_prefix_to_stderr():
    print(SECRET_KEY[:12], file=sys.stderr)


def test_reads_the_key_through_capsys(capsys):
    print(SECRET_KEY[:30])
    capsys.readouterr()


def test_prints_eight_characters():
    print(SECRET_KEY[:8])


def test_prints_the_key_without_its_prefix():
    print("k=" + SECRET_KEY[3:])


def test_compares_in_memory():
    assert f"Bearer {SECRET_KEY}".endswith(SECRET_KEY)


def test_writes_a_prefix_to_a_file(tmp_path):
    (tmp_path / "letter.json").write_text(json.dumps({"error": SECRET_KEY[:20]}))
"""


def test_the_suite_guard_fails_a_test_that_prints_or_writes_the_key(tmp_path_factory):
    # The inner run's files hold the key on purpose: they live outside this run's basetemp.
    inner = Path(tempfile.mkdtemp(prefix="notifier-key-guard-"))
    try:
        (inner / "pytest.ini").write_text("[pytest]\n")
        (inner / "conftest.py").write_text('pytest_plugins = ["tests.conftest"]\n')
        (inner / "test_guarded.py").write_text(GUARDED)
        command = [sys.executable, "-m", "pytest", str(inner / "test_guarded.py"), "-p", "no:cacheprovider",
                   "--rootdir", str(inner), "--basetemp", str(inner / "basetemp"), "-q", "--tb=no", "-rN"]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(command, cwd=inner, env=env, capture_output=True, text=True, timeout=120)
    finally:
        shutil.rmtree(inner)
    summary = done.stdout.strip().splitlines()[-1]
    assert summary.startswith("4 failed, 3 passed, 1 error"), summary


# ---------------------------------------------------------------------------------------------
# Issue 12 (second round): an echo of the key from anywhere in it, not only from its start. Any run
# of 12 of a secret's characters, wherever it starts, is a leak; so is any prefix longer than 8.

WINDOW = 12
LONG_PASSWORD = "".join(chr(0x21 + (index * 37) % 94) for index in range(200))  # 200 printable characters


def _windows_in(text: str, secret: str = SECRET_KEY, size: int = WINDOW) -> list[str]:
    """The runs of ``size`` characters of ``secret`` that ``text`` holds."""
    return [
        secret[start : start + size] for start in range(len(secret) - size + 1) if secret[start : start + size] in text
    ]


def _entities(text: str, form: str) -> str:
    return "".join(form.format(ord(char)) for char in text)


MIDDLE = SECRET_KEY[3:]  # what a provider echoes when it strips the "SG." it recognised

MID_KEY_SPELLINGS = {
    "raw-without-prefix": MIDDLE,
    "raw-12-from-the-middle": SECRET_KEY[20:32],
    "raw-tail": SECRET_KEY[-12:],
    "json-escaped": "".join(f"\\u{ord(char):04x}" for char in MIDDLE),
    "json-escaped-upper": "".join(f"\\u{ord(char):04X}" for char in SECRET_KEY[10:30]),
    "percent-encoded": _quoted_everything(MIDDLE),
    "percent-encoded-lower": _quoted_everything(SECRET_KEY[7:25]).lower(),
    "html-decimal-leading-zeros": _entities(SECRET_KEY, "&#{:04d};"),
    "html-decimal-many-zeros": _entities(MIDDLE, "&#0000000{};"),
    "html-decimal-40-zeros": _entities(SECRET_KEY[30:], "&#" + "0" * 40 + "{};"),
    "html-hex-leading-zeros": _entities(MIDDLE, "&#x{:06x};"),
    "html-hex-upper": _entities(MIDDLE, "&#X{:X};"),
    "hex-lower": MIDDLE.encode().hex(),
    "hex-upper": MIDDLE.encode().hex().upper(),
    "hex-whole-key": SECRET_KEY.encode().hex(),
    "base64-mid-aligned": base64.b64encode(MIDDLE.encode()).decode(),
    "base64-mid-shifted-1": base64.b64encode(b"x" + SECRET_KEY[13:40].encode()).decode(),
    "base64-mid-shifted-2": base64.urlsafe_b64encode(b"xy" + SECRET_KEY[21:].encode()).decode(),
}


@pytest.mark.parametrize("spelling", MID_KEY_SPELLINGS)
def test_scrub_redacts_a_run_of_the_key_that_starts_anywhere_in_it(spelling):
    echoed = MID_KEY_SPELLINGS[spelling]
    text = mail_scrub.scrub(f"400 bad request k={echoed} end", [SECRET_KEY])
    assert text.startswith("400 bad request k=") and text.endswith(" end"), text
    assert "[redacted]" in text, text
    assert echoed not in text
    assert _windows_in(text) == [], text


def test_scrub_redacts_the_whole_run_not_only_the_windows_it_is_made_of():
    text = mail_scrub.scrub(f"k={MIDDLE}!", [SECRET_KEY])
    assert text == "k=[redacted]!"


def test_scrub_leaves_runs_shorter_than_a_window_alone_away_from_the_start():
    eleven = SECRET_KEY[20:31]
    assert mail_scrub.scrub(f"id {eleven} id", [SECRET_KEY]) == f"id {eleven} id"
    assert mail_scrub.scrub("hex " + SECRET_KEY[20:31].encode().hex(), [SECRET_KEY]).startswith("hex ")


def test_scrub_redacts_runs_of_a_long_password_anywhere():
    pieces = [LONG_PASSWORD[start : start + 15] for start in (0, 37, 111, 185)]
    text = mail_scrub.scrub(" | ".join(pieces), [LONG_PASSWORD])
    assert text == " | ".join(["[redacted]"] * len(pieces)), text


def test_scrub_stays_fast_on_a_long_text_with_a_long_password():
    """Not a benchmark: a generous bound that shows no quadratic scan or regex blow-up."""
    text = ("lorem ipsum &#60; %41 \\u0041 " * 40_000)[: 1 << 20] + LONG_PASSWORD[50:80]
    started = time.perf_counter()
    scrubbed = mail_scrub.scrub(text, [LONG_PASSWORD, SECRET_KEY], limit=2 << 20)
    assert time.perf_counter() - started < 10
    assert scrubbed.endswith("[redacted]")


def test_a_sendgrid_answer_echoing_the_key_without_its_prefix_holds_no_run_of_it(httpserver, sendgrid_settings):
    def respond(request: Request) -> Response:
        return Response(f"k={request.headers['Authorization'].removeprefix('Bearer SG.')}", status=400)

    httpserver.expect_request("/v3/mail/send").respond_with_handler(respond)
    with pytest.raises(DeliveryError) as caught:
        _sendgrid(sendgrid_settings()).send(MESSAGE, deadline=time.monotonic() + 30)
    assert _windows_in(str(caught.value)) == [], str(caught.value)
    assert _windows_in(caught.value.detail) == [], caught.value.detail
    assert "k=[redacted]" in str(caught.value)


def test_a_key_split_across_two_sendgrid_errors_holds_no_run_of_it(httpserver, sendgrid_settings):
    def respond(request: Request) -> Response:
        key = request.headers["Authorization"].removeprefix("Bearer ")
        errors = [{"field": "k", "message": key[:6]}, {"field": "k", "message": key[6:]}]
        return Response(json.dumps({"errors": errors}), status=400, content_type="application/json")

    httpserver.expect_request("/v3/mail/send").respond_with_handler(respond)
    with pytest.raises(DeliveryError) as caught:
        _sendgrid(sendgrid_settings()).send(MESSAGE, deadline=time.monotonic() + 30)
    assert _windows_in(str(caught.value)) == [], str(caught.value)
    assert "[redacted]" in caught.value.detail


# ---------------------------------------------------------------------------------------------
# Start-up problems: a secret in SMTP_URL, or pasted into the wrong variable, is never echoed.

URL_PASSWORDS = ["Hunter@Two", "Hunter@Two:Three/Four%40Five", "Hunter/Two", "Hunter:Two@Three/Four", "Hunter%40Two"]


def _url_password_pieces(password: str) -> list[str]:
    """The password, and what is left of it after each '@', ':', '/' or '%' (where a parser that
    takes the first '@' or stops at a '/' would start showing it)."""
    pieces = [password[i + 1 :] for i, char in enumerate(password) if char in "@:/%"]
    return [password, *(piece for piece in pieces if len(piece) >= 3)]


@pytest.mark.parametrize("password", URL_PASSWORDS)
@pytest.mark.parametrize("scheme", ["smtp", "smtps"])
def test_a_password_in_smtp_url_is_refused_and_no_part_of_it_echoed(password, scheme):
    url = f"{scheme}://mailer:{password}@smtp.example.com:587"
    with pytest.raises(ConfigError) as caught:
        load_settings({"NOTIFY_BACKEND": "console", "SMTP_URL": url})
    text = str(caught.value)
    assert "SMTP_URL: holds a password; put it in SMTP_PASSWORD" in text
    for piece in _url_password_pieces(password):
        assert piece not in text, text


def test_a_url_with_a_user_and_no_password_is_still_shown_whole():
    with pytest.raises(ConfigError) as caught:
        load_settings({"NOTIFY_BACKEND": "console", "SMTP_URL": "smtp://mailer@smtp example.com"})
    assert caught.value.problems == [
        "SMTP_URL: expected smtp://[user@]host[:port] or smtps://..., got 'smtp://mailer@smtp example.com'"
    ]


CUT_PASSWORD = "p@ss\\w'rd\"x-and-then-enough-characters-to-be-cut-0123456789"
# (secret variable, its value as set, what is pasted into another variable)
PASTED = {
    "backslash-and-quotes": ("SMTP_PASSWORD", "p@ss\\w'rd\"x", "p@ss\\w'rd\"x"),
    "cut-short-by-the-problem": ("SMTP_PASSWORD", CUT_PASSWORD, CUT_PASSWORD),
    "password-with-whitespace": ("SMTP_PASSWORD", "  Spaced-Secret-0123456789\n", "Spaced-Secret-0123456789"),
    "key-set-in-quotes": ("SENDGRID_API_KEY", '"SG.quoted-key-0123456789abcdef"', "SG.quoted-key-0123456789abcdef"),
    "key-pasted-in-quotes": ("SENDGRID_API_KEY", "SG.plain-key-0123456789abcdef\n", "'SG.plain-key-0123456789abcdef'"),
}
PASTED_INTO = ["NOTIFY_TIMEZONE", "NOTIFY_MAX_EVENT_AGE", "NOTIFY_STATE_BUCKET", "NOTIFY_BACKEND"]
PASTED_INTO += ["STORAGE_EMULATOR_HOST"]


def _forms(secret: str) -> set[str]:
    """How a secret may read in a problem text: as is, stripped, between repr's quotes, without
    its own quotes, and each cut to 20 characters (a long value is shown cut short)."""
    bare = secret.strip().strip("'\"")
    forms = {secret, secret.strip(), bare, repr(secret.strip())[1:-1], repr(bare)[1:-1]}
    return forms | {form[:20] for form in forms}


@pytest.mark.parametrize("pasted_into", PASTED_INTO)
@pytest.mark.parametrize("case", PASTED)
def test_a_secret_pasted_into_another_variable_is_redacted_in_every_form(case, pasted_into):
    var, value, pasted = PASTED[case]
    with pytest.raises(ConfigError) as caught:
        load_settings({"NOTIFY_BACKEND": "console", var: value, pasted_into: pasted})
    text = str(caught.value)
    assert f"{pasted_into}: " in text, "the problem still names the variable"
    assert "[redacted]" in text, text
    for form in _forms(value) | _forms(pasted):
        assert form not in text, text


def test_config_lists_every_form_of_the_environments_secrets():
    env = {"SMTP_PASSWORD": "  p@ss\\w'rd\"x\n", "SENDGRID_API_KEY": '"SG.quoted"', "NOTIFY_TO": "not-a-secret"}
    found = config.environment_secrets(env)
    assert {"p@ss\\w'rd\"x", "p@ss\\\\w\\'rd\"x", '"SG.quoted"', "SG.quoted"} <= set(found)
    assert "not-a-secret" not in found
    assert list(found) == sorted(found, key=len, reverse=True), "longest first: a secret holding another goes whole"


def test_the_cannot_start_line_has_the_log_redactor_behind_it(clean_notifier_env, monkeypatch, capsys):
    """Even a problem text that escaped redaction (here: none is done) reaches the log redacted:
    the environment's secrets are registered before the settings are read."""
    secret = "p@ss\\w'rd\"x-0123456789"
    monkeypatch.setattr(log_module, "_secrets", [])
    monkeypatch.setattr(config, "_redacted", lambda problems, secrets: problems)
    monkeypatch.setenv("SMTP_PASSWORD", secret + "\n")
    monkeypatch.setenv("NOTIFY_TIMEZONE", secret)
    with pytest.raises(ConfigError):
        Pipeline.from_environment()
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in (captured.out + captured.err).splitlines() if line.startswith("{")]
    message = next(line["message"] for line in lines if "cannot start" in line["message"])
    assert "NOTIFY_TIMEZONE: '[redacted]' is not an IANA time zone" in message
    for form in _forms(secret):
        assert form not in captured.out + captured.err
        assert form not in message


# ---------------------------------------------------------------------------------------------
# The SMTP password is stripped like the key: `echo PASSWORD | gcloud secrets create` ends in "\n".


class AcceptingRelay:
    def __init__(self) -> None:
        self.received: list[str] = []

    async def handle_DATA(self, server, session, envelope):
        self.received.extend(envelope.rcpt_tos)
        return "250 OK"


@pytest.mark.parametrize("raw", [PASSWORD + "\n", PASSWORD + "\r\n", f"  {PASSWORD}\n\n"])
def test_the_smtp_password_is_stripped_of_surrounding_whitespace(raw):
    relay = AcceptingRelay()
    controller = Controller(
        relay, hostname="127.0.0.1", port=free_port(), authenticator=_accept, auth_require_tls=False
    )
    controller.start()
    try:
        settings = settings_for(
            NOTIFY_BACKEND="smtp", SMTP_URL=f"smtp://mailer@127.0.0.1:{controller.port}?tls=none",
            SMTP_PASSWORD=raw, NOTIFY_MAX_ATTEMPTS="1",
        )  # fmt: skip
        receipt = SmtpBackend(settings.provider, settings.retry).send(MESSAGE, deadline=time.monotonic() + 30)
    finally:
        controller.stop()
    assert settings.provider.password == PASSWORD
    assert (receipt.attempts, relay.received) == (1, ["ops@example.com"]), "the relay accepted the login"


@pytest.mark.parametrize("quote_mark", ['"', "'"])
def test_a_key_in_quotes_stops_start_up_without_repeating_it(quote_mark):
    key = f"{quote_mark}SG.quoted-key-0123456789abcdef{quote_mark}"
    with pytest.raises(ConfigError) as caught:
        settings_for(SENDGRID_API_KEY=key)
    assert caught.value.problems == ["SENDGRID_API_KEY: is in quotes; store the key alone, without them"]
