"""Who hears about an event: :func:`route` turns a :class:`StorageEvent` into notifications.

For now every event goes to the configured ``NOTIFY_TO`` list under one rule, ``default``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from notifier.config import Address, Settings
from notifier.events import StorageEvent

DEFAULT_RULE = "default"


@dataclass(frozen=True, slots=True)
class Notification:
    """One email to send about one event."""

    id: str
    event: StorageEvent
    rule: str
    sender: Address
    recipients: tuple[Address, ...]


def route(event: StorageEvent, settings: Settings) -> list[Notification]:
    return [_notification(event, DEFAULT_RULE, settings.sender, settings.recipients)]


def notification_id(event: StorageEvent, recipients: tuple[Address, ...]) -> str:
    """Stable across redeliveries of the same event: same event id and recipients, same id."""
    key = "\n".join([event.event_id, *sorted(a.email.lower() for a in recipients)])
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _notification(
    event: StorageEvent, rule: str, sender: Address, recipients: tuple[Address, ...]
) -> Notification:
    return Notification(notification_id(event, recipients), event, rule, sender, recipients)
