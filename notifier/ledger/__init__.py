"""Delivery state: which notifications were claimed, sent or dead-lettered, and the dead letters.

One small interface, three places it can live: the state bucket (:mod:`.gcs`, shared by every
instance and deployment), an SQLite file (:mod:`.sqlite`, local runs) and memory (:mod:`.memory`,
one instance). This package is the only code that knows where state lives.

A notification is *claimed* before it is sent: exactly one delivery of it wins the claim. The
claim is a lease, so one left behind by a crashed instance can be taken over once it expires.
"""

from __future__ import annotations

import json
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from notifier.config import Settings


class ClaimStatus(Enum):
    CLAIMED = "claimed"  # ours: send it, then mark_sent / release / mark_dead
    SENT = "sent"  # an earlier delivery sent it
    BUSY = "busy"  # another delivery holds a live lease right now
    DEAD = "dead"  # an earlier delivery dead-lettered it; only `replay` sends it again


@dataclass(frozen=True, slots=True)
class Claim:
    notification_id: str
    status: ClaimStatus
    token: str = ""  # identifies our claim, so we only ever change our own record
    message_id: str = ""  # SendGrid's id when status is SENT
    version: Any = None  # the store's version of the record we hold (GCS generation, row token)


class LedgerError(Exception):
    """The state store could not be read or written; retrying later may succeed.

    ``misconfigured``: it will keep failing until someone fixes the setting or permission the
    message names (logged as an ERROR, not a passing WARNING).
    """

    def __init__(self, message: str, *, misconfigured: bool = False) -> None:
        super().__init__(message)
        self.misconfigured = misconfigured


def held_status(record: dict[str, Any], now: float, *, replay: bool) -> Claim | None:
    """What an existing ledger record means for a new claim: a Claim to return as it is (sent,
    dead, or busy), or None when the claim may be taken (expired lease, or a dead letter being
    replayed). Every store decides with this one function."""
    state, notification_id = record.get("state"), record.get("notification_id", "")
    if state == "sent":
        return Claim(notification_id, ClaimStatus.SENT, message_id=record.get("message_id", ""))
    if state == "dead" and not replay:
        return Claim(notification_id, ClaimStatus.DEAD)
    if state == "claimed" and record.get("lease_until", 0) > now:
        return Claim(notification_id, ClaimStatus.BUSY)
    return None


class Ledger(ABC):
    name: str

    @abstractmethod
    def claim(self, notification_id: str, *, lease_seconds: float, replay: bool = False) -> Claim:
        """Claim a notification. ``replay`` also takes over a dead-lettered one."""

    @abstractmethod
    def mark_sent(self, claim: Claim, message_id: str) -> None:
        """The provider accepted the message: later deliveries are duplicates."""

    @abstractmethod
    def release(self, claim: Claim) -> None:
        """Sending failed transiently: the next delivery may claim it at once."""

    @abstractmethod
    def mark_dead(self, claim: Claim) -> None:
        """Sending failed permanently: the message is in the dead letters until replayed."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    notification_id: str
    created: str  # ISO 8601, UTC
    record: dict[str, Any]  # event, rule, message (if rendered) and error, as JSON values


class DeadLetters(ABC):
    """Where undeliverable messages are kept for `python -m notifier replay`."""

    location: str

    @abstractmethod
    def put(self, notification_id: str, record: dict[str, Any]) -> str:
        """Store a dead letter; return where it went (for the log)."""

    @abstractmethod
    def list(self) -> Iterator[DeadLetter]: ...

    @abstractmethod
    def remove(self, notification_id: str) -> None: ...


def new_token() -> str:
    return secrets.token_hex(8)


def now_utc() -> datetime:
    return datetime.now(UTC)


def encode_record(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True, default=str)


def create_state(settings: Settings) -> tuple[Ledger, DeadLetters]:
    """The ledger and dead-letter store the settings ask for (imports only what they use)."""
    if settings.state_bucket:
        from notifier.ledger.gcs import GcsDeadLetters, GcsLedger, storage_client

        bucket = storage_client(settings).bucket(settings.state_bucket)
        return GcsLedger(bucket), GcsDeadLetters(bucket)
    from notifier.ledger.local import LocalDeadLetters

    dead_letters = LocalDeadLetters(settings.dead_letter_dir)
    if settings.ledger_file is not None:
        from notifier.ledger.sqlite import SqliteLedger

        return SqliteLedger(settings.ledger_file), dead_letters
    from notifier.ledger.memory import MemoryLedger

    return MemoryLedger(), dead_letters
