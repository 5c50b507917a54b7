"""SendGrid v3 Mail Send through the official client, with the retry policy declared once.

Everything SendGrid-specific lives here: the payload shape, which answers are worth retrying, how
rate-limit headers are read, and how error bodies are summarised for the log. The client supplies
the URL, the headers (the key), the payload helpers and the error types; its request goes out over
a kept-alive connection (notifier.mail.keepalive) rather than a new one per email.
"""

from __future__ import annotations

import base64
import http.client
import json
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any, Self

from python_http_client.exceptions import HTTPError, err_dict
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import Attachment as SendGridAttachment
from sendgrid.helpers.mail import (
    Bcc,
    Category,
    Cc,
    CustomArg,
    Disposition,
    Email,
    FileContent,
    FileName,
    FileType,
    Header,
    Mail,
    MailSettings,
    Personalization,
    ReplyTo,
    SandBoxMode,
    TemplateId,
    To,
)
from tenacity import RetryCallState

from notifier import envvars
from notifier.mail.base import Backend, DeliveryError, Envelope, Message, Receipt
from notifier.mail.keepalive import KeepAlive
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
    413: "the message is larger than SendGrid accepts (30 MB)",
}
_MAX_RATE_LIMIT_WAIT = 60.0  # never trust a reset header further than this
# How much of an answer goes into an error text: SendGrid's error list, or any other body.
_MAX_ERRORS_TEXT, _MAX_BODY_TEXT = 1000, 300
_MAX_MESSAGE_ID = 200  # SendGrid's are about 22 characters


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
            api_host=envvars.http_url(env, "SENDGRID_API_HOST", problems, "https://api.sendgrid.com"),
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


class SendGridBackend(RetryingSender, Backend):
    name = "sendgrid"

    def __init__(
        self, settings: SendGridSettings, retry: RetrySettings, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        client = SendGridAPIClient(settings.api_key, host=settings.api_host).client
        self._connections = KeepAlive(client.mail.send._build_url(None))
        self._headers = {**client.request_headers, "Content-Type": "application/json"}
        self._timeout = settings.timeout
        self._sandbox = settings.sandbox
        self._key_secret = settings.key_secret
        self._secrets = settings.secrets  # scrubbed from every error text built here
        super().__init__(retry, sleep)

    def send(self, message: Message, *, deadline: float) -> Receipt:
        message_ids, attempts = [], 0
        for batch in _batches(message.envelopes):
            payload = build_payload(message, batch, sandbox=self._sandbox)
            response, tries = self._send_payload(payload, deadline, attempts)
            attempts += tries
            message_id = response.headers.get("X-Message-Id", "") if response.headers else ""
            message_ids.append(scrub(message_id, self._secrets, limit=_MAX_MESSAGE_ID))  # it is stored and logged
        return Receipt(self.name, ",".join(message_ids), attempts)

    def _send_payload(self, payload: dict[str, Any], deadline: float, earlier: int) -> tuple[Any, int]:
        retrying = self._retrying(_is_transient, deadline, wait_first=_wait_for_rate_limit)
        try:
            response = retrying(self._post, payload, deadline)
        except HTTPError as error:
            attempts = earlier + retrying.statistics["attempt_number"]
            raise _delivery_error(error, attempts, self._key_secret, self._secrets) from None
        except (OSError, http.client.HTTPException) as error:
            reason = scrub(_describe_network_error(error), self._secrets, limit=_MAX_BODY_TEXT)
            raise DeliveryError(
                f"SendGrid unreachable: {reason}",
                transient=True,
                attempts=earlier + retrying.statistics["attempt_number"],
            ) from None
        return response, retrying.statistics["attempt_number"]

    def _post(self, payload: dict[str, Any], deadline: float) -> Any:
        remaining = deadline - time.monotonic()
        timeout = max(0.1, min(self._timeout, remaining))
        answer = self._connections.post(json.dumps(payload).encode(), self._headers, timeout, deadline)
        if answer.status >= 400:
            raise err_dict.get(answer.status, HTTPError)(answer.status, answer.reason, answer.body, answer.headers)
        return answer


def build_payload(message: Message, envelopes: Iterable[Envelope], *, sandbox: bool = False) -> dict[str, Any]:
    """The v3 Mail Send body for ``message``: one personalization per envelope.

    With a dynamic template, SendGrid renders subject and body from ``template_data``; otherwise
    our rendered subject, text and HTML are sent. ``sandbox``: SendGrid validates, sends nothing.
    """
    templated = message.template_id is not None
    mail = Mail(
        from_email=Email(message.sender.email, message.sender.name or None),
        subject=None if templated else message.subject,
        plain_text_content=None if templated else message.text,
        html_content=None if templated else message.html,
    )
    for position, envelope in enumerate(envelopes):
        personalization = Personalization()
        for address in envelope.to:
            personalization.add_to(To(address.email, address.name or None))
        for address in envelope.cc:
            personalization.add_cc(Cc(address.email, address.name or None))
        for address in envelope.bcc:
            personalization.add_bcc(Bcc(address.email, address.name or None))
        if templated:
            personalization.dynamic_template_data = dict(message.template_data)
        mail.add_personalization(personalization, index=position)  # the helper prepends by default
    if templated:
        mail.template_id = TemplateId(message.template_id)
    if message.reply_to is not None:
        mail.reply_to = ReplyTo(message.reply_to.email, message.reply_to.name or None)
    mail.header = Header("X-Notification-Id", message.notification_id)
    for key, value in message.headers.items():
        mail.header = Header(key, value)
    mail.custom_arg = CustomArg("notification_id", message.notification_id)
    for category in message.categories:
        mail.category = Category(category)
    for attachment in message.attachments:
        mail.add_attachment(
            SendGridAttachment(
                FileContent(base64.b64encode(attachment.data).decode()),
                FileName(attachment.filename),
                FileType(attachment.content_type),
                Disposition("attachment"),
            )
        )
    if sandbox:
        mail.mail_settings = MailSettings(sandbox_mode=SandBoxMode(True))
    return mail.get()


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
    if isinstance(error, HTTPError):
        return error.status_code in TRANSIENT_STATUSES
    return isinstance(error, OSError | http.client.HTTPException)


def _wait_for_rate_limit(retry_state: RetryCallState) -> float | None:
    """On a 429, as long as ``Retry-After`` / ``X-RateLimit-Reset`` say (capped, lightly jittered)."""
    error = retry_state.outcome.exception() if retry_state.outcome else None
    if isinstance(error, HTTPError) and error.status_code == 429:
        reset = _rate_limit_reset(error.headers)
        if reset is not None:
            return min(_MAX_RATE_LIMIT_WAIT, reset) + random.uniform(0, 0.5)
    return None


def _rate_limit_reset(headers: Any) -> float | None:
    """Seconds until SendGrid accepts requests again, from the 429's headers, if they say."""
    if not headers:
        return None
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
# Turning client exceptions into DeliveryError with a message a person can act on.


def _delivery_error(
    error: HTTPError, attempts: int, key_secret: str | None = None, secrets: tuple[str | None, ...] = ()
) -> DeliveryError:
    """``secrets``: what the answer may echo (the key) and the text must never hold."""
    status = error.status_code
    detail = _summarise_body(error.body, secrets)
    transient = status in TRANSIENT_STATUSES
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


def _summarise_body(body: Any, secrets: tuple[str | None, ...] = ()) -> str:
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
    reason = getattr(error, "reason", None)  # urllib.error.URLError wraps the socket error
    if isinstance(reason, BaseException):
        error = reason
    if isinstance(error, TimeoutError):
        detail = str(error)
        return "timed out" if detail in ("", "timed out") else f"timed out: {detail}"
    return f"{type(error).__name__}: {error}"  # scrubbed and cut by the caller
