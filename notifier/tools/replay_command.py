"""``python -m notifier replay``: dead letters sent again, rebuilt from today's rules.

A dead letter is untrusted input (see notifier/replay.py): this module only prints, for a person
at a terminal, what replay plans and what became of each letter, with secrets redacted and control
characters escaped.
"""

from __future__ import annotations

import argparse
from collections import Counter
from typing import TYPE_CHECKING

from notifier.log import for_terminal

if TYPE_CHECKING:
    from notifier.ledger import DeadLetter, UnreadableLetter
    from notifier.pipeline import Pipeline
    from notifier.replay import ReplayPlan, UnreplayableLetter
    from notifier.rules import Notification


def replay(args: argparse.Namespace) -> int:
    """Send dead letters again once their cause is fixed. Each is rebuilt from its event and today's
    rules (a letter is untrusted: its stored message, recipients and id decide nothing) and claimed
    in the ledger, so nobody gets a second copy. Exit 1 if any letter was skipped, refused or failed."""
    from notifier.ledger import LedgerError
    from notifier.pipeline import Pipeline

    since = _since(args.since) if args.since else None
    pipeline = Pipeline.from_environment()
    rules = pipeline.settings.rules
    if args.rule is not None and rules.by_name(args.rule) is None:
        raise ValueError(f"--rule: no rule named {args.rule!r}; the rules are {', '.join(r.name for r in rules.rules)}")
    counts: Counter[str] = Counter()
    try:
        for item in pipeline.dead_letters.list():  # one at a time: letters can be megabytes each
            if (args.id is None or item.notification_id == args.id) and _recent(item, since):
                counts["letters"] += 1
                counts[_replay_letter(pipeline, item, args)] += 1
    except LedgerError as error:
        raise RuntimeError(f"{pipeline.dead_letters.location}: {error}") from None
    if not counts["letters"]:
        print(f"No dead letters to replay in {pipeline.dead_letters.location}.")
        return 0
    problems = ", ".join(f"{counts[k]} {k}" for k in ("skipped", "refused", "failed") if counts[k])
    done = f"{counts['would']} of {counts['letters']} dead letter(s) would be replayed" if args.dry_run else (
        f"{counts['done']} of {counts['letters']} dead letter(s) delivered or already sent"
    )  # fmt: skip
    print(f"{done}; {problems}." if problems else f"{done}.")
    return 1 if problems else 0


def _recent(item: DeadLetter | UnreadableLetter, since: str | None) -> bool:
    """Written since ``since``; an unreadable letter has no time it can be trusted for, so it is shown."""
    from notifier.ledger import DeadLetter

    return since is None or not isinstance(item, DeadLetter) or item.created >= since


def _replay_letter(pipeline: Pipeline, item: DeadLetter | UnreadableLetter, args: argparse.Namespace) -> str:
    """Replay (or, with --dry-run, show) one letter; what became of it: done, would, skipped, refused or failed."""
    from notifier.ledger import DeadLetter
    from notifier.outcomes import DUPLICATE, SENT
    from notifier.replay import UnreplayableLetter

    if not isinstance(item, DeadLetter):
        print(f"skipped {for_terminal(item.source)}: {for_terminal(item.reason)}")
        return "skipped"
    if "digest" in item.record:  # a dead-lettered digest: its group's held events are flushed again
        return _replay_digest(pipeline, item, dry_run=args.dry_run)
    try:
        plan = pipeline.plan_replay(item, rule_name=args.rule, force=args.force)
    except UnreplayableLetter as error:
        return unreplayable(item, error)
    if plan.note:
        print(f"note: {for_terminal(plan.note, 600)}")
    if args.dry_run:
        _show_plan(pipeline, item, plan)
        return "would"
    subjects = [_subject(pipeline, n) for n in plan.notifications]
    outcomes = pipeline.send_replay(item, plan)
    for notification, subject, outcome in zip(plan.notifications, subjects, outcomes, strict=True):
        print(f"{outcome.outcome:<13} {for_terminal(item.notification_id)}: {subject} (rule {notification.rule.name})")
    return "done" if all(o.outcome in (SENT, DUPLICATE) for o in outcomes) else "failed"


def _show_plan(pipeline: Pipeline, letter: DeadLetter, plan: ReplayPlan) -> None:
    """Who would get what today: the current rules' recipients and subject, never the stored ones."""
    first = plan.notifications[0].event
    print(f"would replay {for_terminal(letter.notification_id)} ({for_terminal(letter.created, 40)}):"
          f" {first.kind} {for_terminal(first.gs_uri)}")  # fmt: skip
    for notification in plan.notifications:
        recipients = notification.recipients
        print(f"  rule {notification.rule.name} → {notification.id}")
        print(f"    subject: {_subject(pipeline, notification)}")
        print(f"    from: {recipients.sender}")
        for field in ("to", "cc", "bcc"):
            if addresses := getattr(recipients, field):
                print(f"    {field}: {', '.join(str(a) for a in addresses)}")
        if redirect := pipeline.settings.redirect_to:
            print(f"    (all of it redirected to {redirect} by NOTIFY_REDIRECT_TO)")
    if (error := letter.record.get("error")) is not None:
        print(f"  earlier error: {for_terminal(str(error), 200)}")


def _subject(pipeline: Pipeline, notification: Notification) -> str:
    """The subject the email would have now (rendered without object links or attachments)."""
    try:
        return for_terminal(pipeline.renderer.render(notification).subject)
    except Exception as error:  # noqa: BLE001 - the send reports it properly; this is only a preview
        return f"(the subject cannot be rendered: {for_terminal(f'{type(error).__name__}: {error}')})"


def _since(text: str) -> str:
    """An ISO 8601 time, or a duration back from now ("2h", "7d"), as an ISO string to compare."""
    from datetime import UTC, datetime, timedelta

    from notifier.units import DURATION_EXAMPLE, UnitError, parse_duration, shown

    try:
        try:
            moment = datetime.fromisoformat(text)
            moment = (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).astimezone(UTC)
        except ValueError:
            moment = datetime.now(UTC) - timedelta(seconds=parse_duration(text))
    except UnitError:
        raise ValueError(
            f"--since: expected an ISO 8601 time or a duration {DURATION_EXAMPLE}, got {shown(text)}"
        ) from None
    except OverflowError:
        raise ValueError(
            f"--since: {shown(text)} reaches back before the year 1; give a later time or a shorter duration"
        ) from None
    return moment.isoformat()


# --- replay -----------------------------------------------------------------------------------


def _replay_digest(pipeline: Pipeline, letter: DeadLetter, *, dry_run: bool) -> str:
    """Replay (or, with --dry-run, show) a dead-lettered digest: what became of it, as replay counts."""
    from notifier.ledger import LedgerError
    from notifier.replay import UnreplayableLetter
    from notifier.replaying import digest_letter_group

    name = for_terminal(letter.notification_id)
    try:
        if dry_run:
            return _show_digest(pipeline, letter, digest_letter_group(letter.record)[0])
        flushed = pipeline.replay_digest(letter)
    except UnreplayableLetter as error:
        return unreplayable(letter, error)
    except LedgerError as error:  # the next replay finds the letter, and the events, as they were
        print(f"{'retrying':<13} {name}: the digest store ({for_terminal(str(error), 600)})")
        return "failed"
    for result in flushed:
        print(f"{result.outcome:<13} {name}: {for_terminal(result.line().removeprefix(result.outcome + ': '), 1000)}")
    if not flushed:
        print(f"{'duplicate':<13} {name}: nothing is held for its group any more (sent meanwhile); letter removed")
    return "done" if all(r.outcome in ("sent", "duplicate") for r in flushed) else "failed"


def _show_digest(pipeline: Pipeline, letter: DeadLetter, group_key: str) -> str:
    store = pipeline.digest_store()
    held = [e for e in store.pending().entries if e.group.key == group_key] if store else []
    name = for_terminal(letter.notification_id)
    if not held:
        print(f"would remove {name}: nothing is held for its group any more")
    else:
        group = for_terminal(held[0].group.describe(), 1000)
        print(f"would send the digest {name} again: {group}: {len(held)} held event(s)")
    if (error := letter.record.get("error")) is not None:
        print(f"  earlier error: {for_terminal(str(error), 200)}")
    return "would"


def unreplayable(letter: DeadLetter, error: UnreplayableLetter) -> str:
    """Say why a letter is not replayed: ``skipped`` (malformed: not a letter we write) or
    ``refused`` (today's rules do not send it); the word, for the summary's count."""
    from notifier.replay import MalformedLetter

    if isinstance(error, MalformedLetter):
        print(f"skipped {for_terminal(letter.source or letter.notification_id)}: {for_terminal(str(error))}")
        return "skipped"
    print(f"{'refused':<13} {for_terminal(letter.notification_id)}: {for_terminal(str(error), 600)}")
    return "refused"
