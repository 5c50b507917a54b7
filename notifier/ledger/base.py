"""The ledger's interface and values: claims, leases, dead letters, and the record encoding every
store shares."""

from __future__ import annotations

import json
import secrets
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import Enum
from typing import Any


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
    # A replay's claim on a partial send's record: the addresses (lower-cased) still owed the email,
    # the only ones it may send to. None: no list (a whole-message dead letter, or an older record).
    owed: frozenset[str] | None = None
    # What the claim's record says of the notification's Sending (history.sending_about), so that
    # the state bucket's history finds it from the record; None: nothing (a digest window's claim).
    about: Mapping[str, str] | None = None


class LedgerError(Exception):
    """The state store could not be read or written; retrying later may succeed.

    ``misconfigured``: it will keep failing until someone fixes the setting or permission the
    message names (logged as an ERROR, not a passing WARNING).
    """

    def __init__(self, message: str, *, misconfigured: bool = False) -> None:
        super().__init__(message)
        self.misconfigured = misconfigured


# A partial send's owed list has at most as many addresses as a dead letter may name.
MAX_OWED = 10_000
MAX_ADDRESS_LENGTH = 320  # 64 for the local part, @, 255 for the domain


def held_status(record: dict[str, Any], now: float, *, replay: bool) -> Claim | None:
    """What an existing ledger record means for a new claim: a Claim to return as it is (sent,
    dead, or busy), or None when the claim may be taken (expired lease, or a dead letter being
    replayed: the new claim keeps the record's ``owed`` list). Every store decides with this one
    function."""
    state, notification_id = record.get("state"), record.get("notification_id", "")
    owed = owed_in(record)
    if state == "sent" or (state == "dead" and owed == frozenset()):  # nobody is owed it any more
        return Claim(notification_id, ClaimStatus.SENT, message_id=record.get("message_id", ""))
    if state == "claimed" and record.get("lease_until", 0) > now:
        return Claim(notification_id, ClaimStatus.BUSY)
    # A partial send's replay that crashed stays dead-lettered: a redelivery would mail everyone.
    dead = state == "dead" or (state == "claimed" and owed is not None)
    if dead and not replay:
        return Claim(notification_id, ClaimStatus.DEAD)
    return None


def address_keys(values: Any) -> frozenset[str] | None:
    """``values`` as the lower-cased addresses a list the function writes holds (a ledger record's
    ``owed``, a dead letter's ``refused_recipients``: at most MAX_OWED strings of 1 to 320
    characters); None when it is anything else, since either can be planted in the state bucket."""
    if (
        not isinstance(values, list) or len(values) > MAX_OWED
        or not all(isinstance(v, str) and 0 < len(v) <= MAX_ADDRESS_LENGTH for v in values)
    ):  # fmt: skip
        return None
    return frozenset(v.lower() for v in values)


def owed_in(record: dict[str, Any]) -> frozenset[str] | None:
    """A record's ``owed`` list; None when it has none or one the function never writes (then the
    dead letter's own narrowing applies)."""
    return address_keys(record.get("owed"))


def owed_record(owed: Iterable[str] | None) -> dict[str, list[str]]:
    """The ``owed`` field to store (sorted, lower-cased), or nothing for a whole-message dead letter."""
    return {} if owed is None else {"owed": sorted({address.lower() for address in owed})}


class Ledger(ABC):
    name: str

    @abstractmethod
    def claim(
        self, notification_id: str, *, lease_seconds: float, replay: bool = False,
        about: Mapping[str, str] | None = None,
    ) -> Claim:  # fmt: skip
        """Claim a notification. ``replay`` also takes over a dead-lettered one. ``about``: what
        the record keeps of its Sending (:func:`notifier.ledger.history.sending_about`), through
        every later write of it, where the history reads it (the state bucket); a store that has
        no use for it ignores it."""

    @abstractmethod
    def mark_sent(self, claim: Claim, message_id: str) -> None:
        """The provider accepted the message: later deliveries are duplicates."""

    @abstractmethod
    def release(self, claim: Claim) -> None:
        """Sending failed transiently: the next delivery may claim it at once (a replay's claim
        with an ``owed`` list: the dead letter's record is put back as it was)."""

    @abstractmethod
    def mark_dead(self, claim: Claim, owed: Iterable[str] | None = None) -> None:
        """Sending failed permanently: the message is in the dead letters until replayed.
        ``owed``: after a partial send, the addresses still owed it (replay sends to no one else);
        None: nobody got it."""

    def lookup(self, notification_id: str) -> dict[str, Any] | None:
        """The notification's record as the store holds it (``state``: claimed, sent or dead;
        ``message_id``, ``lease_until``, ``owed``), for ``status`` and the Event Webhook's "is this
        ours?"; None when there is none. A store that cannot be read from outside its process
        (memory) may answer from what it holds."""
        return None


# Dead letters are a few KB (an event, a rule name, an error, the rendered message): anything much
# bigger was not written by us and is not read, since parsing JSON can take 30 times its size in
# memory. (Letters from before attachments were left out of them may be larger: see too_large.)
MAX_DEAD_LETTER_BYTES = 2 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A stored letter as found: untrusted JSON. ``replay`` rebuilds the email from its ``event``
    and today's rules; nothing else in ``record`` decides what is sent or to whom, except that
    ``refused_recipients`` (a partial send's) narrows today's recipients to those: never widens.
    The ledger record's ``owed`` list (see :func:`owed_in`) narrows them further: it, not a letter
    that can be stale, copied or edited, says who still needs the email."""

    notification_id: str  # the file or object name without ".json": what `remove` deletes
    created: str  # ISO 8601, UTC
    record: dict[str, Any]  # event, rule, error (and, in older letters, the message), as JSON values
    source: str = ""  # the file path or gs:// URI, to name it in messages


@dataclass(frozen=True, slots=True)
class UnreadableLetter:
    """A file among the dead letters that is not one (bad JSON, not an object, too large)."""

    notification_id: str
    source: str
    reason: str


class DeadLetters(ABC):
    """Where undeliverable messages are kept for `python -m notifier replay`."""

    location: str
    max_bytes: int = MAX_DEAD_LETTER_BYTES

    @abstractmethod
    def put(self, notification_id: str, record: dict[str, Any]) -> str:
        """Store a dead letter; return where it went (for the log)."""

    @abstractmethod
    def list(self) -> Iterator[DeadLetter | UnreadableLetter]:
        """Every stored letter; one that cannot be read is yielded as an UnreadableLetter, never raised."""

    @abstractmethod
    def remove(self, notification_id: str) -> None: ...


def new_token() -> str:
    return secrets.token_hex(8)


def now_utc() -> datetime:
    return datetime.now(UTC)


def encode_record(record: dict[str, Any]) -> str:
    return json.dumps(record, ensure_ascii=False, sort_keys=True, default=str)


def decode_letter(notification_id: str, source: str, data: bytes, max_bytes: int) -> DeadLetter | UnreadableLetter:
    """What a stored file holds: a DeadLetter if it is a JSON object of at most ``max_bytes``."""

    def unreadable(reason: str) -> UnreadableLetter:
        return UnreadableLetter(notification_id, source, reason)

    if len(data) > max_bytes:
        return unreadable(too_large(len(data), max_bytes))
    try:
        record = json.loads(data)
    except (ValueError, RecursionError) as error:  # RecursionError: "[[[[..." nested too deep
        return unreadable(f"not JSON ({type(error).__name__}: {str(error)[:200]})")
    if not isinstance(record, dict):
        return unreadable(f"expected a JSON object, got {type(record).__name__}")
    created = record.get("created", "")
    if not isinstance(created, str):
        return unreadable(f"created: expected an ISO 8601 string, got {type(created).__name__}")
    return DeadLetter(notification_id, created, record, source)


def too_large(size: int, max_bytes: int) -> str:
    return (
        f"{size} bytes, more than the {max_bytes / 2**20:g} MiB a dead letter may have (one written before"
        ' attachments were left out of dead letters: delete its "message" field, replay does not use it)'
    )


# After its deadline a delivery may still take this long to record what it did (a "sent" mark, a
# dead letter, a release): a lost "sent" mark costs a duplicate email. deploy.sh sets the function's
# timeout 15 s past NOTIFY_DEADLINE_SECONDS (the sandbox its ack deadline too), so the answer still
# goes out 5 s before it.
STATE_GRACE_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class StateDeadlines:
    """When the state calls of the delivery under way must end (``time.monotonic()`` values)."""

    send_by: float  # the calls before the send (the claim, an attachment), all together
    done_by: float  # the calls after it (marks, dead letters, releases): the deadline plus the grace
    before_send: bool = False  # inside ``with before_send():``

    @property
    def until(self) -> float:
        """When a call made now must end."""
        return self.send_by if self.before_send else self.done_by


# Set around a delivery by the pipeline: a store that makes network calls bounds each by the time
# left, so a hung store cannot hold an event past it. None outside a delivery (replay, the CLI):
# each store's own fixed limits apply.
_STATE_DEADLINES: ContextVar[StateDeadlines | None] = ContextVar("state_deadlines", default=None)


@contextmanager
def state_deadline(deadline: float, *, send_needs: float, grace: float = STATE_GRACE_SECONDS) -> Iterator[None]:
    """State calls made inside the block, for a delivery due by ``deadline`` (a ``time.monotonic()``
    value), end by ``deadline + grace``; those in :func:`before_send` share the time until
    ``deadline - send_needs``, so that the send keeps what it needs."""
    token = _STATE_DEADLINES.set(StateDeadlines(send_by=deadline - send_needs, done_by=deadline + grace))
    try:
        yield
    finally:
        _STATE_DEADLINES.reset(token)


@contextmanager
def before_send() -> Iterator[None]:
    """``with before_send():`` calls made in the block (the claim, an attachment) end in time for the
    send; outside a delivery, nothing changes."""
    deadlines = _STATE_DEADLINES.get()
    if deadlines is None:
        yield
        return
    token = _STATE_DEADLINES.set(replace(deadlines, before_send=True))
    try:
        yield
    finally:
        _STATE_DEADLINES.reset(token)


def current_deadline() -> float | None:
    """When a state call made now must end (a ``time.monotonic()`` value); None outside a delivery."""
    deadlines = _STATE_DEADLINES.get()
    return None if deadlines is None else deadlines.until
