"""Burst digests and per-rule caps: which events are held, in which group and window, and which
windows a flush sends now.

A rule with ``digest = "10m"`` holds its events; each is one create-if-absent entry in the digest
store (:mod:`notifier.ledger.digests`), named by its group, its window and its notification id, so
a redelivery is a no-op and no object grows. Windows are aligned to UTC (10:00, 10:10, ...) and
an event's window comes from its own time, so every delivery of it, on any instance, names the
same entry. Consecutive busy windows of a group are sent as one digest (each new window pushes
the email back, as Sentry's digests do) until ``digest_max_wait`` has passed since the first.
A rule with ``max_emails = "20/h"`` sends the first 20 events of each hour one by one and holds
the rest for one digest at the hour's end.

Everything here is a plain value or function; :mod:`notifier.flush` claims, sends and records.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from notifier.batching import GROUP_FIELDS, MAX_WINDOW, Batching
from notifier.events import KINDS
from notifier.rulekeys import NAME

if TYPE_CHECKING:
    from notifier.rules import Notification, Rule

# A flush waits this long after a window's end for events still on their way (Pub/Sub delivers
# within seconds); the scheduled flush runs every minute, so a window goes out 30-90 s after it ends.
FLUSH_GRACE_SECONDS = 30.0
SCHEDULE = "* * * * *"  # the Cloud Scheduler job's (and `make sandbox`'s) flush schedule
MAX_NAME_IN_ENTRY = 1024  # an object name is at most 1,024 bytes; forged events are cut to this
# What a store reads back of a listed entry (anything else was planted): a window is a whole minute
# from 2000 on and at most 2 days ahead (an honest one is at most MAX_WINDOW ahead, see _due_part).
OLDEST_WINDOW = 946_684_800  # 2000-01-01T00:00:00Z
WINDOW_AHEAD = 2 * 86400
MAX_BUCKET = 222  # a bucket name with dots
GROUP_KEY = re.compile(r"[0-9a-f]{24}")  # what key_for makes: a store's folder, a digest letter's group
MAX_CONTENT_TYPE = 200
SHORT_TEXT = 200  # a summary's name and group values when the whole would not fit
MAX_SUMMARY = 6 * 1024  # characters (and UTF-8 bytes) of a summary's JSON: the fitted one is below it


@dataclass(frozen=True, slots=True)
class Group:
    """Events that share one digest: a rule and the ``group_by`` values."""

    key: str  # key_for's 24 hex digits (GROUP_KEY): the entries' folder in the store
    rule: str
    values: tuple[tuple[str, str], ...] = ()  # (field, value) for each group_by field, in order

    def describe(self) -> str:
        """``rule reports, bucket acme-uploads, folder reports/``."""
        parts = [f"rule {self.rule}"] + [f"{name} {value or '(top level)'}" for name, value in self.values]
        return ", ".join(parts)


def folder_of(name: str) -> str:
    """The object's parent path with its slash (``reports/2026/``), or "" at the top level."""
    head, slash, _ = name.rpartition("/")
    return head + slash


def group_of(notification: Notification) -> Group:
    """The group ``notification`` is held in: its rule and group_by values. Not its recipients: a
    digest goes to the rule's recipients when it is sent (as a replay does), so a change of
    recipients neither strands what is held nor splits a window in two."""
    rule, event = notification.rule, notification.event
    batching = rule.delivery.batching
    assert batching is not None
    by_field = {"bucket": event.bucket, "folder": folder_of(event.name), "kind": event.kind}
    values = tuple((name, by_field[name]) for name in batching.group_by)
    return Group(key_for(rule, values), rule.name, values)


def key_for(rule: Rule, values: tuple[tuple[str, str], ...]) -> str:
    """The group key of ``rule`` and these group_by values."""
    key = "\n".join([rule.name, *(f"{n}={v}" for n, v in values)])
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:24]


def held_id(notification: Notification) -> str:
    """The id an event is held under: its change and rule, not the recipients (which a notification
    id includes), so a redelivery after the rule's recipients changed is still the same entry."""
    key = "\n".join(["held", *notification.event.change_key, notification.rule.name])
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def orphan_reason(entry: HeldEntry, rules: Mapping[str, Rule]) -> str | None:
    """Why a flush never sends ``entry`` (None: it may): its rule has no digest or cap today, or
    the entry's key is not its rule's and group values' (planted, or from a group_by since changed)."""
    rule = rules.get(entry.group.rule)
    if rule is None or rule.delivery.batching is None:
        return NO_RULE
    if key_for(rule, entry.group.values) != entry.group.key:
        return OTHER_GROUPING
    return None


NO_RULE = "no digest or max_emails today"
OTHER_GROUPING = "held under another grouping than the rule has today (or planted)"


def readable_window(window: int, now: float) -> bool:
    """A window a store may have written: a whole minute from 2000 to two days ahead of ``now``."""
    return window % 60 == 0 and OLDEST_WINDOW <= window <= now + WINDOW_AHEAD


def window_of(batching: Batching, when: datetime) -> int:
    """The start of the window ``when`` falls in, in whole seconds since the epoch (UTC-aligned)."""
    length = int(batching.window)
    return int(when.timestamp()) // length * length


@dataclass(frozen=True, slots=True)
class HeldEntry:
    """One held event as the store lists it: enough to count it and show it in a digest without
    reading the event itself (which :meth:`DigestStore.event` returns for a one-event digest)."""

    group: Group
    window: int
    notification_id: str
    kind: str
    bucket: str
    name: str
    size: int | None = None
    time: datetime | None = None
    generation: int | None = None
    content_type: str | None = None

    def summary(self) -> dict[str, Any]:
        """JSON values, as the store keeps them beside the entry's name."""
        return {
            "rule": self.group.rule, "group": [list(pair) for pair in self.group.values],
            "kind": self.kind, "bucket": self.bucket, "name": self.name[:MAX_NAME_IN_ENTRY], "size": self.size,
            "time": self.time.isoformat() if self.time else None, "generation": self.generation,
            "content_type": (self.content_type or "")[:MAX_CONTENT_TYPE] or None,
        }  # fmt: skip

    def fitted_summary(self) -> str:
        """The summary as JSON within MAX_SUMMARY (a store's metadata limit, and what a store reads
        back): a long name and group values (a folder) are cut when the whole would not fit."""
        summary = self.summary()
        text = json.dumps(summary, ensure_ascii=False, separators=(",", ":"))
        if len(text.encode()) <= MAX_SUMMARY:
            return text
        summary["name"] = summary["name"][:SHORT_TEXT]
        summary["group"] = [[name, value[:SHORT_TEXT]] for name, value in summary["group"]]
        return json.dumps(summary, ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def from_summary(
        cls, group_key: str, window: int, notification_id: str, values: Any, now: float | None = None
    ) -> HeldEntry | None:
        """The entry a store listed; None when its window or summary is not one we write (planted):
        every field is bounded, so a listing of planted entries costs no more than one of ours."""
        if not isinstance(values, Mapping) or not readable_window(window, time.time() if now is None else now):
            return None
        texts = [values.get(k) for k in ("rule", "kind", "bucket", "name", "content_type")]
        pairs = _group_values(values.get("group") or [])
        if pairs is None or not all(isinstance(t, str) for t in texts[:4]) or not _bounded(*texts):
            return None
        size, generation = values.get("size"), values.get("generation")
        rule, kind, bucket, name, content_type = texts
        return cls(
            Group(group_key, rule, pairs), window, notification_id, kind, bucket, name,
            size if _is_count(size) else None, _time(values.get("time")),
            generation if _is_count(generation) else None, content_type if isinstance(content_type, str) else None,
        )  # fmt: skip


def entry_from_summary(group_key: str, window: int, notification_id: str, summary: str) -> HeldEntry | None:
    """The entry a store listed from its summary's JSON (a GCS entry's metadata, an SQLite row);
    None when it is not one we write: over MAX_SUMMARY, not JSON, or a summary from_summary refuses."""
    if len(summary) > MAX_SUMMARY or len(summary.encode("utf-8", "surrogatepass")) > MAX_SUMMARY:
        return None
    try:
        values = json.loads(summary)
    except (ValueError, RecursionError):
        return None
    return HeldEntry.from_summary(group_key, window, notification_id, values)


def _bounded(rule: str, kind: str, bucket: str, name: str, content_type: Any) -> bool:
    """Each field as we write it: a rule's name, a known kind, bounded texts."""
    content_type_fits = not isinstance(content_type, str) or len(content_type) <= MAX_CONTENT_TYPE
    return (
        bool(NAME.fullmatch(rule)) and kind in KINDS and len(bucket) <= MAX_BUCKET
        and len(name) <= MAX_NAME_IN_ENTRY and content_type_fits
    )  # fmt: skip


def _group_values(pairs: Any) -> tuple[tuple[str, str], ...] | None:
    """At most one (field, value) per group_by field, each value at most an object name long."""
    if not isinstance(pairs, list) or len(pairs) > len(GROUP_FIELDS):
        return None
    found = []
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(v, str) for v in pair)):
            return None
        if pair[0] not in GROUP_FIELDS or len(pair[1]) > MAX_NAME_IN_ENTRY:
            return None
        found.append((pair[0], pair[1]))
    return tuple(found)


def entry_for(notification: Notification, when: datetime) -> HeldEntry:
    """The entry that holds ``notification``, in the window of ``when`` (the event's own time)."""
    event, batching = notification.event, notification.rule.delivery.batching
    assert batching is not None
    return HeldEntry(
        group_of(notification), window_of(batching, when), held_id(notification), event.kind, event.bucket,
        event.name, event.size, when, event.generation, event.content_type,
    )  # fmt: skip


def event_time(notification: Notification, now: datetime) -> datetime:
    """When the event happened: its own time (the same on every redelivery), else now."""
    event = notification.event
    return event.event_time or event.updated or event.time_created or now


@dataclass(frozen=True, slots=True)
class Run:
    """Windows of one group a flush sends as one email: consecutive, oldest first."""

    group: Group
    windows: tuple[int, ...]
    entries: tuple[HeldEntry, ...] = field(repr=False)
    window_length: float = 0.0

    @property
    def start(self) -> datetime:
        return datetime.fromtimestamp(self.windows[0], UTC)

    @property
    def end(self) -> datetime:
        return datetime.fromtimestamp(self.windows[-1] + self.window_length, UTC)


def due_runs(
    entries: Iterable[HeldEntry], batching_of: Mapping[str, Batching], now: float, *, everything: bool = False
) -> list[Run]:
    """The runs to send at ``now`` (seconds since the epoch), oldest first within each group.

    A run is a group's consecutive busy windows. It is due once the window after its last one has
    begun and stayed empty for FLUSH_GRACE_SECONDS (the burst is over), or once ``max_wait`` has
    passed since it began (then without the window still open). A capped rule's windows are
    never merged. ``everything``: every run now, open windows included (``flush --all``).
    ``batching_of`` maps rule names to their batching; entries of rules not in it are left alone.
    """
    windows: dict[str, dict[int, list[HeldEntry]]] = {}
    groups: dict[str, Group] = {}
    for entry in entries:
        if entry.group.rule in batching_of:
            groups.setdefault(entry.group.key, entry.group)
            windows.setdefault(entry.group.key, {}).setdefault(entry.window, []).append(entry)
    runs = []
    for key, by_window in windows.items():
        batching = batching_of[groups[key].rule]
        for chain in _chains(sorted(by_window), batching):
            chosen = chain if everything else _due_part(chain, batching, now)
            if chosen:
                held = tuple(e for w in chosen for e in by_window[w])
                runs.append(Run(groups[key], tuple(chosen), held, batching.window))
    return runs


def _chains(starts: list[int], batching: Batching) -> list[list[int]]:
    """Window starts split into runs of consecutive windows (each its own run when capped)."""
    chains: list[list[int]] = []
    for start in starts:
        joins = chains and batching.cap is None and start - chains[-1][-1] == int(batching.window)
        if joins:
            chains[-1].append(start)
        else:
            chains.append([start])
    return chains


def _due_part(chain: list[int], batching: Batching, now: float) -> list[int]:
    length = int(batching.window)
    # A window more than a day ahead is a forged event's or a broken clock's: sent now, not held
    # until then (its time is not moved instead: a redelivery must name the same window).
    closed = [w for w in chain if w + length + FLUSH_GRACE_SECONDS <= now or w > now + MAX_WINDOW]
    if not closed:
        return []
    if closed == chain:
        return chain  # the window after the last one is empty (else it would be in the chain)
    if now >= chain[0] + batching.max_wait:
        return closed  # inflow goes on: send what has closed, the open window starts the next
    return []


def digest_id(group: Group, windows: Iterable[tuple[int, int]]) -> str:
    """The digest's notification id (its Message-ID): from the group and each (window, part)."""
    key = "\n".join(["digest", group.key, *(f"{w}.{p}" for w, p in windows)])
    return hashlib.sha256(key.encode()).hexdigest()[:32]


def claim_id(group: Group, window: int, part: int) -> str:
    """The ledger id a flush claims one window's part under."""
    return f"digest-{group.key}-{window}-{part}"


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**63


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def iso_utc(seconds: float) -> str:
    """A window's start or end (seconds since the epoch) as ISO 8601 in UTC, for log fields and JSON."""
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def window_label(start: datetime, end: datetime) -> str:
    """``10:00–10:10 UTC``; with the date when the period spans days: ``Nov 28 23:50–Nov 29 00:10 UTC``."""
    if start.date() == (end - timedelta(microseconds=1)).date():
        return f"{start:%H:%M}–{end:%H:%M} UTC"
    return f"{start:%b %d %H:%M}–{end:%b %d %H:%M} UTC"
