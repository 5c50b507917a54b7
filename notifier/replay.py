"""A dead letter → the notifications it stands for today, for ``python -m notifier replay``.

A dead letter is untrusted input: it lives in the state bucket (or a local folder), and whoever can
write there can edit or plant one. So only its event and its rule's name are read, the event as
strictly as a delivered one. Recipients, sender and templates come from today's rules, and every
notification id is recomputed, so a renamed copy maps to the same ledger record and is a duplicate.
A letter written when the server refused only some recipients names them (``refused_recipients``):
it narrows today's recipients to those; it cannot add any. The ledger is the authority on who is
still owed the email (a letter can be stale, copied or edited): the pipeline narrows each claimed
notification further to the ledger's ``owed`` list, so nobody who has it gets a second copy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from notifier import events
from notifier.events import InvalidEvent, StorageEvent
from notifier.ledger import Claim, DeadLetter
from notifier.ledger.base import MAX_OWED, address_keys
from notifier.mail.base import Message, Refusal
from notifier.rules import Notification, RuleSet, notification_id

MAX_REFUSED = MAX_OWED  # addresses a letter may narrow a replay to: more was not written by us


class UnreplayableLetter(ValueError):
    """A dead letter that replay must not send as it stands; the message says why and what to do."""


class MalformedLetter(UnreplayableLetter):
    """A dead letter whose event or rule name is missing or not what the function writes."""


@dataclass(frozen=True, slots=True)
class ReplayPlan:
    notifications: tuple[Notification, ...]  # from the stored event and today's rules
    note: str = ""  # set when the ids differ from the letter's name, to say why


def plan_replay(letter: DeadLetter, rules: RuleSet, *, rule_name: str | None = None, force: bool = False) -> ReplayPlan:
    """Today's notifications for ``letter``; raise :class:`UnreplayableLetter` (or :class:`MalformedLetter`).

    The letter's own rule is used when it still exists and today's rules still send the event to
    it (ignores, matching and ``stop`` included). Otherwise ``rule_name`` sends it through that
    current rule, and ``force`` through every current rule that would send it today; without either
    it is refused. Either way only a rule that matches the event today is used (a planted event
    cannot reach, or attach an object for, a rule that would never have sent it), and the stored
    recipients are never used.
    """
    record = letter.record
    event = stored_event(record.get("event"))
    stored_rule = record.get("rule")
    if not isinstance(stored_rule, str) or not stored_rule:
        raise MalformedLetter(f"rule: expected the name of a rule, got {_json_type(stored_rule)}")
    routed = [] if rules.ignore_reason(event) else rules.route(event)
    notifications = [n for n in routed if n.rule.name == stored_rule]
    if not notifications:
        notifications = _instead(rules, event, _problem(rules, event, stored_rule), routed, rule_name, force)
    only = _refused_recipients(record.get("refused_recipients"))
    if only is not None:
        notifications = _narrowed(notifications, only)
    ids = [n.id for n in notifications]
    note = "" if letter.notification_id in ids else (
        f"{letter.notification_id} is replayed as {', '.join(ids)}: the letter was renamed, its rule's"
        " recipients changed, or --rule/--force chose other rules; the ledger still sends each email once"
    )  # fmt: skip
    return ReplayPlan(tuple(notifications), note)


def _instead(
    rules: RuleSet, event: StorageEvent, problem: str, routed: list[Notification], rule_name: str | None, force: bool
) -> list[Notification]:
    """What the operator said to do when the letter's own rule does not send it any more."""
    if rule_name is not None:
        chosen = rules.by_name(rule_name)
        if chosen is None:
            raise UnreplayableLetter(f"{problem}, and --rule: there is no rule named {rule_name!r}")
        if rules.ignore_reason(event) or not chosen.matches(event):  # never mail what today's rules would not
            raise UnreplayableLetter(f"{problem}, and --rule: rule {rule_name!r} does not match it either")
        return [Notification(notification_id(event, chosen), event, chosen)]
    if force:
        if not routed:
            raise UnreplayableLetter(f"{problem}, and --force: no current rule sends it")
        return routed
    raise UnreplayableLetter(
        f"{problem}; to send it anyway: --rule NAME (through that current rule) or --force"
        " (through every current rule that matches it)"
    )


def _refused_recipients(values: Any) -> frozenset[str] | None:
    """The addresses a partial send's letter is for (compared as Address.key), or None when the
    letter is for every recipient; :class:`MalformedLetter` when it is not what the function writes."""
    if values is None:
        return None
    keys = address_keys(values)
    if not keys:  # not such a list, or an empty one: a partial send names at least one
        raise MalformedLetter(
            f"refused_recipients: expected a list of 1 to {MAX_REFUSED} email addresses, got {_json_type(values)}"
        )
    return keys


def _narrowed(notifications: list[Notification], only: frozenset[str]) -> list[Notification]:
    """Each notification for just the recipients in ``only`` that today's rule still has (same id:
    the ledger record is the one the partial send marked); one left with nobody is dropped."""
    narrowed = [n for n in (narrowed_to(notification, only) for notification in notifications) if n is not None]
    if not narrowed:
        raise UnreplayableLetter(
            f"the letter is for the {len(only)} recipient(s) the server refused, and none of them is a recipient"
            " of today's rules: delete the letter if they were removed on purpose (the others have the email)"
        )
    return narrowed


def narrowed_to(notification: Notification, only: frozenset[str]) -> Notification | None:
    """``notification`` for just its recipients in ``only`` (compared as Address.key), with the same
    id (the ledger record stays the one the partial send marked); None when that leaves nobody."""
    recipients = notification.recipients
    chosen = replace(
        recipients, **{f: tuple(a for a in getattr(recipients, f) if a.key in only) for f in ("to", "cc", "bcc")}
    )
    if not chosen.everyone:
        return None
    rule = replace(notification.rule, delivery=replace(notification.delivery, recipients=chosen))
    return Notification(notification.id, notification.event, rule)


def _problem(rules: RuleSet, event: StorageEvent, rule_name: str) -> str:
    """Why today's rules do not send the letter's notification by themselves."""
    what = f"{event.kind} {event.gs_uri}"
    if rules.by_name(rule_name) is None:
        return f"rule {rule_name!r} no longer exists"
    if reason := rules.ignore_reason(event):
        return f"{what} is ignored now: {reason}"
    return f"rule {rule_name!r} no longer matches {what} (or an earlier stop rule takes it)"


def stored_event(values: Any) -> StorageEvent:
    """The event a dead letter holds, as strictly checked as a delivered one; or :class:`MalformedLetter`."""
    try:
        return events.from_dict(values)
    except InvalidEvent as error:
        raise MalformedLetter(f"event: {error}") from None


def _json_type(value: Any) -> str:
    if value is None:
        return "nothing (missing or null)"
    text = repr(value)
    return f"{type(value).__name__} {text if len(text) <= 40 else text[:37] + '...'}"


# ---------------------------------------------------------------------------------------------
# Writing letters: what the pipeline stores, in the shape this module reads back.


def letter_record(
    notification: Notification, message: Message | None, error: str, status: int | None
) -> dict[str, Any]:
    """A dead letter's record: what replay reads (the event and rule) and what a person reads."""
    return {
        "notification_id": notification.id,
        "rule": notification.rule.name,
        "event": notification.event.to_dict(),
        "message": message.to_dict() if message is not None else None,
        "error": error,
        "status": status,
    }


def unstored_narrowing(
    replayed: DeadLetter, notification: Notification, still: list[str], store_error: str
) -> tuple[str, dict[str, Any]]:
    """A replay reached some of ``replayed``'s recipients and the letter for the rest (``still``)
    could not be stored: the text to add to the error, and the fields saying who has it now."""
    refused = {address.lower() for address in still}
    got = [a.email for a in notification.recipients.everyone if a.key not in refused]
    kept = replayed.source or replayed.notification_id
    note = (
        f"; and the narrowed dead letter could not be stored ({store_error}): {kept} is kept as it was,"
        " so replaying it again would send a second copy to"
        f" {_listed(got)}, who got it now; only {_listed(still)} still need it: narrow or delete that letter"
    )
    return note, {"already_sent": got, "still_to_send": list(still)}


def _listed(addresses: list[str], shown: int = 10) -> str:
    """Addresses for a log message, the first ``shown`` of them (the line's fields hold them all)."""
    more = len(addresses) - shown
    return ", ".join(addresses[:shown]) + (f" and {more} more" if more > 0 else "")


# ---------------------------------------------------------------------------------------------
# Who is still owed an email after a send that reached only some of its recipients.


def still_owed(notification: Notification, claim: Claim, refused: tuple[Refusal, ...]) -> list[str]:
    """Who is still owed the email after a send to ``notification``'s recipients that ``refused``
    those: the ledger's list (when the claim has one) less those who got it now; else the refused."""
    refused_keys = {r.address.lower() for r in refused}
    if claim.owed is None:  # every delivery but a partial send's replay: no recipient list to build
        return sorted(refused_keys)
    got = {a.key for a in notification.recipients.everyone} - refused_keys
    return sorted(claim.owed - got)


def owed_after_failure(notification: Notification, claim: Claim, replaying: DeadLetter | None) -> list[str] | None:
    """Who is owed the email after a send to nobody: None (everyone) unless it was a replay narrowed
    to some (by the ledger or the letter); then the ledger's list, or those it was for."""
    if claim.owed is not None:
        return sorted(claim.owed)
    if replaying is not None and replaying.record.get("refused_recipients") is not None:
        return sorted({a.key for a in notification.recipients.everyone})
    return None
