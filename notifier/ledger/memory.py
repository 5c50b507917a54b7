"""A bounded in-memory ledger: per instance, for deployments without a state bucket.

Entries live in two generations of ``capacity`` entries. When the newer one is full it becomes the
older one and the older one is dropped, so the last ``capacity`` notifications are always
remembered (and at most twice as many), with no per-entry bookkeeping. A sent notification is kept
as just its message id under a 16-byte key, about 150 bytes: 10,000 emails cost about 1.5 MB.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from notifier.ledger.base import Claim, ClaimStatus, Ledger, held_status, new_token, owed_in, owed_record


@dataclass(slots=True)
class _Claimed:
    token: str
    lease_until: float
    owed: frozenset[str] | None = None  # a replay of a partial send: who is still owed it


@dataclass(frozen=True, slots=True)
class _Dead:
    owed: frozenset[str] | None  # a partial send's: who is still owed it; None: everyone


_Value = _Claimed | str | _Dead  # claimed, sent (the message id), or dead-lettered


class MemoryLedger(Ledger):
    name = "memory"

    def __init__(self, capacity: int = 50_000, clock=time.monotonic) -> None:
        self._generation = max(1, capacity)  # the older generation is forgotten first
        self._newer: dict[bytes | str, _Value] = {}
        self._older: dict[bytes | str, _Value] = {}
        self._lock = threading.Lock()
        self._clock = clock

    def claim(
        self, notification_id: str, *, lease_seconds: float, replay: bool = False,
        about: Mapping[str, str] | None = None,  # of no use here: the history has its own tables
    ) -> Claim:  # fmt: skip
        now, key = self._clock(), _key(notification_id)
        with self._lock:
            value = self._newer.get(key, self._older.get(key))
            record = {} if value is None else _record(notification_id, value)
            if value is not None and (held := held_status(record, now, replay=replay)):
                return held
            token, owed = new_token(), owed_in(record)
            self._older.pop(key, None)
            self._put(key, _Claimed(token, now + lease_seconds, owed))
            return Claim(notification_id, ClaimStatus.CLAIMED, token=token, owed=owed)

    def mark_sent(self, claim: Claim, message_id: str) -> None:
        self._replace(claim, message_id)

    def release(self, claim: Claim) -> None:
        self._replace(claim, None if claim.owed is None else _Dead(claim.owed))  # a replay's: owed again

    def mark_dead(self, claim: Claim, owed: Iterable[str] | None = None) -> None:
        self._replace(claim, _Dead(None if owed is None else frozenset(a.lower() for a in owed)))

    def lookup(self, notification_id: str) -> dict[str, Any] | None:
        key = _key(notification_id)
        with self._lock:
            value = self._newer.get(key, self._older.get(key))
        if value is None:
            return None
        record = _record(notification_id, value)
        del record["notification_id"]
        return record

    def _put(self, key: bytes | str, value: _Value) -> None:
        if key not in self._newer and len(self._newer) >= self._generation:
            self._older, self._newer = self._newer, {}
        self._newer[key] = value

    def _replace(self, claim: Claim, value: _Value | None) -> None:
        """Change our own claim's entry (only while it is still ours); None removes it."""
        key = _key(claim.notification_id)
        with self._lock:
            for generation in (self._newer, self._older):
                entry = generation.get(key)
                if isinstance(entry, _Claimed) and entry.token == claim.token:
                    if value is None:
                        del generation[key]
                    else:
                        generation[key] = value
                    return


def _key(notification_id: str) -> bytes | str:
    """Notification ids are hex digests: kept as bytes they take 49 bytes instead of 81."""
    try:
        return bytes.fromhex(notification_id)
    except ValueError:
        return notification_id


def _record(notification_id: str, value: _Value) -> dict[str, Any]:
    if isinstance(value, _Claimed):
        return {"notification_id": notification_id, "state": "claimed", "lease_until": value.lease_until,
                **owed_record(value.owed)}  # fmt: skip
    if isinstance(value, str):
        return {"notification_id": notification_id, "state": "sent", "message_id": value}
    return {"notification_id": notification_id, "state": "dead", **owed_record(value.owed)}
