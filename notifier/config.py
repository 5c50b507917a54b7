"""Environment (+ ``notify.toml``) → :class:`Settings`, validated once at start-up with every
problem reported at once.

The core variables are one table (:data:`CORE`); each provider reads and checks its own
(``notifier.mail.PROVIDERS``): their form whatever the backend, what it requires only when it is
the backend. Nothing else reads the environment. Error messages name the variable and what was
expected, and never repeat a secret's value.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from notifier import envvars, proxies
from notifier.addresses import Address
from notifier.mail import DEFAULT_PROVIDER, PROVIDERS, ProviderSettings, RetrySettings, checked_settings
from notifier.mail.scrub import scrub
from notifier.rules import RuleSet
from notifier.rulesfile import EnvDefaults, default_rules, load_rules

if TYPE_CHECKING:
    from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent  # where main.py is
BUILTIN_TEMPLATES = ROOT / "templates"
_LOCAL_FROM = Address("storage-notifier@example.com", "Storage Notifier")
_LOCAL_TO = Address("you@example.com")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
DEFAULT_STORAGE_ENDPOINT = "https://storage.googleapis.com"
_HOST_PORT = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?")
_EMULATOR_HOST = re.compile(rf"https?://{_HOST_PORT.pattern}/?")  # scheme, host, port: nothing else


class ConfigError(ValueError):
    """Configuration is unusable; the message lists every problem, one per line."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


@dataclass(frozen=True, slots=True)
class Settings:
    rules: RuleSet
    rules_file: Path | None  # None: every event goes to NOTIFY_TO
    backend: str  # a name in notifier.mail.PROVIDERS
    provider: ProviderSettings  # that backend's own settings (SendGridSettings, SmtpSettings, ...)
    retry: RetrySettings
    templates_dir: Path | None
    # Time budget for delivering one event, retries included; must stay under the function timeout.
    deadline_seconds: float
    # Delivery state (see notifier/ledger): the bucket, else an SQLite file, else memory.
    state_bucket: str | None
    storage_emulator_host: str | None
    storage_endpoint: str  # the Cloud Storage JSON API the state bucket is reached at (no emulator)
    metadata_host: str  # HOST[:PORT] of the metadata server that gives a deployed function its token
    ledger_file: Path | None
    dead_letter_dir: Path
    # Seconds; older events are dropped as "expired". None: no limit (local runs, where nothing
    # redelivers); deployed, it defaults to the platform's 24-hour redelivery window.
    max_event_age: float | None
    timezone: ZoneInfo | None  # NOTIFY_TIMEZONE: emails show local time too
    redirect_to: Address | None  # NOTIFY_REDIRECT_TO: every message goes here instead
    deployed: bool  # running on Cloud Run functions (K_SERVICE is set)
    # GOOGLE_CLOUD_PROJECT (deploy.sh sets it): log lines name their trace as projects/P/traces/T.
    project: str | None = None
    # NOTIFY_MAX_IN_FLIGHT (deploy.sh sets it to --concurrency): requests handled at once before the
    # next is answered 429 (notifier.admission); None: no cap.
    max_in_flight: int | None = None
    # SENDGRID_WEBHOOK_PUBLIC_KEY: the Event Webhook's verification key, base64 as SendGrid shows it;
    # main.py: sendgrid_events refuses every request without it (notifier.feedback).
    webhook_public_key: str | None = None
    # Every secret in the environment, the chosen provider's or not (a SendGrid key set beside
    # NOTIFY_BACKEND=console is still a key): never printed, scrubbed from every error text.
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def lease_seconds(self) -> float:
        """How long a claim protects a notification: longer than any delivery attempt can take."""
        return self.deadline_seconds + 60.0


@dataclass(frozen=True, slots=True)
class _Context:
    """What a context-dependent default may depend on."""

    deployed: bool
    local_dir: Path | None  # where the backend keeps local state beside the mail (the outbox's directory)
    values: Mapping[str, Any]  # the variables read so far (the table's earlier rows)


@dataclass(frozen=True, slots=True)
class Computed:
    """A default that depends on the context: deployed or not, the backend, earlier rows."""

    value: Callable[[_Context], Any]


@dataclass(frozen=True, slots=True)
class Variable:
    var: str
    field: str  # of Settings, or of RetrySettings
    read: Callable[[Mapping[str, str], str, list[str], Any], Any]  # (env, var, problems, default)
    default: Any  # or Computed


def _directory(env: Mapping[str, str], var: str, problems: list[str], default: Path | None) -> Path | None:
    raw = envvars.text(env, var)
    if not raw:
        return default
    if not Path(raw).is_dir():
        problems.append(f"{var}: {raw!r} is not a directory")
    return Path(raw)


def _path(env: Mapping[str, str], var: str, problems: list[str], default: Path | None) -> Path | None:
    return Path(raw) if (raw := envvars.text(env, var)) else default


def _bucket(env: Mapping[str, str], var: str, problems: list[str], default: str | None) -> str | None:
    bucket = envvars.text(env, var).removeprefix("gs://").rstrip("/")
    if bucket and not _BUCKET.fullmatch(bucket):
        problems.append(f"{var}: {bucket!r} is not a bucket name")
    return bucket or default


def _one_address(env: Mapping[str, str], var: str, problems: list[str], default: Address | None) -> Address | None:
    return envvars.one_address(env, var, problems) or default


def _storage_emulator_host(env: Mapping[str, str], var: str, problems: list[str], default: str | None) -> str | None:
    """A local Cloud Storage (fake-gcs-server) for the ledger, links and attachments: never deployed,
    where it would send the state and every download link to another server than Cloud Storage."""
    value = envvars.text(env, var)
    if not value:
        return default
    if env.get("K_SERVICE"):
        problems.append(
            f"{var}: set on a deployed function (K_SERVICE is set), so the ledger, links and"
            " attachments would use that server instead of Cloud Storage; remove it from the environment"
        )
    elif not _EMULATOR_HOST.fullmatch(value):
        problems.append(f"{var}: expected http://HOST:PORT (a local fake-gcs-server), got {value!r}")
    else:
        _check_port(var, value, problems)
    return value.rstrip("/")


def _storage_endpoint(env: Mapping[str, str], var: str, problems: list[str], default: str) -> str:
    """Where the state bucket's JSON API is (Cloud Storage, or a Private Service Connect endpoint).
    Deployed, the function's access token goes there: https only."""
    value = envvars.text(env, var)
    if not value:
        return default
    scheme = "https" if env.get("K_SERVICE") else "https?"
    if not re.fullmatch(scheme + r"://" + _HOST_PORT.pattern + "/?", value):
        expected = "https://HOST[:PORT]" if env.get("K_SERVICE") else "http(s)://HOST[:PORT]"
        where = " (a deployed function sends its access token there)" if env.get("K_SERVICE") else ""
        problems.append(f"{var}: expected {expected}{where}, got {value!r}")
    elif value.startswith("http://") and not envvars.is_loopback(urlsplit(value).hostname or ""):
        problems.append(
            f"{var}: http:// only to this machine (127.0.0.0/8, ::1, localhost): your Google access token"
            f" goes there and would cross the network unencrypted; use https://, got {value!r}"
        )
    else:
        _check_port(var, value, problems)
    return value.rstrip("/")


def _metadata_host(env: Mapping[str, str], var: str, problems: list[str], default: str) -> str:
    """The metadata server (google-auth reads the same variable): HOST or HOST:PORT, nothing else."""
    value = envvars.text(env, var)
    if not value:
        return default
    if not _HOST_PORT.fullmatch(value):
        problems.append(f"{var}: expected HOST or HOST:PORT (the metadata server), got {value!r}")
    else:
        _check_port(var, value, problems)
    return value


def _port_of(value: str) -> int | None:
    """The port a checked [scheme://]HOST[:PORT][/] value names; None if it names none."""
    _, colon, tail = value.rstrip("/").rpartition(":")
    return int(tail) if colon and tail.isascii() and tail.isdigit() else None


def _check_port(var: str, value: str, problems: list[str]) -> None:
    port = _port_of(value)
    if port is not None and not 1 <= port <= 65535:
        problems.append(f"{var}: the port must be 1-65535, got {value!r}")


def _timezone(env: Mapping[str, str], var: str, problems: list[str], default: ZoneInfo | None) -> ZoneInfo | None:
    raw = envvars.text(env, var)
    if not raw:
        return default
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError  # only when asked for: 5 ms of cold start

    try:
        return ZoneInfo(raw)
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"{var}: {raw!r} is not an IANA time zone such as Europe/Paris")
        return default


# A project id (6-30 characters), optionally domain-scoped ("example.com:my-project").
_PROJECT = re.compile(r"(?:[a-z0-9][a-z0-9.-]{0,61}[a-z0-9]:)?[a-z][a-z0-9-]{4,28}[a-z0-9]")


def _project(env: Mapping[str, str], var: str, problems: list[str], default: str | None) -> str | None:
    value = envvars.text(env, var)
    if value and not _PROJECT.fullmatch(value):
        problems.append(f"{var}: expected a Google Cloud project id such as my-project-123, got {value!r}")
        return default
    return value or default


# A P-256 public key as SendGrid shows it: base64 of its DER SubjectPublicKeyInfo, which is this
# fixed header and the 65-byte uncompressed point (04 X Y). Checked here without the cryptography
# package, whose import would cost every cold start; notifier.feedback loads the key with it.
_P256_SPKI_HEADER = bytes.fromhex("3059301306072a8648ce3d020106082a8648ce3d030107034200")


def _webhook_public_key(env: Mapping[str, str], var: str, problems: list[str], default: str | None) -> str | None:
    import base64
    import binascii

    value = "".join(envvars.text(env, var).split())  # pasted across lines, or with a trailing newline
    if not value:
        return default
    try:
        der = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        der = b""
    if len(der) != len(_P256_SPKI_HEADER) + 65 or not der.startswith(_P256_SPKI_HEADER) or der[-65] != 4:
        problems.append(
            f"{var}: expected the Event Webhook's verification key as SendGrid shows it (base64 of an"
            " ECDSA P-256 public key, starting MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE), got"
            f" {len(value)} characters that are not one"
        )
        return default
    return value


# Cloud Run's highest --concurrency; urllib3 also fills a pool of this many slots (notifier.httpclient).
_MOST_IN_FLIGHT = 1000


def _max_in_flight(env: Mapping[str, str], var: str, problems: list[str], default: int | None) -> int | None:
    raw = envvars.text(env, var)
    if not raw:
        return default
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= _MOST_IN_FLIGHT):
        problems.append(
            f"{var}: expected a whole number from 1 to {_MOST_IN_FLIGHT} (requests handled at once; Cloud Run's"
            f" highest --concurrency), got {raw!r}"
        )
        return default
    return int(raw)


def _local_ledger(context: _Context) -> Path | None:
    # Local runs keep the ledger in an SQLite file beside the outbox, so duplicates are caught
    # across restarts too; deployed without a state bucket it is per-instance memory.
    if context.local_dir is None or context.values["state_bucket"] is not None:
        return None
    return context.local_dir / "ledger.sqlite3"


# The core variables, each default written once. Rows are read in order: a Computed default may
# use the rows above it.
CORE: tuple[Variable, ...] = (
    Variable("NOTIFY_TEMPLATES_DIR", "templates_dir", _directory, None),
    Variable("NOTIFY_DEADLINE_SECONDS", "deadline_seconds", envvars.positive_number, 45.0),
    Variable("NOTIFY_MAX_ATTEMPTS", "max_attempts", envvars.positive_int, 5),
    Variable("NOTIFY_MAX_BACKOFF_SECONDS", "max_backoff", envvars.positive_number, 8.0),
    # Deployed: the platform's 24-hour redelivery window; locally nothing redelivers, so no limit.
    Variable("NOTIFY_MAX_EVENT_AGE", "max_event_age", envvars.duration,
             Computed(lambda c: 24 * 3600.0 if c.deployed else None)),
    Variable("NOTIFY_TIMEZONE", "timezone", _timezone, None),
    Variable("NOTIFY_REDIRECT_TO", "redirect_to", _one_address, None),
    Variable("NOTIFY_STATE_BUCKET", "state_bucket", _bucket, None),
    Variable("STORAGE_EMULATOR_HOST", "storage_emulator_host", _storage_emulator_host, None),
    Variable("NOTIFY_STORAGE_ENDPOINT", "storage_endpoint", _storage_endpoint, DEFAULT_STORAGE_ENDPOINT),
    Variable("GCE_METADATA_HOST", "metadata_host", _metadata_host, "metadata.google.internal"),
    Variable("NOTIFY_LEDGER_FILE", "ledger_file", _path, Computed(_local_ledger)),
    Variable("NOTIFY_DEAD_LETTER_DIR", "dead_letter_dir", _path,
             Computed(lambda c: c.local_dir / "deadletter" if c.local_dir else Path("deadletter"))),
    Variable("GOOGLE_CLOUD_PROJECT", "project", _project, None),
    Variable("SENDGRID_WEBHOOK_PUBLIC_KEY", "webhook_public_key", _webhook_public_key, None),
    Variable("NOTIFY_MAX_IN_FLIGHT", "max_in_flight", _max_in_flight, None),
)  # fmt: skip
_RETRY_FIELDS = ("max_attempts", "max_backoff")


def load_settings(environ: Mapping[str, str] | None = None) -> Settings:
    """Read and validate the environment; raise :class:`ConfigError` listing every problem."""
    env = os.environ if environ is None else environ
    problems: list[str] = []
    deployed = bool(env.get("K_SERVICE"))

    backend = _backend(env, deployed, problems)
    provider = checked_settings(backend, env, problems, deployed=deployed)
    local_dir = provider.local_dir if provider else None
    values: dict[str, Any] = {}
    for variable in CORE:
        default = variable.default
        if isinstance(default, Computed):
            default = default.value(_Context(deployed, local_dir, values))
        values[variable.field] = variable.read(env, variable.var, problems, default)
    rules, rules_file = _rules(env, backend, values, problems)
    _check_proxies(env, problems)

    secrets = _secrets(env, provider)
    if problems:
        raise ConfigError(_redacted(problems, secrets))
    assert rules is not None and backend is not None and provider is not None
    retry = RetrySettings(**{name: values.pop(name) for name in _RETRY_FIELDS})
    return Settings(
        rules=rules, rules_file=rules_file, backend=backend, provider=provider, retry=retry, deployed=deployed,
        secrets=secrets, **values,
    )  # fmt: skip


def _backend(env: Mapping[str, str], deployed: bool, problems: list[str]) -> str | None:
    """NOTIFY_BACKEND, else the first provider whose variable is set, else the outbox (not when
    deployed); None when there is none to use (a problem noted)."""
    raw = envvars.text(env, "NOTIFY_BACKEND")
    if raw:
        if raw.lower() not in PROVIDERS:
            problems.append(f"NOTIFY_BACKEND: expected one of {', '.join(PROVIDERS)}, got {raw!r}")
            return None
        return raw.lower()
    chosen = next((name for name, p in PROVIDERS.items() if p.selected_by and envvars.text(env, p.selected_by)), None)
    if chosen is None and deployed:
        # On Cloud Run functions the outbox is an instance's scratch disk: every email would vanish.
        problems.append(
            "SENDGRID_API_KEY: not set, and this is a deployed function (K_SERVICE is set); set the "
            "secret, or NOTIFY_BACKEND=console to only log the emails"
        )
        return None
    return chosen or DEFAULT_PROVIDER


def _rules(
    env: Mapping[str, str], backend: str | None, values: Mapping[str, Any], problems: list[str]
) -> tuple[RuleSet | None, Path | None]:
    """The rules from the rules file, else one rule sending every event to NOTIFY_TO."""
    env_sender = envvars.addresses(env, "NOTIFY_FROM", problems)
    if env_sender is not None and len(env_sender) > 1:
        problems.append(f"NOTIFY_FROM: expected one address, got {len(env_sender)}")
    env_to = envvars.addresses(env, "NOTIFY_TO", problems)
    # Where the environment is silent, local backends need no addresses: the mail stays here.
    local = backend is None or not PROVIDERS[backend].sends_mail
    defaults = EnvDefaults(
        sender=env_sender[0] if env_sender else (_LOCAL_FROM if local else None),
        to=tuple(env_to) if env_to else ((_LOCAL_TO,) if local else ()),
    )
    state_bucket, templates_dir = values["state_bucket"], values["templates_dir"]
    rules_file = _rules_file(env, problems)
    if rules_file is not None:
        rules, file_problems = load_rules(
            rules_file, defaults, [d for d in (templates_dir, BUILTIN_TEMPLATES) if d], state_bucket
        )
        problems.extend(file_problems)
        return rules, rules_file
    for var, value in (("NOTIFY_FROM", defaults.sender), ("NOTIFY_TO", defaults.to)):
        if not value and (env_sender if var == "NOTIFY_FROM" else env_to) is None:
            problems.append(f"{var}: required when NOTIFY_BACKEND is {backend} (or use a notify.toml)")
    return (default_rules(defaults, state_bucket) if defaults.sender and defaults.to else None), None


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


def _check_proxies(env: Mapping[str, str], problems: list[str]) -> None:
    """A problem for each proxy variable the HTTP client could not use; never its value, which may
    hold a password."""
    for var in proxies.VARIABLES:
        raw = env.get(var, "").strip()
        if raw and (problem := proxies.problem(raw)):
            problems.append(f"{var}: {problem} (the value is not shown: it may hold a password)")


def environment_secrets(environ: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """Every provider's secret variables, chosen or not (the problem may be that none could be
    chosen), in each form a problem text or a log line may show them (:func:`_forms`); longest
    first, so a secret that contains another is redacted whole. Registered with the log before
    the settings are read, so even the "cannot start" line has a second filter."""
    env = os.environ if environ is None else environ
    provider_secrets = [env.get(var, "") for p in PROVIDERS.values() for var in p.secret_variables]
    return _forms([*provider_secrets, *proxies.passwords(env)])


def _secrets(env: Mapping[str, str], provider: ProviderSettings | None) -> tuple[str, ...]:
    """The environment's secrets and the chosen provider's own, in every form."""
    forms = {*environment_secrets(env), *_forms(provider.secrets if provider else ())}
    return tuple(sorted(forms, key=len, reverse=True))


def _forms(values: Iterable[str]) -> tuple[str, ...]:
    """Each value as set, stripped (a trailing "\\n" from echo), without a pair of quotes around it
    (set as '"SG.x"', pasted bare elsewhere), and each of those as repr escapes it between its
    quotes (problems quote values with !r: a backslash or a quote reads differently)."""
    forms: set[str] = set()
    for value in values:
        stripped = value.strip()
        quoted = len(stripped) > 1 and stripped[0] == stripped[-1] and stripped[0] in "'\""
        for form in (value, stripped, stripped[1:-1] if quoted else stripped):
            forms |= {form, repr(form)[1:-1]}
    return tuple(sorted(filter(None, forms), key=len, reverse=True))


def _redacted(problems: list[str], secrets: tuple[str, ...]) -> list[str]:
    """A secret pasted into the wrong variable is not echoed: not whole, not escaped, and not the
    part of it a long value is cut to (notifier.mail.scrub finds runs and prefixes of it)."""
    return [scrub(problem, secrets) for problem in problems]
