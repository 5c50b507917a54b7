"""An SQLite ledger file: local runs (the outbox backend), shared by every thread and process."""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_random

from notifier.ledger.base import Claim, ClaimStatus, Ledger, LedgerError, held_status, new_token, owed_in, owed_record

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    notification_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,          -- claimed | sent | dead
    token TEXT NOT NULL,
    lease_until REAL NOT NULL,    -- Unix time: leases are shared between processes
    message_id TEXT NOT NULL DEFAULT '',
    updated REAL NOT NULL,
    owed TEXT                     -- a partial send's: JSON list of the addresses still owed it
)
"""
_ADD_OWED = "ALTER TABLE ledger ADD COLUMN owed TEXT"  # a file written before partial sends were recorded


# Processes opening a new file at once (instances started together): the one switching it to WAL
# needs it alone, and the others' "database is locked" is not waited out by SQLite's busy timeout.
_SET_UP_POLICY = Retrying(
    retry=retry_if_exception_type(sqlite3.OperationalError), wait=wait_random(0.01, 0.1),
    stop=stop_after_delay(10), reraise=True,
)  # fmt: skip


class SqliteLedger(Ledger):
    name = "sqlite"

    def __init__(self, path: Path, clock=time.time) -> None:
        self.path = path
        self._clock = clock
        self._local = threading.local()  # sqlite3 connections are not shared between threads
        path.parent.mkdir(parents=True, exist_ok=True)
        _SET_UP_POLICY.copy()(self._set_up)

    def _set_up(self) -> None:
        with self._connection() as db:
            use_wal(db)
            db.execute(_SCHEMA)
            if "owed" not in {column[1] for column in db.execute("PRAGMA table_info(ledger)")}:
                db.execute(_ADD_OWED)

    def claim(
        self, notification_id: str, *, lease_seconds: float, replay: bool = False,
        about: Mapping[str, str] | None = None,  # of no use here: the history has its own tables
    ) -> Claim:  # fmt: skip
        now = self._clock()
        try:
            with immediate(self._connection()) as db:  # one claimer at a time, across processes
                row = db.execute(
                    "SELECT state, lease_until, message_id, owed FROM ledger WHERE notification_id = ?",
                    (notification_id,),
                ).fetchone()
                record = {} if row is None else _record(notification_id, *row)
                if row is not None and (held := held_status(record, now, replay=replay)) is not None:
                    return held
                token, owed = new_token(), owed_in(record)  # a replay's claim keeps who is owed it
                db.execute(
                    "INSERT OR REPLACE INTO ledger (notification_id, state, token, lease_until, updated, owed)"
                    " VALUES (?, 'claimed', ?, ?, ?, ?)",
                    (notification_id, token, now + lease_seconds, now, _owed_column(owed)),
                )
                return Claim(notification_id, ClaimStatus.CLAIMED, token=token, owed=owed)
        except sqlite3.Error as error:
            raise LedgerError(f"ledger {self.path}: {error}") from error

    def mark_sent(self, claim: Claim, message_id: str) -> None:
        self._update(claim, "UPDATE ledger SET state = 'sent', message_id = ?, owed = NULL, updated = ?", message_id)

    def mark_dead(self, claim: Claim, owed: Iterable[str] | None = None) -> None:
        self._update(claim, "UPDATE ledger SET state = 'dead', message_id = ?, owed = ?, updated = ?", "", owed)

    def release(self, claim: Claim) -> None:
        if claim.owed is not None:  # a replay's claim on a partial send: its record as it was
            self.mark_dead(claim, claim.owed)
            return
        try:
            self._connection().execute(
                "DELETE FROM ledger WHERE notification_id = ? AND token = ?", (claim.notification_id, claim.token)
            )
        except sqlite3.Error as error:
            raise LedgerError(f"ledger {self.path}: {error}") from error

    def lookup(self, notification_id: str) -> dict | None:
        try:
            query = "SELECT state, lease_until, message_id, owed FROM ledger WHERE notification_id = ?"
            row = self._connection().execute(query, (notification_id,)).fetchone()
        except sqlite3.Error as error:
            raise LedgerError(f"ledger {self.path}: {error}") from error
        if row is None:
            return None
        record = _record(notification_id, *row)
        del record["notification_id"]
        return record

    def _update(self, claim: Claim, statement: str, message_id: str, *owed: Iterable[str] | None) -> None:
        """``owed``: given when the statement sets that column too."""
        try:
            self._connection().execute(
                f"{statement} WHERE notification_id = ? AND token = ?",
                (message_id, *map(_owed_column, owed), self._clock(), claim.notification_id, claim.token),
            )
        except sqlite3.Error as error:
            raise LedgerError(f"ledger {self.path}: {error}") from error

    def _connection(self) -> sqlite3.Connection:
        return thread_connection(self._local, self.path)  # claims open their own IMMEDIATE transaction


def _record(notification_id: str, state: str, lease_until: float, message_id: str, owed: str | None) -> dict:
    """A row as the record every store decides on (``held_status``)."""
    record = {"notification_id": notification_id, "state": state, "lease_until": lease_until, "message_id": message_id}
    if owed is not None:  # not JSON: not ours, as if there were no list (owed_in checks the rest)
        with contextlib.suppress(ValueError, RecursionError):
            record["owed"] = json.loads(owed)
    return record


def _owed_column(owed: Iterable[str] | None) -> str | None:
    return None if owed is None else json.dumps(owed_record(owed)["owed"])


def use_wal(db: sqlite3.Connection) -> None:
    """Write-ahead logging, so readers never wait for the writer (switching needs the file alone:
    SQLite's busy timeout does not wait for that, _SET_UP_POLICY does)."""
    if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
        db.execute("PRAGMA journal_mode=WAL")


def create_tables(local: threading.local, path: Path, schema: Sequence[str]) -> None:
    """Create ``path``'s folder and, in WAL mode, the tables a store beside the ledger keeps there
    (its ``CREATE TABLE IF NOT EXISTS`` statements): retried while another process holds the file,
    as the ledger's own set-up is; sqlite3.Error if it still fails."""
    path.parent.mkdir(parents=True, exist_ok=True)

    def set_up() -> None:
        db = thread_connection(local, path)
        use_wal(db)
        for statement in schema:
            db.execute(statement)

    _SET_UP_POLICY.copy()(set_up)


class SqliteTables:
    """A store whose tables live in the SQLite ledger's file (held events, the history): its tables
    made at start, a connection per thread, and every sqlite3 error as a LedgerError naming it."""

    what = "store"  # how its errors name it

    def __init__(self, path: Path, schema: Sequence[str]) -> None:
        self.path = path
        self._local = threading.local()  # sqlite3 connections are not shared between threads
        try:
            create_tables(self._local, path, schema)
        except sqlite3.Error as error:
            raise self._error(error) from error

    def _rows(self, query: str, parameters: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        try:
            return self._connection().execute(query, parameters).fetchall()
        except sqlite3.Error as error:
            raise self._error(error) from error

    def _connection(self) -> sqlite3.Connection:
        return thread_connection(self._local, self.path)

    def _error(self, error: sqlite3.Error) -> LedgerError:
        return LedgerError(f"{self.what} {self.path}: {error}")


@contextlib.contextmanager
def immediate(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction taken at once (one writer at a time, across processes): committed
    when the block ends, also by a return inside it; rolled back when it raises."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def thread_connection(local: threading.local, path: Path) -> sqlite3.Connection:
    """This thread's connection to ``path`` (sqlite3 connections are not shared between threads),
    in autocommit mode: each statement its own transaction, unless the caller opens one."""
    db = getattr(local, "db", None)
    if db is None:
        db = sqlite3.connect(path, timeout=30, isolation_level=None, check_same_thread=True)
        local.db = db
    return db
