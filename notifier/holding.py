"""An event's notification for a rule with a digest or a cap: held for the digest, or sent now.

:meth:`Holding.hold` decides and writes (one create-if-absent entry; for a cap, first one
single-email slot); the pipeline logs the outcome it returns, or sends the notification as usual
when it returns None.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from notifier import log
from notifier.digest import entry_for, event_time, window_label, window_of
from notifier.ledger import create_digest_store
from notifier.ledger.base import LedgerError
from notifier.ledger.digests import DigestStore
from notifier.outcomes import BATCHED, DUPLICATE, RETRYING
from notifier.rules import Notification

if TYPE_CHECKING:
    from notifier.config import Settings
    from notifier.ledger.base import Ledger


# Events are windowed by their own time; one before this (or none: NO_TIME) is sent at once instead.
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
NO_TIME = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Held:
    """What holding came to: the outcome to log, its words and fields."""

    outcome: str
    reason: str
    fields: dict[str, Any] = field(default_factory=dict)
    misconfigured: bool = False
    digest: dict[str, Any] | None = None  # a held one's group, window and held id, as the history keeps them


class Holding:
    def __init__(self, store: DigestStore) -> None:
        self.store = store

    def hold(self, notification: Notification) -> Held | None:
        """Hold ``notification`` for its digest; None when it is to be sent now (a capped rule's
        first events of the window)."""
        batching = notification.rule.delivery.batching
        assert batching is not None
        when = _own_time(notification)
        if when is None:
            return None
        entry = entry_for(notification, when)
        window_start = datetime.fromtimestamp(window_of(batching, when), UTC)
        fields = {
            "group": entry.group.key, "group_of": entry.group.describe(), "window": window_start.isoformat(),
        }  # fmt: skip
        try:
            if batching.cap is not None and self.store.take_single(
                entry.group, entry.window, entry.notification_id, batching.cap
            ):
                return None
            created = self.store.hold(entry, notification.event.to_dict())
        except LedgerError as error:
            return Held(RETRYING, f"digest store unavailable: {error}", fields, misconfigured=error.misconfigured)
        label = window_label(window_start, datetime.fromtimestamp(entry.window + batching.window, UTC))
        if batching.cap is not None:
            why = f"over max_emails ({batching.cap} per window {label}): held for the window's digest"
        else:
            why = f"held for the digest of {label}"
        if not created:
            return Held(DUPLICATE, f"already {why}", fields)
        return Held(BATCHED, why, fields, digest={"group": entry.group.key, "window": entry.window,
                                                  "held_id": entry.notification_id})  # fmt: skip


def _own_time(notification: Notification) -> datetime | None:
    """The event's own time, which every redelivery carries; None (logged) when it has none we can
    window by: "now" would put a redelivery in another window and send it twice, and a time before
    EARLIEST no store lists. Such an event goes out at once, through the ledger's dedup."""
    when = event_time(notification, NO_TIME)
    if when > EARLIEST:
        return when
    why = "it carries no time" if when == NO_TIME else f"its time {when.isoformat()} is before {EARLIEST.year}"
    log.log(log.get_logger(), logging.WARNING, f"not held for the digest: {why}; sent at once instead",
            notification_id=notification.id, rule=notification.rule.name, reason=why)  # fmt: skip
    return None


def holding_for(settings: Settings, ledger: Ledger, store: DigestStore | None) -> Holding | None:
    """Where rules with a digest or cap hold events: beside the ledger unless a test gave a store;
    a ValueError at start-up when there is nowhere to keep them across restarts."""
    batched = _batched(settings)
    if not batched:
        return None
    store = store or create_digest_store(ledger)
    if store is None:
        raise ValueError(_no_store(batched))
    return Holding(store)


def store_problem(settings: Settings) -> str | None:
    """Why the function would refuse to start for want of a digest store (what ``check-config``
    reports, and ``flush``/``pending``); None when no rule holds events or the settings give one."""
    batched = _batched(settings)
    if not batched or settings.state_bucket is not None or settings.ledger_file is not None:
        return None
    return _no_store(batched)


def _batched(settings: Settings) -> list[str]:
    return [rule.name for rule in settings.rules.rules if rule.delivery.batching is not None]


def _no_store(batched: list[str]) -> str:
    return (
        f"rule(s) {', '.join(batched)}: digest and max_emails hold events until a flush sends them, which"
        " needs a state bucket (NOTIFY_STATE_BUCKET; deploy/setup.sh --state-bucket) or, locally, a ledger"
        " file (NOTIFY_LEDGER_FILE)"
    )
