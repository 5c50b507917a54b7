"""The HTTP edge: what functions-framework hands over besides the event itself.

Only ``main.py`` calls this module; the pipeline never sees Flask. :func:`install` bounds every
request before the framework parses it: the body is read here, at most :data:`MAX_BODY` bytes and
within :data:`BODY_SECONDS`, and anything else is acknowledged with one log line.

What cannot be bounded here: a client trickling its *headers* holds one of gunicorn's threads
until they are complete, because gunicorn reads them before the application is called, on a
blocking socket with no deadline (gunicorn/workers/gthread.py, ``handle``: ``next(conn.parser)``),
and functions-framework passes gunicorn no setting that would change it. See README "Limits".
"""

from __future__ import annotations

import json
from functools import partial
from typing import Any

from flask import Flask, Response, g, has_request_context, request
from werkzeug.exceptions import HTTPException, UnsupportedMediaType

from notifier import httpclient, tracing
from notifier.admission import Admission
from notifier.events import json_type_name as type_name  # the same words the event's own checks use
from notifier.events import pubsub_push_problem
from notifier.log import cut
from notifier.pipeline import Pipeline, RetryLater
from notifier.request_body import read_body

# Eventarc delivers events of at most 512 KB (a Cloud Storage one is a few KB: names are at most
# 1 KiB, custom metadata 8 KiB), and a Pub/Sub push of a Cloud Storage notification is no larger.
MAX_BODY = 512 * 1024
# The platform posts a whole event at once; a body still arriving after this is a slow client
# holding one of the worker's few threads, so its connection is closed.
BODY_SECONDS = 1.0

# Not event deliveries at all (a browser, a health check): answered as the framework would.
_NOT_DELIVERIES = (404, 405)

# What a CloudEvent must carry (CloudEvents 1.0 "REQUIRED" attributes) and the version Eventarc sends.
_REQUIRED_ATTRIBUTES = ("specversion", "id", "source", "type")
_SPECVERSION = "1.0"
_STRUCTURED = "application/cloudevents+json"
_NOT_AN_OBJECT = "is not the JSON object a CloudEvent or 1st-gen event must be"
# flask.g flags saying whose code an exception came from. Before _BODY_READ: our own before-request
# hook (a bug of ours); between the two: the framework converting the request (the request's fault);
# after _HANDLING: the function (a bug of ours). Only our bugs are logged with a traceback.
_BODY_READ = "notifier_body_read"
_HANDLING = "notifier_handling"
# flask.g: the token of the request's trace scope (notifier.tracing), reset when the request ends.
_TRACE_SCOPE = "notifier_trace_scope"
# flask.g: this request holds a slot of the app's Admission (app.extensions[ADMISSION]).
_ADMITTED = "notifier_admitted"
ADMISSION = "notifier_admission"
# Over NOTIFY_MAX_IN_FLIGHT: Pub/Sub push redelivers a 429, Eventarc and 1st gen with --retry only.
_TOO_MANY = b"too many requests at once: retry later\n"


# main.py's SendGrid Event Webhook: its requests are signed batches, not events (notifier.webhook).
WEBHOOK_TARGET = "sendgrid_events"


def install(app: Flask, pipeline: Pipeline) -> None:
    """Bound every request to ``app`` and answer whatever is not an event; call once, at import.
    functions-framework names the app after the function it serves (``--target``)."""
    # First of all, for every target: each line of a request carries its trace, even a rejection's.
    app.before_request(partial(_begin_trace, pipeline))
    if (limit := pipeline.settings.max_in_flight) is not None:  # next, so a refusal's line has the trace
        _admit_at_most(app, limit)
    # Flask runs teardowns last registered first: the trace ends before the slot is given back, so a
    # line about earlier refusals said then is not filed under this request's trace.
    app.teardown_request(_end_trace)
    if app.name == WEBHOOK_TARGET:
        from notifier.webhook import install as install_webhook

        install_webhook(app, pipeline)
        return
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.before_request(partial(_read_body, pipeline))
    app.register_error_handler(Exception, partial(error_response, pipeline))


def handle(pipeline: Pipeline, cloud_event: Any) -> None:
    """Hand an event the framework converted to the pipeline: from here on an exception is a bug of
    ours (logged with its traceback); before, and after our body reader, it was the framework
    rejecting the request."""
    setattr(g, _HANDLING, True)
    if not tracing.active():  # no trace header: the event's own traceparent extension, if it has one
        _enter_trace(pipeline, tracing.parse_traceparent(cloud_event.get("traceparent")))
    pipeline.handle(cloud_event, percent_encoded=sent_in_binary_mode())


def _begin_trace(pipeline: Pipeline) -> None:
    """Flask ``before_request``: the request's lines carry the trace its headers name, if any."""
    _enter_trace(pipeline, tracing.from_headers(request.headers))


def _enter_trace(pipeline: Pipeline, context: tracing.TraceContext | None) -> None:
    if (token := tracing.begin(pipeline.settings.project, context)) is not None:
        setattr(g, _TRACE_SCOPE, token)


def _end_trace(_error: BaseException | None) -> None:
    """Flask ``teardown_request``: the worker thread's next request starts without this trace."""
    tracing.end(g.pop(_TRACE_SCOPE, None))


def _admit_at_most(app: Flask, limit: int) -> None:
    """Answer 429 at once, before the body is read, to a request over ``limit`` in flight."""
    admission = app.extensions[ADMISSION] = Admission(limit)
    app.before_request(partial(_admit, admission))
    app.teardown_request(partial(_release, admission))  # runs whatever happened to the request
    httpclient.keep_connections_for(limit)  # each admitted request may be sending at once


def _admit(admission: Admission) -> Any:
    """Flask ``before_request``: a slot, or the 429 (no later hook runs, the body stays unread)."""
    if not admission.enter():
        # Streamed: functions-framework reads an HTTP target's whole body before any other answer
        # (its after_request read_request), unbounded; a streamed one it leaves alone.
        headers = {"Retry-After": "1", "Content-Length": str(len(_TOO_MANY))}
        return Response(iter([_TOO_MANY]), 429, headers, mimetype="text/plain")
    setattr(g, _ADMITTED, True)
    return None


def _release(admission: Admission, _error: BaseException | None) -> None:
    """Flask ``teardown_request``: give back the slot, if this request took one."""
    if g.pop(_ADMITTED, False):
        admission.leave()


def sent_in_binary_mode() -> bool:
    """Whether the current request carried the event's attributes as ``ce-*`` headers."""
    return has_request_context() and "ce-specversion" in request.headers


def error_response(pipeline: Pipeline, error: BaseException) -> Any:
    """Flask's answer for an exception that escaped the function or the framework's parsing.

    A request that cannot be read as an event is acknowledged (2xx) after one ERROR line:
    redelivering it could never succeed. Only :class:`RetryLater` answers 500.
    """
    if isinstance(error, RetryLater):
        return f"retry later: {error}\n", 500
    if not g.get(_BODY_READ):  # our before-request hook raised; the body is not read again, unbounded
        return _acknowledge(pipeline, _our_bug(error), None, exc_info=True)
    if isinstance(error, HTTPException) and error.code in _NOT_DELIVERIES:
        return error
    body = _body_so_far()
    exc_info = False
    if isinstance(error, UnsupportedMediaType):
        reason = (
            f"content type {request.content_type or '(none)'!r} is not JSON: expected application/json"
            " or application/cloudevents+json"
        )
    elif isinstance(error, HTTPException):
        reason = _what_the_cloudevent_lacks(body) or pubsub_push_problem(_json_object(body))
        if reason is None:
            reason = "the request is neither a CloudEvent nor a 1st-gen background event"
            if error.__context__ is not None:  # the framework's own reason, e.g. an unknown event type
                reason += f" ({str(error.__context__)[:200]})"
    elif g.get(_HANDLING):
        reason, exc_info = _our_bug(error), True
    else:  # functions-framework raised while converting the request: say what is wrong with it instead
        reason = _body_problem(body) or _first_gen_problem(_json_object(body)) or _unconverted(error)
    return _acknowledge(pipeline, reason, body, exc_info=exc_info)


def _our_bug(error: BaseException) -> str:
    return f"could not be handled ({type(error).__name__}: {str(error)[:200]})"


# ---------------------------------------------------------------------------------------------
# Reading the body: bounded in size and in time, before functions-framework parses it.


def _read_body(pipeline: Pipeline) -> Any:
    """Flask ``before_request``: read the whole body now, or answer without calling the function."""
    answer = _bounded_body(pipeline)
    setattr(g, _BODY_READ, True)  # from here on, until handle(), an exception is the framework's
    return answer


def _bounded_body(pipeline: Pipeline) -> Any:
    if request.method != "POST":
        return None
    read = read_body(MAX_BODY, BODY_SECONDS)
    expected = request.content_length
    if read.too_large:
        size = f"{expected:,} bytes" if expected is not None else f"more than {MAX_BODY:,} bytes (sent chunked)"
        reason = f"request body of {size} is over the {MAX_BODY:,}-byte limit; Eventarc events are at most 512 KB"
    elif read.too_slow:
        reason = f"request body not received within {BODY_SECONDS:g} s; the connection was closed"
    elif read.ended_early:
        reason = "request body ended before its announced length; the client went away"
    else:
        return None
    # gunicorn closes the connection itself when a body is left unread (it drains at most 64 KiB).
    return _acknowledge(pipeline, reason, None, body_bytes_expected=expected)


def _body_so_far() -> bytes:
    try:
        return request.get_data(cache=True)
    except (HTTPException, OSError):
        return b""


def _acknowledge(pipeline: Pipeline, reason: str, body: bytes | None, exc_info: bool = False, **fields: Any) -> Any:
    """One ERROR line, and a 2xx: a non-2xx would have the platform redeliver what can never work."""
    pipeline.reject(
        reason,
        exc_info=exc_info,
        content_type=request.content_type,
        body_bytes=None if body is None else len(body),  # None: not read (too large or too slow)
        body_preview=None if body is None else body[:120].decode("utf-8", "replace"),
        **fields,
    )
    return f"invalid event acknowledged: {cut(reason)}\n", 200


# ---------------------------------------------------------------------------------------------
# Saying what a CloudEvent lacks, where functions-framework only says it found no equivalent type.


def _what_the_cloudevent_lacks(body: bytes) -> str | None:
    if "ce-specversion" in request.headers or any(f"ce-{a}" in request.headers for a in _REQUIRED_ATTRIBUTES):
        mode, where = "binary-mode CloudEvent", "header ce-{}"
        attributes = {a: request.headers.get(f"ce-{a}") for a in _REQUIRED_ATTRIBUTES}
    elif request.mimetype == _STRUCTURED and (attributes := _json_object(body)) is not None:
        mode, where = "structured CloudEvent", "attribute {}"
    else:
        return None
    missing = [where.format(a) for a in _REQUIRED_ATTRIBUTES if not attributes.get(a)]
    if missing:
        return f"{mode}: {', '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing"
    version = attributes["specversion"]
    if version != _SPECVERSION:
        shown = str(version) if len(str(version)) <= 40 else f"{str(version)[:40]}…"
        return f"{mode}: specversion {shown} is not supported; expected {_SPECVERSION}"
    return None


# ---------------------------------------------------------------------------------------------
# Saying what is wrong with a body functions-framework raised on (no traceback: the request's fault).


def _body_problem(body: bytes) -> str | None:
    """Why ``body`` is not a JSON object (in binary mode: why it is not readable JSON data), or None."""
    binary = "ce-specversion" in request.headers
    where = "binary-mode CloudEvent: data" if binary else "the body"
    try:
        value = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError as error:
        return f"{where} is not valid UTF-8 (byte 0x{body[error.start]:02x} at position {error.start})"
    except RecursionError:  # "[[[[...": deeper than Python's parser goes
        return f"{where} is nested too deeply" if binary else f"the body {_NOT_AN_OBJECT}: it is nested too deeply"
    except ValueError as error:
        return f"{where} is not JSON ({str(error)[:200]})"
    if binary or isinstance(value, dict):
        return None
    return f"the body {_NOT_AN_OBJECT}: it is {type_name(value)}"


def _first_gen_problem(body: dict[str, Any] | None) -> str | None:
    """The first field of a 1st-gen event's ``context`` that has the wrong type, if any."""
    if body is None or "context" not in body:
        return None
    context = body["context"]
    if not isinstance(context, dict):
        return f"context: expected a JSON object, got {type_name(context)}"
    resource = context.get("resource", "")
    if isinstance(resource, dict):
        resource = resource.get("name")
        if not isinstance(resource, str):
            return f"context.resource.name: expected a string, got {type_name(resource)}"
    elif not isinstance(resource, str):
        return f"context.resource: expected a string or a JSON object, got {type_name(resource)}"
    event_type = context.get("eventType", "")
    if not isinstance(event_type, str):
        return f"context.eventType: expected a string, got {type_name(event_type)}"
    return None


def _unconverted(error: BaseException) -> str:
    return (
        "the request is neither a CloudEvent nor a 1st-gen background event (functions-framework could"
        f" not convert it: {type(error).__name__}: {str(error)[:200]})"
    )


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
