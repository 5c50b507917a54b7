"""What became of each notification after the ledger's claim: what was sent (the object's change,
the rule, the recipients, the outcome), found by object or by id, and the delivery events SendGrid
reported for it (its signed Event Webhook, :mod:`notifier.feedback`).

``python -m notifier status`` reads it; the pipeline writes a :class:`Sending` once a delivery has
an outcome, the flush one per digest, and the webhook the :class:`DeliveryEvent` values. Everything
read back is untrusted (the state bucket can be written by others): :meth:`Sending.from_json` and
:meth:`DeliveryEvent.from_json` return None for anything the function does not write.

Stores: :mod:`.gcs_history` (the state bucket), :mod:`.sqlite_history` (local runs, in the SQLite
ledger's file), which import this module, and here :class:`MemoryHistory` (tests) and
:class:`NoHistory` (beside a ledger in memory, which no other process could read);
:func:`notifier.ledger.create_history` picks the one beside the ledger (not here: they import this
module). Every failure is a :class:`~notifier.ledger.base.LedgerError`.
"""

from __future__ import annotations

import hashlib
import re
import threading
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from notifier.ledger.base import LedgerError

if TYPE_CHECKING:
    from notifier.ledger.base import Ledger
    from notifier.rules import Notification

# A Sending names at most this many recipients (and says how many there were): a rule may have
# thousands, and status shows who, not a mailing list.
MAX_RECIPIENTS_KEPT = 50
# Delivery events kept per notification. Opens and clicks repeat as often as a reader looks: they
# get a small bound of their own, so that they never crowd out a bounce. The other kinds come a few
# per recipient (processed, deferred, delivered or bounced, …), and a rule may have thousands.
MAX_EVENTS_PER_NOTIFICATION = 500  # opens and clicks, together
MAX_ONCE_EVENTS_PER_NOTIFICATION = 20_000  # every other kind, together
REPEATABLE_EVENTS = frozenset({"open", "click"})
MAX_SENDINGS_PER_OBJECT = 1_000  # read for one object (or digest window): its newest
MAX_TEXT = 1_000  # characters of a reason, a URL or any other text a delivery event carries
MAX_ERROR = 4 * MAX_TEXT  # characters of a Sending's error, as from_json reads them back
MAX_MEMORY_SENDINGS = 10_000  # a MemoryHistory (tests) forgets the oldest beyond this
NOTIFICATION_ID = re.compile(r"[0-9a-f]{32}")  # rules.notification_id and the digest's id

# SendGrid's event names we record, as the status command shows them.
DELIVERY_EVENTS = ("processed", "deferred", "delivered", "bounce", "dropped", "spamreport", "open", "click")


def class_bound(repeatable: bool) -> int:
    """How many events of a class (opens and clicks, or every other kind) a notification keeps;
    read when called, so that a test can lower the bounds."""
    return MAX_EVENTS_PER_NOTIFICATION if repeatable else MAX_ONCE_EVENTS_PER_NOTIFICATION


def max_events_kept() -> int:
    """All the events a notification can have, of both classes: what ``events`` reads at most."""
    return MAX_EVENTS_PER_NOTIFICATION + MAX_ONCE_EVENTS_PER_NOTIFICATION


def sendings_bound() -> int:
    """How many sendings one object's (or window's) listing reads at most: read when called, so
    that a test can lower the bound."""
    return MAX_SENDINGS_PER_OBJECT


class Filed(list["Sending"]):
    """The sendings filed under one object (or digest window), oldest first: its newest
    :func:`sendings_bound` at most; ``truncated`` says that older ones were left unread."""

    def __init__(self, sendings: Iterable[Sending] = (), *, truncated: bool = False) -> None:
        super().__init__(sendings)
        self.truncated = truncated


def object_key(bucket: str, name: str) -> str:
    """Where a store files an object's sendings: names can be 1 KiB of any UTF-8, keys are hex."""
    return hashlib.sha256(f"{bucket}\n{name}".encode("utf-8", "surrogatepass")).hexdigest()[:32]


def sending_about(bucket: str, name: str, generation: int | None) -> dict[str, str]:
    """A claim's ``about`` for a notification of ``bucket``/``name`` at ``generation``: where the
    state bucket's history files its Sending (:mod:`notifier.ledger.gcs_history`), so that
    finding it by id costs the ledger record and that one object."""
    return {"object_key": object_key(bucket, name), "generation": str(generation or 0)}


@dataclass(frozen=True, slots=True)
class Sending:
    """One notification as the delivery that claimed it (or held it for a digest) left it.

    ``digest``: for an event held for a digest, ``{"group": key, "window": start, "held_id": id}``;
    for a digest itself, ``{"group": key, "windows": [start, ...], "events": count}`` (then
    ``bucket`` and ``object`` name the group's first event's bucket, ``object`` is "").
    ``previous``: for a replay's, the replayed dead letter's ``outcome``, ``error``, ``at`` (when it
    was stored) and ``refused_recipients`` (a partial send's): status still shows what failed."""

    notification_id: str
    bucket: str
    object: str
    generation: int | None
    event_id: str
    kind: str  # finalize, delete, archive, metadata, or "digest"
    rule: str
    recipients: tuple[str, ...]  # at most MAX_RECIPIENTS_KEPT addresses
    recipient_count: int
    outcome: str  # the pipeline's outcome word: sent, dead-lettered, partially-sent, batched, retrying
    at: str  # when the outcome was recorded: ISO 8601, UTC
    event_time: str = ""  # the change's time as the event gave it, ISO 8601; "" if it had none
    message_id: str = ""  # SendGrid's X-Message-Id
    attempts: int = 0
    error: str = ""  # the outcome line's error, scrubbed and cut
    digest: Mapping[str, Any] | None = None
    previous: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        value = _fields(self)
        value["recipients"] = list(self.recipients)
        value["digest"] = None if self.digest is None else dict(self.digest)
        value["previous"] = None if self.previous is None else dict(self.previous)
        return value

    @classmethod
    def from_json(cls, value: Any) -> Sending | None:
        """A stored sending; None if ``value`` is not one the function writes."""
        if not isinstance(value, dict):
            return None
        strings = ("notification_id", "bucket", "object", "event_id", "kind", "rule", "outcome", "at",
                   "event_time", "message_id", "error")  # fmt: skip
        if not all(isinstance(value.get(k, ""), str) and len(value.get(k, "")) <= 4 * MAX_TEXT for k in strings):
            return None
        recipients, digest, generation = value.get("recipients"), value.get("digest"), value.get("generation")
        if not (
            isinstance(recipients, list) and len(recipients) <= MAX_RECIPIENTS_KEPT
            and all(isinstance(r, str) and len(r) <= 320 for r in recipients)
            and _count(value.get("recipient_count")) and _count(value.get("attempts", 0))
            and (generation is None or _count(generation)) and (digest is None or isinstance(digest, dict))
            and NOTIFICATION_ID.fullmatch(value.get("notification_id", ""))
            and cls._previous_readable(previous := value.get("previous"))
        ):  # fmt: skip
            return None
        return cls(
            **{k: value.get(k, "") for k in strings},
            generation=generation, recipients=tuple(recipients), recipient_count=value["recipient_count"],
            attempts=value.get("attempts", 0), digest=None if digest is None else MappingProxyType(digest),
            previous=None if previous is None else MappingProxyType(previous),
        )  # fmt: skip

    @staticmethod
    def _previous_readable(previous: Any) -> bool:
        """Whether a stored ``previous`` is one the pipeline writes: None, or these bounded fields."""
        if previous is None:
            return True
        if not isinstance(previous, dict) or not set(previous) <= {"outcome", "error", "at", "refused_recipients"}:
            return False
        refused = previous.get("refused_recipients", [])
        return (
            all(isinstance(previous.get(k, ""), str) and len(previous.get(k, "")) <= n
                for k, n in (("outcome", 100), ("error", MAX_ERROR), ("at", 100)))
            and isinstance(refused, list) and len(refused) <= MAX_RECIPIENTS_KEPT
            and all(isinstance(r, str) and len(r) <= 320 for r in refused)
        )  # fmt: skip


@dataclass(frozen=True, slots=True)
class DeliveryEvent:
    """One event of SendGrid's Event Webhook for one of our notifications, as recorded."""

    sg_event_id: str  # SendGrid's id of the event: what makes recording it twice a no-op
    event: str  # one of DELIVERY_EVENTS
    timestamp: int  # Unix seconds, SendGrid's
    email: str  # the recipient it is about
    reason: str = ""  # bounce/dropped/deferred: SendGrid's reason or the server's response
    detail: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # type, status, url, …

    def to_json(self) -> dict[str, Any]:
        value = _fields(self)
        value["detail"] = dict(self.detail)
        return value

    @classmethod
    def from_json(cls, value: Any) -> DeliveryEvent | None:
        """A stored delivery event; None if ``value`` is not one the function writes."""
        if not isinstance(value, dict):
            return None
        detail, timestamp = value.get("detail", {}), value.get("timestamp")
        texts = [value.get(k, "") for k in ("sg_event_id", "event", "email", "reason")]
        if not (
            all(isinstance(t, str) and len(t) <= MAX_TEXT for t in texts)
            and value.get("event") in DELIVERY_EVENTS and value.get("sg_event_id") and _count(timestamp)
            and isinstance(detail, dict) and len(detail) <= 20
            and all(isinstance(k, str) and isinstance(v, str) and len(k) <= 100 and len(v) <= MAX_TEXT
                    for k, v in detail.items())
        ):  # fmt: skip
            return None
        sg_event_id, event, email, reason = texts
        return cls(sg_event_id, event, timestamp, email, reason, MappingProxyType(dict(detail)))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Added:
    """What :meth:`History.add_events` did with one notification's events (the rest were known)."""

    new: tuple[DeliveryEvent, ...] = ()  # recorded by this call, in the order given
    not_kept: tuple[DeliveryEvent, ...] = ()  # not recorded: the notification has its bound of their class


class PartlyAdded(LedgerError):
    """:meth:`History.add_events` failed part-way (a store that records event by event): ``added``
    is what it recorded before, so that their alarms are raised once, now."""

    def __init__(self, error: LedgerError, added: Added) -> None:
        super().__init__(str(error))
        self.added = added


def plan_additions(
    events: Iterable[DeliveryEvent], known: Callable[[DeliveryEvent], bool], kept: Mapping[bool, int]
) -> tuple[list[DeliveryEvent], list[DeliveryEvent]]:
    """(to record, not kept) of ``events``: each sg_event_id once, the ``known`` ones left out, and
    those beyond their class's bound not kept. ``kept``: how many are kept already, by
    ``event in REPEATABLE_EVENTS``."""
    room = {repeatable: class_bound(repeatable) - kept.get(repeatable, 0) for repeatable in (True, False)}
    seen: set[str] = set()
    to_record: list[DeliveryEvent] = []
    not_kept: list[DeliveryEvent] = []
    for event in events:
        if event.sg_event_id in seen or known(event):
            continue
        seen.add(event.sg_event_id)
        repeatable = event.event in REPEATABLE_EVENTS
        if room[repeatable] > 0:
            room[repeatable] -= 1
            to_record.append(event)
        else:
            not_kept.append(event)
    return to_record, not_kept


def notification_sending(
    notification: Notification, outcome: str, at: datetime, *, message_id: str = "", attempts: int = 0,
    error: str = "", digest: Mapping[str, Any] | None = None,
) -> Sending:  # fmt: skip
    """The Sending of one notification's outcome (``at``: when it was had)."""
    event, everyone = notification.event, notification.recipients.everyone
    return Sending(
        notification.id, event.bucket, event.name, event.generation, event.event_id[:MAX_ERROR], str(event.kind),
        notification.rule.name, tuple(a.email for a in everyone[:MAX_RECIPIENTS_KEPT]), len(everyone), outcome,
        utc_text(at), utc_text(event.event_time) if event.event_time else "", message_id or "", attempts,
        error[:MAX_ERROR], None if digest is None else MappingProxyType(dict(digest)),
    )  # fmt: skip


def utc_text(when: datetime) -> str:
    """``when`` as a Sending keeps times: ISO 8601 in UTC, to the second."""
    return when.astimezone(UTC).isoformat(timespec="seconds")


def _fields(value: Any) -> dict[str, Any]:
    """A dataclass's fields, not deep-copied as asdict would (it cannot copy a MappingProxyType)."""
    return {f.name: getattr(value, f.name) for f in fields(value)}


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class History(ABC):
    name: str
    unreadable: int = 0  # records read back that the store did not write, skipped: status says how many
    keeps = True  # False: NoHistory, for which the pipeline builds no Sending at all

    @abstractmethod
    def record(self, sending: Sending) -> None:
        """Keep ``sending`` under its id (a later one for the same id, a replay's, replaces it) and
        file it under its object (for a digest: under each window of its group)."""

    @abstractmethod
    def by_id(self, notification_id: str) -> Sending | None:
        """The last sending recorded for ``notification_id``; None if there is none."""

    def find(self, notification_id: str, ledger: Ledger) -> tuple[Sending | None, bool]:
        """The id's last sending, and whether the id is ours at all: a sending, else a ledger
        record (a claim whose sending is not written yet). The Event Webhook's question."""
        sending = self.by_id(notification_id)
        return sending, sending is not None or ledger.lookup(notification_id) is not None

    @abstractmethod
    def by_object(self, bucket: str, name: str) -> Filed:
        """The sendings filed under the object, every generation, oldest first: the newest
        :func:`sendings_bound` (by generation), ``truncated`` if there are more."""

    @abstractmethod
    def digests(self, group: str, window: int) -> Filed:
        """The digests sent with events of the group's window (a late event's part is another)."""

    @abstractmethod
    def add_events(self, notification_id: str, events: Sequence[DeliveryEvent]) -> Added:
        """Record the events not recorded before (by ``sg_event_id``), in one call per notification
        and batch: which were new (recorded now: only those raise an alarm, so a retried batch
        warns nothing twice), and which were not kept because the notification has its bound of
        their class (:func:`class_bound`: opens and clicks, or every other kind). Neither lists a
        known event. Two calls racing with the same event: one of them finds it new."""

    @abstractmethod
    def events(self, notification_id: str) -> list[DeliveryEvent]:
        """The notification's delivery events, in time order (at most :func:`max_events_kept`)."""


class NoHistory(History):
    """The history beside a ledger in memory (a deployment without a state bucket): none. Neither
    ``status`` (another process) nor the webhook (which refuses to start there) could read it, so
    keeping it would only cost each event CPU and the instance memory."""

    name = "none"
    keeps = False

    def record(self, sending: Sending) -> None:
        return None

    def by_id(self, notification_id: str) -> Sending | None:
        return None

    def by_object(self, bucket: str, name: str) -> Filed:
        return Filed()

    def digests(self, group: str, window: int) -> Filed:
        return Filed()

    def add_events(self, notification_id: str, events: Sequence[DeliveryEvent]) -> Added:
        return Added()

    def events(self, notification_id: str) -> list[DeliveryEvent]:
        return []


class MemoryHistory(History):
    """One process's history, for tests (as the outbox and console backends are for mail): a
    deployment without a state bucket keeps none (:class:`NoHistory`)."""

    name = "memory"

    def __init__(self) -> None:
        self._by_id: dict[str, Sending] = {}
        self._filed: dict[str, dict[str, None]] = {}  # object key or digest window → ids, in order
        self._events: dict[str, dict[str, DeliveryEvent]] = {}
        self._lock = threading.Lock()

    def record(self, sending: Sending) -> None:
        with self._lock:
            self._by_id.pop(sending.notification_id, None)  # the newest last: the oldest is forgotten first
            self._by_id[sending.notification_id] = sending
            for key in filing_keys(sending):
                self._filed.setdefault(key, {})[sending.notification_id] = None
            while len(self._by_id) > MAX_MEMORY_SENDINGS:
                self._forget(next(iter(self._by_id)))

    def _forget(self, notification_id: str) -> None:
        for key in filing_keys(self._by_id.pop(notification_id)):
            filed = self._filed.get(key, {})
            filed.pop(notification_id, None)
            if not filed:
                self._filed.pop(key, None)
        self._events.pop(notification_id, None)

    def by_id(self, notification_id: str) -> Sending | None:
        return self._by_id.get(notification_id)

    def by_object(self, bucket: str, name: str) -> Filed:
        return self._filed_under(object_key(bucket, name))

    def digests(self, group: str, window: int) -> Filed:
        return self._filed_under(window_key(group, window))

    def add_events(self, notification_id: str, events: Sequence[DeliveryEvent]) -> Added:
        with self._lock:
            known = self._events.setdefault(notification_id, {})
            kept = Counter(e.event in REPEATABLE_EVENTS for e in known.values())
            new, not_kept = plan_additions(events, lambda e: e.sg_event_id in known, kept)
            known.update((e.sg_event_id, e) for e in new)
            return Added(tuple(new), tuple(not_kept))

    def events(self, notification_id: str) -> list[DeliveryEvent]:
        return sorted(self._events.get(notification_id, {}).values(), key=lambda e: (e.timestamp, e.sg_event_id))

    def _filed_under(self, key: str) -> Filed:
        """The newest :func:`sendings_bound` filed under ``key``, oldest first."""
        with self._lock:
            found = [self._by_id[i] for i in self._filed.get(key, {}) if i in self._by_id]
        found.sort(key=lambda s: (s.generation or 0, s.at))
        most = sendings_bound()
        return Filed(found[max(0, len(found) - most) :], truncated=len(found) > most)


def window_key(group: str, window: int) -> str:
    """Where a digest is filed for one of its windows."""
    return f"digest-{group}-{window}"


def filing_keys(sending: Sending) -> Iterable[str]:
    """The keys a sending is filed under: its object's, or each window of a digest."""
    digest = sending.digest or {}
    if "windows" in digest:
        return [window_key(str(digest.get("group", "")), w) for w in digest["windows"] if _count(w)]
    return [object_key(sending.bucket, sending.object)]
