"""What handling a notification came to: the outcome names every log line uses, :class:`Outcome`,
and :class:`RetryLater` (answer non-2xx so the platform redelivers)."""

from __future__ import annotations

from dataclasses import dataclass

SENT, DUPLICATE, IGNORED, EXPIRED = "sent", "duplicate", "ignored", "expired"
INVALID, DEAD_LETTERED, RETRYING = "invalid", "dead-lettered", "retrying"
PARTIAL = "partially-sent"  # accepted for some recipients; the refused ones are dead-lettered alone
BATCHED = "batched"  # held for a digest (rules with digest, or over max_emails); a flush sends it
REFUSED = "refused"  # replay: the letter's rule is gone or no longer matches, and nothing said what to do


class RetryLater(Exception):
    """Some notification failed transiently; answering non-2xx makes the platform redeliver."""


@dataclass(frozen=True, slots=True)
class Outcome:
    outcome: str
    notification_id: str | None = None
    message_id: str | None = None
    # partially-sent: whether the letter for the refused was stored under its own id; a replay
    # removes the letter it replayed only then (else that letter is all that names them).
    letter_stored: bool = True
