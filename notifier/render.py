"""Notification → :class:`Message`: Jinja templates, safe subjects, links and inlined CSS.

One :class:`Renderer` per instance: it compiles every template at start-up (so a broken template
fails the deploy, not the first event) and is safe to share between threads.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import css_inline
import jinja2

from notifier.events import KINDS, StorageEvent
from notifier.mail.base import Message
from notifier.rules import Notification

BUILTIN_TEMPLATES = Path(__file__).resolve().parent.parent / "templates"
TEMPLATE_FILES = ("subject.txt", "body.txt", "body.html")
SUBJECT_LIMIT = 200  # characters; clients cut long subjects anyway, and RFC 5322 lines are ≤ 998
METADATA_SHOWN = 50
METADATA_TEXT_LIMIT = 500

_CONSOLE_OBJECT_URL = "https://console.cloud.google.com/storage/browser/_details/{bucket}/{name}"
# Bidirectional overrides and isolates can make a subject read differently from what it says.
_BIDI_CONTROLS = dict.fromkeys(map(ord, "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"))
_WHITESPACE = re.compile(r"\s+")
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")


class TemplateError(ValueError):
    """A template is missing or broken; the message names the file."""


class Renderer:
    def __init__(self, templates_dir: Path | None = None) -> None:
        # User templates override ours file by file.
        search_path = [str(p) for p in (templates_dir, BUILTIN_TEMPLATES) if p is not None]
        self._env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(search_path),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
            undefined=jinja2.StrictUndefined,
            auto_reload=False,  # compiled once per instance; no stat() per event
            keep_trailing_newline=False,
        )
        self._env.filters["utc"] = format_utc
        self._env.filters["size"] = format_size
        self._env.filters["line"] = visible_line_breaks
        self._templates = {
            (kind, part): self._load(f"{kind}/{part}") for kind in KINDS for part in TEMPLATE_FILES
        }
        self._inliner = css_inline.CSSInliner(keep_style_tags=False, load_remote_stylesheets=False)

    def render(self, notification: Notification) -> Message:
        event = notification.event
        context = template_context(event)
        try:
            subject, text, html = (
                self._templates[event.kind, part].render(context) for part in TEMPLATE_FILES
            )
        except jinja2.TemplateError as error:
            raise TemplateError(f"templates/{event.kind}: {type(error).__name__}: {error}") from error
        return Message(
            sender=notification.sender,
            to=notification.recipients,
            subject=one_line(subject),
            text=text.strip() + "\n",
            html=self._inliner.inline(html),
            notification_id=notification.id,
            categories=("storage-notifier", event.kind),
        )

    def _load(self, name: str) -> jinja2.Template:
        try:
            return self._env.get_template(name)
        except jinja2.TemplateNotFound:
            raise TemplateError(f"template {name!r} not found in {self._env.loader.searchpath}") from None
        except jinja2.TemplateSyntaxError as error:
            raise TemplateError(f"{error.filename}:{error.lineno}: {error.message}") from None


def template_context(event: StorageEvent) -> dict[str, Any]:
    """Every variable a template can use."""
    shown = dict(list(event.metadata.items())[:METADATA_SHOWN])
    return {
        "event": event,
        "object": event,
        # Real custom metadata is at most 8 KiB; a forged event must not produce a huge email.
        "metadata": {k[:METADATA_TEXT_LIMIT]: v[:METADATA_TEXT_LIMIT] for k, v in shown.items()},
        "metadata_hidden": len(event.metadata) - len(shown),
        "console_url": console_url(event.bucket, event.name),
        "gs_uri": event.gs_uri,
        "gs_url": f"gs://{quote(event.bucket, safe='')}/{encode_object_name(event.name)}",
        "occurred_at": event.event_time or event.updated or event.time_created,
    }


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


def one_line(text: str, limit: int = SUBJECT_LIMIT) -> str:
    """Collapse whitespace (CR/LF included), drop control and bidi characters, cap with '…'."""
    text = _WHITESPACE.sub(" ", text.translate(_BIDI_CONTROLS))
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cc").strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def visible_line_breaks(text: Any) -> str:
    """One line for the plain-text body: a line break inside a value could forge a line."""
    return _LINE_BREAKS.sub(lambda m: m.group().encode("unicode_escape").decode(), str(text))


def format_utc(value: datetime | None) -> str:
    """ISO 8601 in UTC, to the second: ``2024-05-01T12:34:56Z``."""
    if value is None:
        return "unknown"
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def format_size(size: int | None) -> str:
    """Human-readable and exact: ``1.2 MiB (1,234,567 bytes)``."""
    if size is None:
        return "unknown"
    if size < 1024:
        return f"{size} byte" if size == 1 else f"{size} bytes"
    return f"{jinja2.filters.do_filesizeformat(size, binary=True)} ({size:,} bytes)"
