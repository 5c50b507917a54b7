"""The one-way pipeline: CloudEvent → StorageEvent → notifications → messages → backend → log.

:class:`Pipeline` is built once per instance from validated settings. :meth:`Pipeline.handle`
logs exactly one outcome line per notification (or one ``invalid`` line per unusable event) and
raises :class:`RetryLater` only when a retry by the platform can help.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from notifier import log
from notifier.config import Settings, load_settings
from notifier.events import InvalidEvent, StorageEvent, decode
from notifier.mail import Backend, DeliveryError, create_backend
from notifier.render import Renderer
from notifier.rules import Notification

SENT, INVALID, IGNORED, FAILED, RETRYING = "sent", "invalid", "ignored", "failed", "retrying"


class RetryLater(Exception):
    """Some notification failed transiently; answering non-2xx makes the platform redeliver."""


@dataclass(frozen=True, slots=True)
class Outcome:
    outcome: str
    notification_id: str | None = None
    message_id: str | None = None


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        *,
        backend: Backend | None = None,
        renderer: Renderer | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.backend = backend or create_backend(settings)
        self.renderer = renderer or Renderer(settings.templates_dir, settings.rules.rules)
        self._clock = clock
        self._log = log.get_logger()

    @classmethod
    def from_environment(cls) -> Pipeline:
        """Read and validate the environment; a bad setting is logged once and raised."""
        try:
            settings = load_settings()
        except ValueError as error:
            log.log(log.get_logger(), logging.CRITICAL, f"storage-notifier cannot start: {error}")
            raise
        log.register_secret(settings.sendgrid_api_key)
        return cls(settings)

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
        rules = self.settings.rules
        reason = rules.ignore_reason(event)
        notifications = [] if reason else rules.route(event)
        if not notifications:
            self._ignored(event, reason or "no rule matches", started)
            return [Outcome(IGNORED)]
        outcomes = [self._deliver(n, started) for n in notifications]
        retrying = sum(o.outcome == RETRYING for o in outcomes)
        if retrying:
            raise RetryLater(f"{retrying} notification(s) for event {event.event_id} failed transiently")
        return outcomes

    def _ignored(self, event: StorageEvent, reason: str, started: float) -> None:
        log.log(
            self._log,
            logging.INFO,
            f"ignored: {event.kind} {event.gs_uri}: {reason}",
            **_event_fields(event),
            outcome=IGNORED,
            reason=reason,
            duration_ms=round((self._clock() - started) * 1000, 1),
        )

    def reject(self, reason: str, *, exc_info: bool = False, **fields: Any) -> None:
        """Log an event or request that can never be delivered; the caller acknowledges it."""
        log.log(
            self._log,
            logging.ERROR,
            f"invalid event: {reason}",
            exc_info=exc_info,
            outcome=INVALID,
            error=reason,
            **fields,
        )

    def _deliver(self, notification: Notification, started: float) -> Outcome:
        deadline = started + self.settings.deadline_seconds
        try:
            receipt = self.backend.send(self.renderer.render(notification), deadline=deadline)
        except DeliveryError as error:
            outcome = RETRYING if error.transient else FAILED
            self._outcome(
                notification,
                outcome,
                started,
                logging.WARNING if error.transient else logging.ERROR,
                attempts=error.attempts,
                status=error.status,
                error=str(error),
            )
            return Outcome(outcome, notification.id)
        except Exception as error:  # noqa: BLE001 - a bug must not turn into endless redelivery
            self._outcome(
                notification,
                FAILED,
                started,
                logging.ERROR,
                error=f"{type(error).__name__}: {error}",
                exc_info=True,
            )
            return Outcome(FAILED, notification.id)
        self._outcome(
            notification,
            SENT,
            started,
            logging.INFO,
            attempts=receipt.attempts,
            message_id=receipt.message_id,
        )
        return Outcome(SENT, notification.id, receipt.message_id)

    def _outcome(
        self,
        notification: Notification,
        outcome: str,
        started: float,
        level: int,
        *,
        exc_info: bool = False,
        **fields: Any,
    ) -> None:
        event = notification.event
        duration_ms = round((self._clock() - started) * 1000, 1)
        recipients = len(notification.recipients.everyone)
        summary = f"{outcome}: {event.kind} {event.gs_uri} → {recipients} recipient(s) via {self.backend.name}"
        if "error" in fields:
            summary += f": {fields['error']}"
        log.log(
            self._log,
            level,
            summary,
            exc_info=exc_info,
            **_event_fields(event),
            notification_id=notification.id,
            rule=notification.rule.name,
            recipients=recipients,
            backend=self.backend.name,
            outcome=outcome,
            duration_ms=duration_ms,
            **fields,
        )


def _event_fields(event: StorageEvent) -> dict[str, Any]:
    return {
        "event_id": event.event_id,
        "kind": event.kind,
        "bucket": event.bucket,
        "object": event.name,
        "generation": event.generation,
    }


def _attribute(cloud_event: Any, name: str) -> Any:
    try:
        return cloud_event[name]
    except (KeyError, TypeError):
        return None
