"""Notification → :class:`Message`: Jinja templates, safe subjects, links and inlined CSS.

One :class:`Renderer` per instance: it compiles and tries every template a user wrote at start-up
(so a broken template fails the deploy, not the first event), compiles each template once, and is
safe to share between threads.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any
from urllib.parse import quote

import jinja2
from markupsafe import Markup

from notifier.addresses import Address
from notifier.config import BUILTIN_TEMPLATES, Settings
from notifier.events import KINDS, StorageEvent
from notifier.mail.base import Envelope, Message
from notifier.objects import NO_EXTRAS, Extras
from notifier.rules import Notification, Rule
from notifier.templates import RenderLimitError, Sandbox, render_within_budget

TEMPLATE_FILES = ("subject.txt", "body.txt", "body.html")
SUBJECT_LIMIT = 200  # characters; clients cut long subjects anyway, and RFC 5322 lines are ≤ 998
METADATA_SHOWN = 50
METADATA_TEXT_LIMIT = 500

_CONSOLE_OBJECT_URL = "https://console.cloud.google.com/storage/browser/_details/{bucket}/{name}"
# Bidirectional overrides and isolates can make a subject read differently from what it says.
_BIDI_CONTROLS = dict.fromkeys(map(ord, "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"))
_WHITESPACE = re.compile(r"\s+")
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]")
_STYLE_BLOCK = re.compile(r"<style[\s>]", re.IGNORECASE)
# Characters that change how the text around them displays, or do not display at all: bidi
# controls, line and paragraph separators, zero-width and other invisible format characters, blank
# fillers, tag characters. In a name they make "invoice\u202efdp.exe" read "invoiceexe.pdf", and an
# unclosed override reverses the rest of the sentence; so wherever a template prints a value, they
# are shown as escapes instead.
_HIDDEN = re.compile(
    "[\u00ad\u061c\u115f\u1160\u17b4\u17b5\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f"
    "\u3164\ufeff\uffa0\ufff9-\ufffb\U000e0000-\U000e007f]"
)


class TemplateError(ValueError):
    """A template is missing or broken; the message names the file."""


class Renderer:
    """Compiles each template the rules use, once; renders notifications into messages.

    Templates run in Jinja's sandbox: user templates (NOTIFY_TEMPLATES_DIR, rule subjects) can
    read the values they are given but not reach into Python.
    """

    def __init__(
        self,
        templates_dir: Path | None = None,
        rules: Iterable[Rule] = (),
        *,
        timezone: tzinfo | None = None,
        redirect_to: Address | None = None,
        check_builtin: bool = False,
    ) -> None:
        # User templates override ours file by file.
        search_path = [str(p) for p in (templates_dir, BUILTIN_TEMPLATES) if p is not None]
        self._env = Sandbox(
            loader=jinja2.FileSystemLoader(search_path),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
            undefined=jinja2.StrictUndefined,
            auto_reload=False,  # compiled once per instance; no stat() per event
            keep_trailing_newline=False,
            finalize=show_hidden_characters,
        )
        self._env.filters["utc"] = format_utc
        self._env.filters["local"] = lambda value: format_local(value, timezone)
        self._env.filters["size"] = format_size
        self._env.filters["line"] = visible_line_breaks
        self._redirect_to = redirect_to
        # (template set or None for the kind's own, kind) → (subject, text, html) templates.
        self._sets: dict[tuple[str | None, str], tuple[jinja2.Template, ...]] = {}
        self._subjects: dict[str, jinja2.Template] = {}
        # What a user wrote (a templates directory, named sets, rule subjects) is compiled and
        # tried now, so that a typo fails the deploy. Ours alone are tested in CI and compiled on
        # first use, which keeps their compilation (tens of ms) off the cold start.
        wanted = {(None, kind) for kind in KINDS} if templates_dir is not None or check_builtin else set()
        compiled: dict[str, jinja2.Template] = {}  # many rules often share a subject: compile it once
        for rule in rules:
            wanted.update(
                (rule.delivery.template, kind) for kind in rule.when.events if rule.delivery.template is not None
            )
            if (subject := rule.delivery.subject) is not None:
                if subject not in compiled:
                    compiled[subject] = self._compile_subject(rule.name, subject)
                self._subjects[rule.name] = compiled[subject]
        for name, kind in sorted(wanted, key=lambda key: (key[0] or "", key[1])):
            self._sets[name, kind] = self._load_set(name, kind)
        if not wanted.issuperset((None, kind) for kind in KINDS):
            _check_builtin_files()  # a stat per file: an incomplete upload still fails the deploy
        self._inliner: Any = None  # created when a template first needs it
        self._try_templates(rules)

    def _try_templates(self, rules: Iterable[Rule]) -> None:
        """Render each template compiled so far once with a sample event (HTML through the CSS
        inliner too), so that a typo (StrictUndefined), a bad filter, a loop that never ends or bad
        CSS stops the start-up with its file named, instead of dead-lettering every email."""
        samples = {kind: _sample_event(kind) for kind in KINDS}
        # (template, kind) → where it is: a template shared by sets, or a subject by rules, is tried once.
        checks: dict[tuple[int, str], tuple[str, jinja2.Template]] = {}
        for (_, kind), templates in self._sets.items():
            for template in templates:
                checks.setdefault((id(template), kind), (f"templates/{template.name}", template))
        for rule in rules:
            template = self._subjects.get(rule.name)
            for kind in (k for k in KINDS if k in rule.when.events) if template is not None else ():  # in a set order
                checks.setdefault((id(template), kind), (f"rule {rule.name!r}: subject", template))
        for (_, kind), (where, template) in checks.items():
            context = template_context(samples[kind])
            output = _try(template, context, where, kind)
            if where.endswith(".html"):
                try:
                    self._inline_css(output)
                except Exception as error:  # noqa: BLE001 - the CSS inliner's own errors, or its import failing
                    raise TemplateError(f"{where}: CSS inlining failed: {type(error).__name__}: {error}") from None

    @classmethod
    def for_settings(cls, settings: Settings, *, check_builtin: bool = False) -> Renderer:
        return cls(
            settings.templates_dir, settings.rules.rules, timezone=settings.timezone,
            redirect_to=settings.redirect_to, check_builtin=check_builtin,
        )  # fmt: skip

    def render(self, notification: Notification, extras: Extras = NO_EXTRAS) -> Message:
        event, rule, delivery = notification.event, notification.rule, notification.delivery
        subject_template, text_template, html_template = self._template_set(delivery.template, event.kind)
        subject_template = self._subjects.get(rule.name, subject_template)
        recipients = delivery.recipients
        envelopes = recipients.envelopes()
        headers: dict[str, str] = {}
        redirected_from: list[str] = []
        if self._redirect_to is not None:  # staging: one address gets everything, and is told for whom
            redirected_from = [str(a) for a in recipients.everyone]
            envelopes = (Envelope(to=(self._redirect_to,)),)
            headers["X-Original-Recipients"] = one_line(", ".join(redirected_from), limit=2000)
        context = template_context(event, extras, redirected_from)
        templates = (subject_template, text_template, html_template)
        subject, text, html = (self._render_part(rule, template, context) for template in templates)
        return Message(
            sender=recipients.sender,
            envelopes=envelopes,
            reply_to=recipients.reply_to,
            subject=one_line(subject),
            text=text.strip() + "\n",
            html=self._inline_css(html),
            notification_id=notification.id,
            categories=("storage-notifier", event.kind),
            headers=headers,
            attachments=extras.attachments,
            template_id=delivery.template_id,
            template_data=provider_data(context, subject) if delivery.template_id else {},
        )

    def _render_part(self, rule: Rule, template: jinja2.Template, context: dict[str, Any]) -> str:
        try:
            return render_within_budget(template, context)
        except Exception as error:  # named here; the pipeline dead-letters the notification
            where = f"rule {rule.name!r}, " + (f"templates/{template.name}" if template.name else "subject")
            raise TemplateError(f"{where}: {_what(error)}") from error

    def _inline_css(self, html: str) -> str:
        """Move a ``<style>`` block into ``style`` attributes, as Gmail and Outlook need. Ours are
        written inline already; inlining costs a parse of the whole email (0.1-0.3 ms)."""
        if not _STYLE_BLOCK.search(html):
            return html
        if self._inliner is None:
            import css_inline

            self._inliner = css_inline.CSSInliner(keep_style_tags=False, load_remote_stylesheets=False)
        return self._inliner.inline(html)

    def _template_set(self, name: str | None, kind: str) -> tuple[jinja2.Template, ...]:
        templates = self._sets.get((name, kind))
        if templates is None:  # first use of one of ours; two threads may both compile it, harmlessly
            templates = self._sets[name, kind] = self._load_set(name, kind)
        return templates

    def _load_set(self, name: str | None, kind: str) -> tuple[jinja2.Template, ...]:
        """A named set's file where it has one, else the kind's own."""

        def candidates(part: str) -> list[str]:
            return ([f"{name}/{part}"] if name else []) + [f"{kind}/{part}"]

        return tuple(self._load(candidates(part)) for part in TEMPLATE_FILES)

    def _load(self, names: list[str]) -> jinja2.Template:
        try:
            return self._env.select_template(names)
        except jinja2.TemplatesNotFound:
            raise TemplateError(f"template {names[0]!r} not found in {self._env.loader.searchpath}") from None
        except jinja2.TemplateSyntaxError as error:
            raise TemplateError(f"{error.filename}:{error.lineno}: {error.message}") from None
        except (RecursionError, ValueError, ArithmeticError) as error:  # e.g. nested too deeply
            raise TemplateError(f"{names[0]}: cannot compile: {type(error).__name__}: {error}") from None

    def _compile_subject(self, rule_name: str, subject: str) -> jinja2.Template:
        try:
            return self._env.from_string(subject)
        except jinja2.TemplateSyntaxError as error:
            raise TemplateError(f"rule {rule_name!r}: subject: {error.message}") from None
        except (RecursionError, ValueError, ArithmeticError) as error:
            where = f"rule {rule_name!r}: subject"
            raise TemplateError(f"{where}: cannot compile: {type(error).__name__}: {error}") from None


def _try(template: jinja2.Template, context: dict[str, Any], where: str, kind: str) -> str:
    """Render ``template`` at start-up; whatever it raises stops the start-up with ``where`` named."""
    try:
        return render_within_budget(template, context, alarm=True)  # start-up: in the main thread
    except Exception as error:  # noqa: BLE001 - not only Jinja's errors: OverflowError, RecursionError...
        raise TemplateError(f"{where}: {_what(error)} (checked with a sample {kind} event)") from None


def _what(error: Exception) -> str:
    """What went wrong: our own limits say it in words, other errors need their type too."""
    return str(error) if isinstance(error, RenderLimitError) else f"{type(error).__name__}: {error}"


def _check_builtin_files() -> None:
    names = [f"{kind}/{part}" for kind in KINDS for part in TEMPLATE_FILES] + ["base.html", "base.txt"]
    missing = [name for name in names if not (BUILTIN_TEMPLATES / name).is_file()]
    if missing:
        raise TemplateError(f"{BUILTIN_TEMPLATES}: missing {', '.join(missing)} (was templates/ uploaded?)")


# Every variable a template can use, with what it holds: `python -m notifier variables` prints this
# table and docs/template-variables.md is generated from it, so the documentation cannot drift.
TEMPLATE_VARIABLES: dict[str, str] = {
    "event": "The event (a StorageEvent): `kind`, `bucket`, `name`, `generation`, `metageneration`, "
    "`size`, `content_type`, `storage_class`, `time_created`, `updated`, `time_deleted`, "
    "`soft_delete_time`, `hard_delete_time`, `overwrote_generation`, `overwritten_by_generation`, "
    "`event_id`, `event_type`, `event_time`, `md5`, `crc32c`, `metadata`, `gs_uri`.",
    "object": "The same as `event`, for templates that read better as `object.name`.",
    "metadata": "The object's custom metadata: a dict, at most 50 entries of 500 characters.",
    "metadata_hidden": "How many metadata entries were left out (0 normally).",
    "console_url": "The object's Cloud Console page, URL-encoded.",
    "gs_uri": "`gs://bucket/name` as `gcloud storage` takes it (raw: for text, not links).",
    "gs_url": "The same URI URL-encoded, for `href`s.",
    "occurred_at": "When it happened (the event time, else the object's update time), a datetime in UTC.",
    "download_url": 'A signed download link (rules with `link = "signed"`), or none.',
    "attachments": "What is attached (rules with `attach = true`): a list of `{filename, size}`.",
    "notes": "Sentences the email must carry, e.g. why a file was not attached.",
    "redirected_from": "With NOTIFY_REDIRECT_TO: the recipients this message was meant for.",
}
TEMPLATE_FILTERS: dict[str, str] = {
    "size": "`1.2 MiB (1,234,567 bytes)`",
    "utc": "`2026-11-25T19:57:03Z`",
    "local": "the time in NOTIFY_TIMEZONE, `2026-11-25 20:57 CET`; empty without it",
    "line": "a value on one line: line breaks shown as `\\n` (for text bodies)",
}


def template_context(
    event: StorageEvent, extras: Extras = NO_EXTRAS, redirected_from: list[str] | None = None
) -> dict[str, Any]:
    """Every variable a template can use (documented in TEMPLATE_VARIABLES)."""
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
        **extras.as_context(),
        "redirected_from": redirected_from or [],
    }


def provider_data(context: dict[str, Any], subject: str) -> dict[str, Any]:
    """The template context as JSON values, for a provider's own templates (SendGrid dynamic
    templates): the same data our templates get, plus the subject we would have used."""
    data = {k: v for k, v in context.items() if k not in ("event", "object")}
    data["object"] = context["event"].to_dict()
    data["occurred_at"] = format_utc(context["occurred_at"])
    data["subject"] = one_line(subject)
    return data


def variables_markdown() -> str:
    rows = "\n".join(f"| `{name}` | {text} |" for name, text in TEMPLATE_VARIABLES.items())
    filters = "\n".join(f"| `{name}` | {text} |" for name, text in TEMPLATE_FILTERS.items())
    return (
        "# Template variables\n\n"
        "Generated by `python -m notifier variables` from `notifier/render.py`; do not edit by hand.\n\n"
        f"| variable | what it holds |\n|---|---|\n{rows}\n\n"
        f"| filter | gives |\n|---|---|\n{filters}\n"
    )


def _sample_event(kind: str) -> StorageEvent:

    from notifier.events import decode
    from notifier.payloads import object_resource, storage_cloud_event

    data = object_resource(kind, "sample-bucket", "sample/object.csv", size=1024, content_type="text/csv",
                           metadata={"sample": "value"})  # fmt: skip
    return decode(storage_cloud_event(kind, data, "sample"))


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
