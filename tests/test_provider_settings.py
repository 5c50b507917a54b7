"""Each provider owns its settings: notifier/mail/ knows nothing of config, rules or rendering; a
provider's variables are its own (SMTP_TIMEOUT_SECONDS); one module plus one PROVIDERS line adds one."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time

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
    assert load_settings({**smtp, "SENDGRID_TIMEOUT_SECONDS": "2.5"}).provider.timeout == 10.0
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
    def from_env(cls, env, problems, *, deployed):
        loft = envvars.text(env, "PIGEON_LOFT")
        if not loft:
            problems.append("PIGEON_LOFT: required when NOTIFY_BACKEND is pigeon")
        return cls(loft, env.get("PIGEON_RING", ""), envvars.positive_number(env, "PIGEON_SPEED", problems, 1.0))

    @property
    def secrets(self):
        return (self.ring,) if self.ring else ()


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
    line = Provider("pigeon_provider", "PigeonSettings", "pigeon_backend", True, "PIGEON_LOFT", ("PIGEON_RING",))
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
