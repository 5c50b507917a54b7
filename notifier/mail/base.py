"""What every delivery backend shares: the message model, the outcome and the error types."""

from __future__ import annotations

import base64
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from email.message import EmailMessage
from email.utils import formatdate
from types import MappingProxyType
from typing import Any

from notifier.addresses import Address


@dataclass(frozen=True, slots=True)
class Envelope:
    """One copy of a message: its recipients see each other (except Bcc), not other envelopes."""

    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()

    @property
    def count(self) -> int:
        return len(self.to) + len(self.cc) + len(self.bcc)


@dataclass(frozen=True, slots=True)
class Attachment:
    filename: str  # already safe: no path, no line breaks
    content_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class Message:
    """A rendered email, independent of any provider. Header values are already single-line."""

    sender: Address
    envelopes: tuple[Envelope, ...]
    subject: str
    text: str
    html: str
    notification_id: str
    categories: tuple[str, ...]
    reply_to: Address | None = None
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    attachments: tuple[Attachment, ...] = ()
    # A provider-side template (SendGrid dynamic template) and the data it is rendered with.
    template_id: str | None = None
    template_data: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def recipient_count(self) -> int:
        return sum(e.count for e in self.envelopes)

    def to_dict(self) -> dict[str, Any]:
        """JSON values, for dead letters; :meth:`from_dict` reverses it."""
        values = asdict(replace(self, headers={}, attachments=(), template_data={}))
        values["headers"] = dict(self.headers)
        values["template_data"] = dict(self.template_data)
        values["attachments"] = [
            {"filename": a.filename, "content_type": a.content_type, "data": base64.b64encode(a.data).decode()}
            for a in self.attachments
        ]
        return values

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> Message:
        def address(value: dict[str, str] | None) -> Address | None:
            return Address(**value) if value else None

        def addresses(values: list[dict[str, str]]) -> tuple[Address, ...]:
            return tuple(Address(**v) for v in values)

        return cls(
            sender=Address(**values["sender"]),
            envelopes=tuple(
                Envelope(addresses(e["to"]), addresses(e["cc"]), addresses(e["bcc"])) for e in values["envelopes"]
            ),
            subject=values["subject"],
            text=values["text"],
            html=values["html"],
            notification_id=values["notification_id"],
            categories=tuple(values["categories"]),
            reply_to=address(values.get("reply_to")),
            headers=MappingProxyType(dict(values.get("headers") or {})),
            attachments=tuple(
                Attachment(a["filename"], a["content_type"], base64.b64decode(a["data"]))
                for a in values.get("attachments") or ()
            ),
            template_id=values.get("template_id"),
            template_data=MappingProxyType(dict(values.get("template_data") or {})),
        )


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a backend reports after the provider accepted a message."""

    backend: str
    message_id: str
    attempts: int = 1


class DeliveryError(Exception):
    """The provider did not accept the message.

    ``transient`` says whether trying again later may succeed (rate limit, outage, timeout); a
    permanent error (bad request, bad key) needs a person. ``detail`` is safe to log.
    """

    def __init__(
        self, message: str, *, transient: bool, status: int | None = None, detail: str = "", attempts: int = 1
    ) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status
        self.detail = detail
        self.attempts = attempts


class Backend(ABC):
    """Delivers :class:`Message` objects. One instance per function instance; thread-safe."""

    name: str

    @abstractmethod
    def send(self, message: Message, *, deadline: float) -> Receipt:
        """Deliver ``message`` before ``deadline`` (a ``time.monotonic()`` value) or raise
        :class:`DeliveryError`."""


def as_mime(message: Message, envelope: Envelope) -> EmailMessage:
    """One envelope's copy of ``message`` as an RFC 5322 email (multipart/alternative: text first,
    then HTML). Bcc recipients are not written into the headers, as a mail server would not."""
    mime = EmailMessage()
    mime["From"] = str(message.sender)
    if envelope.to:
        mime["To"] = ", ".join(str(a) for a in envelope.to)
    if envelope.cc:
        mime["Cc"] = ", ".join(str(a) for a in envelope.cc)
    if message.reply_to is not None:
        mime["Reply-To"] = str(message.reply_to)
    mime["Subject"] = message.subject
    mime["Date"] = formatdate(localtime=False, usegmt=True)
    mime["Message-ID"] = f"<{message.notification_id}@storage-notifier>"
    mime["X-Notification-Id"] = message.notification_id
    mime["X-Categories"] = ", ".join(message.categories)
    for key, value in message.headers.items():
        mime[key] = value
    mime.set_content(message.text, cte="quoted-printable")
    mime.add_alternative(message.html, subtype="html", cte="quoted-printable")
    for attachment in message.attachments:
        maintype, _, subtype = attachment.content_type.partition("/")
        mime.add_attachment(
            attachment.data, maintype=maintype or "application", subtype=subtype or "octet-stream",
            filename=attachment.filename,
        )  # fmt: skip
    return mime
