"""Sending held events: each due run of a group's windows becomes one email (the digest, or the
ordinary email when it holds one event), claimed in the ledger so that it goes out once.

The flush is ``main.py: flush_digests`` (Cloud Scheduler calls it every minute), ``python -m
notifier flush`` and ``make sandbox``'s schedule. For each due run (:func:`notifier.digest.due_runs`):

1. claim each window in the ledger (``digest-<group>-<window>-<part>``), oldest first: a racing
   flush finds the first claim busy and leaves the group alone; a window whose digest went out
   already yields only the entries its record did not include (redeliveries are dropped as
   duplicates; events that came after it go out as the window's next part);
2. render and send it, with the delivery's deadline and retries;
3. record the ids it included, mark the claims sent, and only then remove the entries.

A crash after SendGrid accepted a digest and before its ids were recorded sends it again once the
lease expires: the same guarantee as single emails. A permanent failure stores a dead letter
naming the digest and marks its claims dead: its entries stay held until ``python -m notifier
replay`` sends the digest again.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from notifier import log
from notifier.digest import (
    Group,
    HeldEntry,
    Run,
    claim_id,
    digest_id,
    due_runs,
    iso_utc,
    orphan_reason,
    window_label,
)
from notifier.events import InvalidEvent, from_dict
from notifier.ledger.base import Claim, ClaimStatus, LedgerError
from notifier.ledger.digests import DigestStore
from notifier.ledger.history import MAX_ERROR, MAX_RECIPIENTS_KEPT, Sending, utc_text
from notifier.mail.base import DeliveryError, Message
from notifier.outcomes import DEAD_LETTERED, DUPLICATE, REFUSED, RETRYING, SENT
from notifier.rules import Notification, Rule

if TYPE_CHECKING:
    from notifier.pipeline import Pipeline

BUSY = "busy"  # another flush holds a claim of the run: it sends it
PARKED = "parked"  # its digest was dead-lettered: `replay` sends it
MAX_PARTS = 50  # parts of one window: events that kept coming after its digest went out
FLUSH_BUDGET_SECONDS = 240.0  # no run is started after this; the next scheduled flush goes on


@dataclass(frozen=True, slots=True)
class Flushed:
    """What one run came to (one line of ``python -m notifier flush``)."""

    group: Group
    windows: tuple[int, ...]
    window_length: float
    outcome: str  # sent, duplicate (only redeliveries were left), busy, parked, retrying, dead-lettered, refused
    events: int = 0
    message_id: str = ""
    detail: str = ""

    def line(self) -> str:
        start, end = self.windows[0], self.windows[-1] + self.window_length
        try:
            label = window_label(datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(end, UTC))
        except (ValueError, OverflowError, OSError):  # a planted window past datetime's range
            label = f"window {start}"
        text = f"{self.outcome}: {self.group.describe()} ({label}): {self.events} event(s)"
        if self.message_id:
            text += f", message id {self.message_id}"
        return text + (f": {self.detail}" if self.detail else "")


@dataclass(frozen=True, slots=True)
class _Part:
    window: int
    part: int
    claim: Claim
    entries: tuple[HeldEntry, ...]


class Flusher:
    """Flushes one pipeline's held events (its ledger, backend, renderer and log)."""

    def __init__(self, pipeline: Pipeline, store: DigestStore, clock: Callable[[], float] = time.time) -> None:
        self.pipeline = pipeline
        self.store = store
        self._clock = clock

    def flush(self, *, everything: bool = False, replay: bool = False, group_key: str | None = None) -> list[Flushed]:
        """Send every due run (``everything``: every run, whatever its windows); ``replay``: runs
        whose digest was dead-lettered too; ``group_key``: that group's runs only (its replay)."""
        started = time.monotonic()
        listed = [e for e in self.store.pending().entries if group_key in (None, e.group.key)]
        rules = {rule.name: rule for rule in self.pipeline.settings.rules.rules if rule.delivery.batching}
        batching = {name: rule.delivery.batching for name, rule in rules.items()}
        reasons = [(e, orphan_reason(e, rules)) for e in listed]  # each key hashed once
        orphans = [(e, why) for e, why in reasons if why is not None]
        held = [e for e, why in reasons if why is None]
        results = [self._orphans(orphans)] if orphans else []
        for run in due_runs(held, batching, self._clock(), everything=everything):  # type: ignore[arg-type]
            if time.monotonic() - started > FLUSH_BUDGET_SECONDS:
                break
            results.append(self._isolated(run, rules[run.group.rule], replay=replay))
        return results

    def _isolated(self, run: Run, rule: Rule, *, replay: bool) -> Flushed:
        """One run; a bug in it (never expected) is logged once with its group, and the others go."""
        try:
            return self._run(run, rule, replay=replay)
        except Exception as error:  # noqa: BLE001 - one group's problem must not stop every flush
            detail = f"{type(error).__name__}: {error}"
            message = f"{REFUSED}: the run of group {run.group.key} ({run.group.describe()}) failed: {detail}"
            log.log(self.pipeline._log, logging.ERROR, message, exc_info=True, outcome=REFUSED,
                    rule=run.group.rule, group=run.group.key, events=len(run.entries))  # fmt: skip
            return Flushed(run.group, run.windows, run.window_length, REFUSED, len(run.entries), detail=detail)

    # --- one run ------------------------------------------------------------------------------

    def _run(self, run: Run, rule: Rule, *, replay: bool) -> Flushed:
        started = self.pipeline._clock()
        parts: list[_Part] = []
        dropped: list[HeldEntry] = []
        parked: list[int] = []
        held = len(run.entries)
        try:
            for window in run.windows:
                outcome = self._claim_window(run, window, parts, dropped, replay=replay)
                if outcome == PARKED:  # that window waits for replay; the windows after it still go
                    parked.append(window)
                elif outcome is not None:
                    self._release(parts)
                    return self._done(run, outcome, held, detail=_WHY[outcome], held=held)
        except LedgerError as error:
            self._release(parts)
            return self._done(run, RETRYING, held, level=logging.WARNING, detail=f"ledger unavailable: {error}",
                              held=held)  # fmt: skip
        entries = tuple(e for p in parts for e in p.entries)
        if not entries and parked:
            return self._done(run, PARKED, held, detail=_WHY[PARKED], held=held)
        if not entries:
            why = f"{len(dropped)} redelivered event(s) were in a digest sent before: dropped"
            return self._done(run, DUPLICATE, 0, detail=why, held=held)
        if parked:
            run = replace(run, windows=tuple(w for w in run.windows if w not in parked), entries=entries)
        deadline = started + self.pipeline.settings.deadline_seconds
        try:
            message = self._message(run, rule, entries, _notification_id(run.group, parts))
        except (LedgerError, OSError) as error:  # a passing state-bucket or network error: the next flush retries
            self._release(parts)
            detail = self.pipeline._scrubbed(f"held event unreadable for now: {error}")
            return self._done(run, RETRYING, len(entries), level=logging.WARNING, detail=detail, held=held)
        except Exception as error:  # noqa: BLE001 - a template or event problem: parked, not retried every minute
            detail = self.pipeline._scrubbed(f"{type(error).__name__}: {error}")
            return self._dead_letter(run, rule, None, parts, detail, None)
        try:
            receipt = self.pipeline.backend.send(message, deadline=deadline)
        except DeliveryError as error:
            detail = self.pipeline._scrubbed(str(error))
            if error.transient:
                self._release(parts)
                return self._done(
                    run, RETRYING, len(entries), level=logging.WARNING, detail=detail, status=error.status, held=held
                )
            return self._dead_letter(run, rule, message, parts, detail, error.status)
        except Exception as error:  # noqa: BLE001 - a backend bug: parked, not retried every minute
            detail = self.pipeline._scrubbed(f"{type(error).__name__}: {error}")
            return self._dead_letter(run, rule, message, parts, detail, None)
        stored_error = self._record(parts, lambda claim: self.pipeline.ledger.mark_sent(claim, receipt.message_id))
        if stored_error is None:  # else they stay: the next flush finds them recorded and drops them
            self.store_remove(entries)
        result = self._done(
            run, SENT, len(entries), message_id=receipt.message_id, attempts=receipt.attempts,
            ledger_error=stored_error, subject=message.subject, held=held,
            parked=f"{held - len(entries) - len(dropped)} event(s) of dead-lettered window(s) stay parked until replay"
            if parked else None,
        )  # fmt: skip
        sending = _digest_sending(run, parts, message, SENT, self.pipeline._wall_clock())
        previous = self._replaced(sending.notification_id) if replay else None
        self.pipeline.recording.record(
            replace(sending, message_id=receipt.message_id, attempts=receipt.attempts, previous=previous)
        )
        return result

    def _replaced(self, notification_id: str) -> Mapping[str, Any] | None:
        """A replayed digest sent under its letter's id replaces the dead-lettered record there:
        what that said, kept as the new record's ``previous`` (one read, on replays only)."""
        try:
            before = self.pipeline.history.by_id(notification_id)
        except Exception:  # noqa: BLE001 - the history is not what the replay is about; its write says more
            return None
        if before is None or before.outcome == SENT:
            return None
        return MappingProxyType(
            {"outcome": before.outcome[:100], "error": before.error[:MAX_ERROR], "at": before.at[:100]}
        )

    def _claim_window(
        self, run: Run, window: int, parts: list[_Part], dropped: list[HeldEntry], *, replay: bool
    ) -> str | None:
        """Claim the window's next unsent part and add it to ``parts``; or the outcome that stops the run.

        A part whose ids are recorded went out (its mark failed, or its lease ran out mid-send):
        its ids are dropped and the next part is tried. The last part is never marked sent but
        released after each send (its record grows), so a window's late events always go out."""
        entries = [e for e in run.entries if e.window == window]
        ledger, lease = self.pipeline.ledger, self.pipeline.settings.lease_seconds
        for part in range(1, MAX_PARTS + 1):
            claim = ledger.claim(claim_id(run.group, window, part), lease_seconds=lease, replay=replay)
            if claim.status is ClaimStatus.BUSY:
                return BUSY
            if claim.status is ClaimStatus.DEAD:
                return PARKED
            included = self._included(run.group, window, part, claim)
            entries = self._drop_sent(entries, included, dropped)
            if claim.status is ClaimStatus.CLAIMED and (included is None or part == MAX_PARTS):
                if entries:
                    parts.append(_Part(window, part, claim, tuple(entries)))
                else:
                    self.pipeline._ledger_quietly(ledger.release, claim)
                return None
            if claim.status is ClaimStatus.CLAIMED:  # recorded: it went out; its claim says so now
                self.pipeline._ledger_quietly(ledger.mark_sent, claim, "")
            if not entries:
                return None
        return REFUSED  # the last part marked sent: only a ledger written before it was kept open

    def _included(self, group: Group, window: int, part: int, claim: Claim) -> frozenset[str] | None:
        """The part's record; a claim just taken is released when it cannot be read."""
        try:
            return self.store.included(group, window, part)
        except LedgerError:
            if claim.status is ClaimStatus.CLAIMED:
                self.pipeline._ledger_quietly(self.pipeline.ledger.release, claim)
            raise

    def _drop_sent(
        self, entries: list[HeldEntry], included: frozenset[str] | None, dropped: list[HeldEntry]
    ) -> list[HeldEntry]:
        """``entries`` without those a sent part included (redeliveries: removed)."""
        if not included:
            return entries
        sent_before = [e for e in entries if e.notification_id in included]
        if sent_before:
            dropped.extend(sent_before)
            self.store_remove(sent_before)
        return [e for e in entries if e.notification_id not in included]

    def _message(self, run: Run, rule: Rule, entries: tuple[HeldEntry, ...], notification_id: str) -> Message:
        """The digest; or, for one event, the ordinary email about it under its own id."""
        renderer = self.pipeline.renderer
        if len(entries) == 1:
            stored = self.store.event(entries[0])
            if stored is None:
                raise InvalidEvent("its entry is gone")
            notification = Notification(entries[0].notification_id, from_dict(stored), rule)
            extras = self.pipeline.objects.extras(notification.event, notification.delivery)
            return renderer.render(notification, extras)
        return renderer.render_digest(rule, run, entries, notification_id)

    def _dead_letter(
        self, run: Run, rule: Rule, message: Message | None, parts: list[_Part], detail: str, status: int | None
    ) -> Flushed:
        entries = [e for p in parts for e in p.entries]
        notification_id = _notification_id(run.group, parts)
        record = {
            "digest": {
                "rule": rule.name, "group": run.group.key, "group_of": run.group.describe(),
                "windows": [[p.window, p.part] for p in parts], "events": len(entries),
            },
            "rule": rule.name, "error": detail, "status": status, "subject": message.subject if message else None,
            "objects": [f"gs://{e.bucket}/{e.name}" for e in entries[:100]],
        }  # fmt: skip
        try:
            stored_at = self.pipeline.dead_letters.put(notification_id, record)
        except (LedgerError, OSError) as error:
            self._release(parts)
            return self._done(run, RETRYING, len(entries), level=logging.ERROR, held=len(run.entries),
                              detail=f"{detail}; and the dead letter could not be stored ({error})")  # fmt: skip
        # Dead claims park the entries (no included record: they stay held) until replay.
        ledger_error = self._record(parts, self.pipeline.ledger.mark_dead, include=False)
        result = self._done(
            run, DEAD_LETTERED, len(entries), level=logging.ERROR, detail=detail, status=status,
            dead_letter=stored_at, ledger_error=ledger_error, held=len(run.entries),
        )  # fmt: skip
        # Under the letter's name (what replay lists), filed under its windows: status says it is parked.
        sending = _digest_sending(run, parts, message, DEAD_LETTERED, self.pipeline._wall_clock())
        self.pipeline.recording.record(replace(sending, notification_id=notification_id, error=detail[:MAX_ERROR]))
        return result

    def _record(self, parts: list[_Part], mark: Callable[[Claim], None], *, include: bool = True) -> str | None:
        """Record each part's ids (before its claim is marked: a claim marked sent always has them).
        The window's last part is released instead: its record (merged) says what went out in it."""
        policy = self.pipeline._mark_sent_policy()
        try:
            for p in parts:
                if include:
                    ids = [e.notification_id for e in p.entries]
                    policy.wraps(self.store.record_included)(p.entries[0].group, p.window, p.part, ids)
                last = include and p.part == MAX_PARTS
                policy.wraps(self.pipeline.ledger.release if last else mark)(p.claim)
        except LedgerError as error:
            return str(error)
        return None

    def store_remove(self, entries: Iterable[HeldEntry]) -> None:
        try:
            self.store.remove(entries)
        except LedgerError as error:  # they stay; the next flush finds them included and removes them
            log.log(self.pipeline._log, logging.WARNING, f"held entries not removed yet: {error}", error=str(error))

    def _release(self, parts: list[_Part]) -> None:
        for p in parts:
            self.pipeline._ledger_quietly(self.pipeline.ledger.release, p.claim)

    def _orphans(self, orphans: list[tuple[HeldEntry, str]]) -> Flushed:
        """Entries no rule sends (no digest today, or another grouping): kept, said once per flush."""
        names = sorted({e.group.rule for e, _ in orphans})
        reasons = "; ".join(sorted({why for _, why in orphans}))
        detail = (f"held for rule(s) {', '.join(names)} ({reasons}): they stay held; restore the rule's"
                  " digest (or group_by) for a `flush --all`, or delete them (`python -m notifier pending`"
                  " lists them)")  # fmt: skip
        first = orphans[0][0]
        result = Flushed(first.group, (first.window,), 60.0, REFUSED, len(orphans), detail=detail)
        log.log(self.pipeline._log, logging.ERROR, f"{REFUSED}: {len(orphans)} held event(s): {detail}",
                outcome=REFUSED, events=len(orphans), rule=names[0] if len(names) == 1 else names)  # fmt: skip
        return result

    def _done(self, run: Run, outcome: str, events: int, *, level: int = logging.INFO, detail: str = "",
              message_id: str = "", **fields: Any) -> Flushed:  # fmt: skip
        result = Flushed(run.group, run.windows, run.window_length, outcome, events, message_id or "", detail)
        first, last = run.windows[0], run.windows[-1]
        log.log(
            self.pipeline._log, level, f"{result.line()}", outcome=outcome, events=events, rule=run.group.rule,
            group=run.group.key, group_of=run.group.describe(), window=iso_utc(first),
            window_end=iso_utc(last + run.window_length),
            backend=self.pipeline.backend.name, message_id=message_id or None, **({"reason": detail} if detail else {}),
            **{k: v for k, v in fields.items() if v is not None},
        )  # fmt: skip
        return result


_WHY = {
    BUSY: "another flush is sending it",
    PARKED: "its digest was dead-lettered; `python -m notifier replay` sends it once the cause is fixed",
    REFUSED: f"the window's last part ({MAX_PARTS}) is marked sent, which the flush never does to it (it"
    " releases it after each send): the rest stays held",
}


def _digest_sending(run: Run, parts: list[_Part], message: Message | None, outcome: str, at: datetime) -> Sending:
    """The history's record of a digest's outcome (sent, dead-lettered; ``message`` None: it could
    not be rendered): filed under each window it took events from."""
    entries = [e for p in parts for e in p.entries]
    envelopes = message.envelopes if message is not None else ()
    addresses = [a.email for envelope in envelopes for a in (*envelope.to, *envelope.cc, *envelope.bcc)]
    first = entries[0]
    return Sending(
        message.notification_id if message is not None else _notification_id(run.group, parts), first.bucket, "",
        None, "", "digest", run.group.rule, tuple(addresses[:MAX_RECIPIENTS_KEPT]), len(addresses), outcome,
        utc_text(at), event_time=utc_text(first.time) if first.time else "",
        digest={"group": run.group.key, "windows": sorted({p.window for p in parts}), "events": len(entries)},
    )  # fmt: skip


def _notification_id(group: Group, parts: list[_Part]) -> str:
    """A digest's notification id (Message-ID): from its parts and the ids it sends, so that two
    flushes sending different sets under one part (a lease ran out mid-send) never share one,
    while a resend of the same set keeps it (a receiver may drop the copy)."""
    ids = sorted(e.notification_id for p in parts for e in p.entries)
    key = "\n".join([digest_id(group, [(p.window, p.part) for p in parts]), *ids])
    return hashlib.sha256(key.encode()).hexdigest()[:32]
