"""The history (:mod:`notifier.ledger.history`) in the SQLite ledger's file (NOTIFY_LEDGER_FILE):
local runs and their ``status``, shared by every thread and process that opens it (WAL, a busy
timeout, one connection per thread), in tables of their own beside the ledger's.

- ``history_sendings``: a Sending's JSON per notification id (a later outcome replaces it);
- ``history_filed``: which ids are filed under an object's key or a digest window's key;
- ``history_events``: one row per delivery event, keyed by SendGrid's ``sg_event_id``
  (INSERT OR IGNORE: a retried batch is recorded once).

What is read back is bounded and checked (``from_json``); rows this store did not write are skipped
and counted (``unreadable``). Every failure is a LedgerError.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from notifier.ledger.history import (
    REPEATABLE_EVENTS,
    Added,
    DeliveryEvent,
    Filed,
    History,
    Sending,
    filing_keys,
    max_events_kept,
    object_key,
    plan_additions,
    sendings_bound,
    window_key,
)
from notifier.ledger.sqlite import SqliteTables, immediate

MAX_SENDING_CHARS = 256 * 1024  # as the state bucket's bound: a longer row was planted, and is not read
MAX_EVENT_CHARS = 64 * 1024

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS history_sendings (
        notification_id TEXT PRIMARY KEY,
        sending TEXT NOT NULL         -- Sending.to_json() as JSON
    )""",
    """CREATE TABLE IF NOT EXISTS history_filed (
        filing_key TEXT NOT NULL,     -- object_key(bucket, name) or window_key(group, window)
        notification_id TEXT NOT NULL,
        PRIMARY KEY (filing_key, notification_id)
    )""",
    """CREATE TABLE IF NOT EXISTS history_events (
        notification_id TEXT NOT NULL,
        sg_event_id TEXT NOT NULL,
        event TEXT NOT NULL,          -- DeliveryEvent.to_json() as JSON
        PRIMARY KEY (notification_id, sg_event_id)
    )""",
)


# How many events a notification keeps, by class (1: opens and clicks): a row this store did not
# write is counted as another kind.
# Parameters: REPEATABLE_EVENTS as a JSON array, the notification id.
_KEPT_BY_CLASS = (
    "SELECT CASE WHEN NOT json_valid(event) THEN 0"
    " WHEN json_extract(event, '$.event') IN (SELECT value FROM json_each(?)) THEN 1 ELSE 0 END AS repeatable,"
    " COUNT(*) FROM history_events WHERE notification_id = ? GROUP BY repeatable"
)


# The newest sendings filed under a key, ids filed without a sending included (NULL: unreadable).
# Parameters: MAX_SENDING_CHARS twice, the key, how many rows.
_NEWEST_FILED = (
    "SELECT f.notification_id, CASE WHEN length(s.sending) <= ? THEN s.sending END AS sending,"
    " CASE WHEN length(s.sending) <= ? AND json_valid(s.sending) THEN json_extract(s.sending, '$.generation') END"
    " AS generation FROM history_filed f LEFT JOIN history_sendings s ON s.notification_id = f.notification_id"
    " WHERE f.filing_key = ?"
    " ORDER BY generation DESC, json_extract(CASE WHEN json_valid(sending) THEN sending END, '$.at') DESC,"
    " f.notification_id LIMIT ?"
)


class SqliteHistory(SqliteTables, History):
    name = "sqlite"
    what = "history"  # in its errors

    def __init__(self, path: Path) -> None:
        self.unreadable = 0  # rows read back that this store did not write (skipped)
        super().__init__(path, _SCHEMA)

    def record(self, sending: Sending) -> None:
        filed = [(key, sending.notification_id) for key in filing_keys(sending)]
        try:
            with immediate(self._connection()) as db:
                db.execute(
                    "INSERT OR REPLACE INTO history_sendings (notification_id, sending) VALUES (?, ?)",
                    (sending.notification_id, json.dumps(sending.to_json(), ensure_ascii=False)),
                )
                db.executemany("INSERT OR IGNORE INTO history_filed (filing_key, notification_id) VALUES (?, ?)", filed)
        except sqlite3.Error as error:
            raise self._error(error) from error

    # A row over the bound (planted) is not even read: NULL, counted unreadable.
    def by_id(self, notification_id: str) -> Sending | None:
        rows = self._rows(
            "SELECT notification_id, CASE WHEN length(sending) <= ? THEN sending END FROM history_sendings"
            " WHERE notification_id = ?",
            (MAX_SENDING_CHARS, notification_id),
        )
        return next(iter(self._sendings(rows)), None)

    def by_object(self, bucket: str, name: str) -> Filed:
        return self._filed_under(object_key(bucket, name))

    def digests(self, group: str, window: int) -> Filed:
        return self._filed_under(window_key(group, window))

    def _filed_under(self, key: str) -> Filed:
        """The newest sendings filed under ``key`` (by generation, then time), and whether there
        are more: one row beyond the bound is read to tell. A filed id without its sending (or
        with one unreadable: NULL) is counted."""
        most = sendings_bound()
        rows = self._rows(_NEWEST_FILED, (MAX_SENDING_CHARS, MAX_SENDING_CHARS, key, most + 1))
        return Filed(sorted(self._sendings([row[:2] for row in rows[:most]]), key=lambda s: (s.generation or 0, s.at)),
                     truncated=len(rows) > most)  # fmt: skip

    def add_events(self, notification_id: str, events: Sequence[DeliveryEvent]) -> Added:
        try:
            with immediate(self._connection()) as db:  # the counts and the inserts, one writer at a time
                kinds = json.dumps(sorted(REPEATABLE_EVENTS))
                kept = dict(db.execute(_KEPT_BY_CLASS, (kinds, notification_id)).fetchall())
                new, not_kept = plan_additions(events, lambda e: self._known(db, notification_id, e), kept)
                db.executemany(
                    "INSERT INTO history_events (notification_id, sg_event_id, event) VALUES (?, ?, ?)",
                    [(notification_id, e.sg_event_id, json.dumps(e.to_json(), ensure_ascii=False)) for e in new],
                )
        except sqlite3.Error as error:
            raise self._error(error) from error
        return Added(tuple(new), tuple(not_kept))

    @staticmethod
    def _known(db: sqlite3.Connection, notification_id: str, event: DeliveryEvent) -> bool:
        query = "SELECT 1 FROM history_events WHERE notification_id = ? AND sg_event_id = ?"
        return db.execute(query, (notification_id, event.sg_event_id)).fetchone() is not None

    def events(self, notification_id: str) -> list[DeliveryEvent]:
        rows = self._rows(
            "SELECT sg_event_id, CASE WHEN length(event) <= ? THEN event END FROM history_events"
            " WHERE notification_id = ? LIMIT ?",
            (MAX_EVENT_CHARS, notification_id, max_events_kept()),
        )
        read = [(key, DeliveryEvent.from_json(_loads(value))) for key, value in rows]
        events = [event for key, event in read if event is not None and event.sg_event_id == key]
        self.unreadable += len(rows) - len(events)
        return sorted(events, key=lambda e: (e.timestamp, e.sg_event_id))

    def _sendings(self, rows: list[tuple[Any, ...]]) -> list[Sending]:
        read = [(key, Sending.from_json(_loads(value))) for key, value in rows]
        sendings = [sending for key, sending in read if sending is not None and sending.notification_id == key]
        self.unreadable += len(rows) - len(sendings)
        return sendings


def _loads(value: Any) -> Any:
    if not isinstance(value, str):
        return None
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        return None
