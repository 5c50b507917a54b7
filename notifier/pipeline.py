"""The one-way pipeline: CloudEvent → StorageEvent → filters → rules → ledger → message → backend → log.

:class:`Pipeline` is built once per instance from validated settings. :meth:`Pipeline.handle` logs
exactly one outcome line per notification (one per event when it is invalid, expired or ignored)
and raises :class:`RetryLater` only when a redelivery by the platform can help.

Outcomes: ``sent``, ``duplicate`` (the ledger says it was sent or dead-lettered already),
``ignored``, ``expired``, ``invalid``, ``dead-lettered`` (permanent failure, kept for replay),
``partially-sent`` (some recipients refused it: kept for replay to just them) and
``retrying`` (transient failure: the function answers 500 and the platform redelivers),
``batched`` (held for a digest: :mod:`notifier.holding`; :mod:`notifier.flush` sends it); and, for
:meth:`Pipeline.replay` only, ``refused`` (the dead letter's rule is gone or no longer matches).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt, wait_fixed

from notifier import log
from notifier.config import Settings, environment_secrets, load_settings
from notifier.events import InvalidEvent, StorageEvent, decode
from notifier.history_recording import HistoryRecording
from notifier.ledger import Claim, ClaimStatus, DeadLetter, DeadLetters, Ledger, LedgerError, create_state
from notifier.ledger.base import STATE_GRACE_SECONDS, state_deadline
from notifier.mail import Backend, DeliveryError, Message, create_backend
from notifier.mail.base import Receipt
from notifier.mail.redirect import RedirectBackend
from notifier.mail.retry import MIN_ATTEMPT_SECONDS
from notifier.mail.scrub import scrub
from notifier.objects import ObjectAccess
from notifier.outcomes import (
    DEAD_LETTERED,
    DUPLICATE,
    EXPIRED,
    IGNORED,
    INVALID,
    PARTIAL,
    RETRYING,
    SENT,
    Outcome,
    RetryLater,
)
from notifier.render import Renderer
from notifier.replay import letter_record, owed_after_failure, still_owed, unstored_narrowing
from notifier.replaying import Replaying
from notifier.rules import Notification

if TYPE_CHECKING:
    from notifier.flush import Flushed
    from notifier.holding import Holding
    from notifier.ledger.digests import DigestStore
    from notifier.ledger.history import History


class Pipeline(Replaying):
    def __init__(
        self,
        settings: Settings,
        *,
        backend: Backend | None = None,
        renderer: Renderer | None = None,
        ledger: Ledger | None = None,
        dead_letters: DeadLetters | None = None,
        digests: DigestStore | None = None,
        history: History | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self.backend = backend or create_backend(settings.backend, settings.provider, settings.retry)
        if settings.redirect_to is not None:  # staging: a test's own backend is redirected too
            self.backend = RedirectBackend(self.backend, settings.redirect_to)
        self.renderer = renderer or Renderer.for_settings(settings)
        self.objects = ObjectAccess(settings)
        if ledger is None or dead_letters is None:
            default_ledger, default_dead_letters = create_state(settings)
            ledger, dead_letters = ledger or default_ledger, dead_letters or default_dead_letters
        self.ledger, self.dead_letters = ledger, dead_letters
        self.holding = _holding(settings, ledger, digests)
        self._clock = clock
        self._wall_clock = wall_clock
        self.sleep = time.sleep  # tests swap this for a recorder
        self.state_grace = STATE_GRACE_SECONDS  # state calls after the deadline; tests shorten it
        self._log = log.get_logger()
        # Read through self: tests swap the ledger and the clocks after construction.
        self.recording = HistoryRecording(lambda: self.ledger, lambda: self._clock(), lambda: self._wall_clock(),
                                          self._log, history)  # fmt: skip

    @classmethod
    def from_environment(cls) -> Pipeline:
        """Read and validate the environment; a bad setting is logged once and raised."""
        logger = log.get_logger()
        try:
            settings = settings_from_environment()
            pipeline = cls(settings)  # compiles and tries every template
        except ValueError as error:
            log.log(logger, logging.CRITICAL, f"storage-notifier cannot start: {error}")
            raise
        if settings.deployed and settings.state_bucket is None:
            log.log(
                logger, logging.WARNING,
                "no NOTIFY_STATE_BUCKET: each instance keeps its own ledger (duplicates across instances are"
                " possible) and dead letters stay on its disk; create one with deploy/setup.sh --state-bucket",
            )  # fmt: skip
        return pipeline

    def handle(self, cloud_event: Any, *, percent_encoded: bool = False) -> list[Outcome]:
        """Deliver every notification for one event. ``percent_encoded``: the attributes came from
        binary-mode ``ce-*`` headers, which the CloudEvents HTTP binding percent-encodes."""
        started = self._clock()
        try:
            event = decode(cloud_event, percent_encoded=percent_encoded)
        except InvalidEvent as error:
            self.reject(str(error), event_id=_attribute(cloud_event, "id"), event_type=_attribute(cloud_event, "type"))
            return [Outcome(INVALID)]
        except Exception as error:  # noqa: BLE001 - a decoding bug: log it, never redeliver forever
            self.reject(f"could not be decoded ({type(error).__name__}: {error})", exc_info=True)
            return [Outcome(INVALID)]
        age = self._age(event)
        limit = self.settings.max_event_age
        if age is not None and limit is not None and age > limit:
            reason = f"event is {age:.0f}s old, older than NOTIFY_MAX_EVENT_AGE={limit:.0f}s"
            self._event_line(event, EXPIRED, reason, started)
            return [Outcome(EXPIRED)]
        rules = self.settings.rules
        reason = rules.ignore_reason(event)
        notifications = [] if reason else rules.route(event)
        if not notifications:
            self._event_line(event, IGNORED, reason or "no rule matches", started)
            return [Outcome(IGNORED)]
        # Every state-bucket call ends in time: before a send, in time for it; after it, within the grace.
        deadline = started + self.settings.deadline_seconds
        with (
            state_deadline(deadline, send_needs=MIN_ATTEMPT_SECONDS, grace=self.state_grace),
            self.recording.after_sends(),  # the Sendings wait: recorded after the event's last send
        ):
            outcomes = [self._deliver(n, started, first=i == 0) for i, n in enumerate(notifications)]
        retrying = sum(o.outcome == RETRYING for o in outcomes)
        if retrying:
            raise RetryLater(f"{retrying} notification(s) for event {event.event_id} failed transiently")
        return outcomes

    def flush(self, *, everything: bool = False, replay: bool = False) -> list[Flushed]:
        """Send the held events that are due (``everything``: all of them now): notifier.flush.
        With no rule holding events any more, what is still held is reported (never dropped)."""
        from notifier.flush import Flusher

        store = self.digest_store()
        return [] if store is None else Flusher(self, store).flush(everything=everything, replay=replay)

    def digest_store(self) -> DigestStore | None:
        """Where this deployment holds events: also when no rule has a digest today (entries may
        remain from before); None for a ledger in memory, beside which nothing is ever held."""
        if self.holding is not None:
            return self.holding.store
        from notifier.ledger import create_digest_store

        return create_digest_store(self.ledger)

    @property
    def history(self) -> History:
        """What became of each notification (:mod:`notifier.ledger.history`): ``recording``'s, made on first use."""
        return self.recording.history

    @history.setter
    def history(self, history: History) -> None:
        self.recording.history = history

    def reject(self, reason: str, *, exc_info: bool = False, **fields: Any) -> None:
        """Log an event or request that can never be delivered; the caller acknowledges it."""
        log.log(self._log, logging.ERROR, f"invalid event: {reason}", exc_info=exc_info, outcome=INVALID, error=reason,
                **fields)  # fmt: skip

    def deliver(
        self, notification: Notification, message: Message | None, claim: Claim, started: float,
        *, replaying: DeadLetter | None = None,
    ) -> Outcome:  # fmt: skip
        """Render (unless ``message`` is given), send and record one claimed notification;
        ``replaying``: the dead letter it is sent again for."""
        deadline = started + self.settings.deadline_seconds
        try:
            if message is None:
                extras = self.objects.extras(notification.event, notification.delivery)
                message = self.renderer.render(notification, extras)
            if deadline - self._clock() < MIN_ATTEMPT_SECONDS:
                # A slow ledger or bucket used the time up: a send started now would be cut off
                # with its answer on the way, and the redelivery would send a second copy.
                raise DeliveryError("no time left before the deadline to send", transient=True, attempts=0)
            receipt = self.backend.send(message, deadline=deadline)
        except DeliveryError as error:
            if error.transient:
                self._release(notification, claim, replaying)
                fields = {"attempts": error.attempts, "status": error.status, "error": self._scrubbed(str(error))}
                self._line(notification, RETRYING, started, logging.WARNING, replaying=replaying, **fields)
                return Outcome(RETRYING, notification.id)
            return self._dead_letter(
                notification, message, claim, started, error, status=error.status, replaying=replaying
            )
        except Exception as error:  # noqa: BLE001 - a bug must not turn into endless redelivery
            return self._dead_letter(notification, message, claim, started, error, exc_info=True, replaying=replaying)
        if receipt.refused:  # outside the try: a bug there must not dead-letter it for everyone
            return self._partially_sent(notification, message, claim, started, receipt, replaying)
        # A lost "sent" mark would let a redelivery after the lease send again: try it a few times.
        ledger_error = self._record_sent(notification, claim, receipt.message_id)
        owed = still_owed(notification, claim, ())  # a replay the letter narrowed further than the ledger
        self._line(
            notification, SENT, started, logging.INFO, attempts=receipt.attempts, message_id=receipt.message_id,
            ledger_error=ledger_error, replaying=replaying, **({"still_owed": owed} if owed else {}),
        )  # fmt: skip
        return Outcome(SENT, notification.id, receipt.message_id)

    def _deliver(self, notification: Notification, started: float, *, first: bool) -> Outcome:
        """Claim and deliver one of an event's notifications (``first``: it has all the time)."""
        if not first and started + self.settings.deadline_seconds - self._clock() < MIN_ATTEMPT_SECONDS:
            # Those before it used the time up: a claim now would only hold it, unsent, for its lease.
            reason = "no time left before the deadline to claim and send it; the platform will redeliver"
            self._line(notification, RETRYING, started, logging.WARNING, reason=reason)
            return Outcome(RETRYING, notification.id)
        if notification.delivery.batching is not None and self.holding is not None:
            held = self.holding.hold(notification)
            if held is not None:
                level = (
                    (logging.ERROR if held.misconfigured else logging.WARNING)
                    if held.outcome == RETRYING
                    else logging.INFO
                )
                self._line(notification, held.outcome, started, level, reason=held.reason, digest=held.digest,
                           **held.fields)  # fmt: skip
                return Outcome(held.outcome, notification.id)
        claim = self._claim(notification, started)
        return claim if isinstance(claim, Outcome) else self.deliver(notification, None, claim, started)

    def _claim(self, notification: Notification, started: float, *, replay: bool = False) -> Claim | Outcome:
        """Our claim on the notification, or the outcome (logged) when we must not send it now."""
        from notifier.ledger.history import sending_about  # the first outcome's Sending loads it anyway

        event = notification.event  # about: where the history files its Sending, found from the record
        try:
            claim = self.ledger.claim(notification.id, lease_seconds=self.settings.lease_seconds, replay=replay,
                                      about=sending_about(event.bucket, event.name, event.generation))  # fmt: skip
        except LedgerError as error:
            level = logging.ERROR if error.misconfigured else logging.WARNING
            self._line(notification, RETRYING, started, level, error=f"ledger unavailable: {error}")
            return Outcome(RETRYING, notification.id)
        if claim.status is ClaimStatus.SENT:
            reason, message_id = "already sent", claim.message_id
            self._line(notification, DUPLICATE, started, logging.INFO, reason=reason, message_id=message_id)
            return Outcome(DUPLICATE, notification.id, message_id)
        if claim.status is ClaimStatus.DEAD:
            reason = "already dead-lettered; `python -m notifier replay` sends it"
            self._line(notification, DUPLICATE, started, logging.INFO, reason=reason)
            return Outcome(DUPLICATE, notification.id)
        if claim.status is ClaimStatus.BUSY:
            # Another delivery is sending it now; if that one fails, this redelivery must not be lost.
            reason = "another delivery holds the claim; the platform will redeliver"
            self._line(notification, RETRYING, started, logging.WARNING, reason=reason)
            return Outcome(RETRYING, notification.id)
        return claim

    def _dead_letter(
        self, notification: Notification, message: Message | None, claim: Claim, started: float,
        error: Exception, *, status: int | None = None, exc_info: bool = False, replaying: DeadLetter | None = None,
    ) -> Outcome:  # fmt: skip
        detail = self._scrubbed(str(error) if isinstance(error, DeliveryError) else f"{type(error).__name__}: {error}")
        record = letter_record(notification, message, detail, status)
        owed = owed_after_failure(notification, claim, replaying)
        if owed is not None:  # a narrowed replay: its letter and the ledger stay narrowed
            record["refused_recipients"] = sorted({a.key for a in notification.recipients.everyone})
        try:
            stored_at = self.dead_letters.put(notification.id, record)
        except (LedgerError, OSError) as store_error:
            # Without its dead letter the message would be lost: leave it to the platform's retry.
            self._ledger_quietly(self.ledger.release, claim)
            self._line(
                notification, RETRYING, started, logging.ERROR, exc_info=exc_info, status=status,
                error=f"{detail}; and the dead letter could not be stored ({store_error}), so it will be redelivered",
                subject=message.subject if message is not None else None,
            )  # fmt: skip
            return Outcome(RETRYING, notification.id)
        self._ledger_quietly(self.ledger.mark_dead, claim, owed)
        self._line(
            notification, DEAD_LETTERED, started, logging.ERROR, exc_info=exc_info,
            status=status, error=detail, dead_letter=stored_at, replaying=replaying,
            subject=message.subject if message is not None else None,
            **({"attempts": error.attempts} if isinstance(error, DeliveryError) else {}),  # status shows them
        )  # fmt: skip
        return Outcome(DEAD_LETTERED, notification.id)

    def _partially_sent(
        self, notification: Notification, message: Message, claim: Claim, started: float, receipt: Receipt,
        replaying: DeadLetter | None = None,
    ) -> Outcome:  # fmt: skip
        """Some recipients got it and ``receipt.refused`` did not: a dead letter for just them (replay
        sends to them alone), and the claim marked dead, so a redelivery sends nobody a second copy.
        Transient refusals the backend's retries did not overcome are kept too, not redelivered:
        the platform would send the whole notification again, to everyone who has it."""
        refused = receipt.refused
        detail = self._scrubbed(
            f"{receipt.backend} refused {len(refused)} of {message.recipient_count} recipient(s): "
            + "; ".join(f"{r.address}: {r.status} {r.reply}".strip() for r in refused)
            + (f" (after {receipt.attempts} attempt(s))" if any(r.transient for r in refused) else "")
        )
        record = {**letter_record(notification, message, detail, refused[0].status),
                  "refused_recipients": [r.address for r in refused]}  # fmt: skip
        # Not left to the platform when it cannot be stored: its redelivery would send everyone who
        # has it a second copy.
        stored_at, store_error = self._put_letter(notification.id, record)
        fields: dict[str, Any] = {}
        if store_error is not None and replaying is None:
            detail += f"; and the dead letter could not be stored ({store_error}): replay cannot send it to them"
        elif store_error is not None and replaying is not None:
            stored_at, note, fields = self._narrow_replayed(replaying, notification, record, store_error)
            detail += note
        owed = still_owed(notification, claim, refused)  # the ledger, not the letter, decides a replay's
        ledger_error = self._ledger_quietly(self._mark_sent_policy().wraps(self.ledger.mark_dead), claim, owed)
        self._line(
            notification, PARTIAL, started, logging.ERROR, attempts=receipt.attempts, message_id=receipt.message_id,
            status=refused[0].status, error=detail, dead_letter=stored_at, ledger_error=ledger_error,
            refused=[{"address": r.address, "status": r.status, "transient": r.transient} for r in refused],
            subject=message.subject, replaying=replaying, **fields,
        )  # fmt: skip
        return Outcome(PARTIAL, notification.id, receipt.message_id, letter_stored=store_error is None)

    def _release(self, notification: Notification, claim: Claim, replaying: DeadLetter | None) -> None:
        """Let the next attempt claim it; a replay narrowed to some recipients stays dead for just them
        (a deleted record would let a redelivery of the event mail everyone again)."""
        owed = owed_after_failure(notification, claim, replaying)
        if owed is None:
            self._ledger_quietly(self.ledger.release, claim)
        else:
            self._ledger_quietly(self._mark_sent_policy().wraps(self.ledger.mark_dead), claim, owed)

    def _record_sent(self, notification: Notification, claim: Claim, message_id: str) -> str | None:
        """Mark it sent; or, for a replay that sent to fewer than the ledger says are owed (the letter
        named fewer), keep it dead for the rest. The ledger's error, if it failed."""
        owed = still_owed(notification, claim, ())
        if owed:
            return self._ledger_quietly(self._mark_sent_policy().wraps(self.ledger.mark_dead), claim, owed)
        return self._ledger_quietly(self._mark_sent_policy().wraps(self.ledger.mark_sent), claim, message_id)

    def _put_letter(self, name: str, record: dict[str, Any]) -> tuple[str | None, str | None]:
        """Store a letter, tried like the sent mark: where it is, or why it is not."""
        try:
            return self._mark_sent_policy().wraps(self.dead_letters.put)(name, record), None
        except (LedgerError, OSError) as store_error:
            return None, str(store_error)

    def _narrow_replayed(
        self, replayed: DeadLetter, notification: Notification, record: dict[str, Any], store_error: str
    ) -> tuple[str | None, str, dict[str, Any]]:
        """A replay reached some of the letter's recipients and its narrowed letter could not be
        stored: narrow the replayed letter in place, else say who has the email now and who still
        needs it (the replayed letter is kept as it was). Where it is, what to add to the error, fields."""
        if replayed.notification_id != notification.id:  # under its own name it just failed
            stored_at, _ = self._put_letter(replayed.notification_id, record)
            if stored_at is not None:
                return stored_at, f"; narrowed to them in place instead ({notification.id}: {store_error})", {}
        note, fields = unstored_narrowing(replayed, notification, record["refused_recipients"], store_error)
        return None, note, fields

    def _scrubbed(self, error_text: str) -> str:
        """An error text as it may be stored and logged. Backends scrub what they build from a
        provider's answer already; this catches one that forgot, or an unexpected exception."""
        return log.redact(scrub(error_text, self.settings.secrets))

    def _mark_sent_policy(self) -> Retrying:
        return Retrying(
            retry=retry_if_exception_type(LedgerError), stop=stop_after_attempt(3), wait=wait_fixed(0.2),
            sleep=self.sleep, reraise=True,
        )  # fmt: skip

    def _ledger_quietly(self, operation: Callable[..., None], *args: Any) -> str | None:
        """Record a result in the ledger; a failure there is reported in the outcome line instead."""
        try:
            operation(*args)
        except LedgerError as error:
            return str(error)
        return None

    def _age(self, event: StorageEvent) -> float | None:
        happened = event.event_time or event.updated
        return None if happened is None else (self._wall_clock() - happened).total_seconds()

    def _event_line(self, event: StorageEvent, outcome: str, reason: str, started: float) -> None:
        log.log(
            self._log, logging.INFO, f"{outcome}: {event.kind} {event.gs_uri}: {reason}",
            **_event_fields(event), outcome=outcome, reason=reason, duration_ms=self._elapsed_ms(started),
        )  # fmt: skip

    def _line(
        self, notification: Notification, outcome: str, started: float, level: int, *, exc_info: bool = False,
        digest: dict[str, Any] | None = None, replaying: DeadLetter | None = None, **fields: Any,
    ) -> None:  # fmt: skip
        """The outcome line; then its Sending, for an outcome the history keeps (``digest``: a held
        event's group, window and held id; ``replaying``: the dead letter a replay sends)."""
        event = notification.event
        recipients = len(notification.recipients.everyone)
        summary = f"{outcome}: {event.kind} {event.gs_uri} → {recipients} recipient(s) via {self.backend.name}"
        if detail := fields.get("error") or fields.get("reason"):
            summary += f": {detail}"
        log.log(
            self._log, level, summary, exc_info=exc_info,
            **_event_fields(event), notification_id=notification.id, rule=notification.rule.name,
            recipients=recipients, backend=self.backend.name, ledger=self.ledger.name, outcome=outcome,
            duration_ms=self._elapsed_ms(started), **fields,
        )  # fmt: skip
        self.recording.outcome(notification, outcome, fields, digest=digest, replaying=replaying)

    def _elapsed_ms(self, started: float) -> float:
        return round((self._clock() - started) * 1000, 1)


def settings_from_environment() -> Settings:
    """The validated settings, every secret registered with the log first (so a problem that
    names one is logged, or printed, redacted); ConfigError (a ValueError) lists every problem."""
    for secret in environment_secrets():
        log.register_secret(secret)
    settings = load_settings()
    for secret in settings.secrets:
        log.register_secret(secret)
    return settings


def _holding(settings: Settings, ledger: Ledger, store: DigestStore | None) -> Holding | None:
    """Where rules with a digest or cap hold events; None (nothing loaded) when no rule has one."""
    if not any(rule.delivery.batching is not None for rule in settings.rules.rules):
        return None
    from notifier.holding import holding_for

    return holding_for(settings, ledger, store)


def _event_fields(event: StorageEvent) -> dict[str, Any]:
    return {"event_id": event.event_id, "kind": event.kind, "bucket": event.bucket, "object": event.name,
            "generation": event.generation}  # fmt: skip


def _attribute(cloud_event: Any, name: str) -> Any:
    try:
        return cloud_event[name]
    except (KeyError, TypeError):
        return None
