"""``python -m notifier``: emit test events, preview emails, run the local demo."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from notifier.events import KINDS, Kind, background_event, cloud_event_attributes, object_resource

DEFAULT_URL = "http://localhost:8080"
_HEADER_SAFE = "!#$&'()*+,/:;<=>?@[\\]^_`{|}~"


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


def emit(args: argparse.Namespace) -> int:
    """POST one realistic storage event to a running function."""
    headers, body = build_request(
        args.kind,
        *parse_gs_uri(args.uri),
        size=args.size,
        content_type=args.content_type,
        metadata=dict(args.meta),
        mode="gen1" if args.gen1 else args.mode,
    )
    if not args.url.startswith(("http://", "https://")):
        raise ValueError(f"--url: expected an http(s) URL, got {args.url!r}")
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


def preview(args: argparse.Namespace) -> int:
    """Render the email for an event to .txt, .html and .eml files without sending it."""
    from cloudevents.http import CloudEvent

    from notifier.config import load_settings
    from notifier.events import decode
    from notifier.mail.base import as_mime
    from notifier.render import Renderer
    from notifier.rules import route

    # Nothing is sent, so the delivery settings (a SendGrid key and its requirements) don't matter.
    settings = load_settings({**os.environ, "NOTIFY_BACKEND": "console"})
    bucket, name = parse_gs_uri(args.uri)
    data = object_resource(
        args.kind, bucket, name, size=args.size, content_type=args.content_type, metadata=dict(args.meta)
    )
    event = decode(CloudEvent(cloud_event_attributes(args.kind, data, "preview"), data))
    renderer = Renderer(settings.templates_dir)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for notification in route(event, settings):
        message = renderer.render(notification)
        stem = out / f"{args.kind}-{notification.id}"
        files = {".txt": message.text, ".html": message.html, ".eml": as_mime(message).as_string()}
        for suffix, content in files.items():
            stem.with_suffix(suffix).write_text(content, encoding="utf-8")
        print(f"Subject: {message.subject}")
        for suffix in files:
            print(f"  {stem.with_suffix(suffix)}")
    return 0


def demo(args: argparse.Namespace) -> int:
    from notifier.demo import run_demo

    return run_demo(Path(args.outbox))


# ---------------------------------------------------------------------------------------------


def build_request(
    kind: Kind,
    bucket: str,
    name: str,
    *,
    size: int = 0,
    content_type: str = "application/octet-stream",
    metadata: dict[str, str] | None = None,
    mode: str = "binary",
    event_id: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """Headers and body of an HTTP request delivering one storage event as the platform does."""
    from cloudevents.conversion import to_binary, to_structured
    from cloudevents.http import CloudEvent

    event_id = event_id or str(uuid.uuid4())
    data = object_resource(kind, bucket, name, size=size, content_type=content_type, metadata=metadata)
    if mode == "gen1":
        return {"Content-Type": "application/json"}, json.dumps(
            background_event(kind, data, event_id)
        ).encode()
    event = CloudEvent(cloud_event_attributes(kind, data, event_id), data)
    if mode == "structured":
        headers, body = to_structured(event)
        return dict(headers), body
    headers, body = to_binary(event)
    # The HTTP binding percent-encodes ce-* values (space, '"', '%' and anything not printable
    # ASCII); the SDK does not, and a non-ASCII object name would not even fit in a header.
    return {k: quote(v, safe=_HEADER_SAFE) if k.startswith("ce-") else v for k, v in headers.items()}, body


def parse_gs_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("gs://") or "/" not in uri[5:]:
        raise ValueError(f"expected gs://BUCKET/OBJECT, got {uri!r}")
    bucket, name = uri[5:].split("/", 1)
    if not bucket or not name:
        raise ValueError(f"expected gs://BUCKET/OBJECT, got {uri!r}")
    return bucket, name


def _size(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a size in bytes (0 or more), got {text!r}")
    return int(text)


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m notifier", description=__doc__)
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    def event_command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument("kind", choices=KINDS, help="what happened to the object")
        sub.add_argument("uri", metavar="gs://BUCKET/OBJECT")
        sub.add_argument("--size", type=_size, default=1234, help="object size in bytes (default 1234)")
        sub.add_argument("--content-type", default="text/csv", help="object content type")
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
        choices=("binary", "structured"),
        default="binary",
        help="CloudEvents HTTP mode (default binary, as Eventarc sends)",
    )
    sub.add_argument("--gen1", action="store_true", help="send a 1st-gen background event instead")
    sub.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the answer")
    sub.set_defaults(run=emit)

    sub = event_command("preview", "render the email for an event to files, without sending")
    sub.add_argument("--out", default="preview", help="directory for .txt/.html/.eml (default ./preview)")
    sub.set_defaults(run=preview)

    sub = commands.add_parser("demo", help="serve the function locally, emit one event of each kind")
    sub.add_argument("--outbox", default="outbox/demo", help="where the .eml files go (emptied first)")
    sub.set_defaults(run=demo)
    return parser
