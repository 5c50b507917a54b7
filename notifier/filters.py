"""The pure functions templates print values with, and the FILTERS table templates.py registers.

Times, sizes, one-line text, hidden characters shown as escapes, object links.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, tzinfo
from typing import Any
from urllib.parse import quote

import jinja2
from markupsafe import Markup

from notifier.mail.headers import one_line

__all__ = [
    "FILTERS", "console_url", "encode_object_name", "format_local", "format_size", "format_utc",
    "one_line", "show_hidden_characters", "visible_line_breaks",
]  # fmt: skip

_CONSOLE_OBJECT_URL = "https://console.cloud.google.com/storage/browser/_details/{bucket}/{name}"
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")
# Characters that change how the text around them displays, or do not display at all: bidi
# controls, line and paragraph separators, zero-width and other invisible format characters, blank
# fillers, tag characters. In a name they make "invoice\u202efdp.exe" read "invoiceexe.pdf", and an
# unclosed override reverses the rest of the sentence; so wherever a template prints a value, they
# are shown as escapes instead.
_HIDDEN = re.compile(
    "[\u00ad\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f"
    "\u3164\ufeff\uffa0\ufff9-\ufffb\U000e0000-\U000e007f]"
)


def console_url(bucket: str, name: str) -> str:
    return _CONSOLE_OBJECT_URL.format(bucket=quote(bucket, safe=""), name=encode_object_name(name))


def encode_object_name(name: str) -> str:
    """Percent-encode an object name for a URL path.

    Slashes stay readable, unless a segment is empty, ``.`` or ``..``: browsers would collapse
    those (encoded or not), pointing the link at another object, so then every ``/`` is encoded.
    """
    *folders, last = name.split("/")
    if any(s in ("", ".", "..") for s in folders) or last in (".", ".."):
        return quote(name, safe="")
    return quote(name, safe="/")


def show_hidden_characters(value: Any) -> Any:
    """What a template prints, with the characters of :data:`_HIDDEN` written as ``\\u202e``."""
    if isinstance(value, str) and _HIDDEN.search(value):
        shown = _HIDDEN.sub(lambda m: m.group().encode("unicode_escape").decode(), value)
        return Markup(shown) if isinstance(value, Markup) else shown  # noqa: S704 - safe already; ASCII added
    return value


def visible_line_breaks(text: Any) -> str:
    """One line for the plain-text body: a line break inside a value could forge a line."""
    return _LINE_BREAKS.sub(lambda m: m.group().encode("unicode_escape").decode(), str(text))


def format_utc(value: datetime | None) -> str:
    """ISO 8601 in UTC, to the second: ``2024-05-01T12:34:56Z``."""
    if value is None:
        return "unknown"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def format_local(value: datetime | None, timezone: tzinfo | None) -> str:
    """The time in NOTIFY_TIMEZONE, e.g. ``2026-11-25 20:57 CET``; empty when none is set."""
    if value is None or timezone is None:
        return ""
    return value.astimezone(timezone).strftime("%Y-%m-%d %H:%M %Z")


def format_size(size: int | None) -> str:
    """Human-readable and exact: ``1.2 MiB (1,234,567 bytes)``."""
    if size is None:
        return "unknown"
    if size < 1024:
        return f"{size} byte" if size == 1 else f"{size} bytes"
    return f"{jinja2.filters.do_filesizeformat(size, binary=True)} ({size:,} bytes)"


# Our filters by the name templates use, each made for one time zone (NOTIFY_TIMEZONE, or None):
# render.TEMPLATE_FILTERS documents them.
FILTERS: dict[str, Callable[[tzinfo | None], Callable[[Any], str]]] = {
    "utc": lambda _zone: format_utc,
    "local": lambda zone: lambda value: format_local(value, zone),
    "size": lambda _zone: format_size,
    "line": lambda _zone: visible_line_breaks,
}
