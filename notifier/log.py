"""JSON log lines on stdout, the structured form Cloud Logging reads (``severity``, ``message``).

Every value passes through :func:`redact` so a registered secret cannot reach the log, whatever
an exception message happens to contain. Every line is bounded: a long value is redacted first, then
cut with its length stated, so hostile input cannot make a megabyte line (or half a secret).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from notifier import tracing

LOGGER_NAME = "storage-notifier"
_SEVERITY = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARNING", "ERROR": "ERROR", "CRITICAL": "CRITICAL"}
_secrets: list[str] = []  # longest first, so a secret containing another is redacted whole
_secrets_lock = threading.Lock()
# Valid in JSON, but line breaks to str.splitlines() and to some log viewers.
_LINE_SEPARATORS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})
FIELD_LIMIT = 2000  # characters of one value, or of the message, before it is cut
TRACEBACK_LIMIT = 8000  # characters of a traceback: its first and last halves are kept
LINE_LIMIT = 16 * 1024  # bytes of one written line (Cloud Logging takes 256 KB; a reader, far less)
_WORST_ESCAPE = 6  # JSON writes a control character as six (\u0001)


def register_secret(value: str) -> None:
    """Never print ``value``: it is replaced by ``[redacted]`` in every log line."""
    if value:
        with _secrets_lock:
            _secrets[:] = sorted(_forms(value).union(_secrets), key=len, reverse=True)


def forget_secret(value: str) -> None:
    """Stop looking for ``value`` (an access token long since replaced): every line is checked for
    every secret, so a list that grew with each hourly token would cost more with every line."""
    forms = _forms(value)
    with _secrets_lock:
        _secrets[:] = [secret for secret in _secrets if secret not in forms]


def _forms(value: str) -> set[str]:
    # Lines are JSON, so also match the secret as JSON escapes it.
    return {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    return text


def cut(text: str, limit: int = FIELD_LIMIT) -> str:
    """``text`` if it is at most ``limit`` characters, else its start and how long it was."""
    return text if len(text) <= limit else f"{text[:limit]}…[cut: {len(text)} characters]"


def for_terminal(text: str, limit: int = 300) -> str:
    """Untrusted text (an object name, a log line) for a terminal: secrets redacted, control and
    formatting characters (escape sequences, bidi overrides) shown as escapes, cut short."""
    text = redact(text)  # before cutting, so no part of a secret survives
    shown = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text[:limit])
    return shown if len(text) <= limit else f"{shown}… ({len(text)} characters)"


def _cut_middle(text: str, limit: int) -> str:
    # A traceback says most at both ends: where it started and what was finally raised.
    if len(text) <= limit:
        return text
    half = limit // 2
    return f"{text[:half]}…[cut: {len(text)} characters]…{text[-half:]}"


def _bounded(value: Any, limit: int) -> Any:
    """A value safe to log: redacted, then cut (in that order, so no prefix of a secret survives)."""
    if isinstance(value, str):
        return cut(redact(value), limit)
    if value is None or isinstance(value, bool | int | float):
        return value
    text = json.dumps(value, ensure_ascii=False, default=str)
    return value if len(text) <= limit else cut(redact(text), limit)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = getattr(record, "fields", {})
        traceback = self.formatException(record.exc_info) if record.exc_info else None
        # The request's trace (notifier.tracing): validated fixed-size strings, kept whole on every line.
        trace = tracing.log_fields()
        # First every value at FIELD_LIMIT; if escaping still makes the line too long, a share each.
        shares = len(fields) + 1 + (4 if traceback else 0) + 1 + (1 if trace else 0)
        for limit in (FIELD_LIMIT, LINE_LIMIT // (_WORST_ESCAPE * shares)):
            line = self._line(record, fields, traceback, limit, trace)
            if len(line) * 4 <= LINE_LIMIT or len(line.encode("utf-8")) <= LINE_LIMIT:
                return line
        left_out = {"cut": f"{len(fields)} field(s) and any traceback left out: the line was over {LINE_LIMIT} bytes"}
        return self._line(record, left_out, None, 200, trace)

    def _line(
        self, record: logging.LogRecord, fields: dict[str, Any], traceback: str | None, limit: int,
        trace: dict[str, str | bool],
    ) -> str:  # fmt: skip
        entry: dict[str, Any] = {
            **{key: _bounded(value, limit) for key, value in fields.items()},
            "severity": _SEVERITY.get(record.levelname, "DEFAULT"),
            "message": _bounded(record.getMessage(), limit),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "logger": record.name,
            **trace,
        }
        if traceback:
            entry["traceback"] = _cut_middle(redact(traceback), min(TRACEBACK_LIMIT, 4 * limit))
        line = json.dumps(entry, ensure_ascii=False, default=str)
        if not line.isascii():
            try:
                line.encode("utf-8")
            except UnicodeEncodeError:  # lone surrogates from hostile input: escape instead
                line = json.dumps(entry, default=str)
            if "\u2028" in line or "\u2029" in line or "\x85" in line:  # translate() is slow on non-ASCII
                line = line.translate(_LINE_SEPARATORS)
        return redact(line)


class _StdoutHandler(logging.Handler):
    """Writes to whatever ``sys.stdout`` is at the time, so captured output sees the lines (to
    ``sys.stderr`` inside :func:`lines_to_stderr`)."""

    to_stderr = False

    def emit(self, record: logging.LogRecord) -> None:
        try:
            stream = sys.stderr if _StdoutHandler.to_stderr else sys.stdout
            stream.write(self.format(record) + "\n")
            stream.flush()
        except Exception:  # noqa: BLE001 - logging must never take the function down
            self.handleError(record)


@contextmanager
def lines_to_stderr() -> Iterator[None]:
    """For a command at a terminal whose own lines go to stdout (``flush``, ``pending``): the JSON
    log lines go to stderr meanwhile. The function itself always logs to stdout."""
    before, _StdoutHandler.to_stderr = _StdoutHandler.to_stderr, True
    try:
        yield
    finally:
        _StdoutHandler.to_stderr = before


def get_logger() -> logging.Logger:
    """The application logger, writing JSON lines to stdout."""
    logger = logging.getLogger(LOGGER_NAME)
    if not logger.handlers:
        handler = _StdoutHandler()
        handler.setFormatter(JsonFormatter())
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    return logger


def log(logger: logging.Logger, level: int, message: str, *, exc_info: bool = False, **fields: Any) -> None:
    """Log one line; ``fields`` become top-level JSON keys (None values are left out)."""
    fields = {k: v for k, v in fields.items() if v is not None}
    logger.log(level, message, exc_info=exc_info, extra={"fields": fields})
