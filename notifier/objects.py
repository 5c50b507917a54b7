"""What an email can carry about the object itself: a signed download link and its contents.

Only rules that ask for them (``link = "signed"``, ``attach = true``) reach this module, and
google-cloud-storage is imported on first use. Neither ever stops an email: when a link cannot be
signed or an object cannot be attached, the email says so instead.
"""

from __future__ import annotations

import posixpath
import re
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from notifier.mail.base import Attachment

if TYPE_CHECKING:
    from notifier.config import Settings
    from notifier.events import StorageEvent
    from notifier.rules import Rule

_UNSAFE_FILENAME = re.compile(r'[\x00-\x1f\x7f"\\/]+')


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

    def extras(self, event: StorageEvent, rule: Rule) -> Extras:
        if rule.signed_link_ttl is None and rule.attach_max_size is None:
            return NO_EXTRAS
        url, attachments, notes = None, [], []
        if rule.signed_link_ttl is not None and event.kind != "delete":  # a deleted object has nothing to fetch
            try:
                url = self.signed_url(event, rule.signed_link_ttl)
            except Exception as error:  # noqa: BLE001 - the email goes out without the link
                notes.append(f"No download link: {_reason(error)}")
        if rule.attach_max_size is not None:
            attachment, note = self.attachment(event, rule.attach_max_size)
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

        client = self._storage()
        blob = client.bucket(event.bucket).blob(event.name, generation=event.generation)
        options: dict[str, Any] = {"version": "v4", "method": "GET", "expiration": timedelta(seconds=ttl_seconds)}
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

        blob = self._storage().bucket(event.bucket).blob(event.name, generation=event.generation)
        try:
            data = blob.download_as_bytes(end=max_size, timeout=10)  # `end` is inclusive: one byte over
        except gexc.NotFound:
            return None, "Not attached: the object is no longer there."
        except Exception as error:  # noqa: BLE001 - the email goes out without the attachment
            return None, f"Not attached: {_reason(error)}"
        if len(data) > max_size:
            return None, f"Not attached: over the {max_size:,}-byte limit; use the link."
        content_type = event.content_type or "application/octet-stream"
        return Attachment(safe_filename(event.name), content_type.split(";", 1)[0].strip(), data), None

    def _storage(self) -> Any:
        with self._lock:
            if self._client is None:
                from notifier.ledger.gcs import storage_client

                self._client = storage_client(self._settings)
            return self._client


def safe_filename(name: str) -> str:
    """The object's base name, without path, quotes or control characters; never empty."""
    base = posixpath.basename(name.rstrip("/")) or "object"
    cleaned = _UNSAFE_FILENAME.sub("_", base).strip(". ") or "object"
    return cleaned[:200]


def _reason(error: Exception) -> str:
    return f"{type(error).__name__}: {str(error)[:200]}"
