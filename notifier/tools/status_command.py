"""``python -m notifier status gs://BUCKET/OBJECT | --id ID [--json]``: what became of each
notification, from the history (:mod:`notifier.ledger.history`) the pipeline, the flush and the Event
Webhook record, corrected by the ledger's current state (a replay sent it since; a claim in flight).

It reads the state bucket (or, locally, the SQLite ledger's file) with the deployment's settings, as
``replay`` and ``pending`` do. Everything it reads is untrusted (anyone who can write to the state
bucket can plant a record): every text is printed through :func:`notifier.log.for_terminal`. Times
are shown in UTC only (NOTIFY_TIMEZONE is for the emails' readers; a terminal user compares logs).
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from notifier.ledger import LedgerError
from notifier.ledger.history import NOTIFICATION_ID, DeliveryEvent, Sending, sendings_bound
from notifier.log import for_terminal, lines_to_stderr
from notifier.tools.status_view import json_document, notes, nothing, shown_time, text

if TYPE_CHECKING:
    from notifier.config import Settings
    from notifier.digest import HeldEntry
    from notifier.ledger import Ledger
    from notifier.ledger.digests import DigestStore, HeldListing
    from notifier.ledger.history import History

GROUP_KEY = re.compile(r"[0-9a-f]{24}")  # notifier.digest.key_for's
_NOWHERE = "no state bucket (NOTIFY_STATE_BUCKET) or ledger file (NOTIFY_LEDGER_FILE): nothing is recorded where" \
    " status can read it (a function without either keeps its history in memory)"  # fmt: skip


@dataclass(frozen=True, slots=True)
class Query:
    """What to look up: an object (every generation) or one notification id."""

    bucket: str = ""
    name: str = ""
    notification_id: str = ""

    def describe(self) -> str:
        return f"notification {self.notification_id}" if self.notification_id else f"gs://{self.bucket}/{self.name}"

    def asked(self) -> dict[str, str | None]:
        """The query as --json's document says it."""
        return {"id": self.notification_id or None, "bucket": self.bucket or None, "object": self.name or None}


def status(args: argparse.Namespace, uri: tuple[str, str] | None) -> int:
    """Look the object (``uri``: bucket and name, parsed by the CLI) or ``args.id`` up where the
    deployment records it; exit 1 if nothing is recorded."""
    with lines_to_stderr():
        return _status(query_from(uri, args.id), as_json=args.json)


def _status(query: Query, *, as_json: bool) -> int:
    from notifier.ledger import create_digest_store, create_history, create_state
    from notifier.pipeline import settings_from_environment

    settings = settings_from_environment()
    if settings.state_bucket is None and settings.ledger_file is None:
        raise ValueError(_NOWHERE)
    if settings.state_bucket is None and settings.ledger_file is not None and not settings.ledger_file.exists():
        # Never created here: a read-only command leaves the file to the function.
        no_file = f"Nothing recorded: there is no ledger file at {settings.ledger_file} (yet)."
        print(json_document(query.asked(), [], 0, False) if as_json else no_file)
        return 1
    ledger, _ = create_state(settings)
    return answer(query, settings, ledger, create_history(ledger), create_digest_store(ledger), as_json=as_json)


def query_from(uri: tuple[str, str] | None, notification_id: str | None) -> Query:
    """The query: an object or an id (exactly one), the id checked."""
    if (uri is None) == (notification_id is None):
        raise ValueError("status: give gs://BUCKET/OBJECT or --id NOTIFICATION_ID (one of them)")
    if uri is not None:
        return Query(bucket=uri[0], name=uri[1])
    if not NOTIFICATION_ID.fullmatch((notification_id or "").lower()):
        raise ValueError(
            "--id: expected a notification id of 32 hex digits (as in the outcome lines and the"
            f" X-Notification-Id header), got {for_terminal(notification_id or '', 80)!r}"
        )
    return Query(notification_id=(notification_id or "").lower())


def answer(
    query: Query, settings: Settings, ledger: Ledger, history: History, digests: DigestStore | None, *,
    as_json: bool = False, now: float | None = None,
) -> int:  # fmt: skip
    """Print what is recorded for ``query`` (text, or ``as_json``); 0 if anything, else 1. A store
    that cannot be read is a RuntimeError naming it."""
    now = datetime.now(UTC).timestamp() if now is None else now
    try:
        found, truncated = notifications(query, settings, ledger, history, digests, now)
    except LedgerError as error:
        raise RuntimeError(f"cannot read {_where(settings)} (the ledger and its history): {error}") from None
    skipped = history.unreadable  # records the store did not write (planted, or another version's)
    if as_json:
        print(json_document(query.asked(), found, skipped, truncated))
        return 0 if found else 1
    uri = None if query.notification_id else f"gs://{query.bucket}/{query.name}"
    print(text(found) if found else nothing(query.describe(), uri))
    for line in notes(len(found), sendings_bound(), skipped, truncated):
        print(line)
    return 0 if found else 1


def notifications(
    query: Query, settings: Settings, ledger: Ledger, history: History, digests: DigestStore | None, now: float
) -> tuple[list[dict[str, Any]], bool]:
    """The JSON document of each notification found: an object's every generation, oldest first
    (its newest :func:`~notifier.ledger.history.sendings_bound`); whether older ones were left unread."""
    truncated = False
    if query.notification_id:
        sending = history.by_id(query.notification_id)
        sendings = [sending] if sending else []
    else:
        filed = history.by_object(query.bucket, query.name)
        sendings, truncated = sorted(filed, key=lambda s: (s.generation or 0, s.at)), filed.truncated
    held = _Held(settings, digests, ledger, now)
    found = [_document(s, ledger.lookup(s.notification_id), history, held, now) for s in sendings]
    if not found and query.notification_id and (record := ledger.lookup(query.notification_id)) is not None:
        found = [_ledger_only(query.notification_id, record, history, now)]
    return found, truncated


# --- the document -------------------------------------------------------------------------------


def _document(
    sending: Sending, record: dict[str, Any] | None, history: History, held: _Held, now: float
) -> dict[str, Any]:
    state = record.get("state") if isinstance(record, dict) and isinstance(record.get("state"), str) else None
    outcome, note = corrected_outcome(sending.outcome, record, now)
    ledger_message_id = record.get("message_id") if record and isinstance(record.get("message_id"), str) else ""
    message_id = (ledger_message_id if state == "sent" else "") or sending.message_id
    document = {
        "notification_id": sending.notification_id, "bucket": sending.bucket, "object": sending.object,
        "generation": sending.generation, "kind": sending.kind, "event_id": sending.event_id,
        "event_time": sending.event_time, "rule": sending.rule, "recipients": list(sending.recipients),
        "recipient_count": sending.recipient_count, "outcome": outcome, "recorded_outcome": sending.outcome,
        "recorded_at": sending.at, "note": note, "ledger_state": state,
        "message_id": message_id, "attempts": sending.attempts, "error": sending.error,
        "events": _events(history, sending.notification_id, message_id),
        "digest": None, "previous": None if sending.previous is None else dict(sending.previous),
    }  # fmt: skip
    document["messages"] = messages(document["message_id"], document["events"])
    if sending.digest is not None:
        document["digest"] = _digest_sent(sending.digest) if "windows" in sending.digest else held.what(
            sending.digest, history
        )  # fmt: skip
    return document


def _ledger_only(notification_id: str, record: dict[str, Any], history: History, now: float) -> dict[str, Any]:
    """A notification the ledger knows but the history does not (sent before it was kept, or its
    write failed: the function logged ``history not recorded``)."""
    empty = Sending(notification_id, "", "", None, "", "", "", (), 0, "", "")
    document = _document(empty, record, history, _Held(None, None, None, now), now)
    document["note"] = "no history recorded (sent before history was kept, or its write failed): the ledger only"
    return document


# The ledger's current state, where it says more than the outcome recorded then: (state, live lease) → word.
_CORRECTED = {
    ("sent", False): "sent",
    ("dead", False): "dead-lettered",
    ("claimed", True): "sending now",
}


def corrected_outcome(recorded: str, record: dict[str, Any] | None, now: float) -> tuple[str, str]:
    """The outcome to show and why it differs from the one recorded, or what it means ("" when
    there is nothing to add)."""
    if not isinstance(record, dict):
        return recorded, _MEANING.get(recorded, "")
    lease = record.get("lease_until")
    live = isinstance(lease, int | float) and not isinstance(lease, bool) and lease > now
    state = record.get("state")
    if state == "claimed" and recorded in _MARKED_BY:
        # A final outcome was had: the mark that should have ended the claim did not land.
        return recorded, _unmarked(recorded, float(lease) if isinstance(lease, int | float) else None, live)
    if state == "dead" and record.get("owed") == []:
        state = "sent"  # a partial send's replay reached everyone still owed it
    current = _CORRECTED.get((state, live and state == "claimed"))  # type: ignore[arg-type]
    if state == "dead" and recorded == "partially-sent":
        current = recorded  # still owed to some: the letter says whom
    if current is None or current == recorded:
        return recorded, _MEANING.get(recorded, "")
    if current == "sending now":
        return current, f"a delivery holds its claim until {shown_time(float(lease))}; recorded {recorded}"
    return current, f"recorded {recorded}; the ledger now says {state}" + (
        " (a replay sent it)" if current == "sent" else ""
    )  # fmt: skip


# A final outcome recorded → the mark it leaves in the ledger.
_MARKED_BY = {"sent": "sent", "dead-lettered": "dead", "partially-sent": "dead"}
# What a recorded outcome means when nothing later replaced it.
_MEANING = {
    "retrying": "a send failed transiently and the platform redelivers the event; if nothing follows, it expired"
    " or was dropped: check the function's log (deploy/logs.sh)",
}


def _unmarked(recorded: str, lease: float | None, live: bool) -> str:
    """The note for a final outcome whose ledger record is still a claim."""
    mark = _MARKED_BY[recorded]
    until = "" if lease is None else f" {'until' if live else 'that expired at'} {shown_time(lease)}"
    if mark == "dead" and live:
        return (
            f"the ledger holds a claim{until}: a replay is sending it now, or the ledger's dead mark was not recorded"
        )
    again = "a redelivery of the event could send it again"
    return f"the ledger's {mark} mark was not recorded (it holds a claim{until}): {again}"


# SendGrid's order of a message's life: events of the same second are shown in it (then by address).
LIFE_ORDER = {"processed": 0, "deferred": 1, "delivered": 2, "bounce": 2, "dropped": 2, "open": 3, "click": 4,
              "spamreport": 5}  # fmt: skip


def _events(history: History, notification_id: str, recorded: str) -> list[dict[str, Any]]:
    """The notification's delivery events in a stable order: by time, a message's life, address;
    each with the message it is about (``recorded``: the message id as stored)."""
    events = sorted(
        history.events(notification_id),
        key=lambda e: (e.timestamp, LIFE_ORDER.get(e.event, len(LIFE_ORDER)), e.email, e.sg_event_id),
    )
    ours = [m for m in recorded.split(",") if m]
    return [_event_json(e, message_of(e, ours)) for e in events]


def _event_json(event: DeliveryEvent, message_id: str) -> dict[str, Any]:
    return {
        "event": event.event, "time": datetime.fromtimestamp(event.timestamp, UTC).isoformat(), "email": event.email,
        "reason": event.reason, "sg_event_id": event.sg_event_id, "message_id": message_id,
        "detail": dict(event.detail),
    }  # fmt: skip


def message_of(event: DeliveryEvent, recorded: list[str]) -> str:
    """The X-Message-Id of the message an event is about: a recorded one its sg_message_id begins
    with (then a "."), else the part before the first "." (SendGrid appends its filter's suffix to
    ids without dots); "" when it names none."""
    named = event.detail.get("sg_message_id", "")
    return next((m for m in recorded if named == m or named.startswith(f"{m}.")), named.split(".", 1)[0])


def messages(recorded: str, events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages a notification's events are about, with how many each: the recorded ones first
    (``recorded``: the message id as stored, several joined by commas when the recipients took more
    than one request), then any other (an attempt whose answer was lost, accepted all the same)."""
    counts: dict[str, int] = {m: 0 for m in recorded.split(",") if m}
    ours = set(counts)
    for event in events:
        if event["message_id"]:
            counts[event["message_id"]] = counts.get(event["message_id"], 0) + 1
    return [{"message_id": m, "recorded": m in ours, "events": n} for m, n in counts.items()]


def _digest_sent(digest: Any) -> dict[str, Any]:
    """A digest's own record: its group, windows and how many events it carried."""
    windows = digest.get("windows")
    starts = [w for w in windows if _seconds(w)] if isinstance(windows, list) else []
    return {
        "state": "digest", "group": str(digest.get("group", "")), "windows": [_iso(w) for w in starts],
        "events": digest.get("events") if _seconds(digest.get("events")) else None,
    }  # fmt: skip


class _Held:
    """What became of a held event: still held (and when its digest is due, or that its digest
    was dead-lettered), or sent in a digest. The digest store is listed once, and only when a held
    event asks."""

    def __init__(
        self, settings: Settings | None, digests: DigestStore | None, ledger: Ledger | None, now: float
    ) -> None:
        self._settings, self._digests, self._ledger, self._now = settings, digests, ledger, now
        self._listing: HeldListing | None = None
        self._parked_windows: dict[tuple[str, int], bool] = {}  # (group key, window) → parked: read once

    def what(self, digest: Any, history: History) -> dict[str, Any]:
        group, window, held_id = digest.get("group"), digest.get("window"), digest.get("held_id")
        if not (isinstance(group, str) and GROUP_KEY.fullmatch(group) and _seconds(window)
                and isinstance(held_id, str) and NOTIFICATION_ID.fullmatch(held_id)):  # fmt: skip
            return {"state": "unreadable", "group": None, "window": None, "held_id": None, "due": None, "digests": []}
        found = {"group": group, "window": _iso(window), "held_id": held_id, "due": None, "describe": "", "digests": []}
        entries = [e for e in self._entries() if e.group.key == group]
        ours = next((e for e in entries if e.window == window and e.notification_id == held_id), None)
        if ours is not None and not self._parked(ours):
            return {**found, "state": "held", **self._due(ours, entries)}
        # A window's digests are the records filed under it (one event alone is sent as the ordinary
        # email under the id it was held under: a digest record all the same).
        recorded = [s for s in history.digests(group, window) if s.kind == "digest" and "windows" in (s.digest or {})]
        found["digests"] = [
            {"notification_id": s.notification_id, "outcome": s.outcome, "message_id": s.message_id, "at": s.at,
             "error": s.error, "events_in_it": (s.digest or {}).get("events"),
             "previous": None if s.previous is None else dict(s.previous),
             "events": _events(history, s.notification_id, s.message_id) if s.outcome == "sent" else []}
            for s in recorded
        ]  # fmt: skip
        for sent in found["digests"]:
            sent["messages"] = messages(sent["message_id"], sent["events"])
        if ours is not None:
            length = self._window_length(ours)
            return {
                **found,
                "state": "parked",
                "describe": ours.group.describe(),
                **({"length": length} if length else {}),
            }
        return {**found, "state": "sent" if any(s.outcome == "sent" for s in recorded) else "gone"}

    def _window_length(self, ours: HeldEntry) -> int | None:
        rules = {r.name: r for r in self._settings.rules.rules} if self._settings else {}
        batching = rules[ours.group.rule].delivery.batching if ours.group.rule in rules else None
        return None if batching is None else int(batching.window)

    def _parked(self, ours: HeldEntry) -> bool:
        """Whether the window's digest was dead-lettered: its unsent part's claim is dead, which
        the flush leaves alone until `replay` (the ledger's parts, read in order)."""
        key = (ours.group.key, ours.window)
        if key not in self._parked_windows:
            self._parked_windows[key] = self._dead_part(ours)
        return self._parked_windows[key]

    def _dead_part(self, ours: HeldEntry) -> bool:
        from notifier.digest import claim_id
        from notifier.flush import MAX_PARTS

        for part in range(1, MAX_PARTS + 1) if self._ledger is not None else ():
            record = self._ledger.lookup(claim_id(ours.group, ours.window, part))  # type: ignore[union-attr]
            state = record.get("state") if isinstance(record, dict) else None
            if state != "sent":
                return state == "dead"
        return False

    def _entries(self) -> tuple[HeldEntry, ...]:
        if self._digests is None:
            return ()
        if self._listing is None:
            self._listing = self._digests.pending()
        return self._listing.entries

    def _due(self, ours: HeldEntry, entries: list[HeldEntry]) -> dict[str, Any]:
        """When the flush sends the digest holding ``ours`` (``entries``: its group's, as a flush
        groups them into runs); none for a rule without a digest today."""
        from notifier.digest import due_runs, orphan_reason
        from notifier.tools.digest_commands import due_at

        describe = ours.group.describe()
        rules = {r.name: r for r in self._settings.rules.rules} if self._settings else {}
        if orphan_reason(ours, rules) is not None:
            return {"describe": describe, "due": None, "orphaned": True}
        batching = rules[ours.group.rule].delivery.batching
        runs = due_runs(entries, {ours.group.rule: batching}, self._now, everything=True)  # type: ignore[dict-item]
        run = next((r for r in runs if ours.window in r.windows), None)
        due = None if run is None else _iso(due_at(run, batching))  # type: ignore[arg-type]
        return {"describe": describe, "due": due, "length": int(batching.window)}  # type: ignore[union-attr]


# --- small helpers -----------------------------------------------------------------------------


def _seconds(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**40


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def _where(settings: Settings) -> str:
    if settings.state_bucket is not None:
        return f"the state bucket gs://{settings.state_bucket}"
    return f"the ledger file {settings.ledger_file}"
