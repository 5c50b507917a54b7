"""The HTTP edge of ``main.py: sendgrid_events``, SendGrid's signed Event Webhook
(``deploy/deploy.sh events``).

The function is public: SendGrid cannot authenticate to Cloud Run, so the ECDSA signature over
timestamp + raw body is the authentication (:mod:`notifier.feedback`). Before anything is parsed,
the body is read here bounded in size (:data:`MAX_BODY`) and time (:data:`BODY_SECONDS`).
Answers: 200 with counts; 400 signed but not an event batch; 403 not signed by SendGrid; 405 not a
POST; 413 too large; 503 the state bucket is down (SendGrid retries). Headers that cannot be
SendGrid's are refused (403) before the body is read. Without a verification key that loads, or
deployed without a state bucket, the function does not start.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from contextlib import nullcontext, suppress
from functools import partial
from typing import TYPE_CHECKING, Any

from flask import Flask, Request, current_app, g, request
from werkzeug.exceptions import HTTPException

from notifier import log
from notifier.config import ConfigError
from notifier.ledger.base import LedgerError
from notifier.request_body import _discard as discard
from notifier.request_body import read_body
from notifier.watchdog import watching

if TYPE_CHECKING:
    from notifier.config import Settings
    from notifier.pipeline import Pipeline

METHOD = "POST"
MAX_BODY = 1024 * 1024  # SendGrid's batches are far smaller; its own limit is not documented
BODY_SECONDS = 3.0  # a body still arriving after this holds a worker thread: the connection is closed
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
JSON = {"Content-Type": "application/json"}
_BODY = "webhook_body"  # flask.g: the body read by the before-request hook
_IDS = "notifier_webhook_ids"  # app.extensions: the instance's feedback.IdCache
Answer = tuple[str, int, dict[str, str]]


def install(app: Flask, pipeline: Pipeline, *, now: Callable[[], float] = time.time) -> None:
    """Bound every request to the webhook's app before the function sees it; call once, at import.
    It refuses to start (a CRITICAL line naming the variable) when every batch would be refused or
    no event could ever be found ours: no key, a key that does not load, or a deployed function
    without a state bucket (each instance's memory would be its own ledger)."""
    problem = _start_up_problem(pipeline.settings)
    if problem is not None:
        log.log(pipeline._log, logging.CRITICAL, f"storage-notifier cannot start: {problem}")
        raise ConfigError([problem])
    from notifier import feedback  # the webhook's target only: it loads cryptography

    app.extensions[_IDS] = feedback.IdCache()
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.before_request(partial(_before_request, pipeline, now))
    app.register_error_handler(Exception, partial(_error_response, pipeline))


def _start_up_problem(settings: Settings) -> str | None:
    if not settings.webhook_public_key:
        return (
            "SENDGRID_WEBHOOK_PUBLIC_KEY: required by sendgrid_events (the Event Webhook's verification key:"
            " SendGrid, Mail Settings > Event Webhook > Signed Event Webhook; deploy/deploy.sh events mounts it)"
        )
    if settings.deployed and not settings.state_bucket:
        return (
            "NOTIFY_STATE_BUCKET: required by sendgrid_events when deployed: the ledger and history the"
            " event function writes are there, and without them no notification id would be found ours"
        )
    from notifier import feedback

    try:
        feedback.load_key(settings.webhook_public_key)
    except ValueError as error:
        return f"SENDGRID_WEBHOOK_PUBLIC_KEY: {error}"
    return None


def answer(pipeline: Pipeline, request: Request, *, now: Callable[[], float] = time.time) -> Answer:
    """Verify, sort and record one batch; the answer SendGrid gets (see the module's docstring)."""
    early = _refused_method() or _refused_headers(pipeline, now) or _read_body(pipeline)
    if early is not None:
        return early
    body: bytes = g.get(_BODY, b"")
    key = pipeline.settings.webhook_public_key or ""  # install() refused to start without one
    from notifier import feedback  # here, not above: only a request to the webhook loads cryptography

    headers = request.headers
    timestamp = headers.get(TIMESTAMP_HEADER)
    try:
        text = feedback.verify(key, body, headers.get(SIGNATURE_HEADER), timestamp, now())
        parsed = feedback.parse(text, int(timestamp or 0))
    except feedback.Rejected as error:
        _line(pipeline, logging.WARNING, f"rejected: {error}", "rejected", reason=str(error), body_bytes=len(body))
        return _json({"error": f"not signed by SendGrid: {error}"}), 403, JSON
    except feedback.Malformed as error:
        _line(pipeline, logging.WARNING, f"refused a signed batch: {error}", "malformed", reason=str(error),
              body_bytes=len(body))  # fmt: skip
        return _json({"error": str(error)}), 400, JSON
    try:
        ids = current_app.extensions.get(_IDS) or feedback.IdCache()
        recorded = feedback.record(parsed, pipeline.history, pipeline.ledger, pipeline._log, ids)
    except LedgerError as error:
        left = {"unchecked": error.unchecked, "unrecorded": error.unrecorded} if isinstance(
            error, feedback.NotRecorded) else {}  # fmt: skip
        _line(pipeline, logging.ERROR, f"events not recorded, SendGrid retries the batch: {error}", "retrying",
              error=str(error), ledger=pipeline.ledger.name, **left)  # fmt: skip
        return _json({"error": "the events could not be recorded; SendGrid retries"}), 503, JSON
    counts = recorded.counts()
    summary = ", ".join(f"{v} {k}" for k, v in counts.items())
    _line(pipeline, logging.INFO, f"batch: {summary}", "accepted", **counts, alarms=dict(recorded.alarms) or None)
    return _json(counts), 200, JSON


# ---------------------------------------------------------------------------------------------
# Before the function: the method, and the body read bounded in size and time.


def _before_request(pipeline: Pipeline, now: Callable[[], float]) -> Any:
    return _refused_method() or _refused_headers(pipeline, now) or _read_body(pipeline)


def _refused_headers(pipeline: Pipeline, now: Callable[[], float]) -> Answer | None:
    """403 before the body is read when the headers cannot be SendGrid's (missing, garbled, or a
    timestamp out of the window): an unsigned sender costs no body in memory. The body is read and
    dropped (bounded), so that the client reads the answer rather than a reset."""
    if _BODY in g:
        return None  # read already: the headers were checked before it
    from notifier import feedback

    headers = request.headers
    try:
        feedback.check_headers(headers.get(SIGNATURE_HEADER), headers.get(TIMESTAMP_HEADER), now())
    except feedback.Rejected as error:
        _drain()
        _line(pipeline, logging.WARNING, f"rejected: {error}", "rejected", reason=str(error),
              body_bytes_expected=request.content_length)  # fmt: skip
        return _json({"error": f"not signed by SendGrid: {error}"}), 403, {**JSON, "Connection": "close"}
    return None


def _drain() -> None:
    """Read and drop the unread body, at most as much and as long as an oversized one's."""
    sock = request.environ.get("gunicorn.socket")
    watch = nullcontext() if sock is None else watching(sock, time.monotonic() + BODY_SECONDS)
    # HTTPException, OSError: the client went away, or the watchdog shut its socket.
    with watch, suppress(HTTPException, OSError):
        discard(request.environ["wsgi.input"])
    # functions-framework reads the body after the answer (get_data): it would read the stream again.
    request._cached_data = b""  # type: ignore[attr-defined]


def _refused_method() -> Answer | None:
    if request.method == METHOD:
        return None
    return f"SendGrid's Event Webhook posts; {request.method} is not accepted\n", 405, {"Allow": METHOD}


def _read_body(pipeline: Pipeline) -> Answer | None:
    """Read the whole body into ``g`` (once), or the answer when it is too large or too slow."""
    if _BODY in g:
        return None
    read = read_body(MAX_BODY, BODY_SECONDS)
    g.setdefault(_BODY, read.body)
    if read.too_large:
        _line(pipeline, logging.WARNING, f"rejected: the body is over {MAX_BODY:,} bytes", "too large",
              body_bytes_expected=request.content_length)  # fmt: skip
        return _json({"error": f"the body is over {MAX_BODY:,} bytes"}), 413, JSON
    if not read.complete:
        reason = f"not received within {BODY_SECONDS:g} s" if read.too_slow else "ended before its announced length"
        _line(pipeline, logging.WARNING, f"rejected: the body was {reason}; the connection was closed", "incomplete")
        return _json({"error": f"the body was {reason}"}), 400, {**JSON, "Connection": "close"}
    return None


def _error_response(pipeline: Pipeline, error: BaseException) -> Any:
    """A bug of ours: one ERROR line with its traceback, and 500 so that SendGrid retries later."""
    if isinstance(error, HTTPException):
        return error
    _line(pipeline, logging.ERROR, f"failed: {type(error).__name__}: {log.cut(str(error), 200)}", "failed",
          exc_info=True)  # fmt: skip
    return _json({"error": "the batch could not be handled; see the function's log"}), 500, JSON


def _line(pipeline: Pipeline, level: int, message: str, webhook: str, *, exc_info: bool = False, **fields: Any) -> None:
    log.log(pipeline._log, level, f"SendGrid Event Webhook: {message}", exc_info=exc_info, webhook=webhook, **fields)


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value) + "\n"
