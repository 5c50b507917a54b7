"""The HTTP edge: what functions-framework hands over besides the event itself.

Only ``main.py`` calls this module; the pipeline never sees Flask.
"""

from __future__ import annotations

from typing import Any

from flask import has_request_context, request
from werkzeug.exceptions import HTTPException, UnsupportedMediaType

from notifier.pipeline import Pipeline, RetryLater

# Not event deliveries at all (a browser, a health check): answered as the framework would.
_NOT_DELIVERIES = (404, 405)


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
    if isinstance(error, HTTPException) and error.code in _NOT_DELIVERIES:
        return error
    body = request.get_data(cache=True)
    exc_info = False
    if isinstance(error, UnsupportedMediaType):
        reason = (
            f"content type {request.content_type or '(none)'!r} is not JSON: expected application/json"
            " or application/cloudevents+json"
        )
    elif isinstance(error, HTTPException):
        reason = "the request is neither a CloudEvent nor a 1st-gen background event"
        if error.__context__ is not None:  # the framework's own reason, e.g. an unknown event type
            reason += f" ({str(error.__context__)[:200]})"
    else:
        reason = (
            "the body is not the JSON object a CloudEvent or 1st-gen event must be"
            f" ({type(error).__name__}: {str(error)[:200]})"
        )
        exc_info = True  # the framework's parser, or a bug of ours: either way, show where
    pipeline.reject(
        reason,
        exc_info=exc_info,
        content_type=request.content_type,
        body_bytes=len(body),
        body_preview=body[:120].decode("utf-8", "replace"),
    )
    return f"invalid event acknowledged: {reason}\n", 200
