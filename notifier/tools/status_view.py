"""What ``python -m notifier status`` prints (:mod:`notifier.tools.status_command` finds it): each
notification's JSON document as a readable block, or the --json document. Every text is from the
state bucket, untrusted: printed through :func:`notifier.log.for_terminal`. Times in UTC only."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from notifier.log import for_terminal

# --- the text ----------------------------------------------------------------------------------

_LABEL = 13  # "recipients: " and its padding


def text(found: list[dict[str, Any]]) -> str:
    """The notifications found, grouped under each generation's heading, in the order given."""
    lines: list[str] = []
    heading = None
    for n in found:
        if n["object"] and (n["bucket"], n["object"], n["generation"]) != heading:
            heading = (n["bucket"], n["object"], n["generation"])
            same = sum(1 for m in found if (m["bucket"], m["object"], m["generation"]) == heading)
            lines += ["" if lines else None, _t(f"gs://{n['bucket']}/{n['object']} generation {n['generation']}:"
                                               f" {same} notification(s)", 2000)]  # fmt: skip
        lines += ["", *_block(n)]
    return "\n".join(line for line in lines if line is not None).strip("\n")


def _block(n: dict[str, Any]) -> list[str]:
    field = lambda name, value: f"  {name + ':':<{_LABEL}}{value}"  # noqa: E731
    lines = [f"notification {_t(n['notification_id'])}"]
    if n["kind"] == "digest":
        lines.append(field("digest", _t(_digest_line(n["digest"]), 1000)))
    elif n["object"]:
        lines.append(field("object", _t(f"gs://{n['bucket']}/{n['object']} generation {n['generation']}"
                                        f" ({n['kind']})", 2000)))  # fmt: skip
        when = f" at {_shown_iso(n['event_time'])}" if n["event_time"] else ""
        lines.append(field("event", _t(n["event_id"], 200) + when))
    if n["rule"]:
        lines.append(field("rule", _t(n["rule"])))
    if n["recipient_count"]:
        listed = ", ".join(_t(r, 320) for r in n["recipients"])
        more = n["recipient_count"] - len(n["recipients"])
        lines.append(
            field("recipients", f"{n['recipient_count']}: {listed}" + (f" and {more} more" if more > 0 else ""))
        )
    recorded = (
        f" at {_shown_iso(n['recorded_at'])}" if n["recorded_at"] and n["outcome"] == n["recorded_outcome"] else ""
    )
    note = f" ({_t(n['note'], 600)})" if n["note"] else ""
    lines.append(field("outcome", _t(n["outcome"], 100) + recorded + _before(n["previous"]) + note))
    if n["digest"] and n["kind"] != "digest":
        first, *more = _held_lines(n["digest"])
        lines += [field("digest", first), *(" " * _LABEL + line for line in more)]  # under the value
    for name, value in (("message id", n["message_id"]), ("attempts", n["attempts"]), ("error", n["error"])):
        if value:
            lines.append(field(name, _t(str(value), 600)))
    if replay := REPLAY_SAID.get(n["outcome"]):
        lines.append(field("replay", replay))
    if n["events"] or n["outcome"] != "batched":  # a held event's mail is its digest's, shown above
        lines += _event_lines(n["events"], "  ", n["messages"])
    return lines


# An outcome a dead letter was stored for → what sends it (as a dead-lettered digest's line says).
REPLAY_SAID = {
    "dead-lettered": "`python -m notifier replay` sends it once the cause is fixed",
    "partially-sent": "`python -m notifier replay` sends it to those refused once the cause is fixed",
}


def _before(previous: dict[str, Any] | None) -> str:
    """A replay's record: what the dead letter it sent said happened before."""
    if not previous:
        return ""
    error = f": {_t(previous.get('error', ''), 600)}" if previous.get("error") else ""
    at = f" at {_shown_iso(previous['at'])}" if previous.get("at") else ""
    return f" by replay; before: {_t(previous.get('outcome', ''), 100)}{at}{error}"


def _event_lines(events: list[dict[str, Any]], indent: str, messages: list[dict[str, Any]]) -> list[str]:
    """The delivery events, in the order given; grouped by message (the recorded ones first) when
    SendGrid reported one the notifier has not recorded: a send it accepted whose answer was lost."""
    if not events:
        return [f"{indent}no delivery events recorded"]
    unrecorded = [m for m in messages if not m["recorded"]]
    if not unrecorded:
        return [f"{indent}delivery events:", *(f"{indent}  {_event_line(e)}" for e in events)]
    recorded = [m for m in messages if m["recorded"]]
    label = "the recorded one" if len(recorded) == 1 else "recorded"
    by_message: dict[str, list[str]] = {}  # one pass: a planted history may name thousands of messages
    for e in events:
        by_message.setdefault(e["message_id"], []).append(f"{indent}    {_event_line(e)}")
    lines = [f"{indent}{_duplicate_said(len(messages), bool(recorded))}", f"{indent}delivery events:"]
    for m in [*recorded, *unrecorded]:
        lines.append(f"{indent}  message {_t(m['message_id'], 200)}{f' ({label})' if m['recorded'] else ''}:")
        lines += by_message.get(m["message_id"], [])
    if unnamed := by_message.get(""):
        lines += [f"{indent}  naming no message:", *unnamed]
    return lines


def _duplicate_said(count: int, any_recorded: bool) -> str:
    if any_recorded:
        return (f"SendGrid reported {count} messages for this notification: an attempt whose answer was lost was"
                " accepted too (a duplicate email)")  # fmt: skip
    return (f"SendGrid reported {count} message(s) for this notification, though none is recorded as sent: an"
            " attempt whose answer was lost was accepted (the email went out)")  # fmt: skip


def _event_line(e: dict[str, Any]) -> str:
    extra = f"  {_t(e['reason'], 300)}" if e["reason"] else ""
    if kind := e["detail"].get("type"):
        extra += f" ({_t(kind, 40)})"
    if url := e["detail"].get("url"):
        extra += f"  {_t(url, 300)}"
    return f"{_shown_iso(e['time'])}  {e['event']:<10}  {_t(e['email'], 320)}{extra}"


def _held_lines(digest: dict[str, Any]) -> list[str]:
    from notifier.digest import window_label

    if digest["state"] == "unreadable":
        return ["held for a digest, but the record is not as the notifier writes it"]
    start = datetime.fromisoformat(digest["window"])
    end = datetime.fromtimestamp(start.timestamp() + digest.get("length", 0), UTC)
    window = window_label(start, end) if digest.get("length") else f"window from {start:%Y-%m-%d %H:%M} UTC"
    group = _t(digest.get("describe") or f"group {digest['group']}", 1000)
    if digest["state"] == "held":
        due = f"due {_shown_iso(digest['due'])}" if digest["due"] else "never sent: its rule has no digest today"
        return [f"held for a digest ({group}, window {window}), {due} (pending)"]
    lines = []
    if digest["state"] == "parked":
        lines = [f"held for a digest ({group}, window {window}), {PARKED_SAID}"]
    if digest["state"] == "gone":
        lines = [f"no longer held, and no digest sent is recorded for the window from {start:%Y-%m-%d %H:%M} UTC (a"
                 " flush may be sending it now; else its history was not recorded)"]  # fmt: skip
    for sent in digest["digests"]:  # a late event's part is another digest of the same window
        line = _recorded_digest_line(sent)
        events = _event_lines(sent["events"], "    ", sent["messages"]) if sent["outcome"] == "sent" else []
        lines += [line if not lines else f"  {line}", *events]
    return lines


PARKED_SAID = "digest dead-lettered: `python -m notifier replay` sends it"


def _recorded_digest_line(sent: dict[str, Any]) -> str:
    """One digest recorded for a held event's window: sent (with its message id), or what else."""
    digest_id = _t(sent["notification_id"])
    if sent["outcome"] == "sent":
        alone = "; alone in it, so sent as the ordinary email" if sent.get("events_in_it") == 1 else ""
        return f"sent in digest {digest_id} (message id {_t(sent['message_id'] or 'none')}{alone})" + _before(
            sent.get("previous")
        )  # fmt: skip
    error = f": {_t(sent['error'], 600)}" if sent.get("error") else ""
    return f"digest {digest_id} {_t(sent['outcome'], 100)} at {_shown_iso(sent['at'])}{error}"


def _digest_line(digest: dict[str, Any] | None) -> str:
    if not digest:
        return "a digest"
    windows = ", ".join(f"{_shown_iso(w)}" for w in digest["windows"])
    return f"group {digest['group']}, {digest['events']} event(s), window(s) from {windows}"


def nothing(what: str, object_uri: str | None) -> str:
    """What to check when nothing is recorded for ``what`` (``object_uri``: the object asked, if
    one was)."""
    route = f"python -m notifier route {'finalize ' + object_uri if object_uri else 'KIND gs://BUCKET/OBJECT'}"
    return _t(f"Nothing recorded for {what}. Check: did a rule match it (`{route}`)? was the event"
              " ignored, expired or still retrying (the function's log: deploy/logs.sh)? History is kept 30 days.",
              3000)  # fmt: skip


# --- small helpers -----------------------------------------------------------------------------


def _t(value: str, limit: int = 300) -> str:
    return for_terminal(value, limit)


def shown_time(seconds: float) -> str:
    return f"{datetime.fromtimestamp(seconds, UTC):%Y-%m-%d %H:%M:%S} UTC"


def _shown_iso(value: str) -> str:
    """An ISO time from the store, in UTC; shown as it is (escaped) when it is not one."""
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return _t(str(value), 60)
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    return f"{moment.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC"


def json_document(asked: dict[str, str | None], found: list[dict[str, Any]], unreadable: int, truncated: bool) -> str:
    """--json's document: the query, the notifications, how many records were skipped, and whether
    older ones were left unread (ASCII: no raw control characters)."""
    document = {"query": asked, "notifications": found, "unreadable": unreadable, "truncated": truncated}
    return json.dumps(document, indent=2)


def notes(shown: int, bound: int, unreadable: int, truncated: bool) -> list[str]:
    """The lines after the notifications: older ones left unread (``bound``: how many are read at
    most), records skipped."""
    lines = []
    if truncated:
        lines.append(f"(showing the newest {shown} of more than {bound} notification(s): older ones are not read.)")
    if unreadable:
        lines.append(f"({unreadable} record(s) in the history are not as the notifier writes them: skipped.)")
    return lines
