"""SendGrid's signed Event Webhook, without HTTP: verify a batch, read its events, keep ours.

:mod:`notifier.webhook` hands over the raw body and the two signature headers; this module says
whether SendGrid signed them (ECDSA P-256 over timestamp + body, the ``sendgrid`` package's
``EventWebhook``), which events are about our notifications (``notification_id``, our custom arg,
naming a notification the history or the ledger knows, remembered a while by :class:`IdCache`),
records those in the history (idempotent on ``sg_event_id``: SendGrid retries its webhook), and
logs a WARNING per bounce, drop or spam report newly recorded (or not kept: over its bound).
Imported by the webhook alone: the event function never loads cryptography.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import hashlib
import json
import logging
import threading
import time
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from notifier import log
from notifier.events import json_type_name
from notifier.ledger.base import LedgerError, state_deadline
from notifier.ledger.history import (
    DELIVERY_EVENTS,
    MAX_TEXT,
    NOTIFICATION_ID,
    Added,
    DeliveryEvent,
    History,
    PartlyAdded,
    class_bound,
)

if TYPE_CHECKING:
    from notifier.ledger.base import Ledger

KEY_VARIABLE = "SENDGRID_WEBHOOK_PUBLIC_KEY"
MAX_SKEW_SECONDS = 600  # a signed batch older (or newer) than this is a replay, not SendGrid's retry
MAX_EVENTS = 10_000  # per batch: SendGrid posts hundreds at most
RECORD_SECONDS = 20.0  # all of a batch's history calls; SendGrid waits longer, then retries
RECORD_THREADS = 16  # notifications looked up and recorded at once (each a few state-bucket calls)
# Whether an id is ours, remembered by an instance: SendGrid reports one notification in many
# batches, and an account's other mail carries ids never ours; each look-up costs two reads.
ID_CACHE_SIZE = 10_000  # ids: a batch's worth
ID_CACHE_SECONDS = 600.0
# An id found unknown is asked again sooner: a digest's record is written just after SendGrid took it,
# and its first events could come before it.
UNKNOWN_ID_SECONDS = 60.0
MAX_SIGNATURE_CHARS = 96  # base64 of a DER ECDSA P-256 signature: at most 72 bytes
_TIMESTAMP_DIGITS = 12

# What a newly recorded event of these kinds logs (WARNING): the outcome word the alerts count.
ALARMS = {"bounce": "bounced", "dropped": "dropped", "spamreport": "spam"}
# Event fields kept as the event's detail (texts, cut to MAX_TEXT): SendGrid's names.
DETAIL_FIELDS = ("type", "status", "url", "sg_message_id", "attempt", "bounce_classification")
# Where SendGrid puts why: a bounce's or drop's "reason", a deferral's server "response".
REASON_FIELDS = ("reason", "response")
_SAFE_EVENT_ID_LENGTH = 100


class Rejected(Exception):
    """The batch is not SendGrid's, or not as signed (answered 403)."""


class Malformed(Exception):
    """A signed batch that is not a JSON array of event objects (answered 400)."""


# ---------------------------------------------------------------------------------------------
# The signature: SendGrid's key, loaded once per process (cryptography is imported only here).

_verifiers: dict[str, Any] = {}
_verifiers_lock = threading.Lock()


def _verifier(public_key: str) -> Any:
    with _verifiers_lock:
        if public_key not in _verifiers:
            from sendgrid.helpers.eventwebhook import EventWebhook

            _verifiers[public_key] = EventWebhook(public_key)  # ValueError: not a key (config checks it too)
        return _verifiers[public_key]


def load_key(public_key: str) -> None:
    """Load SendGrid's key now, so that one that does not load stops the start rather than every
    batch (config checks its form only: a mistyped character leaves a point off the curve);
    ValueError saying why, never the key."""
    from cryptography.exceptions import UnsupportedAlgorithm

    try:
        _verifier(public_key)
    except (ValueError, TypeError, UnsupportedAlgorithm) as error:
        raise ValueError(
            f"the key does not load as an ECDSA P-256 public key ({type(error).__name__}): copy it again from"
            " SendGrid, Mail Settings > Event Webhook > Signed Event Webhook"
        ) from None


def check_headers(signature: str | None, timestamp: str | None, now: float) -> int:
    """The signed timestamp if the two headers can be SendGrid's at ``now`` (present, the timestamp
    Unix seconds within MAX_SKEW_SECONDS, the signature base64 of at most a P-256 signature's
    size); else :class:`Rejected` saying why. Cheap: the body need not be read for it."""
    if not signature or not timestamp:
        missing = [n for n, v in (("signature", signature), ("timestamp", timestamp)) if not v]
        raise Rejected(f"the {' and '.join(missing)} header{'s are' if len(missing) > 1 else ' is'} missing")
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= _TIMESTAMP_DIGITS):
        raise Rejected("the timestamp header is not Unix seconds")
    skew = now - int(timestamp)
    if abs(skew) > MAX_SKEW_SECONDS:
        when = "old" if skew > 0 else "in the future"
        raise Rejected(f"the timestamp is {abs(skew):.0f} s {when}; at most {MAX_SKEW_SECONDS} s is accepted")
    if len(signature) > MAX_SIGNATURE_CHARS:
        raise Rejected(f"the signature header is {len(signature):,} characters; a P-256 signature is at most"
                       f" {MAX_SIGNATURE_CHARS}")  # fmt: skip
    try:
        base64.b64decode(signature, validate=True)
    except (binascii.Error, ValueError):
        raise Rejected("the signature header is not base64") from None
    return int(timestamp)


def verify(public_key: str, body: bytes, signature: str | None, timestamp: str | None, now: float) -> str:
    """The body as text if SendGrid signed ``timestamp`` + ``body`` within MAX_SKEW_SECONDS of
    ``now``; else :class:`Rejected` saying why (never what the signature or key is)."""
    check_headers(signature, timestamp, now)
    signature, timestamp = signature or "", timestamp or ""  # present: check_headers said so
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Rejected(f"the body is not valid UTF-8 (position {error.start}): SendGrid signs UTF-8") from None
    from cryptography.exceptions import InvalidSignature

    try:
        valid = _verifier(public_key).verify_signature(text, signature, timestamp)
    except (binascii.Error, ValueError, TypeError, InvalidSignature):
        valid = False  # not DER, not a key: not signed by SendGrid either way
    if not valid:
        raise Rejected("the signature does not match the body and timestamp (or another key signed it)")
    return text


# ---------------------------------------------------------------------------------------------
# The batch: a JSON array of event objects, each read into a DeliveryEvent (bounded) or skipped.


@dataclass(frozen=True, slots=True)
class Parsed:
    """A batch's events sorted out: ours-to-check per notification id, the rest counted."""

    by_id: Mapping[str, list[DeliveryEvent]]
    received: int
    unknown: int  # no notification id of ours: someone else's mail
    ignored: int  # events we do not record (group_unsubscribe, …) or without an sg_event_id


def parse(text: str, received_at: int) -> Parsed:
    """Sort a signed batch's events; :class:`Malformed` if it is not an array of at most MAX_EVENTS
    objects. ``received_at``: the signed timestamp, for an event whose own is missing."""
    try:
        items = json.loads(text)
    except RecursionError:
        raise Malformed("the body is nested too deeply to be an event batch") from None
    except ValueError as error:
        raise Malformed(f"the body is not JSON ({log.cut(str(error), 200)})") from None
    if not isinstance(items, list):
        raise Malformed(f"the body is {json_type_name(items)}; expected a JSON array of event objects")
    if len(items) > MAX_EVENTS:
        raise Malformed(f"the batch holds {len(items):,} events; at most {MAX_EVENTS:,} are accepted")
    for position, item in enumerate(items):
        if not isinstance(item, dict):
            raise Malformed(f"item {position} is {json_type_name(item)}; expected an event object")
    by_id: dict[str, list[DeliveryEvent]] = defaultdict(list)
    unknown = ignored = 0
    for item in items:
        notification_id = item.get("notification_id")
        if not (isinstance(notification_id, str) and NOTIFICATION_ID.fullmatch(notification_id)):
            unknown += 1
        elif (event := delivery_event(item, received_at)) is None:
            ignored += 1
        else:
            by_id[notification_id].append(event)
    return Parsed(MappingProxyType(dict(by_id)), len(items), unknown, ignored)


def delivery_event(item: Mapping[str, Any], received_at: int) -> DeliveryEvent | None:
    """One SendGrid event as recorded; None for an event we do not record or one without an id."""
    name, sg_event_id = item.get("event"), item.get("sg_event_id")
    if name not in DELIVERY_EVENTS or not isinstance(sg_event_id, str) or not sg_event_id:
        return None
    timestamp = item.get("timestamp")
    if not (isinstance(timestamp, int) and not isinstance(timestamp, bool) and timestamp >= 0):
        timestamp = received_at
    reason = next((t for f in REASON_FIELDS if (t := _text(item.get(f)))), "")
    detail = {f: t for f in DETAIL_FIELDS if (t := _text(item.get(f)))}
    return DeliveryEvent(
        _event_id(sg_event_id), name, timestamp, _text(item.get("email")), reason, MappingProxyType(detail)
    )


def _text(value: Any) -> str:
    # SendGrid's texts, and numbers it sends either way ("attempt": "1", "status": 550): nothing nested.
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return ""
    return str(value)[:MAX_TEXT]


def _event_id(sg_event_id: str) -> str:
    # Cutting a long id could make two events one; its hash keeps recording it idempotent.
    if len(sg_event_id) <= _SAFE_EVENT_ID_LENGTH:
        return sg_event_id
    return "sha256-" + hashlib.sha256(sg_event_id.encode("utf-8", "surrogatepass")).hexdigest()


# ---------------------------------------------------------------------------------------------
# Whose ids: looked up once per instance for a while (IdCache), in parallel.


@dataclass(frozen=True, slots=True)
class Lookup:
    """Whether a notification id is ours, and its rule when its Sending says."""

    known: bool
    rule: str | None = None


class IdCache:
    """Ids looked up lately, ours or not, at most ``max_ids`` (the oldest forgotten first), each
    for ``seconds`` (an unknown one for ``unknown_seconds``). Only what was found is kept: a failed
    look-up is tried again."""

    def __init__(
        self, max_ids: int = ID_CACHE_SIZE, seconds: float = ID_CACHE_SECONDS,
        clock: Callable[[], float] = time.monotonic, unknown_seconds: float = UNKNOWN_ID_SECONDS,
    ) -> None:  # fmt: skip
        self._max_ids, self._seconds, self._clock = max_ids, seconds, clock
        self._unknown_seconds = min(seconds, unknown_seconds)
        self._found: OrderedDict[str, tuple[float, Lookup]] = OrderedDict()  # oldest first
        self._lock = threading.Lock()  # the webhook's requests run in threads

    def get(self, notification_id: str) -> Lookup | None:
        with self._lock:
            found = self._found.get(notification_id)
            if found is None:
                return None
            if self._clock() >= found[0]:
                del self._found[notification_id]
                return None
            return found[1]

    def put(self, notification_id: str, lookup: Lookup) -> None:
        with self._lock:
            self._found.pop(notification_id, None)
            seconds = self._seconds if lookup.known else self._unknown_seconds
            self._found[notification_id] = (self._clock() + seconds, lookup)
            while len(self._found) > self._max_ids:
                self._found.popitem(last=False)


def look_up(notification_id: str, history: History, ledger: Ledger, cache: IdCache) -> Lookup:
    """Whether the id is ours: its Sending, else its ledger record (a claim before the Sending is
    written). A LedgerError is raised, and nothing remembered."""
    if (cached := cache.get(notification_id)) is not None:
        return cached
    sending, ours = history.find(notification_id, ledger)
    found = Lookup(ours, sending.rule if sending is not None else None)
    cache.put(notification_id, found)
    return found


# ---------------------------------------------------------------------------------------------
# Recording: per notification, in parallel, each id checked to be ours first.


class NotRecorded(LedgerError):
    """Some of the batch's events may be ours and are not recorded: SendGrid should retry it (what
    was recorded, and the ids found, make the retry cheaper and warn nothing twice)."""

    def __init__(self, error: str, unchecked: int, unrecorded: int) -> None:
        super().__init__(error)
        self.unchecked = unchecked  # ids that could not be looked up (the state bucket, or the time)
        self.unrecorded = unrecorded  # our ids whose events were not (all) recorded


@dataclass(frozen=True, slots=True)
class Recorded:
    """What a batch came to: the answer's counts."""

    received: int
    recorded: int
    duplicates: int
    not_kept: int  # ours, over their notification's bound (history.class_bound)
    unknown: int
    ignored: int
    alarms: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def counts(self) -> dict[str, int]:
        keys = ("received", "recorded", "duplicates", "not_kept", "unknown", "ignored")
        return {k: getattr(self, k) for k in keys}


@dataclass(frozen=True, slots=True)
class _Outcome:
    """One notification's part of a batch."""

    ours: bool | None  # None: not looked up (the state bucket failed, or the time ran out)
    added: Added = field(default_factory=Added)
    alarms: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    error: str = ""  # why it was not looked up, or its events not (all) recorded


def record(
    parsed: Parsed, history: History, ledger: Ledger, logger: logging.Logger, cache: IdCache,
    clock: Callable[[], float] = time.monotonic,
) -> Recorded:  # fmt: skip
    """Record the events of our notifications, RECORD_SECONDS for all. :class:`NotRecorded` when
    an id could not be looked up or our events not recorded (the state bucket failed or was slow):
    an unchecked id may be ours, and only SendGrid's retry can keep its events, so it is never
    taken as someone else's. Whatever was recorded stays (and warned once)."""
    deadline = clock() + RECORD_SECONDS
    ids = list(parsed.by_id)

    def one(notification_id: str) -> _Outcome:
        with state_deadline(deadline, send_needs=0.0, grace=0.0):
            return _record_one(notification_id, parsed.by_id[notification_id], history, ledger, logger, cache)

    outcomes = dict(zip(ids, _in_parallel(one, ids), strict=True))
    unchecked = [i for i, o in outcomes.items() if o.ours is None]
    unrecorded = [i for i, o in outcomes.items() if o.ours and o.error]
    if unchecked or unrecorded:
        first = outcomes[(unchecked or unrecorded)[0]].error
        raise NotRecorded(first, len(unchecked), len(unrecorded))
    ours = [i for i, o in outcomes.items() if o.ours]
    alarms: Counter[str] = Counter()
    for notification_id in ours:
        alarms.update(outcomes[notification_id].alarms)
    recorded = sum(len(outcomes[i].added.new) for i in ours)
    not_kept = sum(len(outcomes[i].added.not_kept) for i in ours)
    events_of_ours = sum(len(parsed.by_id[i]) for i in ours)
    unknown = sum(len(parsed.by_id[i]) for i, o in outcomes.items() if o.ours is False)
    return Recorded(parsed.received, recorded, events_of_ours - recorded - not_kept, not_kept,
                    parsed.unknown + unknown, parsed.ignored, MappingProxyType(dict(alarms)))  # fmt: skip


def _in_parallel(task: Callable[[str], _Outcome], ids: Sequence[str]) -> list[_Outcome]:
    """``task`` of each id, RECORD_THREADS at once, each in a copy of this context (the request's
    trace, for its lines; the deadline is set inside)."""
    if len(ids) <= 1:
        return [task(i) for i in ids]
    with ThreadPoolExecutor(min(RECORD_THREADS, len(ids)), thread_name_prefix="webhook") as pool:
        futures = [pool.submit(contextvars.copy_context().run, task, i) for i in ids]
        return [f.result() for f in futures]


def _record_one(
    notification_id: str, events: Sequence[DeliveryEvent], history: History, ledger: Ledger,
    logger: logging.Logger, cache: IdCache,
) -> _Outcome:  # fmt: skip
    """Look the id up, then add its events in one call; a WARNING for each bounce, drop or spam
    report it recorded now, or could not keep (a retried batch finds the recorded ones known)."""
    try:
        lookup = look_up(notification_id, history, ledger, cache)
    except LedgerError as error:
        return _Outcome(None, error=str(error))
    if not lookup.known:
        return _Outcome(False)
    error = ""
    try:
        added = history.add_events(notification_id, events)
    except PartlyAdded as partly:
        added, error = partly.added, str(partly)
    except LedgerError as failed:
        added, error = Added(), str(failed)
    alarms = _alarm_lines(logger, notification_id, added, lookup.rule)
    return _Outcome(True, added, MappingProxyType(dict(alarms)), error)


def _alarm_lines(logger: logging.Logger, notification_id: str, added: Added, rule: str | None) -> Counter[str]:
    alarms: Counter[str] = Counter()
    for kept, events in ((True, added.new), (False, added.not_kept)):
        for event in (e for e in events if e.event in ALARMS):
            alarms[ALARMS[event.event]] += 1
            _alarm_line(logger, notification_id, event, rule, kept)
    return alarms


def _alarm_line(logger: logging.Logger, notification_id: str, event: DeliveryEvent, rule: str | None,
                kept: bool) -> None:  # fmt: skip
    outcome = ALARMS[event.event]
    unkept = "" if kept else f" (not kept: the notification has {class_bound(False):,} events)"
    log.log(
        logger, logging.WARNING,
        f"{outcome}: {event.email or '(no recipient)'}: {event.reason or 'SendGrid gave no reason'}{unkept}",
        outcome=outcome, notification_id=notification_id, rule=rule, recipient=event.email,
        reason=event.reason, event=event.event, sg_event_id=event.sg_event_id, kept=None if kept else False,
        **dict(event.detail),
    )  # fmt: skip
