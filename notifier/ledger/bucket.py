"""The state bucket through Cloud Storage's JSON API: the five calls the ledger and dead letters need.

Create-if-absent and conditional update are one multipart upload with ``ifGenerationMatch`` (0:
only if absent); a read is one media download, whose ``x-goog-generation`` header says which
generation the bytes are; delete names the generation it read; a prefix list pages through the
bucket. Every request goes through :mod:`notifier.httpclient` (urllib3), so google-cloud-storage
(150-280 ms of a cold start) is never imported on an event's path.

Each call is bounded by the delivery's state deadline when one is set (:func:`call_limits`): a
request waits at most ``timeout`` (5 s) or its share of the time left; transient failures
(a dropped connection, 408, 429, 5xx) are retried with jittered backoff while a whole request
still fits in the call's budget.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import tenacity

from notifier import httpclient
from notifier.ledger.base import current_deadline
from notifier.ledger.credentials import TokenSource

REQUEST_TIMEOUT = 5.0  # the longest one request waits for its whole answer
RETRY_BUDGET = 8.0  # how long a call's retries may go on, outside a delivery's deadline as well
MAX_RESOURCE_BYTES = 64 * 1024  # an object's resource (an upload's answer) is about 1 KiB
MAX_PAGE_BYTES = 4 * 1024 * 1024  # a list page of PAGE_SIZE resources
PAGE_SIZE = 500
MAX_PAGES = 100  # 50,000 objects listed at most: what a replay run can get through
_TRANSIENT_STATUSES = frozenset({408, 429})  # and every 5xx


class StateBucketError(Exception):
    """Cloud Storage answered with an error ``status``; ``message`` is its own text."""

    def __init__(self, status: int, message: str, what: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"HTTP {status} on {what}: {message}")

    @property
    def transient(self) -> bool:
        return self.status in _TRANSIENT_STATUSES or self.status >= 500

    @property
    def bucket_missing(self) -> bool:
        return self.status == 404 and "bucket" in self.message.lower()


@dataclass(frozen=True, slots=True)
class Stored:
    """An object's bytes as stored (never decompressed), at most the caller's limit plus one byte."""

    generation: int
    data: bytes
    content_encoding: str | None  # set: stored compressed, which the function never writes


@dataclass(frozen=True, slots=True)
class Listed:
    name: str
    generation: int
    size: int | None
    content_encoding: str | None


@dataclass(frozen=True, slots=True)
class CallLimits:
    timeout: float  # one request
    ends_by: float  # the whole call, retries included (a time.monotonic() value)


def call_limits(timeout: float, retry_budget: float, *, share: float = 1.0) -> CallLimits:
    """The limits of one call made now: the fixed ones (``timeout`` a request, ``retry_budget`` for
    retries), cut so that the call ends by the delivery's state deadline (:func:`current_deadline`)
    if one is set, using at most ``share`` of the time left. With no time left, the call is not made."""
    now = time.monotonic()
    until = current_deadline()
    if until is None:
        return CallLimits(timeout, now + timeout + retry_budget)
    remaining = until - now
    if remaining <= 0:
        raise TimeoutError(f"not made: the delivery's time for state-bucket calls ran out {-remaining:.1f} s ago")
    left = remaining * share
    timeout = min(timeout, left)
    return CallLimits(timeout, now + timeout + min(retry_budget, left - timeout))


def _transient(error: BaseException) -> bool:
    if isinstance(error, StateBucketError):
        return error.transient
    return isinstance(error, OSError)


class _WholeRequestFits(tenacity.stop.stop_base):
    """Stop unless, after the coming wait, a whole request still fits before the call's end."""

    def __init__(self, limits: CallLimits) -> None:
        self._limits = limits

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return time.monotonic() + retry_state.upcoming_sleep + self._limits.timeout > self._limits.ends_by


class StateBucket:
    """One bucket through the JSON API at ``endpoint``; ``token_source`` None: no Authorization."""

    def __init__(
        self, name: str, endpoint: str, token_source: TokenSource | None = None, *,
        timeout: float = REQUEST_TIMEOUT, retry_budget: float = RETRY_BUDGET,
    ) -> None:  # fmt: skip
        self.name = name
        self._endpoint = endpoint.rstrip("/")
        self._token_source = token_source
        self.timeout = timeout
        self.retry_budget = retry_budget  # 0: the first failure is final
        self.sleep = time.sleep  # tests replace it: no test waits on a real backoff

    # --- the calls ---------------------------------------------------------------------------

    def upload(
        self, name: str, data: bytes, *, metadata: Mapping[str, str] | None = None,
        if_generation_match: int | None = None,
    ) -> int | None:  # fmt: skip
        """Store ``data`` (JSON) as ``name``; its new generation, or None if the object was not at
        ``if_generation_match`` (0: it already exists)."""
        query: dict[str, Any] = {"uploadType": "multipart", "fields": "generation"}
        if if_generation_match is not None:
            query["ifGenerationMatch"] = if_generation_match
        resource = {"name": name, "contentType": "application/json", "metadata": dict(metadata or {})}
        body, content_type = _multipart(resource, data)
        url = f"{self._endpoint}/upload/storage/v1/b/{quote(self.name, safe='')}/o?{urlencode(query)}"
        try:
            answer = self._call("POST", url, f"upload {name}", body=body, headers={"Content-Type": content_type})
        except StateBucketError as error:
            if error.status == 412:
                return None
            raise
        generation = str(_json(answer, f"upload {name}").get("generation", ""))
        if not generation.isdigit():  # without it, no later change could name what it replaces
            raise StateBucketError(answer.status, "the upload's answer names no generation", f"upload {name}")
        return int(generation)

    def read(self, name: str, max_bytes: int, *, generation: int | None = None) -> Stored | None:
        """The object's bytes as stored, at most ``max_bytes`` + 1 of them (more means too large),
        and their generation; None if there is no such object (or not at ``generation``)."""
        query: dict[str, Any] = {"alt": "media"}
        if generation is not None:
            query["ifGenerationMatch"] = generation
        # gzip accepted: an object stored compressed comes as stored, never inflated here. No Range:
        # an empty object would answer 416; the answer is cut one byte past the limit instead.
        headers = {"Accept-Encoding": "gzip"}
        try:
            answer = self._call("GET", self._object_url(name, query), f"read {name}", headers=headers,
                                max_answer=max_bytes + 1)  # fmt: skip
        except StateBucketError as error:
            if error.status in (404, 412) and not error.bucket_missing:
                return None
            raise
        stored_generation = answer.headers.get("x-goog-generation", "")
        if not stored_generation.isdigit():
            raise StateBucketError(answer.status, "the download names no x-goog-generation", f"read {name}")
        encoding = _stored_encoding(answer.headers)
        return Stored(int(stored_generation), answer.body, encoding)

    def delete(self, name: str, *, if_generation_match: int | None = None) -> None:
        """Delete ``name``; StateBucketError 404 if it is gone, 412 if not at that generation."""
        query = {} if if_generation_match is None else {"ifGenerationMatch": if_generation_match}
        self._call("DELETE", self._object_url(name, query), f"delete {name}")

    def list(self, prefix: str) -> Iterator[Listed]:
        """Every object whose name starts with ``prefix``, a page per call, up to MAX_PAGES pages."""
        token: str | None = None
        for _ in range(MAX_PAGES):
            query = {"prefix": prefix, "maxResults": PAGE_SIZE, **({"pageToken": token} if token else {})}
            url = f"{self._endpoint}/storage/v1/b/{quote(self.name, safe='')}/o?{urlencode(query)}"
            page = _json(self._call("GET", url, f"list {prefix}", max_answer=MAX_PAGE_BYTES), f"list {prefix}")
            for item in page.get("items") or []:
                if isinstance(item, dict) and isinstance(item.get("name"), str):
                    yield _listed(item)
            token = page.get("nextPageToken")
            if not isinstance(token, str) or not token:
                return

    # --- one call: its limits, its retries, its requests --------------------------------------

    def _object_url(self, name: str, query: Mapping[str, Any]) -> str:
        url = f"{self._endpoint}/storage/v1/b/{quote(self.name, safe='')}/o/{quote(name, safe='')}"
        return f"{url}?{urlencode(query)}" if query else url

    def _call(self, method: str, url: str, what: str, **request: Any) -> httpclient.Answer:
        limits = call_limits(self.timeout, self.retry_budget)
        retrying = _retrying(limits, lambda seconds: self.sleep(seconds))
        return retrying(self._request, method, url, what, limits, **request)

    def _request(
        self, method: str, url: str, what: str, limits: CallLimits, *, headers: Mapping[str, str] | None = None,
        **request: Any,
    ) -> httpclient.Answer:  # fmt: skip
        deadline = min(time.monotonic() + limits.timeout, limits.ends_by)
        sent = dict(headers or {})
        if self._token_source is not None:
            sent["Authorization"] = f"Bearer {self._token_source(deadline)}"
        answer = httpclient.request(method, url, timeout=limits.timeout, deadline=deadline, headers=sent,
                                    **{"max_answer": MAX_RESOURCE_BYTES, **request})  # fmt: skip
        if answer.status >= 300:
            raise StateBucketError(answer.status, _error_message(answer), what)
        return answer


def _retrying(limits: CallLimits, sleep: Any) -> tenacity.Retrying:
    """The one retry policy: transient failures only, jittered exponential waits, while a whole
    request still fits before the call's end; the last failure raised as it was."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(_transient),
        wait=tenacity.wait_random_exponential(multiplier=0.25, max=2.0),
        stop=_WholeRequestFits(limits),
        sleep=sleep,
        reraise=True,
    )


def _multipart(resource: Mapping[str, Any], data: bytes) -> tuple[bytes, str]:
    """A multipart/related upload body: the object's resource, then its bytes."""
    boundary = secrets.token_hex(16)
    while boundary.encode() in data:  # practically never; never a body that ends early
        boundary = secrets.token_hex(16)
    head = (
        f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{json.dumps(resource)}\r\n"
        f"--{boundary}\r\nContent-Type: application/json\r\n\r\n"
    )
    return head.encode() + data + f"\r\n--{boundary}--\r\n".encode(), f"multipart/related; boundary={boundary}"


def _json(answer: httpclient.Answer, what: str) -> dict[str, Any]:
    try:
        value = json.loads(answer.body) if not answer.cut else None
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise StateBucketError(answer.status, "the answer is not a JSON object", what)
    return value


def _error_message(answer: httpclient.Answer) -> str:
    """Cloud Storage's own error text ({"error": {"message": ...}}), or the start of the body."""
    try:
        message = json.loads(answer.body)["error"]["message"]
    except (ValueError, RecursionError, KeyError, TypeError):
        message = answer.body[:200].decode("utf-8", "replace").strip() or answer.reason
    return str(message)[:300]


def _stored_encoding(headers: Mapping[str, str]) -> str | None:
    for header in ("x-goog-stored-content-encoding", "content-encoding"):
        value = headers.get(header, "").strip()
        if value and value.lower() != "identity":
            return value
    return None


def _listed(item: Mapping[str, Any]) -> Listed:
    size = item.get("size")
    return Listed(
        name=item["name"],
        generation=int(item["generation"]) if str(item.get("generation", "")).isdigit() else 0,
        size=int(size) if str(size).isdigit() else None,
        content_encoding=(item.get("contentEncoding") or None),
    )
