"""Delivery state: which notifications were claimed, sent or dead-lettered, and the dead letters.

One small interface, three places it can live: the state bucket (:mod:`.gcs`, through the JSON
API client :mod:`.bucket`; shared by every instance and deployment), an SQLite file
(:mod:`.sqlite`, local runs) and memory (:mod:`.memory`, one instance). This package is the only
code that knows where state lives.

A notification is *claimed* before it is sent: exactly one delivery of it wins the claim. The
claim is a lease, so one left behind by a crashed instance can be taken over once it expires.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from notifier.ledger.base import (
    MAX_DEAD_LETTER_BYTES,
    Claim,
    ClaimStatus,
    DeadLetter,
    DeadLetters,
    Ledger,
    LedgerError,
    UnreadableLetter,
    decode_letter,
    encode_record,
    held_status,
    new_token,
    now_utc,
    too_large,
)

if TYPE_CHECKING:
    from notifier.config import Settings
    from notifier.ledger.digests import DigestStore
    from notifier.ledger.history import History

__all__ = [
    "MAX_DEAD_LETTER_BYTES",
    "Claim",
    "ClaimStatus",
    "DeadLetter",
    "DeadLetters",
    "Ledger",
    "LedgerError",
    "UnreadableLetter",
    "create_digest_store",
    "create_history",
    "create_state",
    "decode_letter",
    "encode_record",
    "held_status",
    "new_token",
    "now_utc",
    "too_large",
]


def create_state(settings: Settings) -> tuple[Ledger, DeadLetters]:
    """The ledger and dead-letter store the settings ask for (imports only what they use)."""
    if settings.state_bucket:
        from notifier.ledger.gcs import GcsDeadLetters, GcsLedger, state_bucket

        bucket = state_bucket(settings)
        return GcsLedger(bucket), GcsDeadLetters(bucket)
    from notifier.ledger.local import LocalDeadLetters

    dead_letters = LocalDeadLetters(settings.dead_letter_dir)
    if settings.ledger_file is not None:
        from notifier.ledger.sqlite import SqliteLedger

        return SqliteLedger(settings.ledger_file), dead_letters
    from notifier.ledger.memory import MemoryLedger

    return MemoryLedger(), dead_letters


def create_digest_store(ledger: Ledger) -> DigestStore | None:
    """The digest store beside ``ledger``: in the state bucket, or in the SQLite ledger's file; None
    for a ledger in memory (then rules with digests are refused at start-up)."""
    # By name: importing the other stores' modules (sqlite3) would cost every cold start.
    if ledger.name == "gcs":
        from notifier.ledger.gcs_digests import GcsDigestStore

        return GcsDigestStore(ledger.bucket)  # type: ignore[attr-defined]
    if ledger.name == "sqlite":
        from notifier.ledger.sqlite_digests import SqliteDigestStore

        return SqliteDigestStore(ledger.path)  # type: ignore[attr-defined]
    return None


def create_history(ledger: Ledger) -> History:
    """The history beside ``ledger`` (what became of each notification, SendGrid's delivery events):
    in the state bucket, or in the SQLite ledger's file; beside a ledger in memory, none (NoHistory)."""
    if ledger.name == "gcs":
        from notifier.ledger.gcs_history import GcsHistory

        return GcsHistory(ledger.bucket)  # type: ignore[attr-defined]
    if ledger.name == "sqlite":
        from notifier.ledger.sqlite_history import SqliteHistory

        return SqliteHistory(ledger.path)  # type: ignore[attr-defined]
    from notifier.ledger.history import NoHistory

    return NoHistory()
