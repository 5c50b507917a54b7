"""Trace correlation: the request's trace on every log line of that request, the way Cloud Logging
groups an entry with its trace (``logging.googleapis.com/trace``, ``spanId``, ``trace_sampled``).

The trace comes from the W3C ``traceparent`` header, else Google's ``X-Cloud-Trace-Context``, else the
CloudEvent's own ``traceparent`` extension (:mod:`notifier.http` reads them; :mod:`notifier.log`
writes the fields). Every value comes from outside: it is used only when it is exactly well formed,
which also bounds it (fixed lengths), and otherwise ignored without a word (a line per hostile header
would let anyone fill the log). Imported by :mod:`notifier.log`, so on every cold start: stdlib only.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from dataclasses import dataclass
from typing import Protocol

TRACE_FIELD = "logging.googleapis.com/trace"
SPAN_FIELD = "logging.googleapis.com/spanId"
SAMPLED_FIELD = "logging.googleapis.com/trace_sampled"

# W3C Trace Context: version-traceid-parentid-flags, lower-case hex. A later version may append
# "-..." fields (read its first four); version ff is forbidden; 00 has exactly these four.
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[\x21-\x7e]*)?")
_TRACEPARENT_MAX = 512  # characters: checked before the pattern runs, whatever a later version adds
_INVALID_VERSION = "ff"
_SAMPLED_BIT = 0x01
# Google's header: TRACE_ID/SPAN_ID[;o=OPTIONS], the span id in decimal (an unsigned 64-bit number).
_CLOUD_TRACE = re.compile(r"([0-9a-fA-F]{32})/([0-9]{1,20})(?:;o=([01]))?")
_CLOUD_TRACE_MAX = 64
_SPAN_MAX = 2**64 - 1
# The project as config.py accepts it; checked again because a scope can be opened by anyone.
_PROJECT = re.compile(r"(?:[a-z0-9][a-z0-9.-]{0,61}[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]")


class Headers(Protocol):
    """What :func:`from_headers` reads: Flask's request headers (a dict in tests)."""

    def get(self, key: str, default: None = None) -> str | None: ...


@dataclass(frozen=True, slots=True)
class TraceContext:
    """A request's trace: 32 and 16 lower-case hex digits (neither all zeros) and the sampled flag."""

    trace_id: str
    span_id: str
    sampled: bool


@dataclass(frozen=True, slots=True)
class _Correlation:
    """What each log line of the current request adds: fixed-size, validated strings and a bool."""

    trace: str  # projects/P/traces/T
    span_id: str
    sampled: bool

    def fields(self) -> dict[str, str | bool]:
        return {TRACE_FIELD: self.trace, SPAN_FIELD: self.span_id, SAMPLED_FIELD: self.sampled}


_current: ContextVar[_Correlation | None] = ContextVar("notifier_trace", default=None)


def parse_traceparent(value: object) -> TraceContext | None:
    """A W3C ``traceparent`` value's trace, or None unless it is exactly well formed."""
    if not isinstance(value, str) or len(value) > _TRACEPARENT_MAX:
        return None
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return None
    version, trace_id, span_id, flags, more = match.groups()
    if version == _INVALID_VERSION or (version == "00" and more is not None):
        return None
    return _context(trace_id, span_id, sampled=bool(int(flags, 16) & _SAMPLED_BIT))


def parse_cloud_trace_context(value: object) -> TraceContext | None:
    """An ``X-Cloud-Trace-Context`` value's trace (its decimal span id as 16 hex digits), or None."""
    if not isinstance(value, str) or len(value) > _CLOUD_TRACE_MAX:
        return None
    match = _CLOUD_TRACE.fullmatch(value)
    if match is None:
        return None
    trace_id, span, options = match.groups()
    if int(span) > _SPAN_MAX:
        return None
    return _context(trace_id.lower(), f"{int(span):016x}", sampled=options == "1")


# (header, parser), in the order they are believed.
_HEADERS: tuple[tuple[str, Callable[[object], TraceContext | None]], ...] = (
    ("traceparent", parse_traceparent),
    ("X-Cloud-Trace-Context", parse_cloud_trace_context),
)


def from_headers(headers: Headers) -> TraceContext | None:
    """The first well-formed trace among the request's headers (two of one header arrive joined
    with a comma, which no pattern accepts: ambiguous, so ignored, as W3C asks)."""
    for name, parse in _HEADERS:
        if (context := parse(headers.get(name))) is not None:
            return context
    return None


def _context(trace_id: str, span_id: str, *, sampled: bool) -> TraceContext | None:
    if trace_id.strip("0") == "" or span_id.strip("0") == "":  # all zeros: "no trace" in both formats
        return None
    return TraceContext(trace_id, span_id, sampled)


# ---------------------------------------------------------------------------------------------
# The scope: one request's trace, in a context variable (each thread has its own context).


def begin(project: str | None, context: TraceContext | None) -> Token[_Correlation | None] | None:
    """Log the current context's lines with ``context`` until :func:`end`; nothing without a
    project (no trace name can be made) or without a trace. The token is for :func:`end`."""
    if context is None or project is None or not _PROJECT.fullmatch(project):
        return None
    return _current.set(_Correlation(f"projects/{project}/traces/{context.trace_id}", context.span_id, context.sampled))


def end(token: Token[_Correlation | None] | None) -> None:
    """Back to what was current before :func:`begin` gave ``token`` (None: it set nothing)."""
    if token is None:
        return
    try:
        _current.reset(token)
    except (ValueError, RuntimeError):  # another context's token, or used already: clear instead
        _current.set(None)


@contextmanager
def scope(project: str | None, context: TraceContext | None) -> Iterator[None]:
    token = begin(project, context)
    try:
        yield
    finally:
        end(token)


def active() -> bool:
    """Whether the current context's lines already carry a trace."""
    return _current.get() is not None


def log_fields() -> dict[str, str | bool]:
    """The trace fields for a log line now: empty outside a scope."""
    correlation = _current.get()
    return {} if correlation is None else correlation.fields()
