"""Environment → :class:`Settings`, validated once at start-up with every problem reported at once.

This is the only module that reads the environment. Error messages name the variable and what was
expected, and never repeat a secret's value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from email import errors
from email.policy import default as default_policy
from email.utils import formataddr
from pathlib import Path

BACKENDS = ("sendgrid", "outbox", "console")

# The WHATWG "valid e-mail address" grammar: what browsers accept in <input type=email>. Strict
# enough to catch typos, loose enough for every real address; stdlib only, so no import cost.
_ADDR_SPEC = re.compile(
    r"[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*"
)

_LOCAL_FROM = "Storage Notifier <storage-notifier@example.com>"
_LOCAL_TO = "you@example.com"


class ConfigError(ValueError):
    """Configuration is unusable; the message lists every problem, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox: the address proper and an optional display name."""

    email: str
    name: str = ""

    def __str__(self) -> str:
        return formataddr((self.name, self.email))


@dataclass(frozen=True, slots=True)
class Settings:
    sender: Address
    recipients: tuple[Address, ...]
    backend: str
    outbox_dir: Path
    templates_dir: Path | None
    sendgrid_api_host: str
    sendgrid_timeout: float
    # Time budget for delivering one event, retries included; must stay under the function timeout.
    deadline_seconds: float
    max_attempts: int
    sendgrid_api_key: str = field(default="", repr=False)


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the environment; raise :class:`ConfigError` listing every problem."""
    env = os.environ if environ is None else environ
    problems: list[str] = []

    api_key = env.get("SENDGRID_API_KEY", "").strip()  # secrets piped through echo end in "\n"
    if any(ch.isspace() or not ch.isprintable() for ch in api_key):
        problems.append("SENDGRID_API_KEY: contains whitespace or control characters")
    raw_backend = env.get("NOTIFY_BACKEND", "").strip()
    backend = raw_backend.lower()
    if not backend and not api_key and env.get("K_SERVICE"):
        # On Cloud Run functions the outbox is an instance's scratch disk: every email would vanish.
        problems.append(
            "SENDGRID_API_KEY: not set, and this is a deployed function (K_SERVICE is set); set the "
            "secret, or NOTIFY_BACKEND=console to only log the emails"
        )
    backend = backend or ("sendgrid" if api_key else "outbox")
    if backend not in BACKENDS:
        problems.append(f"NOTIFY_BACKEND: expected one of {', '.join(BACKENDS)}, got {raw_backend!r}")
    elif backend == "sendgrid" and not api_key:
        problems.append("SENDGRID_API_KEY: required when NOTIFY_BACKEND is sendgrid")
    local = backend != "sendgrid"

    sender = _addresses(env, "NOTIFY_FROM", _LOCAL_FROM if local else "", problems)
    if len(sender) > 1:
        problems.append(f"NOTIFY_FROM: expected one address, got {len(sender)}")
    recipients = _addresses(env, "NOTIFY_TO", _LOCAL_TO if local else "", problems)

    templates_dir = None
    if raw := env.get("NOTIFY_TEMPLATES_DIR", "").strip():
        templates_dir = Path(raw)
        if not templates_dir.is_dir():
            problems.append(f"NOTIFY_TEMPLATES_DIR: {raw!r} is not a directory")

    host = env.get("SENDGRID_API_HOST", "").strip().rstrip("/") or "https://api.sendgrid.com"
    if not re.fullmatch(r"https?://[^\s/?#]+(?:/[^\s?#]*)?", host):
        problems.append(f"SENDGRID_API_HOST: expected an http(s) URL, got {host!r}")

    timeout = _number(env, "SENDGRID_TIMEOUT_SECONDS", 10.0, problems)
    deadline = _number(env, "NOTIFY_DEADLINE_SECONDS", 45.0, problems)
    attempts = _number(env, "NOTIFY_MAX_ATTEMPTS", 5, problems, integer=True)

    outbox_dir = Path(env.get("NOTIFY_OUTBOX_DIR", "").strip() or "outbox")
    if backend == "outbox":
        problems.extend(_writable_directory_problems(outbox_dir, "NOTIFY_OUTBOX_DIR"))

    if problems:
        if api_key:  # a key pasted into the wrong variable must not be echoed back
            problems = [p.replace(api_key, "[redacted]") for p in problems]
        raise ConfigError(problems)
    return Settings(
        sender=sender[0],
        recipients=tuple(recipients),
        backend=backend,
        outbox_dir=outbox_dir,
        templates_dir=templates_dir,
        sendgrid_api_host=host,
        sendgrid_timeout=timeout,
        deadline_seconds=deadline,
        max_attempts=int(attempts),
        sendgrid_api_key=api_key,
    )


def parse_addresses(raw: str, where: str) -> list[Address]:
    """Parse a comma-separated address list; raise ``ValueError`` naming ``where`` and the culprit."""
    if "\r" in raw or "\n" in raw:
        raise ValueError(f"{where}: must not contain line breaks")
    # The email package's RFC 5322 parser: it records defects instead of guessing silently.
    header = default_policy.header_factory("to", raw)
    if any(not isinstance(d, errors.ObsoleteHeaderDefect) for d in header.defects):
        raise ValueError(f"{where}: {raw!r} is not a valid email address list")
    parsed = []
    for mailbox in header.addresses:
        if not _ADDR_SPEC.fullmatch(mailbox.addr_spec):
            raise ValueError(f"{where}: {mailbox.addr_spec or raw!r} is not a valid email address")
        parsed.append(Address(email=mailbox.addr_spec, name=mailbox.display_name))
    if not parsed:
        raise ValueError(f"{where}: expected at least one email address")
    return parsed


def _addresses(env: Mapping[str, str], var: str, default: str, problems: list[str]) -> list[Address]:
    raw = env.get(var, "").strip() or default
    if not raw:
        problems.append(f"{var}: required when NOTIFY_BACKEND is sendgrid")
        return [Address("invalid@invalid")]
    try:
        return parse_addresses(raw, var)
    except ValueError as error:
        problems.append(str(error))
        return [Address("invalid@invalid")]


def _writable_directory_problems(path: Path, var: str) -> list[str]:
    """A directory we can write to, or can create: checked now rather than on every event."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == path and not path.is_dir():
        return [f"{var}: {str(path)!r} exists and is not a directory"]
    if not existing.is_dir():
        return [f"{var}: cannot create {str(path)!r}: {str(existing)!r} is not a directory"]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [f"{var}: {str(existing)!r} is not writable"]
    return []


def _number(
    env: Mapping[str, str], var: str, default: float, problems: list[str], *, integer: bool = False
) -> float:
    raw = env.get(var, "").strip()
    if not raw:
        return default
    try:
        value = int(raw) if integer else float(raw)
    except ValueError:
        value = -1
    if not value > 0 or value != value or value == float("inf"):
        kind = "a positive whole number" if integer else "a positive number of seconds"
        problems.append(f"{var}: expected {kind}, got {raw!r}")
        return default
    return value
