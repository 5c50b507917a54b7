"""Each provider owns its settings: notifier/mail/ knows nothing of config, rules or rendering; a
provider's variables are its own (SMTP_TIMEOUT_SECONDS); one module plus one PROVIDERS line adds one."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from notifier import mail
from notifier.config import ROOT, ConfigError, load_settings
from notifier.mail import PROVIDERS, Provider, create_backend
from notifier.mail.base import DeliveryError
from notifier.mail.smtp import SmtpBackend
from tests.conftest import settings_for
from tests.test_smtp import MESSAGE

FORBIDDEN = ("notifier.config", "notifier.rules", "notifier.rulesfile", "notifier.render")


def test_no_mail_module_imports_config_rules_or_rendering():
    modules = sorted(f"notifier.mail.{path.stem}" for path in (ROOT / "notifier" / "mail").glob("*.py"))
    assert "notifier.mail.sendgrid" in modules and "notifier.mail.smtp" in modules
    script = textwrap.dedent(f"""
        import importlib, json, sys
        found = {{}}
        for name in {modules!r}:
            importlib.import_module(name)
            found[name] = sorted(m for m in {FORBIDDEN!r} if m in sys.modules)
        print(json.dumps(found))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {name: [] for name in modules}


def test_smtp_timeout_seconds_is_the_smtp_backends_timeout_not_sendgrids():
    with socket.socket() as silent:  # accepts the connection (backlog), never greets
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        settings = settings_for(
            NOTIFY_BACKEND="smtp", SMTP_URL=f"smtp://127.0.0.1:{silent.getsockname()[1]}?tls=none",
            SMTP_TIMEOUT_SECONDS="1", SENDGRID_TIMEOUT_SECONDS="30", NOTIFY_MAX_ATTEMPTS="1",
        )  # fmt: skip
        backend = SmtpBackend(settings.provider, settings.retry)
        started = time.monotonic()
        with pytest.raises(DeliveryError) as caught:
            backend.send(MESSAGE, deadline=time.monotonic() + 60)
    # A generous bound: 1 s of SMTP_TIMEOUT_SECONDS, not the 30 s of SENDGRID_TIMEOUT_SECONDS.
    assert time.monotonic() - started < 10
    assert caught.value.transient


def test_smtp_timeout_seconds_has_its_own_default_and_check():
    smtp = {"SMTP_URL": "smtp://relay.example.com", "NOTIFY_FROM": "a@example.com", "NOTIFY_TO": "b@example.com"}
    assert load_settings(smtp).provider.timeout == 10.0  # SENDGRID_TIMEOUT_SECONDS's part: see below
    assert load_settings({**smtp, "SMTP_TIMEOUT_SECONDS": "2.5"}).provider.timeout == 2.5
    with pytest.raises(ConfigError) as caught:
        load_settings({**smtp, "SMTP_TIMEOUT_SECONDS": "soon"})
    assert caught.value.problems == ["SMTP_TIMEOUT_SECONDS: expected a positive number of seconds, got 'soon'"]


PIGEON = """
from dataclasses import dataclass, field

from notifier import envvars
from notifier.mail.base import Backend, Receipt


@dataclass(frozen=True)
class PigeonSettings:
    loft: str
    ring: str = field(repr=False)
    speed: float

    @classmethod
    def from_env(cls, env, problems, *, deployed, chosen):
        loft = envvars.text(env, "PIGEON_LOFT")
        if not loft and chosen:
            problems.append("PIGEON_LOFT: required when NOTIFY_BACKEND is pigeon")
        return cls(loft, env.get("PIGEON_RING", ""), envvars.positive_number(env, "PIGEON_SPEED", problems, 1.0))

    @property
    def secrets(self):
        return (self.ring,) if self.ring else ()

    local_dir = None


class PigeonBackend(Backend):
    name = "pigeon"

    def __init__(self, settings, retry):
        self.settings, self.retry = settings, retry

    def send(self, message, *, deadline):
        return Receipt(self.name, self.settings.loft)


def pigeon_backend(settings, retry):
    return PigeonBackend(settings, retry)
"""


@pytest.fixture
def pigeon(tmp_path, monkeypatch):
    """A provider added as one module plus one line in PROVIDERS."""
    (tmp_path / "pigeon_provider.py").write_text(PIGEON)
    monkeypatch.syspath_prepend(str(tmp_path))
    line = Provider("pigeon_provider", "PigeonSettings", "pigeon_backend", True, "PIGEON_LOFT", ("PIGEON_RING",),
                    ("PIGEON_LOFT", "PIGEON_RING", "PIGEON_SPEED"))  # fmt: skip
    monkeypatch.setitem(PROVIDERS, "pigeon", line)
    yield
    sys.modules.pop("pigeon_provider", None)


def test_a_provider_is_one_module_plus_one_line(pigeon):
    settings = settings_for(NOTIFY_BACKEND="Pigeon", PIGEON_LOFT="roof", PIGEON_SPEED="3", NOTIFY_MAX_ATTEMPTS="2")

    backend = create_backend(settings.backend, settings.provider, settings.retry)

    assert (settings.backend, backend.name) == ("pigeon", "pigeon")
    assert (backend.settings.speed, backend.retry.max_attempts) == (3.0, 2)
    assert backend.send(MESSAGE, deadline=time.monotonic() + 1).message_id == "roof"


def test_the_new_providers_variable_selects_it_and_its_problems_are_reported(pigeon):
    assert settings_for(PIGEON_LOFT="roof").backend == "pigeon"
    with pytest.raises(ConfigError) as caught:
        load_settings({"NOTIFY_BACKEND": "pigeon", "PIGEON_SPEED": "fast"})
    assert caught.value.problems == [
        "PIGEON_LOFT: required when NOTIFY_BACKEND is pigeon",
        "PIGEON_SPEED: expected a positive number of seconds, got 'fast'",
        "NOTIFY_FROM: required when NOTIFY_BACKEND is pigeon (or use a notify.toml)",  # it sends real mail
        "NOTIFY_TO: required when NOTIFY_BACKEND is pigeon (or use a notify.toml)",
    ]


def test_the_new_providers_secret_is_never_in_a_problem(pigeon):
    ring = "pigeon-ring-secret-0042"
    with pytest.raises(ConfigError) as caught:
        load_settings({"PIGEON_LOFT": "roof", "PIGEON_RING": ring, "NOTIFY_FROM": "a@example.com", "NOTIFY_TO": ring})
    assert caught.value.problems and ring not in str(caught.value)
    assert settings_for(PIGEON_LOFT="roof", PIGEON_RING=ring).secrets == (ring,)


def test_an_unknown_backend_lists_the_names_in_the_table(pigeon):
    with pytest.raises(ConfigError) as caught:
        load_settings({"NOTIFY_BACKEND": "carrier"})
    assert caught.value.problems == [
        "NOTIFY_BACKEND: expected one of sendgrid, smtp, outbox, console, pigeon, got 'carrier'"
    ]


def test_only_the_chosen_providers_module_is_imported():
    script = (
        "import sys; from notifier.config import load_settings; load_settings({'NOTIFY_BACKEND': 'console'});"
        "print(sorted(m for m in sys.modules if m in ('notifier.mail.sendgrid', 'notifier.mail.smtp', 'sendgrid')))"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr


@pytest.mark.parametrize(
    ("name", "problems"),
    [
        ("sendgrid", ["SENDGRID_API_KEY: required when NOTIFY_BACKEND is sendgrid"]),
        ("smtp", ["SMTP_URL: required when NOTIFY_BACKEND is smtp (smtp://user@host:587 or smtps://host:465)"]),
        ("outbox", []),
        ("console", []),
    ],
)
def test_each_provider_checks_its_own_required_variables(name, problems, tmp_path):
    found: list[str] = []
    settings = mail.provider_settings(name, {"NOTIFY_OUTBOX_DIR": str(tmp_path)}, found, deployed=False)
    assert found == problems
    assert settings.secrets == ()


# Checks that do not depend on being chosen run whatever the backend (as before the providers owned
# their settings): a mistyped variable, or a password in SMTP_URL, stops start-up even beside console.
UNCHOSEN_PROBLEMS = [
    ({"SENDGRID_TIMEOUT_SECONDS": "abc"}, "SENDGRID_TIMEOUT_SECONDS: expected a positive number of seconds, got 'abc'"),
    ({"SENDGRID_API_KEY": "SG.a b"}, "SENDGRID_API_KEY: contains whitespace or control characters"),
    ({"SENDGRID_SANDBOX": "maybe"}, "SENDGRID_SANDBOX: expected true or false, got 'maybe'"),
    ({"SENDGRID_API_HOST": "ftp://x"}, "SENDGRID_API_HOST: expected an http(s) URL, got 'ftp://x'"),
    ({"SMTP_URL": "smtp://u:hunter2@h:587"},
     "SMTP_URL: holds a password; put it in SMTP_PASSWORD (from Secret Manager) instead"),
    ({"SMTP_URL": "smtp://h:port"}, "SMTP_URL: expected smtp://[user@]host[:port] or smtps://..., got 'smtp://h:port'"),
    ({"SMTP_TIMEOUT_SECONDS": "0"}, "SMTP_TIMEOUT_SECONDS: expected a positive number of seconds, got '0'"),
]  # fmt: skip


@pytest.mark.parametrize("backend", ["console", "outbox"])
@pytest.mark.parametrize(("env", "problem"), UNCHOSEN_PROBLEMS)
def test_a_providers_checks_run_when_another_backend_is_chosen(backend, env, problem, tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings({"NOTIFY_BACKEND": backend, "NOTIFY_OUTBOX_DIR": str(tmp_path), **env})
    assert caught.value.problems == [problem]
    assert "hunter2" not in str(caught.value)


def test_the_chosen_providers_checks_and_the_others_are_all_reported():
    env = {"SMTP_URL": "smtp://u:pw@relay.example.com", "SENDGRID_API_KEY": "SG.k", "SENDGRID_SANDBOX": "maybe",
           "NOTIFY_FROM": "a@example.com", "NOTIFY_TO": "b@example.com"}  # fmt: skip
    with pytest.raises(ConfigError) as caught:
        load_settings(env)  # the key chooses SendGrid; SMTP_URL is still checked
    assert sorted(caught.value.problems) == [
        "SENDGRID_SANDBOX: expected true or false, got 'maybe'",
        "SMTP_URL: holds a password; put it in SMTP_PASSWORD (from Secret Manager) instead",
    ]


SMTP = {"SMTP_URL": "smtp://relay.example.com", "NOTIFY_FROM": "a@example.com", "NOTIFY_TO": "b@example.com"}


@pytest.mark.parametrize(
    ("env", "timeout"),
    [
        ({}, 10.0),
        ({"SENDGRID_TIMEOUT_SECONDS": "30"}, 30.0),  # what SMTP deployments set before SMTP_TIMEOUT_SECONDS
        ({"SENDGRID_TIMEOUT_SECONDS": "30", "SMTP_TIMEOUT_SECONDS": "2.5"}, 2.5),
        ({"SMTP_TIMEOUT_SECONDS": "2.5"}, 2.5),
    ],
)
def test_smtp_timeout_falls_back_to_sendgrid_timeout_then_ten_seconds(env, timeout):
    assert load_settings({**SMTP, **env}).provider.timeout == timeout


def test_an_unusable_sendgrid_timeout_is_reported_once_when_smtp_falls_back_to_it():
    with pytest.raises(ConfigError) as caught:
        load_settings({**SMTP, "SENDGRID_TIMEOUT_SECONDS": "soon"})
    assert caught.value.problems == ["SENDGRID_TIMEOUT_SECONDS: expected a positive number of seconds, got 'soon'"]


def test_importing_config_loads_no_provider_module():
    providers = sorted(line.module for line in PROVIDERS.values())
    script = f"import sys, notifier.config; print(sorted(m for m in sys.modules if m in {providers!r}))"
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "[]"), done.stderr


@pytest.mark.parametrize(("name", "expected"), [("outbox", "outbox-dir"), ("console", None), ("sendgrid", None)])
def test_local_state_goes_beside_the_outbox_only(name, expected, tmp_path):
    env = {"NOTIFY_BACKEND": name, "NOTIFY_OUTBOX_DIR": str(tmp_path / "outbox-dir"), "SENDGRID_API_KEY": "SG.k",
           "NOTIFY_FROM": "a@example.com", "NOTIFY_TO": "b@example.com"}  # fmt: skip
    settings = load_settings(env)
    assert settings.provider.local_dir == (tmp_path / expected if expected else None)
    assert settings.dead_letter_dir == (tmp_path / expected / "deadletter" if expected else Path("deadletter"))
    assert settings.ledger_file == (tmp_path / expected / "ledger.sqlite3" if expected else None)


class RecordingEnv(dict):
    """An environment that remembers every variable looked up."""

    def __init__(self) -> None:
        super().__init__()
        self.read: set[str] = set()

    def get(self, key, default=None):
        self.read.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.read.add(key)
        return super().__getitem__(key)

    def __contains__(self, key):
        self.read.add(key)
        return super().__contains__(key)


@pytest.mark.parametrize("name", list(PROVIDERS))
@pytest.mark.parametrize("deployed", [False, True])
def test_a_provider_reads_only_its_declared_variables_and_unset_they_raise_nothing_unchosen(name, deployed):
    # Config imports a provider that is not the backend only when one of its declared variables is
    # set: so every variable it reads must be declared, and with none set it must find no problem.
    line = mail.PROVIDERS[name]
    for chosen in (True, False):
        env, found = RecordingEnv(), []
        mail.provider_settings(name, env, found, deployed=deployed, chosen=chosen)
        assert env.read <= set(line.variables), (chosen, env.read - set(line.variables))
        if not chosen:
            assert found == []
    assert line.selected_by is None or line.selected_by in line.variables
    assert set(line.secret_variables) <= set(line.variables)
