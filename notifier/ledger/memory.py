"""A bounded in-memory ledger: per instance, for deployments without a state bucket."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from notifier.ledger import Claim, ClaimStatus, Ledger, held_status, new_token


@dataclass(slots=True)
class _Entry:
    state: str  # "claimed" | "sent" | "dead"
    token: str
    lease_until: float
    message_id: str = ""


class MemoryLedger(Ledger):
    name = "memory"

    def __init__(self, capacity: int = 50_000, clock=time.monotonic) -> None:
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._capacity = capacity  # oldest entries are forgotten first
        self._lock = threading.Lock()
        self._clock = clock

    def claim(self, notification_id: str, *, lease_seconds: float, replay: bool = False) -> Claim:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(notification_id)
            if entry is not None:
                record = {"notification_id": notification_id, "state": entry.state,
                          "lease_until": entry.lease_until, "message_id": entry.message_id}  # fmt: skip
                if (held := held_status(record, now, replay=replay)) is not None:
                    return held
            token = new_token()
            self._entries[notification_id] = _Entry("claimed", token, now + lease_seconds)
            self._entries.move_to_end(notification_id)
            while len(self._entries) > self._capacity:
                self._entries.popitem(last=False)
            return Claim(notification_id, ClaimStatus.CLAIMED, token=token)

    def mark_sent(self, claim: Claim, message_id: str) -> None:
        self._set(claim, "sent", message_id)

    def release(self, claim: Claim) -> None:
        with self._lock:
            entry = self._entries.get(claim.notification_id)
            if entry is not None and entry.token == claim.token:
                del self._entries[claim.notification_id]

    def mark_dead(self, claim: Claim) -> None:
        self._set(claim, "dead")

    def _set(self, claim: Claim, state: str, message_id: str = "") -> None:
        with self._lock:
            entry = self._entries.get(claim.notification_id)
            if entry is not None and entry.token == claim.token:
                entry.state, entry.message_id = state, message_id
