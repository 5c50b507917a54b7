"""Reading a request's body bounded in size and in time, before anything parses it: the one reader
the event edge (:mod:`notifier.http`) and the Event Webhook's (:mod:`notifier.webhook`) share.

The watchdog shuts the client's socket if the body is still arriving at the deadline, which frees
the thread reading it: a per-read timeout could not, as a client sending one byte a second never
idles. Without a socket (the Flask development server, a test client) there is nothing to shut.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from flask import request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from notifier.watchdog import watching

# An oversized body is read and dropped (so the client sees the answer) up to this much, then cut off.
_DISCARD_AT_MOST = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BodyRead:
    """What reading the body came to; ``body`` is what arrived (all of it when nothing went wrong)."""

    body: bytes
    too_large: bool = False  # over the limit (Content-Length, or a chunked body that kept coming)
    too_slow: bool = False  # still arriving at the deadline: the connection was shut
    ended_early: bool = False  # shorter than its Content-Length: the client went away

    @property
    def complete(self) -> bool:
        return not (self.too_large or self.too_slow or self.ended_early)


def read_body(max_bytes: int, seconds: float) -> BodyRead:
    """The current request's body, at most ``max_bytes`` and within ``seconds``. The app's
    ``MAX_CONTENT_LENGTH`` must be ``max_bytes``. The body is cached where flask's ``get_data``
    finds it, so later readers (functions-framework's) get this copy, never the stream again."""
    too_large = ended_early = False
    body = b""
    sock = request.environ.get("gunicorn.socket")
    unwatched = nullcontext(SimpleNamespace(fired=False))
    with unwatched if sock is None else watching(sock, time.monotonic() + seconds) as watch:
        try:
            body = request.get_data(cache=True)
            if len(body) >= max_bytes and request.environ["wsgi.input"].read(1):  # chunked: werkzeug stops quietly
                raise RequestEntityTooLarge
            ended_early = len(body) < (request.content_length or 0)  # werkzeug does not say so either
        except RequestEntityTooLarge:
            too_large = True
            _discard(request.environ["wsgi.input"])
        except (HTTPException, OSError):  # werkzeug's ClientDisconnected, or the socket shut by the watchdog
            ended_early = True
    read = BodyRead(body, too_large, watch.fired, ended_early and not watch.fired)
    if not read.complete:
        # A later get_data() would read the stream again and raise once more (a 500 from the
        # framework): it gets what was read.
        request._cached_data = body  # type: ignore[attr-defined]
    return read


def _discard(stream: Any) -> None:
    # Read and drop what the client still sends, so that it reads our answer rather than a reset.
    left = _DISCARD_AT_MOST
    while left > 0 and (chunk := stream.read(min(left, 64 * 1024))):
        left -= len(chunk)
