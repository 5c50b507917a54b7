"""Environment (+ ``notify.toml``) → :class:`Settings`, validated once at start-up with every
problem reported at once.

This is the only module that reads the environment. Error messages name the variable and what was
expected, and never repeat a secret's value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from notifier.addresses import Address, parse_addresses
from notifier.rules import RuleSet
from notifier.rulesfile import EnvDefaults, default_rules, load_rules, parse_duration

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

BACKENDS = ("sendgrid", "smtp", "outbox", "console")

ROOT = Path(__file__).resolve().parent.parent  # where main.py is
BUILTIN_TEMPLATES = ROOT / "templates"
_LOCAL_FROM = Address("storage-notifier@example.com", "Storage Notifier")
_LOCAL_TO = Address("you@example.com")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
_EMULATOR_HOST = re.compile(r"https?://[A-Za-z0-9.\[\]:-]+(:[0-9]{1,5})?/?")  # scheme, host, port: nothing else


class ConfigError(ValueError):
    """Configuration is unusable; the message lists every problem, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


@dataclass(frozen=True, slots=True)
class Settings:
    rules: RuleSet
    rules_file: Path | None  # None: every event goes to NOTIFY_TO
    backend: str
    outbox_dir: Path
    templates_dir: Path | None
    sendgrid_api_host: str
    sendgrid_timeout: float
    # Time budget for delivering one event, retries included; must stay under the function timeout.
    deadline_seconds: float
    max_attempts: int
    # Delivery state (see notifier/ledger): the bucket, else an SQLite file, else memory.
    state_bucket: str | None = None
    storage_emulator_host: str | None = None
    ledger_file: Path | None = None
    dead_letter_dir: Path = Path("deadletter")
    # Seconds; older events are dropped as "expired". None: no limit (local runs, where nothing
    # redelivers); deployed, it defaults to the platform's 24-hour redelivery window.
    max_event_age: float | None = 24 * 3600.0
    max_backoff: float = 8.0  # seconds between in-process retries, at most
    timezone: ZoneInfo | None = None  # NOTIFY_TIMEZONE: emails show local time too
    redirect_to: Address | None = None  # NOTIFY_REDIRECT_TO: every message goes here instead
    sendgrid_sandbox: bool = False  # SendGrid validates, sends nothing
    smtp_url: str | None = None
    smtp_password: str = field(default="", repr=False)
    deployed: bool = False  # running on Cloud Run functions (K_SERVICE is set)
    key_secret: str | None = None  # the Secret Manager secret holding the key, for messages
    sendgrid_api_key: str = field(default="", repr=False)

    @property
    def lease_seconds(self) -> float:
        """How long a claim protects a notification: longer than any delivery attempt can take."""
        return self.deadline_seconds + 60.0


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the environment; raise :class:`ConfigError` listing every problem."""
    env = os.environ if environ is None else environ
    problems: list[str] = []

    api_key = env.get("SENDGRID_API_KEY", "").strip()  # secrets piped through echo end in "\n"
    if any(ch.isspace() or not ch.isprintable() for ch in api_key):
        problems.append("SENDGRID_API_KEY: contains whitespace or control characters")
    raw_backend = env.get("NOTIFY_BACKEND", "").strip()
    backend = raw_backend.lower()
    if not backend and not api_key and not env.get("SMTP_URL", "").strip() and env.get("K_SERVICE"):
        # On Cloud Run functions the outbox is an instance's scratch disk: every email would vanish.
        problems.append(
            "SENDGRID_API_KEY: not set, and this is a deployed function (K_SERVICE is set); set the "
            "secret, or NOTIFY_BACKEND=console to only log the emails"
        )
    if backend == "outbox" and env.get("K_SERVICE"):
        problems.append(
            "NOTIFY_BACKEND: outbox on a deployed function (K_SERVICE is set) writes every email to the"
            " instance's scratch disk, where it is lost; use sendgrid or smtp, or console to only log them"
        )
    smtp_url = env.get("SMTP_URL", "").strip()
    backend = backend or ("sendgrid" if api_key else "smtp" if smtp_url else "outbox")
    if backend not in BACKENDS:
        problems.append(f"NOTIFY_BACKEND: expected one of {', '.join(BACKENDS)}, got {raw_backend!r}")
    elif backend == "sendgrid" and not api_key:
        problems.append("SENDGRID_API_KEY: required when NOTIFY_BACKEND is sendgrid")
    elif backend == "smtp" and not smtp_url:
        problems.append("SMTP_URL: required when NOTIFY_BACKEND is smtp (smtp://user@host:587 or smtps://host:465)")
    smtp_password = env.get("SMTP_PASSWORD", "")
    if re.match(r"smtps?://[^@/]*:[^@/]*@", smtp_url):
        problems.append("SMTP_URL: holds a password; put it in SMTP_PASSWORD (from Secret Manager) instead")
    if smtp_url and not re.fullmatch(r"smtps?://(?:[^@/\s]+@)?[^:/\s@?]+(?::\d{1,5})?/?(?:\?tls=none)?", smtp_url):
        shown = _without_password(smtp_url)
        problems.append(f"SMTP_URL: expected smtp://[user@]host[:port] or smtps://..., got {shown!r}")
    local = backend not in ("sendgrid", "smtp")

    env_sender = _env_addresses(env, "NOTIFY_FROM", problems)
    if env_sender is not None and len(env_sender) > 1:
        problems.append(f"NOTIFY_FROM: expected one address, got {len(env_sender)}")
    env_to = _env_addresses(env, "NOTIFY_TO", problems)

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

    deployed = bool(env.get("K_SERVICE"))
    max_event_age = _duration(env, "NOTIFY_MAX_EVENT_AGE", 24 * 3600.0 if deployed else None, problems)
    max_backoff = _number(env, "NOTIFY_MAX_BACKOFF_SECONDS", 8.0, problems)
    timezone = _timezone(env, problems)
    redirect = _env_addresses(env, "NOTIFY_REDIRECT_TO", problems)
    if redirect is not None and len(redirect) > 1:
        problems.append(f"NOTIFY_REDIRECT_TO: expected one address, got {len(redirect)}")
    sandbox = _boolean(env, "SENDGRID_SANDBOX", problems)
    outbox_dir = Path(env.get("NOTIFY_OUTBOX_DIR", "").strip() or "outbox")
    if backend == "outbox":
        problems.extend(_writable_directory_problems(outbox_dir, "NOTIFY_OUTBOX_DIR"))

    state_bucket = env.get("NOTIFY_STATE_BUCKET", "").strip().removeprefix("gs://").rstrip("/") or None
    if state_bucket is not None and not _BUCKET.fullmatch(state_bucket):
        problems.append(f"NOTIFY_STATE_BUCKET: {state_bucket!r} is not a bucket name")
    storage_emulator_host = _storage_emulator_host(env, deployed, problems)

    # Where the environment is silent, local backends need no addresses: the mail stays here.
    defaults = EnvDefaults(
        sender=env_sender[0] if env_sender else (_LOCAL_FROM if local else None),
        to=tuple(env_to) if env_to else ((_LOCAL_TO,) if local else ()),
    )
    rules_file = _rules_file(env, problems)
    if rules_file is not None:
        rules, file_problems = load_rules(
            rules_file, defaults, [d for d in (templates_dir, BUILTIN_TEMPLATES) if d], state_bucket
        )
        problems.extend(file_problems)
    else:
        for var, value in (("NOTIFY_FROM", defaults.sender), ("NOTIFY_TO", defaults.to)):
            if not value and (env_sender if var == "NOTIFY_FROM" else env_to) is None:
                problems.append(f"{var}: required when NOTIFY_BACKEND is {backend} (or use a notify.toml)")
        rules = default_rules(defaults, state_bucket) if defaults.sender and defaults.to else None

    if problems:
        for secret in (api_key, smtp_password):  # a secret pasted into the wrong variable is not echoed
            if secret:
                problems = [p.replace(secret, "[redacted]") for p in problems]
        raise ConfigError(problems)
    # Local runs keep the ledger in an SQLite file beside the outbox, so duplicates are caught
    # across restarts too; deployed without a state bucket it is per-instance memory.
    ledger_file = Path(raw) if (raw := env.get("NOTIFY_LEDGER_FILE", "").strip()) else None
    if ledger_file is None and backend == "outbox" and state_bucket is None:
        ledger_file = outbox_dir / "ledger.sqlite3"
    dead_letter_default = outbox_dir / "deadletter" if backend == "outbox" else Path("deadletter")
    dead_letter_dir = Path(env.get("NOTIFY_DEAD_LETTER_DIR", "").strip() or dead_letter_default)

    assert rules is not None
    return Settings(
        state_bucket=state_bucket,
        storage_emulator_host=storage_emulator_host,
        ledger_file=ledger_file,
        dead_letter_dir=dead_letter_dir,
        max_event_age=max_event_age,
        max_backoff=max_backoff,
        timezone=timezone,
        redirect_to=redirect[0] if redirect else None,
        sendgrid_sandbox=sandbox,
        smtp_url=smtp_url or None,
        smtp_password=smtp_password,
        deployed=deployed,
        key_secret=env.get("NOTIFY_KEY_SECRET", "").strip() or None,
        rules=rules,
        rules_file=rules_file,
        backend=backend,
        outbox_dir=outbox_dir,
        templates_dir=templates_dir,
        sendgrid_api_host=host,
        sendgrid_timeout=timeout,
        deadline_seconds=deadline,
        max_attempts=int(attempts),
        sendgrid_api_key=api_key,
    )


def _env_addresses(env: Mapping[str, str], var: str, problems: list[str]) -> list[Address] | None:
    """The addresses in ``var``; None when it is unset, [] when it is invalid (a problem noted)."""
    raw = env.get(var, "").strip()
    if not raw:
        return None
    try:
        return parse_addresses(raw, var)
    except ValueError as error:
        problems.append(str(error))
        return []


def _rules_file(env: Mapping[str, str], problems: list[str]) -> Path | None:
    """NOTIFY_CONFIG if set (it must exist), else notify.toml beside main.py if there is one."""
    if raw := env.get("NOTIFY_CONFIG", "").strip():
        path = Path(raw)
        if not path.is_file():
            problems.append(f"NOTIFY_CONFIG: {raw!r} is not a file")
            return None
        return path
    beside_main = ROOT / "notify.toml"
    return beside_main if beside_main.is_file() else None


def _storage_emulator_host(env: Mapping[str, str], deployed: bool, problems: list[str]) -> str | None:
    """A local Cloud Storage (fake-gcs-server) for the ledger, links and attachments: never deployed,
    where it would send the state and every download link to another server than Cloud Storage."""
    value = env.get("STORAGE_EMULATOR_HOST", "").strip()
    if not value:
        return None
    if deployed:
        problems.append(
            "STORAGE_EMULATOR_HOST: set on a deployed function (K_SERVICE is set), so the ledger, links and"
            " attachments would use that server instead of Cloud Storage; remove it from the environment"
        )
    elif not _EMULATOR_HOST.fullmatch(value):
        problems.append(f"STORAGE_EMULATOR_HOST: expected http://HOST:PORT (a local fake-gcs-server), got {value!r}")
    return value.rstrip("/")


def _duration(env: Mapping[str, str], var: str, default: float | None, problems: list[str]) -> float | None:
    """Seconds from "90", "30m", "12h" or "7d"."""
    raw = env.get(var, "").strip()
    if not raw:
        return default
    seconds = parse_duration(raw.lower())
    if seconds is None or seconds <= 0:
        problems.append(f"{var}: expected a duration such as 90 (seconds), 30m, 12h or 7d, got {raw!r}")
        return default
    return seconds


def _timezone(env: Mapping[str, str], problems: list[str]) -> ZoneInfo | None:
    raw = env.get("NOTIFY_TIMEZONE", "").strip()
    if not raw:
        return None
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # only when asked for: 5 ms of cold start

    try:
        return ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"NOTIFY_TIMEZONE: {raw!r} is not an IANA time zone such as Europe/Paris")
        return None


def _boolean(env: Mapping[str, str], var: str, problems: list[str]) -> bool:
    raw = env.get(var, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    problems.append(f"{var}: expected true or false, got {raw!r}")
    return False


def _without_password(url: str) -> str:
    return re.sub(r"//([^:@/]+):[^@/]*@", r"//\1:***@", url)


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


def _number(env: Mapping[str, str], var: str, default: float, problems: list[str], *, integer: bool = False) -> float:
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
