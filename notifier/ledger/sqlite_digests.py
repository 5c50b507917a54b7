"""Held events in the SQLite ledger's file (NOTIFY_LEDGER_FILE): local runs, shared by every
thread and process that opens it (WAL, a busy timeout, one connection per thread), in tables of
their own beside the ledger's."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from notifier.digest import MAX_SUMMARY, Group, HeldEntry, entry_from_summary
from notifier.events import InvalidEvent
from notifier.ledger.digests import DigestStore, HeldListing, included_ids
from notifier.ledger.sqlite import SqliteTables, immediate

MAX_LISTED = 50_000  # entries one pending() reads, as a state bucket's listing: the next flush gets the rest
MAX_EVENT_CHARS = 128 * 1024
MAX_IDS_CHARS = 16 * 1024 * 1024

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS digest_entries (
        group_key TEXT NOT NULL,
        window INTEGER NOT NULL,
        notification_id TEXT NOT NULL,
        summary TEXT NOT NULL,        -- HeldEntry.summary() as JSON
        event TEXT NOT NULL,          -- StorageEvent.to_dict() as JSON
        PRIMARY KEY (group_key, window, notification_id)
    )""",
    """CREATE TABLE IF NOT EXISTS digest_included (
        group_key TEXT NOT NULL,
        window INTEGER NOT NULL,
        part INTEGER NOT NULL,
        ids TEXT NOT NULL,            -- JSON list of notification ids
        PRIMARY KEY (group_key, window, part)
    )""",
    """CREATE TABLE IF NOT EXISTS digest_singles (
        group_key TEXT NOT NULL,
        window INTEGER NOT NULL,
        slot INTEGER NOT NULL,
        notification_id TEXT NOT NULL,
        PRIMARY KEY (group_key, window, slot),
        UNIQUE (group_key, window, notification_id)
    )""",
)


class SqliteDigestStore(SqliteTables, DigestStore):
    name = "sqlite"
    what = "digest store"  # in its errors

    def __init__(self, path: Path) -> None:
        super().__init__(path, _SCHEMA)

    def hold(self, entry: HeldEntry, event: dict[str, Any]) -> bool:
        row = (*_key(entry), entry.fitted_summary(), json.dumps(event))
        try:
            cursor = self._connection().execute(
                "INSERT OR IGNORE INTO digest_entries (group_key, window, notification_id, summary, event)"
                " VALUES (?, ?, ?, ?, ?)",
                row,
            )
        except sqlite3.Error as error:
            raise self._error(error) from error
        return cursor.rowcount == 1

    def take_single(self, group: Group, window: int, notification_id: str, limit: int) -> bool:
        try:
            with immediate(self._connection()) as db:  # one taker at a time, across processes
                ours = db.execute(
                    "SELECT 1 FROM digest_singles WHERE group_key = ? AND window = ? AND notification_id = ?",
                    (group.key, window, notification_id),
                ).fetchone()
                (taken,) = db.execute(
                    "SELECT COUNT(*) FROM digest_singles WHERE group_key = ? AND window = ?", (group.key, window)
                ).fetchone()
                won = ours is not None or taken < limit
                if ours is None and won:
                    db.execute(
                        "INSERT INTO digest_singles (group_key, window, slot, notification_id) VALUES (?, ?, ?, ?)",
                        (group.key, window, taken, notification_id),
                    )
                return won
        except sqlite3.Error as error:
            raise self._error(error) from error

    def pending(self) -> HeldListing:
        # A summary over the bound (planted) is not even read: NULL, counted unreadable.
        query = (
            "SELECT group_key, window, notification_id, CASE WHEN length(summary) <= ? THEN summary END"
            " FROM digest_entries LIMIT ?"
        )
        rows = self._rows(query, (MAX_SUMMARY, MAX_LISTED + 1))
        entries = [_held(*row) for row in rows[:MAX_LISTED]]
        held = tuple(entry for entry in entries if entry is not None)
        return HeldListing(held, truncated=len(rows) > MAX_LISTED, unreadable=len(entries) - len(held))

    def event(self, entry: HeldEntry) -> dict[str, Any] | None:
        """The event; None if the entry is gone; InvalidEvent when the row holds no JSON of ours."""
        rows = self._rows(
            "SELECT event FROM digest_entries WHERE group_key = ? AND window = ? AND notification_id = ?", _key(entry)
        )
        if not rows:
            return None
        (row,) = rows
        if not isinstance(row[0], str) or len(row[0]) > MAX_EVENT_CHARS:
            raise InvalidEvent(f"held entry {entry.notification_id}: over {MAX_EVENT_CHARS} characters, or not text")
        try:
            return json.loads(row[0])
        except (ValueError, RecursionError):
            raise InvalidEvent(f"held entry {entry.notification_id}: not JSON") from None

    def remove(self, entries: Iterable[HeldEntry]) -> None:
        try:
            with immediate(self._connection()) as db:
                db.executemany(
                    "DELETE FROM digest_entries WHERE group_key = ? AND window = ? AND notification_id = ?",
                    [_key(entry) for entry in entries],
                )
        except sqlite3.Error as error:
            raise self._error(error) from error

    def included(self, group: Group, window: int, part: int) -> frozenset[str] | None:
        rows = self._rows(
            "SELECT ids FROM digest_included WHERE group_key = ? AND window = ? AND part = ?", (group.key, window, part)
        )
        if not rows or not isinstance(rows[0][0], str) or len(rows[0][0]) > MAX_IDS_CHARS:
            return None
        return included_ids(rows[0][0])

    def record_included(self, group: Group, window: int, part: int, ids: Iterable[str]) -> None:
        """Merged with the ids already there, in one transaction: a late writer never shrinks it."""
        key = (group.key, window, part)
        try:
            with immediate(self._connection()) as db:
                rows = db.execute(
                    "SELECT ids FROM digest_included WHERE group_key = ? AND window = ? AND part = ?", key
                ).fetchall()
                merged = set(ids) | _stored_ids(rows)
                db.execute(
                    "INSERT OR REPLACE INTO digest_included (group_key, window, part, ids) VALUES (?, ?, ?, ?)",
                    (*key, json.dumps(sorted(merged))),
                )
        except sqlite3.Error as error:
            raise self._error(error) from error


def _key(entry: HeldEntry) -> tuple[str, int, str]:
    return entry.group.key, entry.window, entry.notification_id


def _held(group_key: Any, window: Any, notification_id: Any, summary: Any) -> HeldEntry | None:
    """The entry a row is; None when it is not one this store writes."""
    if not (isinstance(group_key, str) and isinstance(notification_id, str) and isinstance(summary, str)):
        return None
    if not isinstance(window, int):
        return None
    return entry_from_summary(group_key, window, notification_id, summary)


def _stored_ids(rows: list[Any]) -> frozenset[str]:
    """The ids of an included row; none for a row this store did not write (it is replaced)."""
    if not rows or not isinstance(rows[0][0], str) or len(rows[0][0]) > MAX_IDS_CHARS:
        return frozenset()
    return included_ids(rows[0][0]) or frozenset()
