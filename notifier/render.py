"""Notification → :class:`Message`: the template context, safe subjects, inlined CSS, provider data.

One :class:`Renderer` per instance, on :class:`~notifier.templates.Templates` (which compiles and
tries what the user wrote at start-up); safe to share between threads.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from datetime import tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import jinja2

from notifier.events import StorageEvent
from notifier.filters import console_url, encode_object_name, format_utc, one_line
from notifier.jinja_sandbox import render_within_budget
from notifier.mail.base import Message
from notifier.objects import NO_EXTRAS, Extras
from notifier.rules import Notification, Recipients, Rule
from notifier.templates import TemplateError, Templates, what_failed

if TYPE_CHECKING:
    from notifier.config import Settings
    from notifier.digest import HeldEntry, Run

__all__ = [
    "METADATA_SHOWN", "METADATA_TEXT_LIMIT", "TEMPLATE_FILTERS", "TEMPLATE_VARIABLES", "Renderer",
    "TemplateError", "provider_data", "template_context",
]  # fmt: skip

METADATA_SHOWN = 50
METADATA_TEXT_LIMIT = 500

_STYLE_BLOCK = re.compile(r"<style[\s>]", re.IGNORECASE)


class Renderer:
    """Renders notifications into messages with the templates the rules use.

    ``redirected`` (NOTIFY_REDIRECT_TO): the body says whom the message was meant for; sending it
    to the one address is :class:`notifier.mail.redirect.RedirectBackend`'s job.
    """

    def __init__(
        self,
        templates_dir: Path | None = None,
        rules: Iterable[Rule] = (),
        *,
        timezone: tzinfo | None = None,
        redirected: bool = False,
        check_builtin: bool = False,
    ) -> None:
        self._redirected = redirected
        self._inliner: Any = None  # created when a template first needs it
        self.templates = Templates.for_rules(
            templates_dir, rules, timezone=timezone, check_builtin=check_builtin,
            context=template_context, check_html=self._inline_css,
        )  # fmt: skip

    @classmethod
    def for_settings(cls, settings: Settings, *, check_builtin: bool = False) -> Renderer:
        return cls(
            settings.templates_dir, settings.rules.rules, timezone=settings.timezone,
            redirected=settings.redirect_to is not None, check_builtin=check_builtin,
        )  # fmt: skip

    def render(self, notification: Notification, extras: Extras = NO_EXTRAS) -> Message:
        event, rule, delivery = notification.event, notification.rule, notification.delivery
        subject_template, text_template, html_template = self.templates.set_for(delivery.template, event.kind)
        subject_template = self.templates.subject_for(rule.name) or subject_template
        recipients = delivery.recipients
        redirected_from = [str(a) for a in recipients.everyone] if self._redirected else []
        context = template_context(event, extras, redirected_from)
        templates = (subject_template, text_template, html_template)
        subject, text, html = (self._render_part(rule, template, context) for template in templates)
        return self._message(
            recipients, subject, text, html, notification_id=notification.id,
            categories=("storage-notifier", event.kind), attachments=extras.attachments,
            template_id=delivery.template_id,
            template_data=provider_data(context, subject) if delivery.template_id else {},
        )  # fmt: skip

    def render_digest(self, rule: Rule, run: Run, entries: Sequence[HeldEntry], notification_id: str) -> Message:
        """One email for ``entries`` (templates/digest/). The rule's ``subject`` is written for one
        object: a digest's subject is templates/digest/subject.txt. Never a provider template."""
        from notifier.digest_context import digest_context  # only flushes render digests

        recipients = rule.delivery.recipients
        redirected_from = [str(a) for a in recipients.everyone] if self._redirected else []
        context = digest_context(
            rule.name, run, entries, timezone=self.templates.timezone, redirected_from=redirected_from
        )
        subject, text, html = (self._render_part(rule, t, context) for t in self.templates.digest_set())
        return self._message(
            recipients, subject, text, html, notification_id=notification_id, categories=("storage-notifier", "digest")
        )

    def _message(self, recipients: Recipients, subject: str, text: str, html: str, **rest: Any) -> Message:
        """The rendered parts as a Message: addressed from the rule, the subject on one line."""
        return Message(
            sender=recipients.sender, envelopes=recipients.envelopes(), reply_to=recipients.reply_to,
            subject=one_line(subject), text=text.strip() + "\n", html=self._inline_css(html), **rest,
        )  # fmt: skip

    def _render_part(self, rule: Rule, template: jinja2.Template, context: dict[str, Any]) -> str:
        try:
            return render_within_budget(template, context)
        except Exception as error:  # named here; the pipeline dead-letters the notification
            where = self.templates.file_of(template, error) if template.name else "subject"
            raise TemplateError(f"rule {rule.name!r}, {where}: {what_failed(error)}") from error

    def _inline_css(self, html: str) -> str:
        """Move a ``<style>`` block into ``style`` attributes, as Gmail and Outlook need. Ours are
        written inline already; inlining costs a parse of the whole email (0.1-0.3 ms)."""
        if not _STYLE_BLOCK.search(html):
            return html
        if self._inliner is None:
            import css_inline

            self._inliner = css_inline.CSSInliner(keep_style_tags=False, load_remote_stylesheets=False)
        return self._inliner.inline(html)


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
    """The template context as JSON values, for a provider's own templates (Delivery.template_id,
    e.g. a SendGrid dynamic template): the same data our templates get, plus the subject we would
    have used."""
    data = {k: v for k, v in context.items() if k not in ("event", "object")}
    data["object"] = context["event"].to_dict()
    data["occurred_at"] = format_utc(context["occurred_at"])
    data["subject"] = one_line(subject)
    return data
