"""SendGrid v3 Mail Send over our one HTTP stack, with the retry policy declared once.

Everything SendGrid-specific lives here: the payload shape, which answers are worth retrying, how
rate-limit headers are read, and how error bodies are summarised for the log. The JSON body is
built here (as django-anymail does), not with the ``sendgrid`` package: importing it costs the
cold start tens of milliseconds (it pulls ``cryptography`` for a webhook helper), and it would
bring a second HTTP client. tests/test_sendgrid_payload.py checks our body against the one the
package's helpers build. The request goes out through notifier.httpclient: kept-alive connections,
proxies, and a deadline for the whole answer.
"""

from __future__ import annotations

import base64
import http.client
import json
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Self

from tenacity import RetryCallState

from notifier import envvars, httpclient
from notifier.addresses import Address
from notifier.mail.base import Attachment, Backend, DeliveryError, Envelope, Message, Receipt
from notifier.mail.retry import RetryingSender, RetrySettings
from notifier.mail.scrub import scrub

MAX_RECIPIENTS = 1000  # per request, across personalizations (to + cc + bcc)
TRANSIENT_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
# What a permanent status means for the person reading the log.
_PERMANENT_HINTS = {
    400: "SendGrid rejected the request",
    401: "the SendGrid API key is invalid or revoked: update {secret} (deploy/setup.sh), redeploy, then replay",
    403: "the SendGrid API key lacks the Mail Send permission, or the sender is not verified",
    404: "the SendGrid API host or path is wrong: check SENDGRID_API_HOST",
    **dict.fromkeys(
        range(300, 400),
        "SendGrid's address redirects elsewhere (not followed, nothing was sent): check"
        " SENDGRID_API_HOST, https://api.sendgrid.com or your region's https:// API host",
    ),
    413: "the message is larger than SendGrid accepts (30 MB)",
}
_MAX_RATE_LIMIT_WAIT = 60.0  # never trust a reset header further than this
# How much of an answer goes into an error text: SendGrid's error list, or any other body.
_MAX_ERRORS_TEXT, _MAX_BODY_TEXT = 1000, 300
# SendGrid's message ids are printable ASCII; anything else (control characters, escapes) and commas,
# which would fake a second id in the joined list, are dropped (after the key is scrubbed).
_MESSAGE_ID_JUNK = re.compile(r"[^\x20-\x7e]|,")
_MAX_MESSAGE_ID = 200  # SendGrid's are about 22 characters
_USER_AGENT = "storage-notifier (SendGrid v3 Mail Send)"


class _Refused(Exception):
    """SendGrid (or something on the way) answered with an error status. Its text is the status
    alone: the body and headers may echo the request, key included, and are scrubbed where used."""

    def __init__(self, answer: httpclient.Answer) -> None:
        super().__init__(answer.status)
        self.status, self.reason = answer.status, answer.reason
        self.body, self.headers = answer.body, answer.headers


@dataclass(frozen=True, slots=True)
class SendGridSettings:
    """The SendGrid variables, read and checked at start-up (their form whatever the backend)."""

    api_key: str = field(repr=False)  # SENDGRID_API_KEY, from Secret Manager
    api_host: str  # SENDGRID_API_HOST: https://api.eu.sendgrid.com for EU data residency
    timeout: float  # SENDGRID_TIMEOUT_SECONDS: one request, connect and read
    sandbox: bool  # SENDGRID_SANDBOX: SendGrid validates, sends nothing
    key_secret: str | None  # NOTIFY_KEY_SECRET: the Secret Manager secret holding the key, for messages

    @classmethod
    def from_env(cls, env: Mapping[str, str], problems: list[str], *, deployed: bool, chosen: bool) -> Self:
        api_key = envvars.text(env, "SENDGRID_API_KEY")
        if not api_key:
            if chosen:
                problems.append("SENDGRID_API_KEY: required when NOTIFY_BACKEND is sendgrid")
        elif any(ch.isspace() or not ch.isprintable() for ch in api_key):
            problems.append("SENDGRID_API_KEY: contains whitespace or control characters")
        elif api_key[0] in "\"'" or api_key[-1] in "\"'":  # SendGrid keys hold no quotes: pasted with them
            problems.append("SENDGRID_API_KEY: is in quotes; store the key alone, without them")
        return cls(
            api_key=api_key,
            api_host=_api_host(env, problems),
            timeout=envvars.positive_number(env, "SENDGRID_TIMEOUT_SECONDS", problems, 10.0),
            sandbox=envvars.boolean(env, "SENDGRID_SANDBOX", problems),
            key_secret=envvars.text(env, "NOTIFY_KEY_SECRET") or None,
        )

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.api_key,) if self.api_key else ()

    @property
    def local_dir(self) -> Path | None:
        return None


def _api_host(env: Mapping[str, str], problems: list[str]) -> str:
    """SENDGRID_API_HOST: the key goes there, so https (plain http only to this machine)."""
    host = envvars.http_url(env, "SENDGRID_API_HOST", problems, "https://api.sendgrid.com")
    envvars.secret_bearing_url(host, "SENDGRID_API_HOST", problems, carries="the API key")
    return host


class SendGridBackend(RetryingSender, Backend):
    name = "sendgrid"

    def __init__(
        self, settings: SendGridSettings, retry: RetrySettings, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self._url = f"{settings.api_host}/v3/mail/send"
        self._headers = {
            "Authorization": f"Bearer {settings.api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": _USER_AGENT,
        }
        self._timeout = settings.timeout
        self._sandbox = settings.sandbox
        self._key_secret = settings.key_secret
        self._secrets = settings.secrets  # scrubbed from every error text built here
        super().__init__(retry, sleep)

    def send(self, message: Message, *, deadline: float) -> Receipt:
        message_ids, attempts = [], 0
        for batch in _batches(message.envelopes):
            body = json.dumps(build_payload(message, batch, sandbox=self._sandbox)).encode()
            answer, tries = self._send_body(body, deadline, attempts)
            attempts += tries
            message_id = scrub(answer.headers.get("X-Message-Id", ""), self._secrets)  # it is stored and logged
            message_ids.append(_MESSAGE_ID_JUNK.sub("", message_id)[:_MAX_MESSAGE_ID])  # no comma: ids are joined
        return Receipt(self.name, ",".join(message_ids), attempts)

    def _send_body(self, body: bytes, deadline: float, earlier: int) -> tuple[httpclient.Answer, int]:
        retrying = self._retrying(_is_transient, deadline, wait_first=_wait_for_rate_limit)
        try:
            answer = retrying(self._post, body, deadline)
        except _Refused as error:
            attempts = earlier + retrying.statistics["attempt_number"]
            raise _delivery_error(error, attempts, self._key_secret, self._secrets) from None
        except (OSError, http.client.HTTPException) as error:
            reason = scrub(_describe_network_error(error), self._secrets, limit=_MAX_BODY_TEXT)
            raise DeliveryError(
                f"SendGrid unreachable: {reason}",
                transient=True,
                attempts=earlier + retrying.statistics["attempt_number"],
            ) from None
        return answer, retrying.statistics["attempt_number"]

    def _post(self, body: bytes, deadline: float) -> httpclient.Answer:
        timeout = max(0.1, min(self._timeout, deadline - time.monotonic()))
        try:
            answer = httpclient.request(
                "POST", self._url, timeout=timeout, deadline=deadline, body=body, headers=self._headers
            )
        except httpclient.IncompleteAnswer as cut:
            # The status came, its body did not: after a 2xx SendGrid has the email, and sending
            # it again would send it twice; any other status is judged as if the body were empty.
            answer = httpclient.Answer(cut.status, cut.reason, cut.headers, b"")
        if not 200 <= answer.status < 300:  # a redirect (never followed) or an interim 1xx sent nothing
            raise _Refused(answer)
        return answer


def build_payload(message: Message, envelopes: Iterable[Envelope], *, sandbox: bool = False) -> dict[str, Any]:
    """The v3 Mail Send body for ``message``: one personalization per envelope.

    With a dynamic template, SendGrid renders subject and body from ``template_data``; otherwise
    our rendered subject, text and HTML are sent. ``sandbox``: SendGrid validates, sends nothing.
    Keys, their order and what is left out are those of the ``sendgrid`` helpers' ``Mail.get()``
    that built it before, so the request is the same bytes (tests/test_sendgrid_payload.py).
    """
    templated = message.template_id is not None
    optional: dict[str, Any] = {
        "from": _email(message.sender),
        "subject": None if templated else message.subject,
        "personalizations": [_personalization(envelope, message, templated) for envelope in envelopes],
        "content": None if templated else _content(message),
        # The helpers prepended headers, categories and attachments: the later first.
        "attachments": [_attachment(attachment) for attachment in reversed(message.attachments)],
        "template_id": message.template_id,
        "headers": dict(reversed([("X-Notification-Id", message.notification_id), *message.headers.items()])),
        "categories": list(reversed(message.categories)),
        "custom_args": {"notification_id": message.notification_id},
        "mail_settings": {"sandbox_mode": {"enable": True}} if sandbox else None,
        "reply_to": None if message.reply_to is None else _email(message.reply_to),
    }
    return {key: value for key, value in optional.items() if value is not None and value != [] and value != {}}


def _email(address: Address) -> dict[str, str]:
    return {"name": address.name, "email": address.email} if address.name else {"email": address.email}


def _personalization(envelope: Envelope, message: Message, templated: bool) -> dict[str, Any]:
    fields = {"to": envelope.to, "cc": envelope.cc, "bcc": envelope.bcc}
    personalization: dict[str, Any] = {key: _unique(addresses) for key, addresses in fields.items() if addresses}
    if templated and message.template_data:
        personalization["dynamic_template_data"] = dict(message.template_data)
    return personalization


def _unique(addresses: Iterable[Address]) -> list[dict[str, str]]:
    """Each address once per field (case-insensitively, the first kept): SendGrid refuses repeats."""
    seen: dict[str, dict[str, str]] = {}
    for address in addresses:
        seen.setdefault(address.key, _email(address))
    return list(seen.values())


def _content(message: Message) -> list[dict[str, str]]:
    return [{"type": "text/plain", "value": message.text}, {"type": "text/html", "value": message.html}]


def _attachment(attachment: Attachment) -> dict[str, str]:
    return {
        "content": base64.b64encode(attachment.data).decode(),
        "type": attachment.content_type,
        "filename": attachment.filename,
        "disposition": "attachment",
    }


def _batches(envelopes: Iterable[Envelope]) -> list[list[Envelope]]:
    """Group envelopes into requests of at most MAX_RECIPIENTS recipients (SendGrid's limit),
    splitting an envelope that alone is larger."""
    batches: list[list[Envelope]] = [[]]
    count = 0
    for envelope in _split_large(envelopes):
        if count + envelope.count > MAX_RECIPIENTS:
            batches.append([])
            count = 0
        batches[-1].append(envelope)
        count += envelope.count
    return [batch for batch in batches if batch]


def _split_large(envelopes: Iterable[Envelope]) -> Iterator[Envelope]:
    for envelope in envelopes:
        if envelope.count <= MAX_RECIPIENTS:
            yield envelope
            continue
        # Each part keeps some of the To addresses (SendGrid needs one) and its share of Cc/Bcc.
        everyone = [("to", a) for a in envelope.to] + [("cc", a) for a in envelope.cc]
        everyone += [("bcc", a) for a in envelope.bcc]
        for start in range(0, len(everyone), MAX_RECIPIENTS):
            part = everyone[start : start + MAX_RECIPIENTS]
            yield Envelope(
                to=tuple(a for kind, a in part if kind == "to") or envelope.to[:1],
                cc=tuple(a for kind, a in part if kind == "cc"),
                bcc=tuple(a for kind, a in part if kind == "bcc"),
            )


# ---------------------------------------------------------------------------------------------
# Retry policy: what is transient, how long to wait, when to give up.


def _is_transient(error: BaseException) -> bool:
    if isinstance(error, _Refused):
        return error.status in TRANSIENT_STATUSES or error.status < 200  # an interim 1xx as the answer
    return isinstance(error, OSError | http.client.HTTPException)


def _wait_for_rate_limit(retry_state: RetryCallState) -> float | None:
    """On a 429, as long as ``Retry-After`` / ``X-RateLimit-Reset`` say (capped, lightly jittered)."""
    error = retry_state.outcome.exception() if retry_state.outcome else None
    if isinstance(error, _Refused) and error.status == 429:
        reset = _rate_limit_reset(error.headers)
        if reset is not None:
            return min(_MAX_RATE_LIMIT_WAIT, reset) + random.uniform(0, 0.5)
    return None


def _rate_limit_reset(headers: Mapping[str, str]) -> float | None:
    """Seconds until SendGrid accepts requests again, from the 429's headers, if they say."""
    retry_after = headers.get("Retry-After")
    if retry_after:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(retry_after).timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    reset = headers.get("X-RateLimit-Reset")
    if reset:
        try:
            return max(0.0, float(reset) - time.time())
        except ValueError:
            pass
    return None


# ---------------------------------------------------------------------------------------------
# Turning SendGrid's refusals into DeliveryError with a message a person can act on.


def _delivery_error(
    error: _Refused, attempts: int, key_secret: str | None = None, secrets: tuple[str | None, ...] = ()
) -> DeliveryError:
    """``secrets``: what the answer may echo (the key) and the text must never hold."""
    status = error.status
    detail = _summarise_body(error.body, secrets)
    transient = status in TRANSIENT_STATUSES or status < 200
    if transient:
        what = f"SendGrid answered {status} after {attempts} attempt(s)"
    else:
        secret = f"the Secret Manager secret {key_secret!r}" if key_secret else "the secret mounted as SENDGRID_API_KEY"
        hint = _PERMANENT_HINTS.get(status, "SendGrid refused the message").format(secret=secret)
        what = f"{hint} (HTTP {status})"
    return DeliveryError(
        scrub(f"{what}: {detail}" if detail else what, secrets),
        transient=transient,
        status=status,
        detail=detail,
        attempts=attempts,
    )


def _summarise_body(body: bytes | str, secrets: tuple[str | None, ...] = ()) -> str:
    """SendGrid's ``{"errors": [{"message", "field", "help"}]}`` as one line; other bodies cut short.

    A body may echo our request, key included (a proxy's header dump): ``secrets`` are scrubbed
    from the raw body, from the decoded errors, and again after the cut."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    if not body:
        return ""
    body = scrub(str(body), secrets)
    try:
        errors = json.loads(body)["errors"]
        parts = [f"{e.get('field') or 'request'}: {e.get('message')}" for e in errors if isinstance(e, dict)]
        if parts:
            return scrub("; ".join(parts), secrets, limit=_MAX_ERRORS_TEXT)
    except (ValueError, KeyError, TypeError):
        pass
    return scrub(" ".join(body.split()), secrets, limit=_MAX_BODY_TEXT)


def _describe_network_error(error: BaseException) -> str:
    if isinstance(error, TimeoutError):
        detail = str(error)
        return "timed out" if detail in ("", "timed out") else f"timed out: {detail}"
    return f"{type(error).__name__}: {error}"  # scrubbed and cut by the caller
