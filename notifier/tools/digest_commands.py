"""``python -m notifier flush`` and ``pending``, and what ``check-config`` and ``route`` say about
digests and caps (issue 16), for a person at a terminal (``replay`` of a digest's letter:
:mod:`notifier.tools.replay_command`).

Both commands build the pipeline from the deployment's settings, as ``replay`` does: run them with
its ``NOTIFY_STATE_BUCKET`` (or, locally, ``NOTIFY_LEDGER_FILE``) and ``NOTIFY_*`` values. Held
entries are untrusted (anyone who can write to the state bucket can plant one): every name from
them is printed through :func:`notifier.log.for_terminal`.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from notifier.batching import Batching
from notifier.digest import FLUSH_GRACE_SECONDS, NO_RULE, Group, Run, due_runs, iso_utc, orphan_reason, window_label
from notifier.ledger import LedgerError
from notifier.log import for_terminal, lines_to_stderr
from notifier.units import describe_duration

if TYPE_CHECKING:
    from notifier.config import Settings
    from notifier.flush import Flushed
    from notifier.ledger.digests import DigestStore, HeldListing
    from notifier.pipeline import Pipeline
    from notifier.rules import Notification, Rule

FAILED = ("retrying", "dead-lettered", "refused")  # outcomes after which `flush` exits 1
_COMPACT = (("d", 86400), ("h", 3600), ("m", 60), ("s", 1))


# --- flush ------------------------------------------------------------------------------------


def flush(args: argparse.Namespace) -> int:
    """Send the held events that are due (``--all``: every one now) through the configured backend;
    one line per digest and a summary. Exit 1 if any digest is retrying, dead-lettered or refused."""
    with lines_to_stderr():
        return _flush(args)


def _flush(args: argparse.Namespace) -> int:
    from notifier.flush import Flusher

    pipeline = _pipeline(_settings())
    store = pipeline.digest_store()
    if store is None:
        print(f"Nothing is held: {_NOWHERE}.")
        return 0
    try:
        flushed = Flusher(pipeline, store).flush(everything=args.all)
        for result in flushed:
            print(for_terminal(result.line(), 1000))
        print(_flush_summary(flushed, store, everything=args.all))
    except LedgerError as error:
        raise RuntimeError(f"the digest store ({store.name}): {error}") from None
    return 1 if any(result.outcome in FAILED for result in flushed) else 0


def _flush_summary(flushed: list[Flushed], store: DigestStore, *, everything: bool) -> str:
    if flushed:
        counts = Counter(result.outcome for result in flushed)
        return f"{len(flushed)} digest(s): {', '.join(f'{n} {outcome}' for outcome, n in counts.items())}."
    if everything:
        return "Nothing is held."
    held = len(store.pending().entries)
    if not held:
        return "Nothing is held."
    return f"Nothing is due ({held} held event(s) wait for their window; --all sends them now)."


# --- pending ----------------------------------------------------------------------------------


def pending(args: argparse.Namespace) -> int:
    """List the open groups: their windows with counts, and when each run is due (or that it is
    parked: dead-lettered until replay). Read-only: a ledger file that is not there stays so."""
    with lines_to_stderr():
        return _pending(args)


def _pending(args: argparse.Namespace) -> int:
    settings = _settings()
    where = _where(settings)
    missing = settings.state_bucket is None and settings.ledger_file is not None and not settings.ledger_file.exists()
    pipeline = None if missing else _pipeline(settings)
    store = None if pipeline is None else pipeline.digest_store()
    if pipeline is None or store is None:
        nothing = f"Nothing is held in {where}." if where else f"Nothing is held: {_NOWHERE}."
        print(json.dumps(_as_json([], None), indent=2) if args.json else nothing)
        return 0
    try:
        listing, parked = store.pending(), _parked(pipeline)
    except LedgerError as error:
        raise RuntimeError(f"the digest store ({store.name}): {error}") from None
    rules = {rule.name: rule for rule in pipeline.settings.rules.rules if rule.delivery.batching}
    groups = _groups(listing, rules, datetime.now(UTC).timestamp(), parked)
    if args.json:
        print(json.dumps(_as_json(groups, listing), indent=2))
    else:
        _print_groups(groups, listing, where)
    return 0


def _parked(pipeline: Pipeline) -> set[tuple[str, int]]:
    """(group key, window start) of every dead-lettered digest: the flush leaves them until replay.
    Letters are untrusted JSON: a record not shaped like flush's is ignored."""
    parked: set[tuple[str, int]] = set()
    for letter in pipeline.dead_letters.list():
        digest = getattr(letter, "record", {}).get("digest")
        if not isinstance(digest, dict) or not isinstance(group := digest.get("group"), str):
            continue
        windows = digest.get("windows")
        for pair in windows if isinstance(windows, list) else ():
            if isinstance(pair, list) and pair and isinstance(pair[0], int) and not isinstance(pair[0], bool):
                parked.add((group, pair[0]))
    return parked


def _groups(
    listing: HeldListing, rules: dict[str, Rule], now: float, parked: set[tuple[str, int]]
) -> list[dict[str, Any]]:
    """Each group held: its runs (as a flush would send them, with when; a window in ``parked`` is
    marked so, and a run of parked windows alone is never due) or, for a rule without a digest
    today or entries held under another grouping than it has, its windows alone (never sent)."""
    batching = {name: rule.delivery.batching for name, rule in rules.items() if rule.delivery.batching}
    orphans = {e: why for e in listing.entries if (why := orphan_reason(e, rules)) is not None}
    runs = due_runs([e for e in listing.entries if e not in orphans], batching, now, everything=True)
    found: dict[str, dict[str, Any]] = {}
    for run in runs:
        group = _group(found, run.group)
        due = due_at(run, batching[run.group.rule])
        windows = [_window(run, w, (run.group.key, w) in parked) for w in run.windows]
        all_parked = all(w["parked"] for w in windows)
        group["runs"].append({
            "windows": windows, "events": len(run.entries), "parked": all_parked,
            "due": datetime.fromtimestamp(due, UTC).isoformat(), "due_now": due <= now and not all_parked,
            "later_if_more_events": due < run.windows[0] + batching[run.group.rule].max_wait,
        })  # fmt: skip
        group["events"] += len(run.entries)
    for entry, why in orphans.items():
        group = _group(found, entry.group, orphan=True)
        group["reason"] = why
        group["events"] += 1
        group["windows"][entry.window] = group["windows"].get(entry.window, 0) + 1
    return sorted(found.values(), key=lambda g: (g["rule"], g["group_of"]))


def due_at(run: Run, batching: Batching) -> float:
    """When a flush sends ``run`` (seconds since the epoch) if no event extends it: once the window
    after its last has stayed empty for the grace, or once max_wait has passed since it began and
    its first window has closed (notifier.digest's due_runs decides the same)."""
    length = int(batching.window)
    closes = run.windows[-1] + length + FLUSH_GRACE_SECONDS
    return min(closes, max(run.windows[0] + batching.max_wait, run.windows[0] + length + FLUSH_GRACE_SECONDS))


def _group(found: dict[str, dict[str, Any]], group: Group, *, orphan: bool = False) -> dict[str, Any]:
    if group.key not in found:
        found[group.key] = {
            "group": group.key, "rule": group.rule, "group_of": group.describe(), "values": dict(group.values),
            "events": 0, "runs": [], **({"orphaned": True, "windows": {}} if orphan else {}),
        }  # fmt: skip
    return found[group.key]


def _window(run: Run, start: int, parked: bool) -> dict[str, Any]:
    end = start + run.window_length
    held = sum(1 for e in run.entries if e.window == start)
    return {"start": iso_utc(start), "end": iso_utc(end), "events": held, "parked": parked}


_PARKED = "parked: dead-lettered; `python -m notifier replay` sends it"


def _print_groups(groups: list[dict[str, Any]], listing: HeldListing, where: str) -> None:
    for group in groups:
        print(for_terminal(f"{group['group_of']}: {group['events']} event(s)", 1000))
        for run in group["runs"]:
            for window in run["windows"]:
                label = window_label(datetime.fromisoformat(window["start"]), datetime.fromisoformat(window["end"]))
                alone = window["parked"] and not run["parked"]  # else the run's line says it
                print(f"  {label}: {window['events']} event(s)" + (f", {_PARKED}" if alone else ""))
            if run["parked"]:
                print(f"  → {_PARKED}")
                continue
            due = datetime.fromisoformat(run["due"])
            when = "due now" if run["due_now"] else f"due {due:%Y-%m-%d %H:%M:%S} UTC"
            later = " (later if more events come)" if run["later_if_more_events"] and not run["due_now"] else ""
            print(f"  → one email, {when}{later}")
        if group.get("orphaned"):
            for start, held in sorted(group["windows"].items()):
                print(f"  window from {datetime.fromtimestamp(start, UTC):%Y-%m-%d %H:%M} UTC: {held} event(s)")
            print(_ORPHAN_NOTE[group["reason"] == NO_RULE].format(rule=for_terminal(group["rule"])))
    for note in _listing_notes(listing):
        print(note)
    total = sum(g["events"] for g in groups)
    print(f"{len(groups)} group(s), {total} held event(s)." if groups else f"Nothing is held in {where}.")


_ORPHAN_NOTE = {
    True: "  → never sent: rule {rule} has no digest or max_emails today; restore it (or delete these entries)",
    False: "  → never sent: held under another grouping than rule {rule} has today (a changed group_by, or"
    " planted); restore it for a `flush --all` (or delete these entries)",
}


def _listing_notes(listing: HeldListing) -> list[str]:
    notes = []
    if listing.truncated:
        notes.append("The listing stopped early: more events are held than one listing reads (the flush gets them).")
    if listing.unreadable:
        notes.append(f"{listing.unreadable} object(s) among the held entries are not entries the notifier wrote"
                     " (ignored: the flush never sends them).")  # fmt: skip
    return notes


def _as_json(groups: list[dict[str, Any]], listing: HeldListing | None) -> dict[str, Any]:
    for group in groups:
        if "windows" in group:  # an orphaned group's windows: starts as ISO times
            group["windows"] = [{"start": iso_utc(s), "events": n} for s, n in sorted(group["windows"].items())]
    return {
        "groups": groups, "events": sum(g["events"] for g in groups),
        "truncated": bool(listing and listing.truncated), "unreadable": listing.unreadable if listing else 0,
    }  # fmt: skip


# --- check-config, route ----------------------------------------------------------------------


def batching_summary(batching: Batching) -> str:
    """``digest 10m (max wait 1h, by bucket, folder)`` or ``max 20 emails per 1 hour (by bucket)``."""
    by = f"by {', '.join(batching.group_by)}" if batching.group_by else ""
    if batching.cap is not None:
        return f"max {batching.cap} emails per {describe_duration(batching.window)}" + (f" ({by})" if by else "")
    details = ", ".join(part for part in (f"max wait {_compact(batching.max_wait)}", by) if part)
    return f"digest {_compact(batching.window)} ({details})"


def held_line(notification: Notification, now: datetime) -> str | None:
    """What a rule's digest or cap does with the event now; None for a rule without either."""
    from notifier.digest import event_time, group_of, window_of

    batching = notification.rule.delivery.batching
    if batching is None:
        return None
    start = window_of(batching, event_time(notification, now))
    label = window_label(datetime.fromtimestamp(start, UTC), datetime.fromtimestamp(start + batching.window, UTC))
    group = for_terminal(group_of(notification).describe(), 1000)
    if batching.cap is not None:
        return (f"sent alone while under the cap (the first {batching.cap} of {label}), then held for that window's"
                f" digest ({group})")  # fmt: skip
    wait = _compact(batching.max_wait)
    return f"held for the digest of {label} ({group}): one email once the burst ends, at most {wait} after it began"


# ---------------------------------------------------------------------------------------------

_NOWHERE = "no state bucket (NOTIFY_STATE_BUCKET) or ledger file (NOTIFY_LEDGER_FILE) to hold events in"


def _settings() -> Settings:
    """The deployment's settings, as the function reads them; a ValueError (the CLI's one ``error:``
    line, not also the function's "cannot start" log line) when it would refuse to start for want
    of a digest store."""
    from notifier.holding import store_problem
    from notifier.pipeline import settings_from_environment

    settings = settings_from_environment()
    if problem := store_problem(settings):
        raise ValueError(problem)
    return settings


def _pipeline(settings: Settings) -> Pipeline:
    from notifier.pipeline import Pipeline

    return Pipeline(settings)


def _where(settings: Settings) -> str:
    """The store pending reads: gs://BUCKET or the ledger file; empty without either."""
    if settings.state_bucket is not None:
        return f"gs://{settings.state_bucket}"
    return str(settings.ledger_file) if settings.ledger_file is not None else ""


def _compact(seconds: float) -> str:
    """As notify.toml writes it: 600 → "10m", 3600 → "1h", 90 → "90s"."""
    unit, length = next((u, n) for u, n in _COMPACT if seconds % n == 0 or n == 1)
    return f"{seconds / length:g}{unit}"
