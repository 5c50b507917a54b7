"""The state bucket's access token (notifier.ledger.credentials): from a metadata server stand-in as
deployed, from google-auth's default credentials elsewhere, none against fake-gcs-server; and the
GCE_METADATA_HOST variable. Every server here is local (127.0.0.1)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer

from notifier.config import ConfigError
from notifier.ledger import ClaimStatus, LedgerError
from notifier.ledger.base import state_deadline
from notifier.ledger.bucket import StateBucket
from notifier.ledger.credentials import (
    REFRESH_MARGIN,
    DefaultCredentialsToken,
    MetadataServerToken,
    token_source,
)
from notifier.ledger.gcs import GcsLedger
from tests.conftest import settings_for

TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"
LIFETIME = 3599  # what the metadata server gives a fresh token


@dataclass
class MetadataStandIn:
    """The metadata server's token endpoint: a token per GET that carries ``Metadata-Flavor: Google``
    (403 without, as the real one), ``status`` to fail, ``hang`` to accept and never answer."""

    status: int = 200
    hang: bool = False
    body: bytes | None = None  # set: answered instead of a fresh token (still counted in ``served``)
    served: list[str] = field(default_factory=list)  # each token given, in order
    flavors: list[str | None] = field(default_factory=list)
    released: threading.Event = field(default_factory=threading.Event)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                stand_in.flavors.append(self.headers.get("Metadata-Flavor"))
                if stand_in.hang:
                    stand_in.released.wait(30)
                    return
                if self.path != TOKEN_PATH or self.headers.get("Metadata-Flavor") != "Google":
                    self._answer(403, b"Missing Metadata-Flavor:Google header.")
                elif stand_in.status != 200:
                    self._answer(stand_in.status, b"internal error")
                else:
                    stand_in.served.append(token := f"ya29.token-{len(stand_in.served) + 1}")
                    body = {"access_token": token, "expires_in": LIFETIME, "token_type": "Bearer"}
                    self._answer(200, stand_in.body or json.dumps(body).encode())

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler


@pytest.fixture
def metadata() -> Iterator[tuple[MetadataStandIn, str]]:
    """The stand-in and its HOST:PORT (what GCE_METADATA_HOST holds)."""
    stand_in = MetadataStandIn()
    server = ThreadingHTTPServer(("127.0.0.1", 0), stand_in.handler())
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield stand_in, f"127.0.0.1:{server.server_address[1]}"
    finally:
        stand_in.released.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _bucket_at(endpoint: HTTPServer, source: MetadataServerToken) -> StateBucket:
    """The state bucket at a recording server that accepts every upload (generation 7)."""
    endpoint.expect_request("/upload/storage/v1/b/state/o").respond_with_json({"generation": "7"})
    bucket = StateBucket("state", endpoint.url_for("").rstrip("/"), source, retry_budget=0.0)
    bucket.sleep = lambda seconds: None
    return bucket


def _authorizations(endpoint: HTTPServer) -> list[str | None]:
    return [request.headers.get("Authorization") for request, _ in endpoint.log]


def test_the_metadata_token_is_sent_as_a_bearer_token_and_fetched_once(metadata, httpserver):
    stand_in, host = metadata
    bucket = _bucket_at(httpserver, MetadataServerToken(host))
    for i in range(5):
        assert bucket.upload(f"ledger/n{i}", b"{}", if_generation_match=0) == 7
    assert _authorizations(httpserver) == ["Bearer ya29.token-1"] * 5
    assert stand_in.served == ["ya29.token-1"], "one metadata request for many bucket requests"
    assert stand_in.flavors == ["Google"]


def test_the_token_is_renewed_a_minute_before_it_expires(metadata, httpserver):
    stand_in, host = metadata
    clock = Clock()
    bucket = _bucket_at(httpserver, MetadataServerToken(host, clock=clock))
    bucket.upload("ledger/a", b"{}")
    clock.now += LIFETIME - REFRESH_MARGIN - 1  # still good
    bucket.upload("ledger/b", b"{}")
    clock.now += 2  # within the last minute: renewed
    bucket.upload("ledger/c", b"{}")
    assert _authorizations(httpserver) == ["Bearer ya29.token-1"] * 2 + ["Bearer ya29.token-2"]
    assert len(stand_in.served) == 2


def test_one_refresh_at_a_time_across_threads(metadata):
    stand_in, host = metadata
    source = MetadataServerToken(host)
    with ThreadPoolExecutor(8) as pool:
        tokens = list(pool.map(lambda _: source(time.monotonic() + 5), range(32)))
    assert set(tokens) == {"ya29.token-1"}
    assert len(stand_in.flavors) == 1


@pytest.mark.parametrize("status", [500, 503, 404])
def test_a_failing_metadata_server_is_a_transient_ledger_error_naming_it(metadata, httpserver, status):
    stand_in, host = metadata
    stand_in.status = status
    ledger = GcsLedger(_bucket_at(httpserver, MetadataServerToken(host)))
    with pytest.raises(LedgerError) as caught:
        ledger.claim("n1", lease_seconds=60)
    assert f"metadata server {host}" in str(caught.value) and f"HTTP {status}" in str(caught.value)
    assert not caught.value.misconfigured  # the platform redelivers
    assert httpserver.log == [], "no bucket request without a token"


def test_a_hung_metadata_server_fails_within_the_deadline(metadata, httpserver):
    stand_in, host = metadata
    stand_in.hang = True
    ledger = GcsLedger(_bucket_at(httpserver, MetadataServerToken(host)))
    started = time.monotonic()
    with state_deadline(started + 1.0, send_needs=0.0, grace=0.0), pytest.raises(LedgerError) as caught:
        ledger.claim("n1", lease_seconds=60)
    assert time.monotonic() - started < 3.0  # generous: not stuck for the metadata server's sake
    assert f"metadata server {host}" in str(caught.value) and "TimeoutError" in str(caught.value)
    assert not caught.value.misconfigured


def test_without_the_metadata_flavor_header_the_stand_in_refuses(metadata):
    """The stand-in checks what the real server checks: so the passing tests above prove we send it."""
    import urllib.error
    import urllib.request

    _, host = metadata
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"http://{host}{TOKEN_PATH}", timeout=5)
    assert refused.value.code == 403


def test_the_emulator_needs_no_token_and_a_deployed_function_asks_the_metadata_server(metadata):
    _, host = metadata
    assert token_source(settings_for(STORAGE_EMULATOR_HOST="http://127.0.0.1:4443")) is None
    deployed = token_source(settings_for(K_SERVICE="notifier", NOTIFY_BACKEND="console", GCE_METADATA_HOST=host))
    assert isinstance(deployed, MetadataServerToken)
    assert deployed.url == f"http://{host}{TOKEN_PATH}"
    assert deployed(time.monotonic() + 5) == "ya29.token-1"
    assert isinstance(token_source(settings_for()), DefaultCredentialsToken)


def test_a_deployed_claim_reaches_the_endpoint_with_the_token(metadata, httpserver):
    _, host = metadata
    settings = settings_for(K_SERVICE="notifier", NOTIFY_BACKEND="console", GCE_METADATA_HOST=host)
    bucket = _bucket_at(httpserver, token_source(settings))
    assert GcsLedger(bucket).claim("n1", lease_seconds=60).status is ClaimStatus.CLAIMED
    assert _authorizations(httpserver) == ["Bearer ya29.token-1"]


# --- off the platform: google-auth's default credentials ---------------------------------------


def _service_account_key(token_uri: str) -> dict[str, str]:
    """A throwaway service-account key whose tokens come from ``token_uri`` (a local server)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return {"type": "service_account", "project_id": "local", "private_key_id": "1", "private_key": pem.decode(),
            "client_email": "notifier@local.iam.gserviceaccount.com", "client_id": "1", "token_uri": token_uri}  # fmt: skip


def test_default_credentials_are_refreshed_over_urllib3(httpserver, tmp_path: Path, monkeypatch):
    httpserver.expect_request("/token", method="POST").respond_with_json(
        {"access_token": "ya29.local", "expires_in": 3600, "token_type": "Bearer"}
    )
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(_service_account_key(httpserver.url_for("/token"))), encoding="utf-8")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    source = DefaultCredentialsToken()
    assert [source(time.monotonic() + 5) for _ in range(3)] == ["ya29.local"] * 3
    assert len(httpserver.log) == 1, "refreshed once, then valid"


def test_no_default_credentials_is_a_misconfiguration_that_says_what_to_do(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
    with pytest.raises(LedgerError) as caught:
        DefaultCredentialsToken()(time.monotonic() + 5)
    assert caught.value.misconfigured
    assert "gcloud auth application-default login" in str(caught.value)


# --- GCE_METADATA_HOST ---------------------------------------------------------------------------


def test_the_metadata_host_defaults_to_the_platforms():
    assert settings_for().metadata_host == "metadata.google.internal"
    assert settings_for(GCE_METADATA_HOST="127.0.0.1:8080").metadata_host == "127.0.0.1:8080"
    assert settings_for(GCE_METADATA_HOST="[::1]:80").metadata_host == "[::1]:80"


@pytest.mark.parametrize("value", ["http://metadata", "metadata/path", "host:port", "a b", "user@host"])
def test_a_malformed_metadata_host_is_named(value):
    with pytest.raises(ConfigError) as caught:
        settings_for(GCE_METADATA_HOST=value)
    (problem,) = caught.value.problems
    assert problem == f"GCE_METADATA_HOST: expected HOST or HOST:PORT (the metadata server), got {value!r}"


# --- review R2: tokens that are not, lifetimes that are not, a 401, a request that cannot be made ----


@pytest.mark.parametrize(
    "access_token",
    ["ya29.SECRET\r\nX-Evil: 1", "ya29.SECRET two", "ya29.SECRET\u00e9", "ya29.SECRET" + "x" * 4096, ""],
)
def test_a_token_that_is_not_a_bearer_token_is_refused_without_showing_it(metadata, httpserver, access_token):
    stand_in, host = metadata
    stand_in.body = json.dumps({"access_token": access_token, "expires_in": LIFETIME}).encode()
    with pytest.raises(LedgerError) as caught:
        GcsLedger(_bucket_at(httpserver, MetadataServerToken(host))).claim("n1", lease_seconds=60)
    assert f"metadata server {host}" in str(caught.value) and not caught.value.misconfigured
    assert "SECRET" not in str(caught.value) and "Evil" not in str(caught.value)
    assert httpserver.log == [], "no bucket request with it"


@pytest.mark.parametrize(
    ("expires_in", "cached"),
    [("3599", True), ("Infinity", True), ("1e400", True), (str(10**400), True), ("86400000", True),
     ("NaN", False), ("-5", False), ("0", False)],
)  # fmt: skip
def test_a_token_lives_at_most_an_hour_whatever_expires_in_says(metadata, expires_in, cached):
    stand_in, host = metadata
    stand_in.body = f'{{"access_token": "ya29.odd", "expires_in": {expires_in}}}'.encode()
    clock = Clock()
    source = MetadataServerToken(host, clock=clock)
    assert source(time.monotonic() + 5) == source(time.monotonic() + 5) == "ya29.odd"
    assert len(stand_in.served) == (1 if cached else 2), "cached while valid; never past its expiry"
    clock.now += 3600
    source(time.monotonic() + 5)
    assert len(stand_in.served) == (2 if cached else 3), "an hour later, always a fresh one"


@pytest.mark.parametrize("expires_in", ["true", '"3599"', "null"])
def test_an_expires_in_that_is_not_a_number_is_refused(metadata, expires_in):
    stand_in, host = metadata
    stand_in.body = f'{{"access_token": "ya29.odd", "expires_in": {expires_in}}}'.encode()
    with pytest.raises(LedgerError, match="no access_token and expires_in"):
        MetadataServerToken(host)(time.monotonic() + 5)


@pytest.fixture
def fresh_log_secrets(monkeypatch):
    """The log's secrets and the tokens registered with it, empty for this test."""
    from collections import deque

    from notifier import log as log_module
    from notifier.ledger import credentials as credentials_module

    monkeypatch.setattr(log_module, "_secrets", [])
    monkeypatch.setattr(credentials_module, "_REGISTERED", deque())
    return log_module


def test_every_fetched_token_is_redacted_from_the_log(metadata, fresh_log_secrets):
    log_module = fresh_log_secrets
    _, host = metadata
    clock = Clock()
    source = MetadataServerToken(host, clock=clock)
    first = source(time.monotonic() + 5)
    clock.now += 3600
    second = source(time.monotonic() + 5)
    assert (first, second) == ("ya29.token-1", "ya29.token-2")
    assert log_module.redact(f"sent {first} then {second}") == "sent [redacted] then [redacted]"


def test_the_log_keeps_redacting_the_last_few_tokens_not_every_one_an_instance_ever_had(fresh_log_secrets):
    from notifier.ledger.credentials import KEPT_TOKENS, checked_token

    log_module = fresh_log_secrets
    log_module.register_secret("SG.the-sendgrid-key")
    tokens = [f"ya29.hourly-{hour}" for hour in range(KEPT_TOKENS + 20)]  # a day of hourly refreshes
    for token in tokens:
        checked_token(token, "the metadata server")
    assert log_module.redact(" ".join(tokens[-KEPT_TOKENS:])) == " ".join(["[redacted]"] * KEPT_TOKENS)
    assert len(log_module._secrets) == KEPT_TOKENS + 1  # the key, and the tokens still kept
    assert log_module.redact("key SG.the-sendgrid-key") == "key [redacted]"  # other secrets stay
    assert log_module.redact(tokens[0]) == tokens[0]  # a day-old token is no longer looked for


def test_a_401_from_storage_gets_one_retry_with_a_fresh_metadata_token(metadata, httpserver):
    stand_in, host = metadata
    revoked = {"error": {"code": 401, "message": "Invalid Credentials"}}
    httpserver.expect_oneshot_request("/upload/storage/v1/b/state/o").respond_with_json(revoked, status=401)
    bucket = _bucket_at(httpserver, MetadataServerToken(host))
    assert bucket.upload("ledger/n1", b"{}", if_generation_match=0) == 7
    assert _authorizations(httpserver) == ["Bearer ya29.token-1", "Bearer ya29.token-2"]
    assert len(stand_in.served) == 2


def test_a_401_with_the_fresh_token_too_is_a_permission_problem(metadata, httpserver):
    stand_in, host = metadata
    revoked = {"error": {"code": 401, "message": "Invalid Credentials"}}
    httpserver.expect_request("/upload/storage/v1/b/state/o").respond_with_json(revoked, status=401)
    bucket = StateBucket("state", httpserver.url_for("").rstrip("/"), MetadataServerToken(host), retry_budget=0.0)
    with pytest.raises(LedgerError) as caught:
        GcsLedger(bucket).claim("n1", lease_seconds=60)
    assert caught.value.misconfigured and "roles/storage.objectAdmin" in str(caught.value)
    assert (len(stand_in.served), len(httpserver.log)) == (2, 2), "once more, not for ever"


def test_a_401_from_storage_gets_one_retry_with_fresh_default_credentials(httpserver, tmp_path: Path, monkeypatch):
    httpserver.expect_request("/token", method="POST").respond_with_json(
        {"access_token": "ya29.local", "expires_in": 3600, "token_type": "Bearer"}
    )
    revoked = {"error": {"code": 401, "message": "Invalid Credentials"}}
    httpserver.expect_oneshot_request("/upload/storage/v1/b/state/o").respond_with_json(revoked, status=401)
    httpserver.expect_request("/upload/storage/v1/b/state/o").respond_with_json({"generation": "7"})
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(_service_account_key(httpserver.url_for("/token"))), encoding="utf-8")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    bucket = StateBucket("state", httpserver.url_for("").rstrip("/"), DefaultCredentialsToken(), retry_budget=0.0)
    assert bucket.upload("ledger/n1", b"{}", if_generation_match=0) == 7
    assert [request.path for request, _ in httpserver.log] == ["/token", "/upload/storage/v1/b/state/o"] * 2


def test_a_metadata_host_urllib3_cannot_use_is_a_transient_ledger_error():
    """Past the configuration's check: a ValueError must not escape as "our bug" (the event acknowledged)."""
    with pytest.raises(LedgerError) as caught:
        MetadataServerToken("127.0.0.1:99999")(time.monotonic() + 5)
    assert "metadata server 127.0.0.1:99999" in str(caught.value) and not caught.value.misconfigured
