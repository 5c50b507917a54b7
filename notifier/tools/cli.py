"""``python -m notifier``: emit test events, preview emails, run the local demo."""

from __future__ import annotations

import argparse
import mimetypes
import os
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from notifier.events import KINDS, StorageEvent
from notifier.log import for_terminal
from notifier.payloads import build_request, object_resource, storage_cloud_event
from notifier.units import UnitError, parse_size

if TYPE_CHECKING:
    from notifier.config import Settings
    from notifier.mail.base import Message
    from notifier.render import Renderer
    from notifier.rules import Notification

DEFAULT_URL = "http://localhost:8080"
MAX_PREVIEW_DIGEST = 10_000  # preview --digest N: objects in the sample digest


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def emit(args: argparse.Namespace) -> int:
    """POST one realistic storage event to a running function."""
    bucket, name = parse_gs_uri(args.uri)
    headers, body = build_request(
        args.kind,
        bucket,
        name,
        size=args.size,
        content_type=args.content_type or guess_content_type(name),
        metadata=dict(args.meta),
        mode="gen1" if args.gen1 else args.mode,
    )
    check_url(args.url)
    request = urllib.request.Request(args.url, data=body, headers=headers, method="POST")  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=args.timeout) as response:  # noqa: S310
            status, text = response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode("utf-8", "replace")
    except urllib.error.URLError as error:
        raise OSError(f"cannot reach {args.url}: {error.reason} (is `make run` serving?)") from None
    print(f"{args.kind} {args.uri} → {args.url}: HTTP {status} {text.strip()}")
    return 0 if 200 <= status < 300 else 1


def check_url(url: str) -> None:
    """An http(s) URL with a host and nothing that could end a request line (CR, LF, spaces)."""
    from urllib.parse import urlsplit

    if any(ch.isspace() or not ch.isprintable() for ch in url):
        raise ValueError(f"--url: contains whitespace or control characters: {url!r}")
    if not url.isascii():  # urllib sends the URL as it is: a non-ASCII host cannot go on the wire
        raise ValueError(f"--url: expected an ASCII URL (percent-encode the path, punycode the host), got {url!r}")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError as error:
        raise ValueError(f"--url: not a URL ({error}): {url!r}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--url: expected http://HOST[:PORT][/PATH] or https://..., got {url!r}")


def preview(args: argparse.Namespace) -> int:
    """Render the email for an event to .txt, .html and .eml files without sending it."""
    from notifier.mail.base import as_mime

    settings, renderer = _local_pipeline_parts()
    event = _event_from_args(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for notification in _routed(settings, event):
        if args.digest:
            message, stem = _sample_digest(renderer, notification, args.digest), f"digest-{args.digest}"
        else:
            message, stem = renderer.render(notification), args.kind
        message = _as_sent(settings, message)
        stem = f"{stem}-{notification.rule.name}-{notification.id}"  # rule names may hold dots
        eml = as_mime(message, message.envelopes[0]).as_string()  # the first recipient's copy
        files = {out / f"{stem}.txt": message.text, out / f"{stem}.html": message.html, out / f"{stem}.eml": eml}
        for path, content in files.items():
            path.write_text(content, encoding="utf-8")
        print(f"Subject: {message.subject}")
        for path in files:
            print(f"  {path}")
        if args.png:
            from notifier.tools.browser import screenshot

            print(f"  {screenshot(out / f'{stem}.html', out / f'{stem}.png', width=args.width)}")
    return 0


def _sample_digest(renderer: Renderer, notification: Notification, count: int) -> Message:
    """The digest ``notification``'s rule would send for ``count`` objects like its event, held in
    this window (a rule without ``digest`` or ``max_emails`` never sends one: this shows it anyway)."""
    from datetime import UTC, datetime

    from notifier.digest import group_of
    from notifier.digest_context import sample_run

    event, batching = notification.event, notification.rule.delivery.batching
    run = sample_run(
        count, rule=notification.rule.name, bucket=event.bucket, name=event.name, kinds=(event.kind,),
        size=event.size or 1024, start=datetime.now(UTC),
        window=batching.window if batching else 600.0, group=group_of(notification) if batching else None,
    )  # fmt: skip
    return renderer.render_digest(notification.rule, run, run.entries, notification.id)


def route(args: argparse.Namespace) -> int:
    """Show which rules match an event and who would get which email; sends nothing."""
    settings, renderer = _local_pipeline_parts()
    event = _event_from_args(args)
    source = settings.rules_file or "NOTIFY_TO (no rules file)"
    size = "size unknown" if event.size is None else f"{event.size} bytes"
    print(for_terminal(f"{event.kind} {event.gs_uri} ({size}, {event.content_type}) against {source}:", 2000))
    from notifier.tools.digest_commands import held_line

    notifications, held, now = _routed(settings, event), 0, datetime.now(UTC)
    for notification in notifications:
        message = _as_sent(settings, renderer.render(notification))
        recipients = notification.recipients
        how = "each their own copy" if recipients.separate_envelopes else "one shared message"
        print(f"  rule {notification.rule.name}{' (stop)' if notification.rule.stop else ''}:")
        print(f"    subject: {message.subject}")
        for field in ("to", "cc", "bcc"):
            if addresses := getattr(recipients, field):
                print(f"    {field}: {', '.join(str(a) for a in addresses)}")
        print(f"    {message.recipient_count} recipient(s), {how}")
        if (digest := held_line(notification, now)) is not None:
            print(f"    {digest}")
            held += notification.rule.delivery.batching.cap is None  # type: ignore[union-attr]  # a cap sends it now
    sent = len(notifications) - held
    later = f" now; {held} held for a digest" if held else ""
    print(f"{sent} email(s) would be sent{later}.")
    return 0


def check_config(args: argparse.Namespace) -> int:
    """Validate the environment and the rules file as the function would at start-up."""
    from notifier.config import ConfigError, load_settings
    from notifier.render import Renderer, TemplateError

    environ = dict(os.environ)
    if args.file:
        environ["NOTIFY_CONFIG"] = args.file
    try:
        settings = load_settings(environ)
        Renderer.for_settings(settings, check_builtin=True)
    except ConfigError as error:
        for problem in error.problems:
            print(problem, file=sys.stderr)
        print(f"{len(error.problems)} problem(s) found.", file=sys.stderr)
        return 1
    except TemplateError as error:
        print(error, file=sys.stderr)
        return 1
    from notifier.holding import store_problem
    from notifier.tools.digest_commands import batching_summary

    if problem := store_problem(settings):  # the function refuses to start for it
        print(f"{problem}\n1 problem(s) found.", file=sys.stderr)
        return 1

    rules = settings.rules.rules
    print(f"{settings.rules_file or 'environment'}: OK, {len(rules)} rule(s), backend {settings.backend}")
    for rule in rules:
        events = ",".join(k for k in KINDS if k in rule.when.events)
        batching = f", {batching_summary(rule.delivery.batching)}" if rule.delivery.batching else ""
        print(f"  {rule.name}: {events} → {len(rule.delivery.recipients.everyone)} recipient(s){batching}")
    return 0


def replay(args: argparse.Namespace) -> int:
    """Send dead letters again once their cause is fixed (see notifier/tools/replay_command.py)."""
    from notifier.tools.replay_command import replay as run

    return run(args)


def flush(args: argparse.Namespace) -> int:
    """Send the held digests that are due, or all (see notifier/tools/digest_commands.py)."""
    from notifier.tools.digest_commands import flush as run

    return run(args)


def pending(args: argparse.Namespace) -> int:
    """List the events held for digests (see notifier/tools/digest_commands.py)."""
    from notifier.tools.digest_commands import pending as run

    return run(args)


def status(args: argparse.Namespace) -> int:
    """What became of an object's notifications (see notifier/tools/status_command.py)."""
    from notifier.tools.status_command import status as run

    return run(args, None if args.uri is None else parse_gs_uri(args.uri))


def variables(args: argparse.Namespace) -> int:
    """Print the documented list of template variables (docs/template-variables.md)."""
    from notifier.tools.variables_doc import variables_markdown

    print(variables_markdown(), end="")
    return 0


def demo(args: argparse.Namespace) -> int:
    from notifier.tools.demo import run_demo

    return run_demo(Path(args.outbox))


def sandbox(args: argparse.Namespace) -> int:
    from notifier.tools.sandbox import run_sandbox

    return run_sandbox(Path(args.dir) if args.dir else None)


# ---------------------------------------------------------------------------------------------


def _local_pipeline_parts() -> tuple[Settings, Renderer]:
    """Settings and renderer as the function builds them; nothing is sent, so the delivery
    settings (a SendGrid key and what it requires) don't matter."""
    from notifier.config import load_settings
    from notifier.render import Renderer

    settings = load_settings({**os.environ, "NOTIFY_BACKEND": "console"})
    return settings, Renderer.for_settings(settings)


def _as_sent(settings: Settings, message: Message) -> Message:
    """The message as the function's backend gets it: NOTIFY_REDIRECT_TO applied."""
    from notifier.mail.redirect import redirected

    return message if settings.redirect_to is None else redirected(message, settings.redirect_to)


def _event_from_args(args: argparse.Namespace) -> StorageEvent:

    from notifier.events import decode

    bucket, name = parse_gs_uri(args.uri)
    metadata = dict(args.meta)
    content_type = args.content_type or guess_content_type(name)
    data = object_resource(args.kind, bucket, name, size=args.size, content_type=content_type, metadata=metadata)
    return decode(storage_cloud_event(args.kind, data, f"{args.command}-{uuid.uuid4()}"))


def _routed(settings: Settings, event: StorageEvent) -> list[Notification]:
    if reason := settings.rules.ignore_reason(event):
        print(f"No email: ignored: {reason}")
        return []
    notifications = settings.rules.route(event)
    if not notifications:
        print("No email: no rule matches.")
    return notifications


def guess_content_type(name: str) -> str:
    return mimetypes.guess_type(name, strict=False)[0] or "application/octet-stream"


def parse_gs_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("gs://") or "/" not in uri[5:]:
        raise ValueError(f"expected gs://BUCKET/OBJECT, got {uri!r}")
    bucket, name = uri[5:].split("/", 1)
    if not bucket or not name:
        raise ValueError(f"expected gs://BUCKET/OBJECT, got {uri!r}")
    return bucket, name


def _size(text: str) -> int:
    """Bytes, or a size with a unit ("5 MB"), as in notify.toml."""
    try:
        return parse_size(text)
    except UnitError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _digest_count(text: str) -> int:
    if not (text.isascii() and text.isdigit() and len(text) <= 6 and 2 <= int(text) <= MAX_PREVIEW_DIGEST):
        raise argparse.ArgumentTypeError(f"expected 2 to {MAX_PREVIEW_DIGEST:,} objects (one event sends the"
                                         f" ordinary email), got {text!r}")  # fmt: skip
    return int(text)


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m notifier", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND", dest="command")

    def event_command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("kind", choices=KINDS, help="what happened to the object")
        sub.add_argument("uri", metavar="gs://BUCKET/OBJECT")
        size_default = None if name == "route" else 1234
        sub.add_argument(
            "--size",
            type=_size,
            default=size_default,
            help=f'object size: bytes or e.g. "5 MB" (default {size_default or "unknown"})',
        )
        sub.add_argument("--content-type", help="object content type (default: guessed from the name)")
        sub.add_argument(
            "--meta",
            type=_key_value,
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="custom metadata (repeatable)",
        )
        return sub

    sub = event_command("emit", "POST a realistic storage event to a running function")
    sub.add_argument("--url", default=DEFAULT_URL, help=f"function URL (default {DEFAULT_URL})")
    sub.add_argument(
        "--mode",
        choices=("binary", "structured", "pubsub"),
        default="binary",
        help="CloudEvents HTTP mode (default binary, as Eventarc sends), or pubsub: a bucket notification"
        " as a Pub/Sub push subscription delivers it",
    )
    sub.add_argument("--gen1", action="store_true", help="send a 1st-gen background event instead")
    sub.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the answer")
    sub.set_defaults(run=emit)

    sub = event_command("preview", "render the email for an event to files, without sending")
    sub.add_argument("--out", default="preview", help="directory for .txt/.html/.eml (default ./preview)")
    sub.add_argument("--png", action="store_true", help="also a screenshot taken by headless Chromium")
    sub.add_argument("--width", type=int, default=600, help="screenshot width in pixels (default 600)")
    sub.add_argument("--digest", type=_digest_count, metavar="N", help="the digest email of N objects like this"
                     " one, in its folder (the rule's digest window, else 10 minutes)")  # fmt: skip
    sub.set_defaults(run=preview)

    sub = event_command("route", "show which rules match an event and who would be emailed")
    sub.set_defaults(run=route)

    sub = commands.add_parser("check-config", help="validate the environment and notify.toml")
    sub.add_argument("file", nargs="?", help="rules file (default: NOTIFY_CONFIG or notify.toml beside main.py)")
    sub.set_defaults(run=check_config)

    sub = commands.add_parser("replay", help="send dead letters again once their cause is fixed")
    sub.add_argument("--since", help="only letters written since this ISO time or duration (2h, 7d)")
    sub.add_argument("--id", help="only this notification id")
    sub.add_argument("--dry-run", action="store_true", help="show who would get what today; send nothing")
    instead = sub.add_mutually_exclusive_group()
    instead.add_argument("--rule", metavar="NAME", help="send letters whose rule is gone (or no longer matches)"
                         " through this current rule")  # fmt: skip
    instead.add_argument("--force", action="store_true", help="send letters whose rule is gone (or no longer"
                         " matches) through every current rule that matches their event")  # fmt: skip
    sub.set_defaults(run=replay)

    sub = commands.add_parser("flush", help="send the digests that are due now (what the scheduled flush does)")
    sub.add_argument("--all", action="store_true", help="send every held event now, whatever its window")
    sub.set_defaults(run=flush)

    sub = commands.add_parser("pending", help="list the events held for digests, by group and window")
    sub.add_argument("--json", action="store_true", help="the listing as JSON, for scripts")
    sub.set_defaults(run=pending)

    sub = commands.add_parser("status", help="what became of an object's notifications: outcome, delivery events")
    sub.add_argument("uri", nargs="?", metavar="gs://BUCKET/OBJECT", help="every generation of this object")
    sub.add_argument("--id", metavar="ID", help="only this notification id (32 hex digits)")
    sub.add_argument("--json", action="store_true", help="the notifications as JSON, for scripts")
    sub.set_defaults(run=status)

    sub = commands.add_parser("variables", help="list every variable and filter a template can use")
    sub.set_defaults(run=variables)

    sub = commands.add_parser("demo", help="serve the function locally, emit one event of each kind")
    sub.add_argument(
        "--outbox", default="outbox/demo", help="where the .eml files go: a new or empty folder, or an earlier demo's"
    )
    sub.set_defaults(run=demo)

    sub = commands.add_parser("sandbox", help="gsutil/gcloud → email locally: the emulators and the function")
    sub.add_argument("--dir", help="where it keeps its config, outbox and logs (default .sandbox beside main.py)")
    sub.set_defaults(run=sandbox)
    return parser
