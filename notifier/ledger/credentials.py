"""The bearer token the state bucket's requests carry, from wherever this process runs.

Deployed (K_SERVICE), the token comes from the metadata server with one plain HTTP GET, as
google-auth's Compute Engine credentials get it, without importing them (their module pulls in
``requests``: 85-160 ms of every cold start). On a laptop or in the CLI, google-auth's default
credentials (gcloud's application-default login, a key file) do it, imported only there. Against
fake-gcs-server (STORAGE_EMULATOR_HOST) there is no token at all.
"""

from __future__ import annotations

import json
import math
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from notifier.ledger.base import LedgerError

if TYPE_CHECKING:
    from notifier.config import Settings

SCOPE = "https://www.googleapis.com/auth/devstorage.read_write"
REFRESH_MARGIN = 60.0  # a token is renewed this long before it expires, so no request carries a stale one
METADATA_TIMEOUT = 5.0  # the longest one token request waits (the metadata server answers in milliseconds)
MAX_TOKEN_ANSWER = 16 * 1024  # a token answer is a few hundred bytes
MAX_LIFETIME = 3600.0  # the longest a token is used, whatever its answer says (the platform's last an hour)
# What a bearer token may hold (RFC 6750's b64token), bounded: nothing that could end a header line.
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9._~+/=-]{1,4096}")
_TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"  # noqa: S105 - a path, not a secret


class TokenSource(Protocol):
    def __call__(self, deadline: float) -> str:
        """A valid access token, obtained before ``deadline`` (a ``time.monotonic()`` value)."""
        ...

    def forget(self, token: str) -> None:
        """``token`` was refused (401): the next call gets a fresh one, unless another already did."""
        ...


def checked_token(token: object, where: str) -> str:
    """``token`` if it is a bearer token, registered with the log so that no line can show it; else
    a LedgerError that does not show it either (it may be one with a line break stuck to it)."""
    from notifier import log

    if not isinstance(token, str) or not _BEARER_TOKEN.fullmatch(token):
        size = f"{len(token)} characters" if isinstance(token, str) else type(token).__name__
        raise LedgerError(f"state bucket: {where} gave an access token that is not a bearer token ({size})")
    with _REGISTERED_LOCK:
        if token not in _REGISTERED:
            log.register_secret(token)
            _REGISTERED.append(token)
            while len(_REGISTERED) > KEPT_TOKENS:  # one a refresh, for as long as the instance lives
                log.forget_secret(_REGISTERED.popleft())
    return token


# The log redacts the last few tokens this process was given: the one in use and those an
# answer or error still in flight could hold, not every token an instance ever had.
KEPT_TOKENS = 4
_REGISTERED: deque[str] = deque()
_REGISTERED_LOCK = threading.Lock()


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    renew_at: float  # a clock value


class MetadataServerToken:
    """The runtime service account's token from the metadata server, cached until a minute before
    it expires; one refresh at a time. A failure is a transient LedgerError: the platform redelivers."""

    def __init__(self, host: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.url = f"http://{host}{_TOKEN_PATH}"
        self._host = host
        self._clock = clock
        self._lock = threading.Lock()
        self._token: _Token | None = None

    def __call__(self, deadline: float) -> str:
        with self._lock:  # the others wait for the one refresh, then use its token
            token = self._token
            if token is None or self._clock() >= token.renew_at:
                token = self._token = self._fetch(deadline)
            return token.value

    def forget(self, token: str) -> None:
        with self._lock:
            if self._token is not None and self._token.value == token:  # not one fetched since
                self._token = None

    def _fetch(self, deadline: float) -> _Token:
        from notifier import httpclient

        deadline = min(deadline, time.monotonic() + METADATA_TIMEOUT)
        try:
            answer = httpclient.request(
                "GET", self.url, timeout=METADATA_TIMEOUT, deadline=deadline,
                headers={"Metadata-Flavor": "Google"}, max_answer=MAX_TOKEN_ANSWER,
            )  # fmt: skip
        except (OSError, ValueError) as error:  # ValueError: a host urllib3 cannot use, never "our bug"
            raise self._error(f"{type(error).__name__}: {error}") from None
        if answer.status != 200:
            raise self._error(f"HTTP {answer.status} {answer.reason}".rstrip())
        value, lifetime = _parsed(answer.body)
        if value is None:
            raise self._error("the answer holds no access_token and expires_in")
        token = checked_token(value, f"the metadata server {self._host}")
        return _Token(token, self._clock() + max(0.0, lifetime - REFRESH_MARGIN))

    def _error(self, why: str) -> LedgerError:
        return LedgerError(f"state bucket: no access token from the metadata server {self._host}: {why}")


def _parsed(body: bytes) -> tuple[object, float]:
    """The answer's access_token (checked by the caller) and how long to use it, 0 to MAX_LIFETIME
    seconds: a negative or NaN expires_in is a token for this request only, a huge one an hour's."""
    try:
        answer = json.loads(body)
    except (ValueError, RecursionError):
        return None, 0.0
    if not isinstance(answer, dict):
        return None, 0.0
    token, expires_in = answer.get("access_token"), answer.get("expires_in")
    if token is None or isinstance(expires_in, bool) or not isinstance(expires_in, int | float):
        return None, 0.0
    if isinstance(expires_in, float) and math.isnan(expires_in):
        return token, 0.0
    return token, float(min(max(expires_in, 0), MAX_LIFETIME))  # compared before float(): 10**400 does not fit


class DefaultCredentialsToken:
    """google-auth's application-default credentials (a laptop, the CLI), loaded on first use."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._credentials: Any = None
        self._checked: str | None = None  # the last token checked_token() passed

    def __call__(self, deadline: float) -> str:
        import google.auth
        from google.auth import exceptions as auth_exceptions

        with self._lock:
            try:
                if self._credentials is None:
                    self._credentials, _ = google.auth.default(scopes=[SCOPE])
                if not self._credentials.valid:
                    self._refresh(deadline)
            except auth_exceptions.DefaultCredentialsError as error:
                raise LedgerError(
                    f"NOTIFY_STATE_BUCKET: no Google credentials to reach Cloud Storage with: run"
                    f" `gcloud auth application-default login`, or set GOOGLE_APPLICATION_CREDENTIALS ({error})",
                    misconfigured=True,
                ) from None
            except (auth_exceptions.GoogleAuthError, ValueError) as error:  # ValueError: a token_uri urllib3 cannot use
                raise LedgerError(f"state bucket: no access token: {type(error).__name__}: {error}") from None
            token = self._credentials.token
            if token != self._checked:  # each new token once: checked, and registered with the log
                self._checked = checked_token(token, "google-auth's default credentials")
            return token

    def forget(self, token: str) -> None:
        with self._lock:
            if self._credentials is not None and self._credentials.token == token:
                self._credentials = None  # loaded and refreshed again on the next call

    def _refresh(self, deadline: float) -> None:
        import urllib3
        from google.auth.transport.urllib3 import Request

        request = Request(urllib3.PoolManager())

        def before_deadline(url: str, method: str = "GET", body: Any = None, headers: Any = None, **kwargs: Any) -> Any:
            kwargs["timeout"] = max(0.1, deadline - time.monotonic())  # google-auth sets none of its own
            return request(url, method, body, headers, **kwargs)

        self._credentials.refresh(before_deadline)


def token_source(settings: Settings) -> TokenSource | None:
    """What gives the state bucket's requests their token here; None against fake-gcs-server."""
    if settings.storage_emulator_host:
        return None
    if settings.deployed:
        return MetadataServerToken(settings.metadata_host)
    return DefaultCredentialsToken()
