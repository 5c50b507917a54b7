"""What every delivery backend shares: the message model, the outcome and the error types."""

from __future__ import annotations

import base64
import functools
import html
import json
import re
import unicodedata
from abc import ABC, abstractmethod
from collections.abc import Iterable, Mapping
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


REDACTED = "[redacted]"
_HARMLESS_PREFIX = 8  # this many characters of a secret, from its start, tell nothing worth hiding


def scrub(text: str, secrets: Iterable[str | None], *, limit: int | None = None) -> str:
    """``text`` with every trace of ``secrets`` replaced by ``[redacted]``, then cut to ``limit``.

    A provider, or a proxy in between, may echo our request in an error body, so a secret can come
    back as is, JSON- or HTML-escaped, percent-encoded, base64-encoded (``Basic`` credentials, SMTP
    ``AUTH PLAIN``) or cut short: any run of more than 8 of its characters from its start counts.
    Redacting before the cut, and again after it, leaves no prefix of a secret at the cut.
    """
    pattern = _traces(tuple(sorted({secret for secret in secrets if secret})))
    if pattern is not None:
        text = pattern.sub(REDACTED, text)
    if limit is not None and len(text) > limit:
        text = _cut(text, limit)
        if pattern is not None:
            text = pattern.sub(REDACTED, text)
    return text


def _cut(text: str, limit: int) -> str:
    """The first ``limit`` characters; a ``[redacted]`` the cut would split is kept whole."""
    marker = text.find(REDACTED, max(0, limit - len(REDACTED) + 1))
    return text[:marker] + REDACTED if 0 <= marker < limit else text[:limit]


@functools.lru_cache(maxsize=16)
def _traces(secrets: tuple[str, ...]) -> re.Pattern[str] | None:
    spellings = [[_character(c) for c in secret] for secret in secrets]
    spellings += [[re.escape(c) for c in core] for secret in secrets for core in _base64_cores(secret)]
    if not spellings:
        return None
    return re.compile("|".join(_from_the_start(tokens) for tokens in spellings))


def _from_the_start(tokens: list[str]) -> str:
    """The first tokens (more than the harmless prefix) must all match; the rest extend the match.
    Flat optional groups, not nested ones, so a long password cannot exhaust the regex compiler;
    at worst a few characters after a real leak are redacted too."""
    head, tail = tokens[: _HARMLESS_PREFIX + 1], tokens[_HARMLESS_PREFIX + 1 :]
    return "".join(head) + "".join(f"(?:{token})?" for token in tail)


def _character(char: str) -> str:
    """One character of a secret as a regex: itself, or any escape an echo may have applied."""
    encoded = char.encode("utf-8", "surrogatepass")
    escapes = {
        json.dumps(char)[1:-1],
        f"&#{ord(char)};",
        f"&#x{ord(char):x};",
        html.escape(char),
        "".join(f"%{byte:02x}" for byte in encoded),
    }
    if ord(char) < 0x10000:
        escapes.add(f"\\u{ord(char):04x}")
    escapes |= {"/": {"\\/"}, " ": {"+"}}.get(char, set())
    escapes.discard(char)
    alternatives = [re.escape(char)] + [f"(?i:{re.escape(e)})" for e in sorted(escapes, key=len, reverse=True)]
    return f"(?:{'|'.join(alternatives)})"


def _base64_cores(secret: str) -> set[str]:
    """What base64 of any text holding ``secret`` always contains, wherever the secret starts
    within base64's 3-byte groups: the groups made of the secret's bytes alone."""
    data = secret.encode("utf-8", "surrogatepass")
    cores = set()
    for shift in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            encoded = encode(b"\0" * shift + data).decode()
            end = len(encoded) if (shift + len(data)) % 3 == 0 else len(encoded) - 4
            core = encoded[4 if shift else 0 : end]
            if len(core) > _HARMLESS_PREFIX + 3:  # shorter cores would match innocent base64
                cores.add(core)
    return cores


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
