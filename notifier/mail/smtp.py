"""SMTP delivery for teams not on SendGrid: ``SMTP_URL`` and a password from a secret.

``smtps://[user@]host[:465]`` uses implicit TLS; ``smtp://[user@]host[:587]`` requires STARTTLS,
unless ``?tls=none`` says the relay is local and plain. Replies are classified like SendGrid's
answers: 4xx is transient (retried, then redelivered by the platform), 5xx permanent. A recipient
refused while others were accepted is retried alone (4xx) and reported in the receipt, never
failing the message for those who got it; so is everyone a later failure (a retry's connection
refused or dropped, a later copy's) leaves without it, once anyone has it.
"""

from __future__ import annotations

import re
import smtplib
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.policy import SMTP as SMTP_POLICY
from pathlib import Path
from typing import Self
from urllib.parse import parse_qs, unquote, urlsplit

from notifier import envvars
from notifier.mail.base import Backend, DeliveryError, Envelope, Message, Receipt, Refusal, as_mime
from notifier.mail.retry import RetryingSender, RetrySettings
from notifier.mail.scrub import scrub

_MAX_ERROR_TEXT = 1000  # a relay's replies, quoted in an error text
_MAX_REPLY_TEXT = 200  # one refused recipient's reply
_URL = re.compile(r"smtps?://(?:[^@/\s]+@)?[^:/\s@?]+(?::\d{1,5})?/?(?:\?tls=none)?")


@dataclass(frozen=True, slots=True)
class SmtpSettings:
    """The SMTP variables, read and checked at start-up (their form whatever the backend)."""

    url: str  # SMTP_URL: smtp://[user@]host[:port] (STARTTLS), smtps://... (implicit TLS)
    password: str = field(repr=False)  # SMTP_PASSWORD, from Secret Manager
    timeout: float  # SMTP_TIMEOUT_SECONDS, else SENDGRID_TIMEOUT_SECONDS: connecting, and each reply

    @classmethod
    def from_env(cls, env: Mapping[str, str], problems: list[str], *, deployed: bool, chosen: bool) -> Self:
        url = envvars.text(env, "SMTP_URL")
        if not url and chosen:
            problems.append("SMTP_URL: required when NOTIFY_BACKEND is smtp (smtp://user@host:587 or smtps://host:465)")
        credentials = _credentials(url)
        if credentials and url.startswith(("smtp://", "smtps://")):
            problems.append("SMTP_URL: holds a password; put it in SMTP_PASSWORD (from Secret Manager) instead")
        if url and not _URL.fullmatch(url):
            problems.append(f"SMTP_URL: expected smtp://[user@]host[:port] or smtps://..., got {masked_url(url)!r}")
        # SMTP deployments set SENDGRID_TIMEOUT_SECONDS before SMTP_TIMEOUT_SECONDS existed. SendGrid's
        # settings report it when it is unusable (it is theirs), so its problems are not kept here.
        fallback = envvars.positive_number(env, "SENDGRID_TIMEOUT_SECONDS", [], 10.0)
        return cls(
            url=url,
            password=envvars.text(env, "SMTP_PASSWORD"),  # stripped like the key: echo adds "\n"
            timeout=envvars.positive_number(env, "SMTP_TIMEOUT_SECONDS", problems, fallback),
        )

    @property
    def secrets(self) -> tuple[str, ...]:
        return (self.password,) if self.password else ()

    @property
    def local_dir(self) -> Path | None:
        return None


def _credentials(url: str) -> tuple[int, int] | None:
    """Where a user and password may be in ``url``: from after its "//" (from its start without
    one) to its LAST "@", since a password may hold "@", ":" or "/"; None when no ":" there says
    there is no password."""
    end = url.rfind("@")
    slashes = url.find("//", 0, max(end, 0))
    start = slashes + 2 if slashes >= 0 else 0
    return (start, end) if end >= 0 and ":" in url[start:end] else None


def masked_url(url: str) -> str:
    """``url`` as a message may show it: user and password, when there is a password, as ***."""
    credentials = _credentials(url)
    return url if credentials is None else f"{url[: credentials[0]]}***{url[credentials[1] :]}"


class SmtpBackend(RetryingSender, Backend):
    name = "smtp"

    def __init__(
        self, settings: SmtpSettings, retry: RetrySettings, *, sleep: Callable[[float], None] = time.sleep
    ) -> None:
        url = urlsplit(settings.url)
        self._implicit_tls = url.scheme == "smtps"
        self._starttls = not self._implicit_tls and parse_qs(url.query).get("tls") != ["none"]
        self._host = url.hostname or "localhost"
        self._port = url.port or (465 if self._implicit_tls else 587)
        self._user = unquote(url.username) if url.username else None
        self._password = settings.password
        self._timeout = settings.timeout
        super().__init__(retry, sleep)

    def send(self, message: Message, *, deadline: float) -> Receipt:
        progress = _Progress([(e, [a.email for a in (*e.to, *e.cc, *e.bcc)]) for e in message.envelopes])
        retrying = self._retrying(_is_transient, deadline)
        try:
            retrying(self._deliver, message, progress, deadline)
        except smtplib.SMTPRecipientsRefused:
            pass  # raised by _deliver for the retry: every refusal is in progress.refused
        except Exception as error:  # noqa: BLE001 - once some have it, no failure may undo that
            if not progress.accepted:
                raise self._failure(error, retrying.statistics["attempt_number"]) from None
            # Raising would dead-letter or redeliver it for everyone, those who have it included:
            # the recipients it did not reach yet are reported as refused, with the final answer.
            progress.give_up(*_final_answer(error))
        attempts = retrying.statistics["attempt_number"]
        if progress.refused and not progress.accepted:  # nobody got it: one error for the whole message
            raise _delivery_error(smtplib.SMTPRecipientsRefused(progress.refused), attempts, (self._password,))
        refused = tuple(_refusal(address, *answer, (self._password,)) for address, answer in progress.refused.items())
        return Receipt(self.name, f"<{message.notification_id}@storage-notifier>", attempts, refused)

    def _failure(self, error: Exception, attempts: int) -> Exception:
        """What ``send`` raises when the message reached nobody: a DeliveryError, or a bug as it is."""
        if isinstance(error, smtplib.SMTPException):
            return _delivery_error(error, attempts, (self._password,))
        if isinstance(error, OSError):
            reason = scrub(f"{type(error).__name__}: {error}", (self._password,), limit=_MAX_ERROR_TEXT)
            return DeliveryError(
                f"SMTP server {self._host}:{self._port} unreachable: {reason}", transient=True, attempts=attempts
            )
        return error

    def _deliver(self, message: Message, progress: _Progress, deadline: float) -> None:
        timeout = max(1.0, min(self._timeout, deadline - time.monotonic()))
        context = ssl.create_default_context()
        if self._implicit_tls:
            connection: smtplib.SMTP = smtplib.SMTP_SSL(self._host, self._port, timeout=timeout, context=context)
        else:
            connection = smtplib.SMTP(self._host, self._port, timeout=timeout)
        with connection:
            if self._starttls:
                connection.starttls(context=context)
            if self._user:
                connection.login(self._user, self._password)
            progress.pending.extend(progress.retry)  # the last attempt's transient refusals, again
            progress.retry.clear()
            while progress.pending:
                envelope, recipients = progress.pending[0]
                data = as_mime(message, envelope).as_bytes(policy=SMTP_POLICY)  # headers name everyone
                try:  # sendmail raises only when it refuses every recipient, else returns the refused
                    refused = connection.sendmail(message.sender.email, recipients, data)
                except smtplib.SMTPRecipientsRefused as error:
                    refused = error.recipients
                progress.pending.pop(0)
                progress.record(envelope, recipients, refused)
        if progress.retry:  # tenacity retries this (4xx only), for these recipients alone
            raise smtplib.SMTPRecipientsRefused({a: progress.refused[a] for _, r in progress.retry for a in r})


@dataclass
class _Progress:
    """One send's state across its attempts: the copies still to send, each with the recipients
    still to get it; those to try again (4xx); how many got it; who was refused and how."""

    pending: list[tuple[Envelope, list[str]]]
    retry: list[tuple[Envelope, list[str]]] = field(default_factory=list)
    accepted: int = 0
    refused: dict[str, tuple[int, bytes]] = field(default_factory=dict)

    def record(self, envelope: Envelope, recipients: list[str], refused: dict[str, tuple[int, bytes]]) -> None:
        for address in recipients:
            if address in refused:
                self.refused[address] = refused[address]
            else:
                self.refused.pop(address, None)  # accepted on a retry
                self.accepted += 1
        again = [a for a in recipients if a in refused and 400 <= refused[a][0] < 500]
        if again:
            self.retry.append((envelope, again))

    def give_up(self, code: int, reply: bytes) -> None:
        """The send failed for good: everyone not yet accepted is refused with this answer."""
        for _, recipients in (*self.pending, *self.retry):
            for address in recipients:
                self.refused[address] = (code, reply)
        self.pending.clear()
        self.retry.clear()


def _refusal(address: str, code: int, reply: bytes, secrets: tuple[str | None, ...]) -> Refusal:
    text = scrub(reply.decode(errors="replace"), secrets, limit=_MAX_REPLY_TEXT)
    return Refusal(address, code, text)


def _final_answer(error: Exception) -> tuple[int, bytes]:
    """The reply code and text a failure leaves the recipients it did not reach with. Without a
    reply, a lost connection counts as 421 (RFC 5321: the server closes the channel; transient)
    and anything else as 554 (transaction failed; permanent): replay sends it to them."""
    if isinstance(error, smtplib.SMTPResponseException):
        reply = error.smtp_error if isinstance(error.smtp_error, bytes) else str(error.smtp_error).encode()
        return error.smtp_code, reply
    code = 421 if isinstance(error, OSError) else 554  # smtplib's errors are OSErrors too
    return code, f"no reply: {type(error).__name__}: {error}".encode()


def _codes(error: BaseException) -> list[int]:
    if isinstance(error, smtplib.SMTPRecipientsRefused):
        return [code for code, _ in error.recipients.values()]
    code = getattr(error, "smtp_code", None)
    return [code] if isinstance(code, int) else []


def _is_transient(error: BaseException) -> bool:
    codes = _codes(error)
    if codes:
        return all(400 <= code < 500 for code in codes)
    # Disconnects, timeouts and refused connections: the server may be back in a moment.
    return isinstance(error, smtplib.SMTPServerDisconnected | OSError)


def _delivery_error(error: smtplib.SMTPException, attempts: int, secrets: tuple[str | None, ...] = ()) -> DeliveryError:
    """``secrets``: what a relay may echo in its replies (the password, even base64 from AUTH) and
    the text must never hold."""
    codes = _codes(error)
    transient = _is_transient(error)
    if isinstance(error, smtplib.SMTPAuthenticationError):
        what = "the SMTP server refused the login: check the user in SMTP_URL and the SMTP_PASSWORD secret"
    elif isinstance(error, smtplib.SMTPRecipientsRefused):
        what = "the SMTP server refused recipients: " + "; ".join(
            f"{address}: {code} {reply.decode(errors='replace')}" for address, (code, reply) in error.recipients.items()
        )
    else:
        reply = getattr(error, "smtp_error", b"")
        reply = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply or error)
        what = f"the SMTP server answered {codes[0] if codes else ''} {reply}".strip()
    what = scrub(what, secrets, limit=_MAX_ERROR_TEXT)
    if transient:
        what += f" (after {attempts} attempt(s))"
    return DeliveryError(what, transient=transient, status=codes[0] if codes else None, attempts=attempts)
