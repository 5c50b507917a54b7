"""A proxy variable that cannot be used (HTTPS_PROXY / HTTP_PROXY, either case): a clear problem
at start-up and, should one still reach a request, an OSError naming the variable; never its
value, which may hold the proxy's password (registered for log redaction too)."""

from __future__ import annotations

import time

import pytest

from notifier import httpclient
from notifier.config import ConfigError, environment_secrets, load_settings

PASSWORD = "s3cretPW-never-shown"
MAIL = {"NOTIFY_FROM": "Alerts <alerts@example.com>", "NOTIFY_TO": "ops@example.com", "NOTIFY_BACKEND": "console"}
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY")

UNUSABLE = {
    "port out of range": (f"http://user:{PASSWORD}@proxy.internal:99999", "port"),
    "port zero": (f"http://user:{PASSWORD}@proxy.internal:0", "port"),
    "port not a number": (f"http://user:{PASSWORD}@proxy.internal:80x", "port"),
    "no host": (f"http://user:{PASSWORD}@:3128", "host"),
    "socks": (f"socks5://user:{PASSWORD}@proxy.internal:1080", "http:// or https://"),
    "broken brackets": (f"http://user:{PASSWORD}@[::1:3128", "expected"),
}


@pytest.fixture(autouse=True)
def no_proxy_settings(monkeypatch):
    for name in _PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(httpclient, "_opener_for", httpclient._Managers().opener_for)


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"])
@pytest.mark.parametrize("case", UNUSABLE, ids=list(UNUSABLE))
def test_an_unusable_proxy_variable_is_a_start_up_problem_naming_it_not_its_value(variable, case):
    value, expected = UNUSABLE[case]

    with pytest.raises(ConfigError) as caught:
        load_settings({**MAIL, variable: value})

    (problem,) = caught.value.problems
    assert problem.startswith(f"{variable}: ") and expected in problem
    assert PASSWORD not in str(caught.value) and "proxy.internal" not in str(caught.value)


@pytest.mark.parametrize(
    "value", ["http://proxy.internal:3128", "https://user:pw@proxy.internal", "proxy.internal:3128", " ", ""]
)
def test_a_usable_proxy_variable_or_none_is_no_problem(value):
    assert load_settings({**MAIL, "HTTPS_PROXY": value}).backend == "console"


def test_a_proxy_password_is_a_secret_for_the_log():
    secrets = environment_secrets({**MAIL, "HTTP_PROXY": f"http://user:{PASSWORD}@proxy.internal:3128"})

    assert PASSWORD in secrets


def test_a_proxy_password_with_escapes_is_a_secret_as_written_and_as_meant():
    secrets = environment_secrets({"https_proxy": "http://user:p%40ss-w0rd@proxy.internal:3128"})

    assert {"p%40ss-w0rd", "p@ss-w0rd"} <= set(secrets)


@pytest.mark.parametrize(("scheme", "variable"), [("https", "HTTPS_PROXY"), ("http", "HTTP_PROXY")])
@pytest.mark.parametrize("case", UNUSABLE, ids=list(UNUSABLE))
def test_a_request_through_an_unusable_proxy_is_an_os_error_naming_the_variable_not_its_value(
    monkeypatch, scheme, variable, case
):
    value, _ = UNUSABLE[case]
    monkeypatch.setenv(variable, value)

    with pytest.raises(OSError, match=rf"^{variable} \(or {variable.lower()}\): expected ") as caught:
        httpclient.request("GET", f"{scheme}://origin.example/", timeout=1, deadline=time.monotonic() + 1)

    assert PASSWORD not in str(caught.value) and PASSWORD not in repr(caught.value)
    assert caught.value.__cause__ is None and caught.value.__context__ is None, "no chained error quotes the URL"


def test_the_lower_case_variable_is_named_too_when_it_is_the_one_set(monkeypatch):
    monkeypatch.setenv("https_proxy", f"http://user:{PASSWORD}@proxy.internal:99999")

    with pytest.raises(OSError, match=r"^HTTPS_PROXY \(or https_proxy\): expected "):
        httpclient.request("GET", "https://origin.example/", timeout=1, deadline=time.monotonic() + 1)
