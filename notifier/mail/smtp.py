"""SMTP delivery for teams not on SendGrid: ``SMTP_URL`` and a password from a secret.

``smtps://[user@]host[:465]`` uses implicit TLS; ``smtp://[user@]host[:587]`` requires STARTTLS,
unless ``?tls=none`` says the relay is local and plain. Replies are classified like SendGrid's
answers: 4xx is transient (retried, then redelivered by the platform), 5xx permanent.
"""

from __future__ import annotations

import smtplib
import ssl
import time
from collections.abc import Callable
from email.policy import SMTP as SMTP_POLICY
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, unquote, urlsplit

from notifier.mail.base import Backend, DeliveryError, Message, Receipt, as_mime
from notifier.mail.retry import RetryingSender
from notifier.mail.scrub import scrub

if TYPE_CHECKING:
    from notifier.config import Settings

_MAX_ERROR_TEXT = 1000  # a relay's replies, quoted in an error text


class SmtpBackend(RetryingSender, Backend):
    name = "smtp"

    def __init__(self, settings: Settings, *, sleep: Callable[[float], None] = time.sleep) -> None:
        url = urlsplit(settings.smtp_url or "")
        self._implicit_tls = url.scheme == "smtps"
        self._starttls = not self._implicit_tls and parse_qs(url.query).get("tls") != ["none"]
        self._host = url.hostname or "localhost"
        self._port = url.port or (465 if self._implicit_tls else 587)
        self._user = unquote(url.username) if url.username else None
        self._password = settings.smtp_password
        self._timeout = settings.sendgrid_timeout
        super().__init__(settings, sleep)

    def send(self, message: Message, *, deadline: float) -> Receipt:
        pending = list(message.envelopes)  # envelopes already accepted are not sent again on retry
        retrying = self._retrying(_is_transient, deadline)
        try:
            retrying(self._deliver, message, pending, deadline)
        except smtplib.SMTPException as error:
            raise _delivery_error(error, retrying.statistics["attempt_number"], (self._password,)) from None
        except OSError as error:
            reason = scrub(f"{type(error).__name__}: {error}", (self._password,), limit=_MAX_ERROR_TEXT)
            raise DeliveryError(
                f"SMTP server {self._host}:{self._port} unreachable: {reason}",
                transient=True,
                attempts=retrying.statistics["attempt_number"],
            ) from None
        return Receipt(
            self.name, f"<{message.notification_id}@storage-notifier>", retrying.statistics["attempt_number"]
        )

    def _deliver(self, message: Message, pending: list, deadline: float) -> None:
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
            while pending:
                envelope = pending[0]
                recipients = [a.email for a in (*envelope.to, *envelope.cc, *envelope.bcc)]
                data = as_mime(message, envelope).as_bytes(policy=SMTP_POLICY)
                connection.sendmail(message.sender.email, recipients, data)
                pending.pop(0)


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
