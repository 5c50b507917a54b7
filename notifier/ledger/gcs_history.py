"""The history in the state bucket (:mod:`notifier.ledger.history`): shared by every instance and
by ``python -m notifier status``.

- ``history/objects/<object_key(bucket, name)>/<inverted generation>-<notification id>``: the
  marker, whose body is the :class:`Sending` as JSON, overwritten by a later outcome (a replay's);
  a digest's instead ``history/digests/<window_key(group, window)>/<inverted window start>-<id>``
  for each window. Inverted: ``2**63 - 1 - n``, 19 digits, so that a listing (by name) gives the
  newest first; readers list the prefix, read the newest :func:`~notifier.ledger.history.sendings_bound`
  markers and say whether there were more (``Filed.truncated``). Names of another form (planted)
  are skipped and counted without a read, up to :data:`MAX_MARKERS_LISTED` names. An empty marker
  (written before markers held the sending) is read through ``history/ids/<id>``.
- By id, one upload per email sent: the notification's ledger record (``ledger/<id>``, the claim)
  says ``about`` it (:func:`~notifier.ledger.history.sending_about`: its object's key and generation),
  which names its marker. Where no record says (a digest's id, an event held for one, a retry whose
  claim was released, an older record), ``history/ids/<notification id>``: the Sending again,
  written for exactly those (:func:`_kept_by_id`).
- ``history/events/<notification id>/<event name>``: one object per delivery event, created with
  ``ifGenerationMatch=0``, so recording SendGrid's retried batch twice is a no-op (412: known). The
  event's JSON is its body and, when it fits, its custom metadata: one listing reads them all.
  The name is SendGrid's ``sg_event_id`` when it is a safe one, else its SHA-256 (:func:`event_name`),
  after ``open.`` or ``click.`` for those kinds (:func:`stored_name`): recording lists the names
  once per notification and batch, which counts each class for its bound, then creates the new
  ones a few at a time (:data:`CREATES` per store, in the caller's context: its deadline, its trace).

A lifecycle rule (deploy/state-lifecycle.json) deletes ``history/`` after 30 days, like ``ledger/``.
Everything read is bounded and checked (``from_json``); what this store did not write is skipped
and counted (``unreadable``). Every failure is a LedgerError worded as the ledger's.
"""

from __future__ import annotations

import contextvars
import hashlib
import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from notifier.ledger.base import Ledger, LedgerError
from notifier.ledger.bucket import MAX_METADATA_CHARS, Listed, StateBucket
from notifier.ledger.gcs import _FAILURES, LEDGER_PREFIX, _ledger_error, read_record
from notifier.ledger.history import (
    NOTIFICATION_ID,
    REPEATABLE_EVENTS,
    Added,
    DeliveryEvent,
    Filed,
    History,
    PartlyAdded,
    Sending,
    max_events_kept,
    object_key,
    plan_additions,
    sendings_bound,
    window_key,
)
from notifier.outcomes import DEAD_LETTERED, PARTIAL, RETRYING

_KEPT_BY_ID = frozenset({RETRYING, DEAD_LETTERED, PARTIAL})  # outcomes a record may not point to for long

SENDING_PREFIX = "history/ids/"
OBJECT_PREFIX = "history/objects/"
DIGEST_PREFIX = "history/digests/"
EVENT_PREFIX = "history/events/"
EVENT_KEY = "event"  # an event object's metadata key: the DeliveryEvent's JSON, when it fits
# A sending is at most about 80 KB: 50 addresses of 320 characters and eleven texts of 4,000, with
# room for JSON's escapes; an event about 25 KB (20 details of 1,000 characters). More was planted.
MAX_SENDING_BYTES = 256 * 1024
MAX_EVENT_BYTES = 64 * 1024
READERS = 8  # sendings read at once for one object's listing (up to sendings_bound())
# Marker names listed at most for one object or window, ours or not: names of another form cost
# no read, so a few thousand planted ones do not hide the genuine markers after them.
MAX_MARKERS_LISTED = 20_000
NEWEST = 2**63 - 1  # GCS generations are int64: 2**63 - 1 - n sorts the newest first
_MARKER = re.compile(r"([0-9]{19})-([0-9a-f]{32})")
_OBJECT_KEY = re.compile(r"[0-9a-f]{32}")  # object_key's
_GENERATION = re.compile(r"[0-9]{1,19}")
# Events created at once by one store, whatever the number of notifications and batches under way:
# a batch of hundreds of events per notification is recorded within SendGrid's patience.
CREATES = 16
_KIND_SEPARATOR = "."  # in an opened or clicked event's name only: never in event_name's

_SAFE_EVENT_ID = re.compile(r"[A-Za-z0-9_-]{1,100}")
_T = TypeVar("_T")


def event_name(sg_event_id: str) -> str:
    """The object name's last part for a delivery event: SendGrid's id if safe, else its SHA-256."""
    if _SAFE_EVENT_ID.fullmatch(sg_event_id):
        return sg_event_id
    return hashlib.sha256(sg_event_id.encode("utf-8", "surrogatepass")).hexdigest()


def stored_name(event: DeliveryEvent) -> str:
    """The event's name in its notification's folder: :func:`event_name`, after ``open.`` or
    ``click.`` for the kinds that repeat, so that one listing of names counts each class."""
    name = event_name(event.sg_event_id)
    return f"{event.event}{_KIND_SEPARATOR}{name}" if event.event in REPEATABLE_EVENTS else name


class GcsHistory(History):
    name = "gcs"

    def __init__(self, bucket: StateBucket) -> None:
        self._bucket = bucket
        self.unreadable = 0  # records read back that this store did not write (skipped)
        self._lock = threading.Lock()  # readers run a few at a time
        # Threads start as creates need them and wait for more, for the instance's life.
        self._creates = ThreadPoolExecutor(max_workers=CREATES, thread_name_prefix="history-events")

    # --- sendings ----------------------------------------------------------------------------

    def record(self, sending: Sending) -> None:
        name = SENDING_PREFIX + _checked_id(sending.notification_id)
        data = json.dumps(sending.to_json(), ensure_ascii=False).encode()
        if len(data) > MAX_SENDING_BYTES:
            raise LedgerError(f"history: the sending is {len(data)} bytes, over the {MAX_SENDING_BYTES} it takes")
        if _kept_by_id(sending):  # first: a sending found by a marker is found by id too
            self._call(self._bucket.upload, name, data)
        for marker in _marker_names(sending):  # a later outcome's replaces it
            self._call(self._bucket.upload, marker, data)

    def by_id(self, notification_id: str) -> Sending | None:
        """From the marker the ledger record names; else (no record, or one not saying where)
        ``history/ids/<id>``. An unknown id costs two reads."""
        return self.find(notification_id, None)[0]

    def find(self, notification_id: str, ledger: Ledger | None) -> tuple[Sending | None, bool]:
        """As :meth:`History.find`, from one read of the ledger record (the same bucket's: ``ledger``
        is not asked again), which also says where the marker is."""
        if not NOTIFICATION_ID.fullmatch(notification_id):
            return None, False  # never a name of ours: nothing to read
        record = self._call(read_record, self._bucket, LEDGER_PREFIX + notification_id)
        sending = self._by_record(notification_id, None if record is None else record[1])
        return sending, sending is not None or record is not None

    def _by_record(self, notification_id: str, record: dict[str, Any] | None) -> Sending | None:
        marker = self._marker_of(record)
        if marker is not None:
            key, inverted = marker
            name = f"{OBJECT_PREFIX}{key}/{inverted}-{notification_id}"
            sending = self._filed(name, notification_id, _filed_under_object(key, inverted), missing_is_skipped=False)
            if sending is not None:
                return sending
        return self._sending(notification_id, missing_is_skipped=False)

    def _marker_of(self, record: dict[str, Any] | None) -> tuple[str, str] | None:
        """(object key, inverted generation) of the id's marker, as its ledger record says; None
        when there is no record or it does not say (counted when what it says is not ours)."""
        if record is None or "about" not in record:
            return None
        about = record["about"]
        key, generation = (about.get("object_key"), about.get("generation")) if isinstance(about, dict) else (0, 0)
        if not (isinstance(key, str) and _OBJECT_KEY.fullmatch(key) and isinstance(generation, str)
                and _GENERATION.fullmatch(generation) and int(generation) <= NEWEST):  # fmt: skip
            self._skipped(1)  # planted: never a name to read
            return None
        return key, _inverted(int(generation))

    def _sending(self, notification_id: str, *, missing_is_skipped: bool) -> Sending | None:
        """The id's sending; None if there is none (counted when a marker named it) or it is not
        one this store wrote (counted)."""
        if not NOTIFICATION_ID.fullmatch(notification_id):
            return None  # never a name of ours: nothing to read
        stored = self._call(self._bucket.read, SENDING_PREFIX + notification_id, MAX_SENDING_BYTES)
        if stored is None:
            self._skipped(1 if missing_is_skipped else 0)
            return None
        sending = None if stored.content_encoding else Sending.from_json(_loads(stored.data, MAX_SENDING_BYTES))
        if sending is None or sending.notification_id != notification_id:
            self._skipped(1)
            return None
        return sending

    def by_object(self, bucket: str, name: str) -> Filed:
        key = object_key(bucket, name)
        return self._filed_under(f"{OBJECT_PREFIX}{key}/", lambda inverted: _filed_under_object(key, inverted))

    def digests(self, group: str, window: int) -> Filed:
        return self._filed_under(f"{DIGEST_PREFIX}{window_key(group, window)}/",
                                 lambda inverted: lambda s: _inverted(window) == inverted)  # fmt: skip

    def _filed_under(self, prefix: str, fits: Callable[[str], Callable[[Sending], bool]]) -> Filed:
        """The newest sendings under ``prefix``; ``fits(inverted)``: whether a sending is one its
        marker may hold (one naming another object or generation is planted: skipped)."""
        markers, truncated = self._newest_markers(prefix)
        read = self._each(lambda m: self._filed(f"{prefix}{m[0]}-{m[1]}", m[1], fits(m[0])), markers)
        found = [s for s in read if s is not None]
        return Filed(sorted(found, key=lambda s: (s.generation or 0, s.at)), truncated=truncated)

    def _filed(self, name: str, notification_id: str, fits: Callable[[Sending], bool], *,
               missing_is_skipped: bool = True) -> Sending | None:  # fmt: skip
        """The sending the marker ``name`` holds; None if it is gone (counted if ``missing_is_skipped``)
        or holds what this store did not write there (counted). An empty marker is read by id."""
        stored = self._call(self._bucket.read, name, MAX_SENDING_BYTES)
        if stored is None:
            self._skipped(1 if missing_is_skipped else 0)
            return None
        if not stored.data and not stored.content_encoding:  # written before markers held the sending
            sending = self._sending(notification_id, missing_is_skipped=True)
        else:
            sending = None if stored.content_encoding else Sending.from_json(_loads(stored.data, MAX_SENDING_BYTES))
            if sending is None:
                self._skipped(1)
                return None
        if sending is None or (sending.notification_id == notification_id and fits(sending)):
            return sending
        self._skipped(1)
        return None

    def _newest_markers(self, prefix: str) -> tuple[list[tuple[str, str]], bool]:
        """The newest :func:`sendings_bound` markers under ``prefix`` as (inverted number, id), and
        whether there are more, from one listing read only as far as needed (at most
        :data:`MAX_MARKERS_LISTED` names); names of another form skipped and counted."""
        most, markers, other, more = sendings_bound(), list[tuple[str, str]](), 0, False
        try:
            for count, item in enumerate(self._bucket.list(prefix)):
                marker = _MARKER.fullmatch(item.name.removeprefix(prefix))
                if count == MAX_MARKERS_LISTED or (marker is not None and len(markers) == most):
                    more = True
                    break
                if marker is None:
                    other += 1
                else:
                    markers.append((marker[1], marker[2]))
        except _FAILURES as error:
            raise _ledger_error(self._bucket.name, error) from error
        self._skipped(other)
        return markers, more

    # --- delivery events -----------------------------------------------------------------------

    def add_events(self, notification_id: str, events: Sequence[DeliveryEvent]) -> Added:
        prefix = f"{EVENT_PREFIX}{_checked_id(notification_id)}/"
        known = {item.name.removeprefix(prefix) for item in self._listed(prefix, max_events_kept())}
        kept = Counter(_KIND_SEPARATOR in name for name in known)
        to_create, not_kept = plan_additions(events, lambda e: stored_name(e) in known, kept)
        tasks = [self._creates.submit(contextvars.copy_context().run, self._create, prefix, e) for e in to_create]
        made: list[DeliveryEvent] = []
        failure: LedgerError | None = None
        for event, task in zip(to_create, tasks, strict=True):
            try:
                if task.result():  # False: recorded by a retried batch racing this one
                    made.append(event)
            except LedgerError as error:
                failure = failure or error
        added = Added(tuple(made), tuple(not_kept))
        if failure is not None:
            raise PartlyAdded(failure, added) from failure
        return added

    def _create(self, prefix: str, event: DeliveryEvent) -> bool:
        """Create the event's object unless it exists; whether this call created it."""
        data = json.dumps(event.to_json(), ensure_ascii=False)
        metadata = {EVENT_KEY: data} if len(EVENT_KEY) + len(data) <= MAX_METADATA_CHARS else {}
        created = self._call(self._bucket.upload, prefix + stored_name(event), data.encode(), metadata=metadata,
                             if_generation_match=0)  # fmt: skip
        return created is not None

    def events(self, notification_id: str) -> list[DeliveryEvent]:
        if not NOTIFICATION_ID.fullmatch(notification_id):
            return []
        prefix = f"{EVENT_PREFIX}{notification_id}/"
        listed = self._listed(prefix, max_events_kept(), with_metadata=True)
        read = [e for e in self._each(lambda item: self._event(prefix, item), listed) if e is not None]
        return sorted(read, key=lambda e: (e.timestamp, e.sg_event_id))

    def _event(self, prefix: str, item: Listed) -> DeliveryEvent | None:
        """The event ``item`` holds: from its metadata, else (too long for it) its body; None if gone
        or not one this store wrote (then counted)."""
        value = _loads(item.metadata[EVENT_KEY].encode(), MAX_EVENT_BYTES) if EVENT_KEY in item.metadata else None
        if value is None:
            stored = self._call(self._bucket.read, item.name, MAX_EVENT_BYTES, generation=item.generation or None)
            if stored is None:
                return None
            value = None if stored.content_encoding else _loads(stored.data, MAX_EVENT_BYTES)
        event = DeliveryEvent.from_json(value)
        if event is None or stored_name(event) != item.name.removeprefix(prefix):
            self._skipped(1)
            return None
        return event

    def _skipped(self, count: int) -> None:
        with self._lock:
            self.unreadable += count

    # --- calls -----------------------------------------------------------------------------------

    def _listed(self, prefix: str, most: int, *, with_metadata: bool = False) -> list[Listed]:
        """The first ``most`` objects under ``prefix`` (by name), from one listing."""
        listed: list[Listed] = []
        try:
            for item in self._bucket.list(prefix, with_metadata=with_metadata):
                if "/" not in item.name.removeprefix(prefix):  # deeper names are none of ours
                    listed.append(item)
                if len(listed) >= most:
                    break
        except _FAILURES as error:
            raise _ledger_error(self._bucket.name, error) from error
        return listed

    def _each(self, read: Callable[[Any], _T], values: Sequence[Any]) -> list[_T]:
        """``read`` of each value, a few at a time, each task in a copy of this context (so that
        its calls keep a delivery's deadline)."""
        if len(values) <= 1:
            return [read(value) for value in values]
        with ThreadPoolExecutor(max_workers=min(READERS, len(values))) as pool:
            tasks = [pool.submit(contextvars.copy_context().run, read, value) for value in values]
            return [task.result() for task in tasks]

    def _call(self, method: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
        try:
            return method(*args, **kwargs)
        except _FAILURES as error:
            raise _ledger_error(self._bucket.name, error) from error


def _kept_by_id(sending: Sending) -> bool:
    """Whether the sending is kept under ``history/ids/`` too: when no ledger record of its id may
    say where its marker is (a digest's; a retry whose claim was released), or may stop saying so (a
    dead letter, whose record a failed replay's release deletes). Not an event held for a digest:
    a bulk upload's thousands would each cost a second write, for ``status --id`` of an id that no
    email carries (``status gs://...`` finds it by its object)."""
    return sending.kind == "digest" or sending.outcome in _KEPT_BY_ID


def _filed_under_object(key: str, inverted: str) -> Callable[[Sending], bool]:
    """Whether a sending is one a marker of object ``key`` at that inverted generation may hold."""
    return lambda s: object_key(s.bucket, s.object) == key and _inverted(s.generation or 0) == inverted


def _marker_names(sending: Sending) -> Iterable[str]:
    """The marker of each key the sending is filed under (as filing_keys: its object's, or each
    of its windows'), named so that a listing gives the newest first."""
    digest, notification_id = sending.digest or {}, sending.notification_id
    if "windows" not in digest:
        key = object_key(sending.bucket, sending.object)
        return [f"{OBJECT_PREFIX}{key}/{_inverted(sending.generation or 0)}-{notification_id}"]
    group, windows = str(digest.get("group", "")), digest["windows"]
    return [f"{DIGEST_PREFIX}{window_key(group, w)}/{_inverted(w)}-{notification_id}" for w in windows
            if isinstance(w, int) and not isinstance(w, bool) and w >= 0]  # fmt: skip


def _inverted(number: int) -> str:
    """``number`` as a marker's first part: 19 digits that sort the greatest first."""
    return f"{max(0, NEWEST - number):019d}"


def _checked_id(notification_id: str) -> str:
    if not NOTIFICATION_ID.fullmatch(notification_id):  # never a name a reader could not read back
        raise LedgerError(f"history: {notification_id[:80]!r} is not a notification id (32 hex digits)")
    return notification_id


def _loads(data: bytes, max_bytes: int) -> Any:
    """JSON within ``max_bytes``; None for anything else."""
    if len(data) > max_bytes:
        return None
    try:
        return json.loads(data)
    except (ValueError, RecursionError):
        return None
