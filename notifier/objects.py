"""What an email can carry about the object itself: a signed download link and its contents.

Only rules that ask for them (``link = "signed"``, ``attach = true``) reach this module, and
google-cloud-storage is imported on first use. Neither ever stops an email: when a link cannot be
signed or an object cannot be attached, the email says so instead.
"""

from __future__ import annotations

import logging
import posixpath
import re
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from notifier.mail.base import OCTET_STREAM, Attachment, attachment_type, media_type, visible

if TYPE_CHECKING:
    from notifier.config import Settings
    from notifier.events import StorageEvent
    from notifier.rules import Delivery

# Path separators, quotes, and '?', without which no RFC 2047 encoded word ("=?utf-8?q?...?=", which
# mail clients decode, hidden characters and all) can be spelled.
_UNSAFE_IN_FILENAME = re.compile(r'["\\/?]')
_SPACES = re.compile(r"\s+")  # a run of spaces can push the real extension out of sight
# Characters that show as nothing although they are not format characters: Hangul fillers, braille
# blank, combining grapheme joiner, Khmer inherent vowels, Mongolian and other variation selectors.
_BLANK_LETTERS = dict.fromkeys(
    [*map(ord, "\u115f\u1160\u3164\uffa0\u2800\u034f\u17b4\u17b5"), *range(0x180B, 0x1810),
     *range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0)]
)  # fmt: skip
FILENAME_BYTES = 200  # well under the 255-byte file name limit of common file systems
_EXTENSION_BYTES = 16  # longer than any real extension: past it, the tail is just more name
_PREVIEW_CHARACTERS = 80
DOWNLOAD_TIMEOUT = 10.0  # the longest an attachment's download waits for an answer (as before issue 14)
DOWNLOAD_RETRY_SECONDS = 8.0  # and how long its retries may go on


@dataclass(frozen=True, slots=True)
class Extras:
    """What the templates show beyond the event: a download link, attachments, and notes."""

    download_url: str | None = None
    attachments: tuple[Attachment, ...] = ()
    notes: tuple[str, ...] = field(default=())

    def as_context(self) -> dict[str, Any]:
        return {
            "download_url": self.download_url,
            "attachments": [{"filename": a.filename, "size": len(a.data)} for a in self.attachments],
            "notes": list(self.notes),
        }


NO_EXTRAS = Extras()


class ObjectAccess:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: Any = None
        self._lock = threading.Lock()

    def extras(self, event: StorageEvent, delivery: Delivery) -> Extras:
        if delivery.signed_link_ttl is None and delivery.attach_max_size is None:
            return NO_EXTRAS
        url, attachments, notes = None, [], []
        if delivery.signed_link_ttl is not None and event.kind != "delete":  # a deleted object has nothing to fetch
            try:
                url = self.signed_url(event, delivery.signed_link_ttl)
            except Exception as error:  # noqa: BLE001 - the email goes out without the link
                _log_failure("no download link", event, error)
                notes.append(_NO_LINK)
        if delivery.attach_max_size is not None:
            attachment, note = self.attachment(event, delivery.attach_max_size)
            attachments += [attachment] if attachment else []
            notes += [note] if note else []
        return Extras(url, tuple(attachments), tuple(notes))

    def signed_url(self, event: StorageEvent, ttl_seconds: float) -> str:
        """A V4 signed GET URL for this generation of the object.

        With a service-account key the URL is signed locally; with the metadata-server credentials
        of Cloud Run functions (no key) it is signed through the IAM signBlob API, which needs the
        runtime service account to hold roles/iam.serviceAccountTokenCreator on itself.
        """
        from google.auth import credentials as auth_credentials
        from google.auth.transport.requests import Request

        from notifier.config import DEFAULT_STORAGE_ENDPOINT

        if self._settings.storage_emulator_host:  # fake-gcs-server (make sandbox) checks no signature
            return _emulator_download_url(self._settings.storage_emulator_host, event)
        client = self._storage()
        blob = client.bucket(event.bucket).blob(event.name, generation=event.generation)
        options: dict[str, Any] = {"version": "v4", "method": "GET", "expiration": timedelta(seconds=ttl_seconds),
                                   "api_access_endpoint": DEFAULT_STORAGE_ENDPOINT}  # fmt: skip
        # ^ the recipient's link: public Cloud Storage, never the function's private endpoint
        if event.generation is not None:  # the version the email is about, not whatever is live later
            options["generation"] = event.generation
        credentials = client._credentials
        if not isinstance(credentials, auth_credentials.Signing):
            if not credentials.valid:
                credentials.refresh(Request())
            options.update(service_account_email=credentials.service_account_email, access_token=credentials.token)
        return blob.generate_signed_url(**options)

    def attachment(self, event: StorageEvent, max_size: int) -> tuple[Attachment | None, str | None]:
        """The object's bytes as an attachment, or why not (in words for the email)."""
        if event.kind == "delete":
            return None, "Not attached: the object was deleted."
        if event.size is not None and event.size > max_size:
            return None, f"Not attached: {event.size:,} bytes is over the {max_size:,}-byte limit; use the link."
        from google.api_core import exceptions as gexc

        from notifier.ledger.base import before_send

        blob = self._storage().bucket(event.bucket).blob(event.name, generation=event.generation)
        try:
            with before_send():  # half the time left before the send, at most: the email without it beats none
                options = call_options(DOWNLOAD_TIMEOUT, share=0.5)
            data = blob.download_as_bytes(end=max_size, **options)  # `end` is inclusive: one byte over
        except gexc.NotFound:
            return None, "Not attached: the object is no longer there."
        except Exception as error:  # noqa: BLE001 - the email goes out without the attachment
            _log_failure("not attached", event, error)
            return None, "Not attached: the object could not be read; the function's log says why."
        if len(data) > max_size:
            return None, f"Not attached: over the {max_size:,}-byte limit; use the link."
        return Attachment(safe_filename(event.name), attachment_type(event.content_type), data), _type_note(event)

    def _storage(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = storage_client(self._settings)
            return self._client


def storage_client(settings: Settings) -> Any:
    """A google-cloud-storage client: the first link or attachment pays for its import."""
    from google.cloud import storage

    from notifier.config import DEFAULT_STORAGE_ENDPOINT

    if settings.storage_emulator_host:  # tests, the sandbox and chaos runs against fake-gcs-server
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project="local", credentials=AnonymousCredentials())
    if settings.storage_endpoint != DEFAULT_STORAGE_ENDPOINT:  # Private Service Connect: downloads go there too
        return storage.Client(client_options={"api_endpoint": settings.storage_endpoint})
    return storage.Client()


def call_options(timeout: float, *, share: float = 1.0) -> dict[str, Any]:
    """``timeout`` and ``retry`` for one download made now: the fixed limits (``timeout`` a request,
    DOWNLOAD_RETRY_SECONDS of retries), cut so that it ends by the delivery's state deadline if one
    is set, using at most ``share`` of the time left. A retry starts only while a whole request
    still fits; with no time left, the call is not made."""
    from google.cloud.storage import retry as storage_retry

    from notifier.ledger.bucket import call_limits

    limits = call_limits(timeout, DOWNLOAD_RETRY_SECONDS, share=share)
    retrying = max(0.0, limits.ends_by - time.monotonic() - limits.timeout)  # 0: the first failure is final
    return {"retry": storage_retry.DEFAULT_RETRY.with_timeout(retrying), "timeout": limits.timeout}


def safe_filename(name: str) -> str:
    """The object's base name as a recipient should see it: no path, quotes, encoded words, invisible
    characters (bidi overrides, zero-width, controls, line separators), runs of spaces, or leading
    and trailing dots; at most :data:`FILENAME_BYTES` of UTF-8 with its extension kept; never empty."""
    base = posixpath.basename(unicodedata.normalize("NFC", name).rstrip("/"))
    cleaned = _SPACES.sub(" ", visible(base).translate(_BLANK_LETTERS))
    cleaned = _UNSAFE_IN_FILENAME.sub("_", cleaned).strip(". ")
    return _within_bytes(cleaned, FILENAME_BYTES) or "object"


def _within_bytes(filename: str, limit: int) -> str:
    """``filename`` cut to ``limit`` UTF-8 bytes, on a character boundary, before its extension."""
    if len(filename.encode()) <= limit:
        return filename
    extension = posixpath.splitext(filename)[1]
    if len(extension.encode()) > _EXTENSION_BYTES:
        extension = ""
    stem = filename[: len(filename) - len(extension)]
    budget = limit - len(extension.encode())
    return stem.encode()[:budget].decode("utf-8", "ignore").rstrip(". ") + extension


def _type_note(event: StorageEvent) -> str | None:
    """Why the attachment goes as application/octet-stream rather than as the event's type, if so."""
    given = event.content_type
    essence = media_type(given)
    if not given or essence == OCTET_STREAM or attachment_type(given) != OCTET_STREAM:
        return None  # no type, or one that is kept: nothing to explain
    why = "is not a valid media type"
    if essence is not None:  # valid, but a container
        why = "would be read as part of this email rather than as a file"
    return f'Attached as {OCTET_STREAM}: the object\'s content type "{_preview(given)}" {why}.'


def _preview(value: str) -> str:
    """A value as one safe line of ASCII: line breaks and other characters escaped, and capped."""
    escaped = value.encode("unicode_escape").decode("ascii")
    return escaped if len(escaped) <= _PREVIEW_CHARACTERS else escaped[: _PREVIEW_CHARACTERS - 1] + "…"


# The email says what a recipient can do; what went wrong, in the program's words, goes to the log.
_NO_LINK = (
    "No download link: it could not be signed (the runtime service account needs"
    " roles/iam.serviceAccountTokenCreator on itself: deploy/setup.sh --bucket); the function's log says why."
)


def _log_failure(what: str, event: StorageEvent, error: Exception) -> None:
    from notifier.log import get_logger, log

    log(get_logger(), logging.WARNING, f"{what}: {event.gs_uri}: {type(error).__name__}: {str(error)[:200]}",
        bucket=event.bucket, object=event.name, error=type(error).__name__)  # fmt: skip


def _emulator_download_url(host: str, event: StorageEvent) -> str:
    """The object's media URL on a local emulator: what a signed link leads to, without the signature."""
    url = f"{host.rstrip('/')}/download/storage/v1/b/{quote(event.bucket, safe='')}/o/{quote(event.name, safe='')}"
    return url + "?alt=media" + (f"&generation={event.generation}" if event.generation is not None else "")
