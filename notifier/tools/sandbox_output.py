"""``make sandbox``'s output: the function's JSON log lines as one short human line each.

An outcome becomes ``sent      finalize gs://B/O → To  outbox/x.eml`` (or says why instead of
where); a warning or error is shown compactly; anything else is not shown. Object names and log
text are untrusted: secrets are redacted and control characters escaped before they reach a terminal.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path
from typing import Any

from notifier.log import for_terminal

SHOWN_CHARS = 300  # of one warning or error line, or an outcome's reason
OBJECT_CHARS = 120  # of an object name: its start and end (the folder and the extension) say most
_ALARMING = re.compile(r"\b(?:ERROR|CRITICAL|WARNING)\b|Traceback|Error\b|Exception\b")
_TERMINAL = threading.Lock()


def say(text: str) -> None:
    """Print one line whole: print() writes the text and its newline apart, so two threads printing
    at once (the function's lines, the flush's, SendGrid's player's, the webhook's) could run into each other."""
    with _TERMINAL:
        print(text)


def human_line(line: str, cwd: Path) -> str | None:
    """An outcome as one readable line, a warning or error compactly, anything else not at all."""
    try:
        entry = json.loads(line)
    except ValueError:
        entry = None
    if not isinstance(entry, dict):
        return f"  function: {for_terminal(line.strip(), SHOWN_CHARS)}" if _ALARMING.search(line) else None
    if "outcome" in entry:
        return outcome_line(entry, cwd)
    severity = str(entry.get("severity", ""))
    if severity in ("WARNING", "ERROR", "CRITICAL"):
        return f"  {severity.lower()}: {for_terminal(str(entry.get('message', '')), SHOWN_CHARS)}"
    return None


def outcome_line(entry: Mapping[str, Any], cwd: Path) -> str:
    """``sent      finalize gs://B/O → To  outbox/x.eml``; other outcomes say why instead of where.
    Each untrusted part is made safe and bounded on its own, so a long name never hides the rest."""
    outcome, kind = for_terminal(str(entry.get("outcome")), 20), for_terminal(str(entry.get("kind", "?")), 20)
    bucket, name = for_terminal(str(entry.get("bucket", "?")), 63), object_name(str(entry.get("object", "?")))
    text = f"{outcome:<9} {kind:<8} gs://{bucket}/{name}"
    emls = [Path(p) for p in str(entry.get("message_id") or "").split(",") if p.endswith(".eml")]
    if outcome == "sent":
        count = entry.get("recipients")
        who = addressees(emls) or (f"{count} recipient(s)" if count is not None else "")
        text += f" → {for_terminal(who, SHOWN_CHARS)}" if who else ""
        text += f"  {for_terminal(', '.join(shown(p, cwd) for p in emls), SHOWN_CHARS)}" if emls else ""
    elif detail := entry.get("error") or entry.get("reason"):
        text += f": {for_terminal(str(detail), SHOWN_CHARS)}"
    return text


def object_name(name: str) -> str:
    """At most OBJECT_CHARS characters of ``name`` (made safe first), its middle cut out."""
    safe = for_terminal(name, len(name))
    if len(safe) <= OBJECT_CHARS:
        return safe
    half = OBJECT_CHARS // 2
    return f"{safe[:half]}…{safe[-half:]}"


def addressees(emls: list[Path]) -> str:
    """The To headers of the written copies, each address once."""
    found: dict[str, None] = {}
    for path in emls:
        try:
            with path.open("rb") as handle:
                headers = BytesHeaderParser(policy=default_policy).parse(handle)
        except OSError:
            continue
        for address in getattr(headers.get("To"), "addresses", ()):
            found.setdefault(str(address))
    return ", ".join(found)


def shown(path: Path, cwd: Path) -> str:
    return str(path.relative_to(cwd)) if path.is_relative_to(cwd) else str(path)
