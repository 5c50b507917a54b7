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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from notifier.rules import Notification

GROUP_FIELDS = ("bucket", "folder", "kind")  # what `group_by` may name
# A flush waits this long after a window's end for events still on their way (Pub/Sub delivers
# within seconds); the scheduled flush runs every minute, so a window goes out 30-90 s after it ends.
FLUSH_GRACE_SECONDS = 30.0
SCHEDULE = "* * * * *"  # the Cloud Scheduler job's (and `make sandbox`'s) flush schedule
MIN_WINDOW = 60.0  # the flush runs once a minute: a shorter window would not close sooner
MAX_WINDOW = 86400.0  # a held event waits at most a day: the platform's own redelivery horizon
MAX_CAP = 10_000  # max_emails: more single emails than this per period is no cap
DEFAULT_MAX_WAIT = 3600.0  # digest_max_wait when not set (never less than the digest itself)
MAX_NAME_IN_ENTRY = 1024  # an object name is at most 1,024 bytes; forged events are cut to this


@dataclass(frozen=True, slots=True)
class Batching:
    """A rule's digest or cap (the ``digest``, ``digest_max_wait``, ``group_by`` and ``max_emails``
    keys). ``cap`` None: a digest of every event, windows of ``window`` seconds merged up to
    ``max_wait``; else the first ``cap`` events of each ``window`` are sent alone."""

    window: float
    max_wait: float
    group_by: tuple[str, ...] = ()
    cap: int | None = None

    @classmethod
    def digest(cls, window: float, max_wait: float | None = None, group_by: Iterable[str] = ()) -> Batching:
        wait = max(window, DEFAULT_MAX_WAIT) if max_wait is None else max_wait
        return cls(window, wait, tuple(group_by))

    @classmethod
    def capped(cls, count: int, period: float, group_by: Iterable[str] = ()) -> Batching:
        return cls(period, period, tuple(group_by), count)


@dataclass(frozen=True, slots=True)
class Group:
    """Events that share one digest: a rule (with its recipients) and the ``group_by`` values."""

    key: str  # 24 hex digits: the entries' folder in the store
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
    """The group ``notification`` is held in; its key changes with the rule's recipients, so that
    entries held for an old recipient list are never sent to a new one."""
    rule, event = notification.rule, notification.event
    batching = rule.delivery.batching
    assert batching is not None
    by_field = {"bucket": event.bucket, "folder": folder_of(event.name), "kind": event.kind}
    values = tuple((name, by_field[name]) for name in batching.group_by)
    recipients = sorted(a.key for a in rule.delivery.recipients.everyone)
    key = "\n".join([rule.name, *recipients, *(f"{n}={v}" for n, v in values)])
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:24]
    return Group(digest, rule.name, values)


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
            "content_type": (self.content_type or "")[:200] or None,
        }  # fmt: skip

    @classmethod
    def from_summary(cls, group_key: str, window: int, notification_id: str, values: Any) -> HeldEntry | None:
        """The entry a store listed; None when its summary is not one we write (planted)."""
        if not isinstance(values, Mapping):
            return None
        texts = [values.get(k) for k in ("rule", "kind", "bucket", "name")]
        if not all(isinstance(t, str) for t in texts):
            return None
        pairs = values.get("group") or []
        if not isinstance(pairs, list) or not all(
            isinstance(p, list) and len(p) == 2 and all(isinstance(v, str) for v in p) for p in pairs
        ):
            return None
        size, generation = values.get("size"), values.get("generation")
        rule, kind, bucket, name = texts
        return cls(
            Group(group_key, rule, tuple((p[0], p[1]) for p in pairs)), window, notification_id, kind, bucket,
            name[:MAX_NAME_IN_ENTRY], size if _is_count(size) else None, _time(values.get("time")),
            generation if _is_count(generation) else None,
            values["content_type"] if isinstance(values.get("content_type"), str) else None,
        )  # fmt: skip


def entry_for(notification: Notification, when: datetime) -> HeldEntry:
    """The entry that holds ``notification``, in the window of ``when`` (the event's own time)."""
    event, batching = notification.event, notification.rule.delivery.batching
    assert batching is not None
    return HeldEntry(
        group_of(notification), window_of(batching, when), notification.id, event.kind, event.bucket,
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


def window_label(start: datetime, end: datetime) -> str:
    """``10:00–10:10 UTC``; with the date when the period spans days: ``Nov 28 23:50–Nov 29 00:10 UTC``."""
    if start.date() == (end - timedelta(microseconds=1)).date():
        return f"{start:%H:%M}–{end:%H:%M} UTC"
    return f"{start:%b %d %H:%M}–{end:%b %d %H:%M} UTC"
