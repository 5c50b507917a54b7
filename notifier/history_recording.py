"""Writing the history (:mod:`notifier.ledger.history`) once a delivery has its outcome.

:class:`HistoryRecording` is held by the pipeline (which the flush and the webhook share): it makes
the history store on first use, so nothing of it is loaded before the first outcome, and keeps a
Sending for the outcomes the history keeps. An event's Sendings wait until its last send and are then
written within one short budget; a replay's, written at once. A failed write never changes an
outcome: one WARNING line ``history not recorded: ...`` says so, after the outcome line.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import replace
from datetime import datetime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from notifier import log
from notifier.ledger import LedgerError, create_history
from notifier.ledger.base import current_deadline, state_deadline
from notifier.outcomes import BATCHED, DEAD_LETTERED, PARTIAL, RETRYING, SENT

if TYPE_CHECKING:
    from notifier.ledger import DeadLetter, Ledger
    from notifier.ledger.history import History, Sending
    from notifier.rules import Notification

# The outcomes the history keeps (status shows them); RETRYING only after a send was attempted.
RECORDED = frozenset({SENT, DEAD_LETTERED, PARTIAL, BATCHED})
# An event's history writes (2 each in the state bucket), all of them together, at most this long:
# the answer waits for them, and the platform's ack deadline does not.
HISTORY_BUDGET_SECONDS = 3.0
# While an event's notifications are delivered, their Sendings wait here: recorded after the last
# send, so that no send waits for the history.
_UNRECORDED: ContextVar[list[Sending] | None] = ContextVar("unrecorded_sendings", default=None)


class HistoryRecording:
    """The pipeline's writer of the history. ``ledger``, ``clock`` (monotonic) and ``wall_clock`` are
    read when needed: the history is made beside the pipeline's ledger, timed by its clocks."""

    def __init__(
        self, ledger: Callable[[], Ledger], clock: Callable[[], float], wall_clock: Callable[[], datetime],
        logger: logging.Logger, history: History | None = None,
    ) -> None:  # fmt: skip
        self._ledger, self._clock, self._wall_clock, self._log = ledger, clock, wall_clock, logger
        self._history = history  # made on first use: nothing of it is loaded before the first outcome
        self._history_made = threading.Lock()  # requests run in threads: one store, not one each

    @property
    def history(self) -> History:
        """What became of each notification, beside the ledger."""
        with self._history_made:
            if self._history is None:
                self._history = create_history(self._ledger())
            return self._history

    @history.setter
    def history(self, history: History) -> None:
        self._history = history

    def record(self, sending: Sending) -> None:
        """Keep ``sending`` in the history, after its outcome line: a failure there changes nothing
        of the outcome, and is said in one WARNING line."""
        if (error := self._record_or_error(sending)) is not None:
            self._warning(error, sending)

    def outcome(
        self, notification: Notification, outcome: str, fields: Mapping[str, Any], *,
        digest: dict[str, Any] | None = None, replaying: DeadLetter | None = None,
    ) -> None:  # fmt: skip
        """After an outcome line (``fields``: its fields), the Sending of an outcome the history keeps
        (``digest``: a held event's group, window and held id; ``replaying``: the dead letter a replay
        sends, whose outcome the Sending keeps as its ``previous``): held for the event's last send,
        or, for a replay (nothing else to send first), recorded now."""
        if outcome not in RECORDED and not (outcome == RETRYING and fields.get("attempts")):
            return
        if not self.history.keeps:  # no state bucket: nothing is kept, so nothing is built either
            return
        from notifier.ledger.history import notification_sending

        sending = notification_sending(
            notification, outcome, self._wall_clock(), message_id=fields.get("message_id") or "",
            attempts=fields.get("attempts") or 0, error=fields.get("error") or "", digest=digest,
        )  # fmt: skip
        if replaying is not None:
            sending = replace(sending, previous=MappingProxyType(letter_outcome(replaying)))
        waiting = _UNRECORDED.get()
        if waiting is None:
            self.record(sending)
        else:
            waiting.append(sending)

    @contextmanager
    def after_sends(self) -> Iterator[None]:
        """While an event's notifications are delivered: their Sendings wait, and are recorded after it."""
        waiting = _UNRECORDED.set([])
        try:
            yield
        finally:
            sendings = _UNRECORDED.get() or []
            _UNRECORDED.reset(waiting)
            self._record_event(sendings)

    def _record_event(self, sendings: list[Sending]) -> None:
        """Record an event's Sendings within one short budget, never past the delivery's state
        deadline (a hung history must not hold the answer); after the first failure the rest are
        not tried, and one WARNING line names every id not recorded."""
        if not sendings:
            return
        ends = self._clock() + HISTORY_BUDGET_SECONDS
        if (until := current_deadline()) is not None:
            ends = min(ends, until)
        with state_deadline(ends, send_needs=0.0, grace=0.0):
            for done, sending in enumerate(sendings):
                if (error := self._record_or_error(sending)) is not None:
                    self._warning(error, sending, [s.notification_id for s in sendings[done:]])
                    return

    def _record_or_error(self, sending: Sending) -> Exception | None:
        try:
            self.history.record(sending)
        except Exception as error:  # noqa: BLE001 - the outcome stands, whatever went wrong here
            return error
        return None

    def _warning(self, error: Exception, sending: Sending, not_recorded: list[str] | None = None) -> None:
        """The one line saying the history misses ``sending`` (and, for an event, the ids skipped after it)."""
        skipped = f"; not tried for the event's {len(not_recorded) - 1} other notification(s)" if (
            not_recorded and len(not_recorded) > 1) else ""  # fmt: skip
        log.log(self._log, logging.WARNING, f"history not recorded: {error}{skipped}",
                exc_info=not isinstance(error, LedgerError), notification_id=sending.notification_id,
                **({"not_recorded": not_recorded} if not_recorded else {}))  # fmt: skip


def letter_outcome(letter: DeadLetter) -> dict[str, Any]:
    """What a dead letter says happened before its replay (a Sending's ``previous``): from the letter
    at hand, no extra read; untrusted, so only bounded texts are kept."""
    from notifier.ledger.history import MAX_ERROR, MAX_RECIPIENTS_KEPT

    error, refused = letter.record.get("error"), letter.record.get("refused_recipients")
    previous: dict[str, Any] = {
        "outcome": PARTIAL if isinstance(refused, list) else DEAD_LETTERED,
        "error": error[:MAX_ERROR] if isinstance(error, str) else "", "at": str(letter.created)[:100],
    }  # fmt: skip
    if isinstance(refused, list):
        previous["refused_recipients"] = [r[:320] for r in refused if isinstance(r, str)][:MAX_RECIPIENTS_KEPT]
    return previous
