"""Where held events wait for their digest: the interface, and the store in memory.

Three kinds of record, each written once and never grown:

- an **entry** per held event: ``digest/<group>/<window>/<notification id>``, created only if
  absent (a redelivery finds it there), with the event (for a one-event digest, sent as the
  ordinary email) and a summary the listing returns (for the digest's table);
- the ids a sent digest **included**, per window and part: a redelivery of an event whose entry
  was removed after its digest went out finds its id there, and is not counted again;
- for ``max_emails``, a **single-email slot** per event sent alone: the first N events of a window
  take slots 0..N-1, created only if absent, so two instances can never send N + 1.

Stores: :class:`MemoryDigestStore` (one process: tests), :mod:`.sqlite_digests` (local runs, beside
the SQLite ledger) and :mod:`.gcs_digests` (the state bucket); :func:`notifier.ledger.create_digest_store`
picks one (not here: they import this module). Every failure is a :class:`~notifier.ledger.base.LedgerError`.
"""

from __future__ import annotations

import json
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from notifier.digest import Group, HeldEntry

MAX_INCLUDED = 200_000  # ids one part's record may list: more was not written by us


def included_ids(data: str | bytes) -> frozenset[str] | None:
    """A stored included record's ids (a JSON list of strings); None when it is not one we write."""
    try:
        ids = json.loads(data)
    except (ValueError, RecursionError):
        return None
    if not isinstance(ids, list) or len(ids) > MAX_INCLUDED or not all(isinstance(i, str) for i in ids):
        return None
    return frozenset(ids)


@dataclass(frozen=True, slots=True)
class HeldListing:
    """Every held entry a listing reached; ``truncated``: more are held than one listing reads
    (the next flush gets them), ``unreadable``: objects under the prefix that are not our entries."""

    entries: tuple[HeldEntry, ...]
    truncated: bool = False
    unreadable: int = 0


class DigestStore(ABC):
    name: str

    @abstractmethod
    def hold(self, entry: HeldEntry, event: dict[str, Any]) -> bool:
        """Keep ``entry`` (and its event, as :meth:`StorageEvent.to_dict` gives it) unless an entry
        with its group, window and id is held already: True if this call created it."""

    @abstractmethod
    def take_single(self, group: Group, window: int, notification_id: str, limit: int) -> bool:
        """True if ``notification_id`` has (or now takes) one of the window's first ``limit`` slots
        for a single email; False when every slot is someone else's."""

    @abstractmethod
    def pending(self) -> HeldListing:
        """Every held entry, in no particular order."""

    @abstractmethod
    def event(self, entry: HeldEntry) -> dict[str, Any] | None:
        """The event ``entry`` holds (untrusted JSON: check it with events.from_dict); None if gone."""

    @abstractmethod
    def remove(self, entries: Iterable[HeldEntry]) -> None:
        """Delete these entries (those already gone are no error)."""

    @abstractmethod
    def included(self, group: Group, window: int, part: int) -> frozenset[str] | None:
        """The ids the window's ``part`` was sent with; None if no such record."""

    @abstractmethod
    def record_included(self, group: Group, window: int, part: int, ids: Iterable[str]) -> None:
        """Keep the ids the window's ``part`` is sent with, before it is marked sent."""


class MemoryDigestStore(DigestStore):
    """One process's store: for tests, and for the bench's reference runs."""

    name = "memory"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, int, str], tuple[HeldEntry, dict[str, Any]]] = {}
        self._singles: dict[tuple[str, int], list[str]] = {}
        self._included: dict[tuple[str, int, int], frozenset[str]] = {}

    def hold(self, entry: HeldEntry, event: dict[str, Any]) -> bool:
        key = (entry.group.key, entry.window, entry.notification_id)
        with self._lock:
            if key in self._entries:
                return False
            self._entries[key] = (entry, dict(event))
            return True

    def take_single(self, group: Group, window: int, notification_id: str, limit: int) -> bool:
        with self._lock:
            taken = self._singles.setdefault((group.key, window), [])
            if notification_id in taken:
                return True
            if len(taken) >= limit:
                return False
            taken.append(notification_id)
            return True

    def pending(self) -> HeldListing:
        with self._lock:
            return HeldListing(tuple(entry for entry, _ in self._entries.values()))

    def event(self, entry: HeldEntry) -> dict[str, Any] | None:
        with self._lock:
            held = self._entries.get((entry.group.key, entry.window, entry.notification_id))
        return None if held is None else dict(held[1])

    def remove(self, entries: Iterable[HeldEntry]) -> None:
        with self._lock:
            for entry in entries:
                self._entries.pop((entry.group.key, entry.window, entry.notification_id), None)

    def included(self, group: Group, window: int, part: int) -> frozenset[str] | None:
        with self._lock:
            return self._included.get((group.key, window, part))

    def record_included(self, group: Group, window: int, part: int, ids: Iterable[str]) -> None:
        with self._lock:  # merged: a late writer (a lease that ran out mid-send) never shrinks it
            key = (group.key, window, part)
            self._included[key] = self._included.get(key, frozenset()) | frozenset(ids)
