"""Held events in the state bucket: every record a create-if-absent object, never one that grows.

- ``digest/<group key>/<window>/<notification id>``: one held event. Its data is the event's JSON;
  its custom metadata ``entry`` is the summary, so :meth:`GcsDigestStore.pending` is one paged
  listing with metadata and reads no entry.
- ``digested/<group key>/<window>.<part>.json``: the ids a sent part included (a JSON list).
- ``cap/<group key>/<window>/<slot 00000..>``: a single-email slot of ``max_emails``, whose metadata
  ``notification_id`` says whose it is. Slots are created lowest first with ``ifGenerationMatch=0``,
  so of any number of instances racing, exactly ``limit`` ids get one. Once a listing finds every
  slot taken, ``cap/<group key>/<window>/full-<limit>`` keeps their owners (a JSON list: slots are
  never deleted, so it is final): every later event reads that one object instead of listing the
  slots, and a redelivery of a winner still finds its id there.

A lifecycle rule (deploy/state-lifecycle.json) deletes ``digested/`` and ``cap/`` objects after 30
days, like ledger records; never ``digest/``: a held event waits for its digest however long.
Every failure is a LedgerError worded as the ledger's (:func:`notifier.ledger.gcs._ledger_error`);
each call keeps to the delivery's state deadline, as every StateBucket call does.
"""

from __future__ import annotations

import contextvars
import json
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from notifier.batching import MAX_CAP
from notifier.digest import GROUP_KEY, Group, HeldEntry, entry_from_summary
from notifier.events import InvalidEvent
from notifier.ledger.base import LedgerError
from notifier.ledger.bucket import Listed, StateBucket, StateBucketError, Stored
from notifier.ledger.digests import MAX_INCLUDED, DigestStore, HeldListing, included_ids
from notifier.ledger.gcs import _FAILURES, _ledger_error

ENTRY_PREFIX = "digest/"
INCLUDED_PREFIX = "digested/"
CAP_PREFIX = "cap/"
SUMMARY_KEY = "entry"  # the entry's metadata key: HeldEntry.summary() as JSON
SLOT_KEY = "notification_id"  # a slot's metadata key: whose slot it is
# An event's JSON is at most about 75 KB: 8 KiB of metadata and a few 1,024-character fields,
# each character escaped as \uXXXX at worst.
MAX_EVENT_BYTES = 128 * 1024
# A summary (HeldEntry.fitted_summary) is at most MAX_SUMMARY bytes: within Cloud Storage's 8 KiB
# of custom metadata.
# Ours are 32 hex digits (rules.notification_id): a record of MAX_INCLUDED of them is about 7 MB.
MAX_INCLUDED_BYTES = MAX_INCLUDED * 35 + 2
MAX_SLOT_BYTES = 256
MAX_FULL_BYTES = MAX_CAP * 35 + 2  # the owners of every slot of the largest cap
MERGE_TRIES = 8  # included records written at once by flushes racing on one part (rare: a lease ran out)
REMOVERS = 8  # a 1,000-entry flush deletes 1,000 objects: this many at a time

_WINDOW = re.compile(r"0|[1-9][0-9]{0,11}")  # as str(int) writes it: the name is rebuilt from it
_NOTIFICATION_ID = re.compile(r"[0-9a-f]{32}")
_SLOT = re.compile(r"[0-9]{5}")


class GcsDigestStore(DigestStore):
    name = "gcs"

    def __init__(self, bucket: StateBucket) -> None:
        self._bucket = bucket

    # --- held entries --------------------------------------------------------------------------

    def hold(self, entry: HeldEntry, event: dict[str, Any]) -> bool:
        # A create whose answer was lost is retried by the client and meets its own object: False
        # then, the entry held all the same (the event is logged `duplicate` rather than `batched`).
        data = json.dumps(event, ensure_ascii=False).encode()
        if len(data) > MAX_EVENT_BYTES:
            raise LedgerError(
                f"digest store: the event is {len(data)} bytes, over the {MAX_EVENT_BYTES} an entry takes"
            )
        metadata = {SUMMARY_KEY: entry.fitted_summary()}
        try:
            created = self._bucket.upload(_entry_name(entry), data, metadata=metadata, if_generation_match=0)
        except _FAILURES as error:
            raise _ledger_error(self._bucket.name, error) from error
        return created is not None

    def pending(self) -> HeldListing:
        listing = self._bucket.list(ENTRY_PREFIX, with_metadata=True)
        try:
            listed = list(listing)
        except _FAILURES as error:
            raise _ledger_error(self._bucket.name, error) from error
        entries = [_held(item) for item in listed]
        held = tuple(entry for entry in entries if entry is not None)
        return HeldListing(held, truncated=listing.truncated, unreadable=len(entries) - len(held))

    def event(self, entry: HeldEntry) -> dict[str, Any] | None:
        """The event; None if the entry is gone. InvalidEvent (which the flush refuses the run
        with) when the object is not an event this store wrote: too large, compressed, not JSON."""
        name = _entry_name(entry)
        try:
            stored = self._bucket.read(name, MAX_EVENT_BYTES)
        except _FAILURES as error:
            raise _ledger_error(self._bucket.name, error) from error
        if stored is None:
            return None
        data = _as_written(stored, MAX_EVENT_BYTES)
        if data is None:
            raise InvalidEvent(f"{name}: compressed or over {MAX_EVENT_BYTES} bytes: not an event this function held")
        try:
            return json.loads(data)
        except (ValueError, RecursionError):
            raise InvalidEvent(f"{name}: not JSON: not an event this function held") from None

    def remove(self, entries: Iterable[HeldEntry]) -> None:
        names = [_entry_name(entry) for entry in entries]
        if len(names) <= 1:
            for name in names:
                self._delete(name)
            return
        # Each task runs in a copy of this context, so that its calls keep the delivery's deadline.
        with ThreadPoolExecutor(max_workers=min(REMOVERS, len(names))) as pool:
            tasks = [pool.submit(contextvars.copy_context().run, self._delete, name) for name in names]
            for task in tasks:
                task.result()

    def _delete(self, name: str) -> None:
        try:
            self._bucket.delete(name)
        except StateBucketError as error:
            if error.status != 404 or error.bucket_missing:
                raise _ledger_error(self._bucket.name, error) from error
        except OSError as error:
            raise _ledger_error(self._bucket.name, error) from error

    # --- what a sent part included ---------------------------------------------------------------

    def included(self, group: Group, window: int, part: int) -> frozenset[str] | None:
        """The ids; None if there is no record, or one this store did not write (too large, not a list)."""
        try:
            stored = self._bucket.read(_included_name(group, window, part), MAX_INCLUDED_BYTES)
        except _FAILURES as error:
            raise _ledger_error(self._bucket.name, error) from error
        data = None if stored is None else _as_written(stored, MAX_INCLUDED_BYTES)
        return None if data is None else included_ids(data)

    def record_included(self, group: Group, window: int, part: int, ids: Iterable[str]) -> None:
        """Merged with the ids already there: read, union, then write only if the object is still
        the generation read (a late writer, whose lease ran out mid-send, never shrinks it)."""
        try:
            self._merge_included(_included_name(group, window, part), frozenset(ids))
        except _FAILURES as error:
            raise _ledger_error(self._bucket.name, error) from error

    def _merge_included(self, name: str, ids: frozenset[str]) -> None:
        for _ in range(MERGE_TRIES):
            stored = self._bucket.read(name, MAX_INCLUDED_BYTES)
            there = frozenset() if stored is None else _readable_ids(_as_written(stored, MAX_INCLUDED_BYTES))
            if ids <= there:  # recorded already (also: our own write whose answer was lost)
                return
            data = json.dumps(sorted(ids | there), separators=(",", ":")).encode()
            generation = 0 if stored is None else stored.generation
            if self._bucket.upload(name, data, if_generation_match=generation) is not None:
                return
        raise LedgerError(f"digest store: {name} changed under {MERGE_TRIES} writes in a row; the next flush retries")

    # --- single-email slots ----------------------------------------------------------------------

    def take_single(self, group: Group, window: int, notification_id: str, limit: int) -> bool:
        try:
            return self._take_single(group, window, notification_id, limit)
        except _FAILURES as error:
            raise _ledger_error(self._bucket.name, error) from error

    def _take_single(self, group: Group, window: int, notification_id: str, limit: int) -> bool:
        prefix = f"{CAP_PREFIX}{group.key}/{window}/"
        owners = self._full_owners(prefix, limit)
        if owners is not None:  # every slot taken: one read, not a listing of `limit` slots
            return notification_id in owners
        taken: dict[int, str] = {}  # slot → whose (a planted slot's owner may be "")
        for item in self._bucket.list(prefix, with_metadata=True):
            slot = item.name.removeprefix(prefix)
            if _SLOT.fullmatch(slot) and int(slot) < limit:
                taken[int(slot)] = item.metadata.get(SLOT_KEY, "")
        if notification_id in taken.values():
            return True
        if len(taken) == limit:  # slots are never deleted: these owners are final
            owners_json = json.dumps(sorted(set(taken.values())), separators=(",", ":")).encode()
            self._bucket.upload(f"{prefix}full-{limit}", owners_json, if_generation_match=0)
            return False
        record = json.dumps({SLOT_KEY: notification_id}).encode()
        for slot in (s for s in range(limit) if s not in taken):
            name = f"{prefix}{slot:05d}"
            if self._bucket.upload(name, record, metadata={SLOT_KEY: notification_id}, if_generation_match=0):
                return True
            if self._slot_owner(name) == notification_id:  # a redelivery racing us, or our own lost answer
                return True
        return False

    def _full_owners(self, prefix: str, limit: int) -> frozenset[str] | None:
        """The owners the window's full marker lists; None without one (or one we did not write)."""
        stored = self._bucket.read(f"{prefix}full-{limit}", MAX_FULL_BYTES)
        data = None if stored is None else _as_written(stored, MAX_FULL_BYTES)
        return None if data is None else included_ids(data)

    def _slot_owner(self, name: str) -> str | None:
        stored = self._bucket.read(name, MAX_SLOT_BYTES)
        data = None if stored is None else _as_written(stored, MAX_SLOT_BYTES)
        if data is None:
            return None
        try:
            owner = json.loads(data).get(SLOT_KEY)
        except (ValueError, RecursionError, AttributeError):
            return None
        return owner if isinstance(owner, str) else None


# --- names and values --------------------------------------------------------------------------


def _entry_name(entry: HeldEntry) -> str:
    if not _NOTIFICATION_ID.fullmatch(entry.notification_id):  # never a name pending() could not read back
        raise LedgerError(f"digest store: {entry.notification_id[:80]!r} is not a notification id (32 hex digits)")
    return f"{ENTRY_PREFIX}{entry.group.key}/{entry.window}/{entry.notification_id}"


def _included_name(group: Group, window: int, part: int) -> str:
    return f"{INCLUDED_PREFIX}{group.key}/{window}.{part}.json"


def _held(item: Listed) -> HeldEntry | None:
    """The entry ``item`` is; None when its name or summary is not one this store writes."""
    parts = item.name.removeprefix(ENTRY_PREFIX).split("/")
    if len(parts) != 3:
        return None
    key, window, notification_id = parts
    if not (GROUP_KEY.fullmatch(key) and _WINDOW.fullmatch(window) and _NOTIFICATION_ID.fullmatch(notification_id)):
        return None
    summary = item.metadata.get(SUMMARY_KEY)
    return None if summary is None else entry_from_summary(key, int(window), notification_id, summary)


def _as_written(stored: Stored, max_bytes: int) -> bytes | None:
    """The object's bytes if this store could have written them: stored plain, within ``max_bytes``."""
    return None if stored.content_encoding or len(stored.data) > max_bytes else stored.data


def _readable_ids(data: bytes | None) -> frozenset[str]:
    """A record's ids; none for one this store did not write (the merge replaces it)."""
    return (None if data is None else included_ids(data)) or frozenset()
