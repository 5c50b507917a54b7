"""SendGrid's signed Event Webhook, without HTTP: verify a batch, read its events, keep ours.

:mod:`notifier.webhook` hands over the raw body and the two signature headers; this module says
whether SendGrid signed them (ECDSA P-256 over timestamp + body, the ``sendgrid`` package's
``EventWebhook``), which events are about our notifications (``notification_id``, our custom arg,
naming a notification the history or the ledger knows), records those in the history (idempotent
on ``sg_event_id``: SendGrid retries its webhook), and logs a WARNING per newly recorded bounce,
drop or spam report. Imported by the webhook alone: the event function never loads cryptography.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from notifier import log
from notifier.events import json_type_name
from notifier.ledger.base import state_deadline
from notifier.ledger.history import DELIVERY_EVENTS, MAX_TEXT, NOTIFICATION_ID, DeliveryEvent, History

if TYPE_CHECKING:
    from notifier.ledger.base import Ledger

KEY_VARIABLE = "SENDGRID_WEBHOOK_PUBLIC_KEY"
MAX_SKEW_SECONDS = 600  # a signed batch older (or newer) than this is a replay, not SendGrid's retry
MAX_EVENTS = 10_000  # per batch: SendGrid posts hundreds at most
RECORD_SECONDS = 20.0  # all of a batch's history calls; SendGrid waits longer, then retries
RECORD_THREADS = 8  # notifications recorded at once (each is a few state-bucket calls)
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


def verify(public_key: str, body: bytes, signature: str | None, timestamp: str | None, now: float) -> str:
    """The body as text if SendGrid signed ``timestamp`` + ``body`` within MAX_SKEW_SECONDS of
    ``now``; else :class:`Rejected` saying why (never what the signature or key is)."""
    if not signature or not timestamp:
        missing = [n for n, v in (("signature", signature), ("timestamp", timestamp)) if not v]
        raise Rejected(f"the {' and '.join(missing)} header{'s are' if len(missing) > 1 else ' is'} missing")
    if not (timestamp.isascii() and timestamp.isdigit() and len(timestamp) <= _TIMESTAMP_DIGITS):
        raise Rejected("the timestamp header is not Unix seconds")
    skew = now - int(timestamp)
    if abs(skew) > MAX_SKEW_SECONDS:
        when = "old" if skew > 0 else "in the future"
        raise Rejected(f"the timestamp is {abs(skew):.0f} s {when}; at most {MAX_SKEW_SECONDS} s is accepted")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as error:
        raise Rejected(f"the body is not valid UTF-8 (position {error.start}): SendGrid signs UTF-8") from None
    from cryptography.exceptions import InvalidSignature

    try:
        base64.b64decode(signature, validate=True)
        valid = _verifier(public_key).verify_signature(text, signature, timestamp)
    except (binascii.Error, ValueError, TypeError, InvalidSignature):
        valid = False  # not base64, not DER, not a key: not signed by SendGrid either way
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
# Recording: per notification, in parallel, each id checked to be ours first.


@dataclass(frozen=True, slots=True)
class Recorded:
    """What a batch came to: the answer's counts."""

    received: int
    recorded: int
    duplicates: int
    unknown: int
    ignored: int
    alarms: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))

    def counts(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("received", "recorded", "duplicates", "unknown", "ignored")}


def record(
    parsed: Parsed, history: History, ledger: Ledger, logger: logging.Logger,
    clock: Callable[[], float] = time.monotonic,
) -> Recorded:  # fmt: skip
    """Record the events of our notifications; a LedgerError (the state bucket is down) is raised
    so that SendGrid retries the batch, which is idempotent."""
    deadline = clock() + RECORD_SECONDS
    ids = list(parsed.by_id)

    def one(notification_id: str) -> tuple[int, int, Counter[str]]:
        with state_deadline(deadline, send_needs=0.0, grace=0.0):
            return _record_one(notification_id, parsed.by_id[notification_id], history, ledger, logger)

    if len(ids) <= 1:
        results = [one(i) for i in ids]
    else:
        with ThreadPoolExecutor(min(RECORD_THREADS, len(ids)), thread_name_prefix="webhook") as pool:
            results = list(pool.map(one, ids))
    alarms: Counter[str] = Counter()
    for _, _, counted in results:
        alarms.update(counted)
    unknown = sum(len(parsed.by_id[i]) for i, (known, _, _) in zip(ids, results, strict=True) if not known)
    recorded = sum(new for _, new, _ in results)
    ours = sum(len(parsed.by_id[i]) for i in ids) - unknown
    return Recorded(parsed.received, recorded, ours - recorded, parsed.unknown + unknown, parsed.ignored,
                    MappingProxyType(dict(alarms)))  # fmt: skip


def _record_one(
    notification_id: str, events: Sequence[DeliveryEvent], history: History, ledger: Ledger, logger: logging.Logger
) -> tuple[int, int, Counter[str]]:
    """(1 if ours else 0, events newly recorded, alarm lines logged)."""
    sending = history.by_id(notification_id)
    if sending is None and ledger.lookup(notification_id) is None:
        return 0, 0, Counter()
    plain = [e for e in events if e.event not in ALARMS]
    new = history.add_events(notification_id, plain) if plain else 0
    alarms: Counter[str] = Counter()
    for event in (e for e in events if e.event in ALARMS):
        # One at a time: the store says whether *this* one is new, so a retried batch logs nothing twice.
        if history.add_events(notification_id, [event]):
            new += 1
            alarms[ALARMS[event.event]] += 1
            _alarm_line(logger, notification_id, event, sending.rule if sending else None)
    return 1, new, alarms


def _alarm_line(logger: logging.Logger, notification_id: str, event: DeliveryEvent, rule: str | None) -> None:
    outcome = ALARMS[event.event]
    log.log(
        logger, logging.WARNING,
        f"{outcome}: {event.email or '(no recipient)'}: {event.reason or 'SendGrid gave no reason'}",
        outcome=outcome, notification_id=notification_id, rule=rule, recipient=event.email,
        reason=event.reason, event=event.event, sg_event_id=event.sg_event_id, **dict(event.detail),
    )  # fmt: skip
