"""``python -m notifier replay``'s sending side: a dead letter planned anew, claimed, and sent to
those still owed it; mixed into :class:`~notifier.pipeline.Pipeline`, whose claim, delivery and log
lines it uses, so a replayed email takes exactly the path a delivered one takes."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from notifier import log
from notifier.ledger import DeadLetter
from notifier.outcomes import DUPLICATE, INVALID, PARTIAL, REFUSED, SENT, Outcome
from notifier.replay import MalformedLetter, ReplayPlan, UnreplayableLetter, narrowed_to, plan_replay
from notifier.rules import Notification

if TYPE_CHECKING:
    from notifier.flush import Flushed
    from notifier.pipeline import Pipeline


class Replaying:
    """Pipeline's replay methods (see the module docstring)."""

    def replay(
        self: Pipeline, letter: DeadLetter, *, rule_name: str | None = None, force: bool = False
    ) -> list[Outcome]:
        """Send a dead letter again, rebuilt from its event and today's rules (see :meth:`plan_replay`)."""
        try:
            if "digest" in letter.record:
                flushed = self.replay_digest(letter)
                return [Outcome(f.outcome, letter.notification_id, f.message_id or None) for f in flushed]
            plan = self.plan_replay(letter, rule_name=rule_name, force=force)
        except UnreplayableLetter as error:
            outcome = INVALID if isinstance(error, MalformedLetter) else REFUSED
            self._replay_line(letter, outcome, logging.ERROR, str(error))
            return [Outcome(outcome, letter.notification_id)]
        return self.send_replay(letter, plan)

    def plan_replay(
        self: Pipeline, letter: DeadLetter, *, rule_name: str | None = None, force: bool = False
    ) -> ReplayPlan:
        """The notifications a dead letter stands for *today*; raise :class:`UnreplayableLetter`.

        A letter is untrusted input (anyone who can write to the state bucket can plant one): only
        its event and rule name are read. Recipients, sender and templates are today's, and each id
        is recomputed, so a renamed copy is caught by the ledger as the duplicate it is. The letter's
        own rule is used when it still exists and still matches the event; otherwise ``rule_name``
        (that current rule, if it matches) or ``force`` (every current rule that matches) must say
        what to do.
        """
        return plan_replay(letter, self.settings.rules, rule_name=rule_name, force=force)

    def replay_digest(self: Pipeline, letter: DeadLetter) -> list[Flushed]:
        """Send a dead-lettered digest (a letter with a ``digest`` record) again: its group's held
        events flushed now, whatever their windows, its dead claims taken over; the letter goes once
        every run of the group is sent (or was). Only the group's key and rule name are read: what
        is sent, and to whom, comes from the held entries and today's rule. Raise
        :class:`UnreplayableLetter` (:class:`MalformedLetter`) as :meth:`plan_replay` does."""
        group_key, rule_name = digest_letter_group(letter.record)
        rule = self.settings.rules.by_name(rule_name)
        if self.holding is None or rule is None or rule.delivery.batching is None:
            raise UnreplayableLetter(
                f"rule {rule_name}: no such rule with a digest or max_emails today; its held events stay held"
                " (`python -m notifier pending` lists them) until the rule is back, then replay sends them"
            )
        from notifier.flush import Flusher

        flushed = Flusher(self, self.holding.store).flush(everything=True, replay=True, group_key=group_key)
        if all(f.outcome in (SENT, DUPLICATE) for f in flushed):
            self.dead_letters.remove(letter.notification_id)
        return flushed

    def send_replay(self: Pipeline, letter: DeadLetter, plan: ReplayPlan) -> list[Outcome]:
        """Claim, render and send each planned notification; the letter goes once every one is sent."""
        started = self._clock()
        if plan.note:  # not an outcome: each notification's own line follows
            log.log(self._log, logging.WARNING, f"replay of {letter.source or letter.notification_id}: {plan.note}",
                    notification_id=letter.notification_id, reason=plan.note)  # fmt: skip
        outcomes = [self._replay_one(notification, letter, started) for notification in plan.notifications]
        if all(_settles(o, letter) for o in outcomes):
            self.dead_letters.remove(letter.notification_id)
        return outcomes

    def _replay_one(self: Pipeline, notification: Notification, letter: DeadLetter, started: float) -> Outcome:
        """Claim and send one planned notification to those the ledger says are still owed it (a
        partial send's record lists them; the letter may be a stale, copied or edited one)."""
        claim = self._claim(notification, started, replay=True)
        if isinstance(claim, Outcome):
            return claim
        owed = notification if claim.owed is None else narrowed_to(notification, claim.owed)
        if owed is None:  # everyone the letter names has it: the record stays as it was
            self._ledger_quietly(self._mark_sent_policy().wraps(self.ledger.mark_dead), claim, claim.owed)
            reason = "everyone this letter names has it already (the ledger says so)"
            self._line(notification, DUPLICATE, started, logging.INFO, reason=reason)
            return Outcome(DUPLICATE, notification.id)
        return self.deliver(owed, None, claim, started, replaying=letter)

    def _replay_line(self: Pipeline, letter: DeadLetter, outcome: str, level: int, reason: str) -> None:
        log.log(self._log, level, f"{outcome}: replay of {letter.source or letter.notification_id}: {reason}",
                notification_id=letter.notification_id, outcome=outcome, reason=reason)  # fmt: skip


def _settles(outcome: Outcome, letter: DeadLetter) -> bool:
    """Whether a replayed notification's outcome means the letter may go: sent (or sent meanwhile,
    or a copy's); or sent to some, with a new letter for the rest that did not overwrite this one."""
    if outcome.outcome == PARTIAL:
        return outcome.notification_id != letter.notification_id and outcome.letter_stored
    return outcome.outcome in (SENT, DUPLICATE)


def digest_letter_group(record: dict[str, Any]) -> tuple[str, str]:
    """The group key and rule name a digest's dead letter names; :class:`MalformedLetter` if not ours."""
    from notifier.digest import GROUP_KEY  # only a digest's letter: the event path never loads it

    digest, rule = record.get("digest"), record.get("rule")
    group = digest.get("group") if isinstance(digest, dict) else None
    if not isinstance(group, str) or not GROUP_KEY.fullmatch(group):
        raise MalformedLetter("digest: expected the group's key (24 hex digits) that notifier/flush.py writes")
    if not isinstance(rule, str) or not rule:
        raise MalformedLetter("rule: expected the name of the digest's rule")
    return group, rule
