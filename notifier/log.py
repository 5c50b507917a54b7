"""JSON log lines on stdout, the structured form Cloud Logging reads (``severity``, ``message``).

Every value passes through :func:`redact` so a registered secret cannot reach the log, whatever
an exception message happens to contain.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from datetime import UTC, datetime
from typing import Any

LOGGER_NAME = "storage-notifier"
_SEVERITY = {"DEBUG": "DEBUG", "INFO": "INFO", "WARNING": "WARNING", "ERROR": "ERROR", "CRITICAL": "CRITICAL"}
_secrets: list[str] = []  # longest first, so a secret containing another is redacted whole
_secrets_lock = threading.Lock()
# Valid in JSON, but line breaks to str.splitlines() and to some log viewers.
_LINE_SEPARATORS = str.maketrans({"\u2028": "\\u2028", "\u2029": "\\u2029", "\x85": "\\u0085"})


def register_secret(value: str) -> None:
    """Never print ``value``: it is replaced by ``[redacted]`` in every log line."""
    if value:
        # Lines are JSON, so also match the secret as JSON escapes it.
        forms = {value, json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1]}
        with _secrets_lock:
            _secrets[:] = sorted(forms.union(_secrets), key=len, reverse=True)


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, "[redacted]")
    return text


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            **getattr(record, "fields", {}),
            "severity": _SEVERITY.get(record.levelname, "DEFAULT"),
            "message": record.getMessage(),
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "logger": record.name,
        }
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
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
    """Writes to whatever ``sys.stdout`` is at the time, so captured output sees the lines."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stdout.write(self.format(record) + "\n")
            sys.stdout.flush()
        except Exception:  # noqa: BLE001 - logging must never take the function down
            self.handleError(record)


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
