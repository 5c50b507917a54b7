"""What every delivery backend shares: the message model, the outcome and the error types."""

from __future__ import annotations

import re
import unicodedata
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


OCTET_STREAM = "application/octet-stream"
# RFC 6838 section 4.2 restricted-name: what a media type's type and subtype may be made of.
_RESTRICTED_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_MEDIA_TYPE = re.compile(rf"({_RESTRICTED_NAME})/{_RESTRICTED_NAME}")
# As an attachment these would be read as part of the email itself (multipart/*) or shown inline
# as another email (message/*), and neither may be base64-encoded, as attachments are.
CONTAINER_TYPES = frozenset({"multipart", "message"})
# Unicode categories a reader cannot see, that break a line, or that cannot be encoded: control,
# format (bidi overrides, zero-width), surrogate, private use, unassigned, line and paragraph separator.
_HIDDEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})


def media_type(value: str | None) -> str | None:
    """``type/subtype`` of a Content-Type value, lower-cased and without parameters, when it is a
    valid media type (RFC 6838); None when it is not."""
    essence = (value or "").split(";", 1)[0].strip(" \t")
    return essence.lower() if _MEDIA_TYPE.fullmatch(essence) else None


def attachment_type(value: str | None) -> str:
    """The content type an attachment is sent with: its own when valid and not a container."""
    essence = media_type(value)
    if essence is None or essence.partition("/")[0] in CONTAINER_TYPES:
        return OCTET_STREAM
    return essence


def visible(text: str) -> str:
    """``text`` without the characters in :data:`_HIDDEN_CATEGORIES`."""
    return "".join(ch for ch in text if unicodedata.category(ch) not in _HIDDEN_CATEGORIES)


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file sent with the email. Whoever builds one (objects.py, a replayed dead letter), its
    values are safe in a header: a content type that is not :func:`attachment_type` becomes
    application/octet-stream, and the filename loses invisible characters and line breaks."""

    filename: str  # objects.safe_filename does the rest: no path, no spoofing, bounded
    content_type: str
    data: bytes = field(repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "content_type", attachment_type(self.content_type))
        object.__setattr__(self, "filename", visible(self.filename) or "attachment")


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
        """JSON values, for a dead letter: what was about to be sent, for a person to read. Replay
        never sends it (it renders the event anew), so attachments are described, not stored."""
        values = asdict(replace(self, headers={}, attachments=(), template_data={}))
        values["headers"] = dict(self.headers)
        values["template_data"] = dict(self.template_data)
        values["attachments"] = [
            {"filename": a.filename, "content_type": a.content_type, "size": len(a.data)} for a in self.attachments
        ]
        return values


@dataclass(frozen=True, slots=True)
class Refusal:
    """One recipient the provider refused while it accepted the message for others (SMTP answers
    each RCPT TO on its own)."""

    address: str
    status: int  # the reply code: 4xx transient, 5xx permanent
    reply: str = ""  # the provider's words, scrubbed and bounded: safe to log

    @property
    def transient(self) -> bool:
        return 400 <= self.status < 500


@dataclass(frozen=True, slots=True)
class Receipt:
    """What a backend reports after the provider accepted a message."""

    backend: str
    message_id: str
    attempts: int = 1
    # Recipients who did not get it although others did: permanent refusals, and transient ones
    # still refused when the retries ran out. The pipeline dead-letters it for just them.
    refused: tuple[Refusal, ...] = ()


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
