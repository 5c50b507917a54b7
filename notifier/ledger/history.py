"""What became of each notification after the ledger's claim, and the delivery events SendGrid
reported for it: the names of :mod:`.history_records` (Sending, DeliveryEvent, History,
MemoryHistory, object_key, window_key, ...) and :func:`create_history`, which picks the store.

The stores (:mod:`.sqlite_history`, :mod:`.gcs_history`) import :mod:`.history_records`, never this
module: this one imports them (lazily), and a cycle would be one in the design.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from notifier.ledger.history_records import (
    DELIVERY_EVENTS,
    MAX_ERROR,
    MAX_EVENTS_PER_NOTIFICATION,
    MAX_MEMORY_SENDINGS,
    MAX_RECIPIENTS_KEPT,
    MAX_SENDINGS_PER_OBJECT,
    MAX_TEXT,
    NOTIFICATION_ID,
    DeliveryEvent,
    History,
    MemoryHistory,
    Sending,
    filing_keys,
    notification_sending,
    object_key,
    utc_text,
    window_key,
)

if TYPE_CHECKING:
    from notifier.ledger.base import Ledger

__all__ = [
    "DELIVERY_EVENTS",
    "MAX_ERROR",
    "MAX_EVENTS_PER_NOTIFICATION",
    "MAX_MEMORY_SENDINGS",
    "MAX_RECIPIENTS_KEPT",
    "MAX_SENDINGS_PER_OBJECT",
    "MAX_TEXT",
    "NOTIFICATION_ID",
    "DeliveryEvent",
    "History",
    "MemoryHistory",
    "Sending",
    "create_history",
    "filing_keys",
    "notification_sending",
    "object_key",
    "utc_text",
    "window_key",
]


def create_history(ledger: Ledger) -> History:
    """The history beside ``ledger``: in the state bucket, in the SQLite ledger's file, or in memory."""
    # By name, as create_digest_store: importing the other stores' modules would cost every cold start.
    if ledger.name == "gcs":
        from notifier.ledger.gcs_history import GcsHistory

        return GcsHistory(ledger.bucket)  # type: ignore[attr-defined]
    if ledger.name == "sqlite":
        from notifier.ledger.sqlite_history import SqliteHistory

        return SqliteHistory(ledger.path)  # type: ignore[attr-defined]
    return MemoryHistory()
