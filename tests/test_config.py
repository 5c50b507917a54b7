"""load_settings(): defaults, parsing, and errors that name the variable and never repeat the API key."""

from __future__ import annotations

import os
from operator import attrgetter
from pathlib import Path

import pytest

from notifier.addresses import Address
from notifier.config import ConfigError, Settings, load_settings
from notifier.mail import provider_settings


def sender_of(settings):
    (rule,) = settings.rules.rules
    return rule.delivery.recipients.sender


def to_of(settings):
    (rule,) = settings.rules.rules
    return rule.delivery.recipients.to


KEY = "SG.test-secret-key-must-never-be-printed.0123456789"
MAIL = {"NOTIFY_FROM": "Alerts <alerts@example.com>", "NOTIFY_TO": "ops@example.com"}


def problems_of(env: dict[str, str]) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings(env)
    assert str(caught.value).startswith("invalid configuration:")
    for problem in caught.value.problems:
        assert f"\n  {problem}" in str(caught.value)
    return caught.value.problems


def variables(problems: list[str]) -> list[str]:
    return [problem.split(":", 1)[0] for problem in problems]


def test_defaults_without_a_key_are_local_and_complete():
    settings = load_settings({})

    assert settings.backend == "outbox"
    assert sender_of(settings) == Address("storage-notifier@example.com", "Storage Notifier")
    assert to_of(settings) == (Address("you@example.com"),)
    assert settings.provider.directory == Path("outbox")
    assert settings.templates_dir is None
    assert settings.deadline_seconds == 45.0
    assert settings.retry.max_attempts == 5
    assert isinstance(settings.retry.max_attempts, int)
    assert settings.secrets == ()


def test_sendgrid_defaults():
    provider = load_settings({"SENDGRID_API_KEY": KEY, **MAIL}).provider
    assert provider.api_host == "https://api.sendgrid.com"
    assert provider.timeout == 10.0


def test_a_key_selects_sendgrid():
    settings = load_settings({"SENDGRID_API_KEY": KEY, **MAIL})

    assert (settings.backend, settings.provider.api_key) == ("sendgrid", KEY)
    assert sender_of(settings) == Address("alerts@example.com", "Alerts")
    assert to_of(settings) == (Address("ops@example.com"),)


@pytest.mark.parametrize(
    ("env", "backend"),
    [
        ({"NOTIFY_BACKEND": "OUTBOX"}, "outbox"),
        ({"NOTIFY_BACKEND": " Console "}, "console"),
        ({"NOTIFY_BACKEND": "SendGrid", "SENDGRID_API_KEY": KEY, **MAIL}, "sendgrid"),
        ({"NOTIFY_BACKEND": "console", "SENDGRID_API_KEY": KEY}, "console"),
        ({"NOTIFY_BACKEND": "outbox", "SENDGRID_API_KEY": KEY, **MAIL}, "outbox"),
        ({"NOTIFY_BACKEND": "", "SENDGRID_API_KEY": KEY, **MAIL}, "sendgrid"),
    ],
)
def test_notify_backend_overrides_the_default_case_insensitively(env, backend):
    assert load_settings(env).backend == backend


def test_local_backend_with_a_key_still_gets_local_addresses():
    settings = load_settings({"NOTIFY_BACKEND": "console", "SENDGRID_API_KEY": KEY})
    assert to_of(settings) == (Address("you@example.com"),)


@pytest.mark.parametrize(
    ("var", "raw", "attr", "expected"),
    [
        ("NOTIFY_OUTBOX_DIR", " /tmp/mail out ", "provider.directory", Path("/tmp/mail out")),
        ("SENDGRID_API_HOST", "https://api.eu.sendgrid.com/", "sendgrid.api_host", "https://api.eu.sendgrid.com"),
        ("SENDGRID_API_HOST", "http://127.0.0.1:8080", "sendgrid.api_host", "http://127.0.0.1:8080"),
        ("SENDGRID_TIMEOUT_SECONDS", "2.5", "sendgrid.timeout", 2.5),
        ("NOTIFY_DEADLINE_SECONDS", " 30 ", "deadline_seconds", 30.0),
        ("NOTIFY_MAX_ATTEMPTS", "3", "retry.max_attempts", 3),
    ],
)
def test_optional_settings_are_read_and_trimmed(var, raw, attr, expected):
    settings = load_settings({var: raw})  # the outbox backend: SendGrid's variables are checked all the same
    owner, _, name = attr.partition(".")
    if owner == "sendgrid":  # kept on Settings only when SendGrid is the backend: read what it read
        found: list[str] = []
        assert getattr(provider_settings("sendgrid", {var: raw}, found, deployed=False, chosen=False), name) == expected
        assert (settings.backend, found) == ("outbox", [])
    else:
        assert attrgetter(attr)(settings) == expected


def test_templates_dir_that_exists_is_kept(tmp_path):
    assert load_settings({"NOTIFY_TEMPLATES_DIR": str(tmp_path)}).templates_dir == tmp_path


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ops@example.com", [("", "ops@example.com")]),
        ("Ops Team <ops@example.com>", [("Ops Team", "ops@example.com")]),
        ("a@example.com,b@example.com", [("", "a@example.com"), ("", "b@example.com")]),
        (" a@example.com , , b@example.com ", [("", "a@example.com"), ("", "b@example.com")]),
        (
            '"Doe, Jane" <jane@example.com>, ops@example.com',
            [("Doe, Jane", "jane@example.com"), ("", "ops@example.com")],
        ),
        ("José Núñez <jose@example.com>", [("José Núñez", "jose@example.com")]),
        ("first.last+tag@sub.example.co.uk", [("", "first.last+tag@sub.example.co.uk")]),
    ],
)
def test_notify_to_is_a_comma_separated_address_list(raw, expected):
    recipients = to_of(load_settings({"NOTIFY_TO": raw}))
    assert [(a.name, a.email) for a in recipients] == expected


def test_address_with_quoted_comma_formats_back_quoted():
    (jane, _) = to_of(load_settings({"NOTIFY_TO": '"Doe, Jane" <jane@example.com>, ops@example.com'}))
    assert str(jane) == '"Doe, Jane" <jane@example.com>'


INVALID = [
    pytest.param({"NOTIFY_TO": "not-an-address"}, ["NOTIFY_TO"], id="to-bare-word"),
    pytest.param({"NOTIFY_TO": "ops@example.com, bad"}, ["NOTIFY_TO"], id="to-second-bad"),
    pytest.param({"NOTIFY_TO": "ops@-example.com"}, ["NOTIFY_TO"], id="to-bad-domain"),
    pytest.param({"NOTIFY_TO": " , "}, ["NOTIFY_TO"], id="to-only-commas"),
    pytest.param({"NOTIFY_TO": "ops@example.com\nBcc: x@example.com"}, ["NOTIFY_TO"], id="to-lf"),
    pytest.param({"NOTIFY_FROM": "a@example.com, b@example.com"}, ["NOTIFY_FROM"], id="from-two"),
    pytest.param({"NOTIFY_FROM": "A <a@example.com>\r\nBcc: x@example.com"}, ["NOTIFY_FROM"], id="from-crlf"),
    pytest.param({"NOTIFY_FROM": "A <a@example.com>\rX"}, ["NOTIFY_FROM"], id="from-cr"),
    pytest.param({"NOTIFY_FROM": "A\n <a@example.com>"}, ["NOTIFY_FROM"], id="from-lf-in-name"),
    pytest.param({"NOTIFY_BACKEND": "pigeon"}, ["NOTIFY_BACKEND"], id="backend-unknown"),
    pytest.param({"NOTIFY_BACKEND": "smtp"}, ["SMTP_URL", "NOTIFY_FROM", "NOTIFY_TO"], id="smtp-without-url"),
    pytest.param({"NOTIFY_BACKEND": "sendgrid", **MAIL}, ["SENDGRID_API_KEY"], id="sendgrid-no-key"),
    pytest.param({"SENDGRID_API_KEY": KEY}, ["NOTIFY_FROM", "NOTIFY_TO"], id="sendgrid-no-addresses"),
    pytest.param({"SENDGRID_API_KEY": KEY, "NOTIFY_FROM": "a@example.com"}, ["NOTIFY_TO"], id="sendgrid-no-to"),
    pytest.param({"SENDGRID_API_KEY": KEY, "NOTIFY_TO": "a@example.com"}, ["NOTIFY_FROM"], id="sendgrid-no-from"),
    pytest.param({"NOTIFY_TEMPLATES_DIR": "/nonexistent/templates"}, ["NOTIFY_TEMPLATES_DIR"], id="tpl-missing"),
    pytest.param({"SENDGRID_API_HOST": "not a url"}, ["SENDGRID_API_HOST"], id="host-words"),
    pytest.param({"SENDGRID_API_HOST": "ftp://api.sendgrid.com"}, ["SENDGRID_API_HOST"], id="host-ftp"),
    pytest.param({"SENDGRID_API_HOST": "api.sendgrid.com"}, ["SENDGRID_API_HOST"], id="host-no-scheme"),
    pytest.param({"SENDGRID_API_HOST": "https://"}, ["SENDGRID_API_HOST"], id="host-empty"),
    pytest.param({"NOTIFY_MAX_ATTEMPTS": "0"}, ["NOTIFY_MAX_ATTEMPTS"], id="attempts-0"),
    pytest.param({"NOTIFY_MAX_ATTEMPTS": "x"}, ["NOTIFY_MAX_ATTEMPTS"], id="attempts-x"),
    pytest.param({"NOTIFY_MAX_ATTEMPTS": "-1"}, ["NOTIFY_MAX_ATTEMPTS"], id="attempts-negative"),
    pytest.param({"NOTIFY_MAX_ATTEMPTS": "2.5"}, ["NOTIFY_MAX_ATTEMPTS"], id="attempts-fraction"),
    pytest.param({"SENDGRID_TIMEOUT_SECONDS": "nan"}, ["SENDGRID_TIMEOUT_SECONDS"], id="timeout-nan"),
    pytest.param({"SENDGRID_TIMEOUT_SECONDS": "-1"}, ["SENDGRID_TIMEOUT_SECONDS"], id="timeout-negative"),
    pytest.param({"SENDGRID_TIMEOUT_SECONDS": "0"}, ["SENDGRID_TIMEOUT_SECONDS"], id="timeout-0"),
    pytest.param({"SENDGRID_TIMEOUT_SECONDS": "inf"}, ["SENDGRID_TIMEOUT_SECONDS"], id="timeout-inf"),
    pytest.param({"NOTIFY_DEADLINE_SECONDS": "soon"}, ["NOTIFY_DEADLINE_SECONDS"], id="deadline-word"),
]


@pytest.mark.parametrize(("env", "expected"), INVALID)
def test_each_problem_names_its_variable(env, expected):
    assert variables(problems_of(env)) == expected


def test_templates_dir_that_is_a_file_is_rejected(tmp_path):
    path = tmp_path / "body.html"
    path.write_text("x")
    assert problems_of({"NOTIFY_TEMPLATES_DIR": str(path)}) == [
        f"NOTIFY_TEMPLATES_DIR: {str(path)!r} is not a directory"
    ]


def test_every_problem_is_reported_at_once():
    env = {
        "NOTIFY_BACKEND": "sendgrid",
        "NOTIFY_FROM": "a@example.com, b@example.com",
        "NOTIFY_TO": "nobody",
        "SENDGRID_API_HOST": "nowhere",
        "SENDGRID_TIMEOUT_SECONDS": "nan",
        "NOTIFY_DEADLINE_SECONDS": "-5",
        "NOTIFY_MAX_ATTEMPTS": "x",
    }
    found = variables(problems_of(env))
    assert sorted(found) == sorted(
        [
            "SENDGRID_API_KEY",
            "NOTIFY_FROM",
            "NOTIFY_TO",
            "SENDGRID_API_HOST",
            "SENDGRID_TIMEOUT_SECONDS",
            "NOTIFY_DEADLINE_SECONDS",
            "NOTIFY_MAX_ATTEMPTS",
        ]
    )


def test_a_deployed_function_without_a_key_refuses_to_fall_back_to_the_outbox():
    assert variables(problems_of({"K_SERVICE": "storage-notifier"})) == ["SENDGRID_API_KEY"]
    assert load_settings({"K_SERVICE": "storage-notifier", "NOTIFY_BACKEND": "console"}).backend == "console"


def test_a_deployed_function_with_only_smtp_configured_uses_smtp():
    settings = load_settings({"K_SERVICE": "f", "SMTP_URL": "smtp://user@mail.example.com:587",
                              "NOTIFY_FROM": "a@example.com", "NOTIFY_TO": "b@example.com"})  # fmt: skip
    assert settings.backend == "smtp"


def test_a_deployed_function_may_not_choose_the_outbox_where_every_email_would_be_lost():
    problems = problems_of({"K_SERVICE": "storage-notifier", "SENDGRID_API_KEY": "SG.x", "NOTIFY_BACKEND": "outbox"})
    assert variables(problems) == ["NOTIFY_BACKEND"]
    assert "scratch disk" in problems[0] and "console" in problems[0]


def test_without_an_argument_the_process_environment_is_read(monkeypatch):
    for name in list(os.environ):
        if name.startswith(("NOTIFY_", "SENDGRID_")) or name == "K_SERVICE":
            monkeypatch.delenv(name)
    monkeypatch.setenv("NOTIFY_TO", "env@example.com")
    monkeypatch.setenv("NOTIFY_MAX_ATTEMPTS", "2")

    settings = load_settings()

    assert (to_of(settings), settings.retry.max_attempts) == ((Address("env@example.com"),), 2)


@pytest.mark.parametrize("raw", [KEY + "\n", KEY + "\r\n", f"  {KEY}\n\n"])
def test_the_api_key_is_stripped_of_surrounding_whitespace(raw):
    assert load_settings({"SENDGRID_API_KEY": raw, **MAIL}).provider.api_key == KEY


def test_the_api_key_is_not_in_the_settings_repr():
    settings = load_settings({"SENDGRID_API_KEY": KEY, **MAIL})
    assert KEY not in repr(settings)
    assert KEY not in str(settings)
    assert "sendgrid_api_key" not in repr(settings)
    assert isinstance(settings, Settings)


@pytest.mark.parametrize(
    "key",
    [
        "SG.first-half-of-key secondhalfofthekey",
        "SG.first-half-of-key\tsecondhalfofthekey",
        "SG.first-half-of-key\x00secondhalfofthekey",
        "SG.first-half-of-key\u00a0secondhalfofthekey",
        "SG.first-half-of-key\nsecondhalfofthekey",
    ],
)
@pytest.mark.parametrize("extra", [{}, MAIL, {"NOTIFY_BACKEND": "sendgrid", "NOTIFY_TO": "bad"}])
def test_a_malformed_key_is_reported_without_repeating_it(key, extra):
    problems = problems_of({"SENDGRID_API_KEY": key, **extra})
    assert "SENDGRID_API_KEY" in variables(problems)
    with pytest.raises(ConfigError) as caught:
        load_settings({"SENDGRID_API_KEY": key, **extra})
    for text in (str(caught.value), repr(caught.value), *caught.value.problems):
        assert "first-half-of-key" not in text
        assert "secondhalfofthekey" not in text


@pytest.mark.parametrize(
    "var", ["NOTIFY_TO", "NOTIFY_FROM", "NOTIFY_BACKEND", "SENDGRID_API_HOST", "NOTIFY_MAX_ATTEMPTS"]
)
def test_the_key_pasted_into_the_wrong_variable_is_not_echoed(var):
    with pytest.raises(ConfigError) as caught:
        load_settings({**MAIL, "SENDGRID_API_KEY": KEY, var: KEY})
    # The message is logged before the key is registered for redaction, so it must not carry it.
    assert KEY.lower() not in str(caught.value).lower()


@pytest.mark.parametrize("raw", ["Jane <jane@exa mple.com>", "jane@example.com <evil@example.com>"])
def test_a_malformed_address_is_rejected_not_rewritten(raw):
    assert variables(problems_of({"NOTIFY_TO": raw})) == ["NOTIFY_TO"]


@pytest.mark.parametrize(
    ("directory", "problem"),
    [
        ("/etc/passwd", "NOTIFY_OUTBOX_DIR: '/etc/passwd' exists and is not a directory"),
        (
            "/etc/passwd/outbox",
            "NOTIFY_OUTBOX_DIR: cannot create '/etc/passwd/outbox': '/etc/passwd' is not a directory",
        ),
    ],
)
def test_an_unusable_outbox_dir_stops_start_up(directory, problem):
    with pytest.raises(ConfigError) as caught:
        load_settings({"NOTIFY_OUTBOX_DIR": directory})
    assert caught.value.problems == [problem]


def test_the_outbox_dir_is_not_checked_for_other_backends():
    assert load_settings({"NOTIFY_OUTBOX_DIR": "/etc/passwd", "NOTIFY_BACKEND": "console"}).backend == "console"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"K_SERVICE": "f", "SENDGRID_API_KEY": "SG.x", "STORAGE_EMULATOR_HOST": "https://storage.googleapis.com"},
         "STORAGE_EMULATOR_HOST: set on a deployed function"),
        ({"STORAGE_EMULATOR_HOST": "localhost:4443"}, "STORAGE_EMULATOR_HOST: expected http://HOST:PORT"),
        ({"STORAGE_EMULATOR_HOST": "http://127.0.0.1:9/storage/v1 "}, "STORAGE_EMULATOR_HOST: expected http://HOST:PORT"),
    ],
)  # fmt: skip
def test_a_storage_emulator_host_is_local_only_and_a_plain_url(env, expected):
    # Deployed, it would send the ledger and every download link to another server than Cloud Storage.
    with pytest.raises(ConfigError) as raised:
        load_settings({"NOTIFY_FROM": "a@example.com", "NOTIFY_TO": "b@example.com", **env})
    assert any(problem.startswith(expected) for problem in raised.value.problems), raised.value.problems


def test_a_local_storage_emulator_host_is_kept_without_its_trailing_slash():
    env = {
        "NOTIFY_FROM": "a@example.com",
        "NOTIFY_TO": "b@example.com",
        "STORAGE_EMULATOR_HOST": " http://127.0.0.1:4443/ ",
    }
    assert load_settings(env).storage_emulator_host == "http://127.0.0.1:4443"


# --- where Cloud Storage and the metadata server are: ports, and who may get a token over http ----


@pytest.mark.parametrize(
    ("var", "value"),
    [
        ("NOTIFY_STORAGE_ENDPOINT", "https://127.0.0.1:99999"),
        ("NOTIFY_STORAGE_ENDPOINT", "https://storage.example.com:0/"),
        ("GCE_METADATA_HOST", "metadata:99999"),
        ("GCE_METADATA_HOST", "[::1]:0"),
        ("STORAGE_EMULATOR_HOST", "http://127.0.0.1:70000"),
    ],
)
def test_a_port_outside_1_to_65535_is_refused_naming_the_variable(var, value):
    (problem,) = problems_of({**MAIL, var: value})
    assert problem.startswith(f"{var}: ") and "1-65535" in problem and repr(value) in problem, problem


@pytest.mark.parametrize(
    ("var", "value"),
    [("NOTIFY_STORAGE_ENDPOINT", "https://127.0.0.1:65535"), ("GCE_METADATA_HOST", "[::1]:1"),
     ("GCE_METADATA_HOST", "metadata.google.internal"), ("STORAGE_EMULATOR_HOST", "http://[::1]:4443")],
)  # fmt: skip
def test_ports_inside_the_range_and_no_port_at_all_pass(var, value):
    settings = load_settings({**MAIL, var: value})
    attribute = {"NOTIFY_STORAGE_ENDPOINT": "storage_endpoint", "GCE_METADATA_HOST": "metadata_host"}
    assert getattr(settings, attribute.get(var, "storage_emulator_host")) == value


@pytest.mark.parametrize(
    "value", ["http://127.0.0.1:8080", "http://127.9.9.9", "http://localhost:4443/", "http://[::1]:4443"]
)
def test_off_the_platform_a_plain_http_storage_endpoint_may_be_this_machine(value):
    assert load_settings({**MAIL, "NOTIFY_STORAGE_ENDPOINT": value}).storage_endpoint == value.rstrip("/")


@pytest.mark.parametrize("value", ["http://storage.example.com", "http://10.0.0.8:8080", "http://[2001:db8::1]"])
def test_off_the_platform_a_plain_http_storage_endpoint_elsewhere_is_refused(value):
    """The user's own google-auth token would cross the network unencrypted."""
    (problem,) = problems_of({**MAIL, "NOTIFY_STORAGE_ENDPOINT": value})
    assert problem.startswith("NOTIFY_STORAGE_ENDPOINT: ") and repr(value) in problem, problem
    assert "https://" in problem and "access token" in problem and "127.0.0.0/8" in problem, problem


@pytest.mark.parametrize("value", ["http://127.0.0.1:4443:", "http://127.0.0.1:44:43", "http://host:name"])
def test_a_storage_emulator_host_with_a_stray_colon_is_refused_at_start_up(value):
    """Copied with the colon after it, the address used to be accepted and failed at the first
    state call ("Port could not be cast to integer value")."""
    with pytest.raises(ConfigError) as caught:
        load_settings({"NOTIFY_FROM": "a@example.com", "NOTIFY_TO": "b@example.com", "STORAGE_EMULATOR_HOST": value})
    assert any(p.startswith("STORAGE_EMULATOR_HOST: expected http://HOST:PORT") for p in caught.value.problems)
