"""The state bucket through Cloud Storage's JSON API: the five calls the ledger and dead letters need.

Create-if-absent and conditional update are one multipart upload with ``ifGenerationMatch`` (0:
only if absent); a read is one media download, whose ``x-goog-generation`` header says which
generation the bytes are; delete names the generation it read; a prefix list pages through the
bucket. Every request goes through :mod:`notifier.httpclient` (urllib3), so google-cloud-storage
(150-280 ms of a cold start) is never imported on an event's path.

Each call is bounded by the delivery's state deadline when one is set (:func:`call_limits`): a
request waits at most ``timeout`` (5 s) or its share of the time left; transient failures
(a dropped connection, 408, 429, 5xx) are retried with jittered backoff, or as long as a 429's or
503's Retry-After asks (capped), while a whole request still fits in the call's budget. A 401 is
tried once more with a fresh token (one revoked or rotated early) before it counts as a
permission problem.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
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
# What a list reads of each object: the rest of a resource (metadata, ACLs: KiBs each) stays there.
LIST_FIELDS = "nextPageToken,items(name,generation,size,contentEncoding)"
# A list with each object's custom metadata (the digest store's summaries): at most 8 KiB an object
# in Cloud Storage, up to 6 times that JSON-escaped, so fewer objects a page and a larger bound.
LIST_FIELDS_WITH_METADATA = "nextPageToken,items(name,generation,size,contentEncoding,metadata)"
PAGE_SIZE_WITH_METADATA = 200
MAX_PAGE_BYTES_WITH_METADATA = 12 * 1024 * 1024
MAX_METADATA_CHARS = 8 * 1024  # keys and values together, as Cloud Storage allows: more is not kept
MAX_ERROR_BYTES = 4096  # of an error answer, whatever the call's own limit: Cloud Storage's words are read whole
MAX_RETRY_AFTER = 8.0  # the longest wait a Retry-After gets; whether a request still fits after it decides the rest
_TRANSIENT_STATUSES = frozenset({408, 429})  # and every 5xx
_BUCKET_MISSING = "the specified bucket does not exist"  # Cloud Storage's words; "No such object: b/o" is not it


class StateBucketError(Exception):
    """Cloud Storage answered with an error ``status``; ``message`` is its own text. Status 0: the
    request could not even be made (a ValueError building it), which is never retried here and is
    transient to the platform, which redelivers. ``bucket_missing``: by default, from Cloud Storage's
    own words for it; ``retry_after``: the seconds a 429 or 503 asked us to wait."""

    def __init__(
        self, status: int, message: str, what: str, *, bucket_missing: bool | None = None,
        retry_after: float | None = None,
    ) -> None:  # fmt: skip
        self.status = status
        self.message = message
        self.retry_after = retry_after
        if bucket_missing is None:
            bucket_missing = status == 404 and _BUCKET_MISSING in message.lower()
        self.bucket_missing = bucket_missing
        super().__init__(f"HTTP {status} on {what}: {message}" if status else f"{what}: {message}")

    @property
    def transient(self) -> bool:
        return self.status in _TRANSIENT_STATUSES or self.status >= 500


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
    metadata: Mapping[str, str] = field(default_factory=dict)  # listed with_metadata only; {} when oversized


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
            if error.status == 404:  # an upload names no object that could be gone: the bucket is
                raise StateBucketError(404, error.message, f"upload {name}", bucket_missing=True) from None
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
        try:  # an error's text is read whole whatever the limit: it tells a missing bucket from an object
            answer = self._call("GET", self._object_url(name, query), f"read {name}", headers=headers,
                                max_answer=max(max_bytes + 1, MAX_ERROR_BYTES))  # fmt: skip
        except StateBucketError as error:
            if error.status in (404, 412) and not error.bucket_missing:
                return None
            raise
        stored_generation = answer.headers.get("x-goog-generation", "")
        if not stored_generation.isdigit():
            raise StateBucketError(answer.status, "the download names no x-goog-generation", f"read {name}")
        encoding = _stored_encoding(answer.headers)
        return Stored(int(stored_generation), answer.body[: max_bytes + 1], encoding)

    def delete(self, name: str, *, if_generation_match: int | None = None) -> None:
        """Delete ``name``; StateBucketError 404 if it is gone, 412 if not at that generation."""
        query = {} if if_generation_match is None else {"ifGenerationMatch": if_generation_match}
        self._call("DELETE", self._object_url(name, query), f"delete {name}")

    def list(self, prefix: str, *, with_metadata: bool = False) -> Listing:
        """Every object whose name starts with ``prefix``, a page per call, up to MAX_PAGES pages
        (the listing's ``truncated`` then says that more were left unlisted); ``with_metadata``:
        with each object's custom metadata (Listed.metadata), in smaller pages."""
        return Listing(lambda token: self._page(prefix, token, with_metadata))

    def _page(self, prefix: str, token: str | None, with_metadata: bool) -> tuple[list[Listed], str | None]:
        """One page of a listing: its objects and the next page's token (None: the last page)."""
        size, fields, most = (
            (PAGE_SIZE_WITH_METADATA, LIST_FIELDS_WITH_METADATA, MAX_PAGE_BYTES_WITH_METADATA)
            if with_metadata else (PAGE_SIZE, LIST_FIELDS, MAX_PAGE_BYTES)
        )  # fmt: skip
        query = {"prefix": prefix, "maxResults": size, "fields": fields}
        if token:
            query["pageToken"] = token
        url = f"{self._endpoint}/storage/v1/b/{quote(self.name, safe='')}/o?{urlencode(query)}"
        answer = self._call("GET", url, f"list {prefix}", max_answer=most)
        if answer.cut:
            raise StateBucketError(answer.status, f"list page over {most} bytes", f"list {prefix}")
        page = _json(answer, f"list {prefix}")
        items = page.get("items") or []
        named = [item for item in items if isinstance(item, dict) and isinstance(item.get("name"), str)]
        listed = [_listed(item, with_metadata) for item in named]
        next_token = page.get("nextPageToken")
        return listed, next_token if isinstance(next_token, str) and next_token else None

    # --- one call: its limits, its retries, its requests --------------------------------------

    def _object_url(self, name: str, query: Mapping[str, Any]) -> str:
        url = f"{self._endpoint}/storage/v1/b/{quote(self.name, safe='')}/o/{quote(name, safe='')}"
        return f"{url}?{urlencode(query)}" if query else url

    def _call(self, method: str, url: str, what: str, **request: Any) -> httpclient.Answer:
        limits = call_limits(self.timeout, self.retry_budget)
        retrying = _retrying(limits, lambda seconds: self.sleep(seconds))
        return retrying(self._request, method, url, what, limits, **request)

    def _request(self, method: str, url: str, what: str, limits: CallLimits, **request: Any) -> httpclient.Answer:
        deadline = min(time.monotonic() + limits.timeout, limits.ends_by)
        answer, token = self._send(method, url, what, limits.timeout, deadline, **request)
        if answer.status == 401 and token is not None and self._token_source is not None:
            # Revoked or rotated before it was due: once more with a fresh one, then it is a permission problem.
            self._token_source.forget(token)
            answer, _ = self._send(method, url, what, limits.timeout, deadline, **request)
        if answer.status >= 300:
            raise StateBucketError(answer.status, _error_message(answer), what, retry_after=_retry_after(answer))
        return answer

    def _send(
        self, method: str, url: str, what: str, timeout: float, deadline: float, *,
        headers: Mapping[str, str] | None = None, **request: Any,
    ) -> tuple[httpclient.Answer, str | None]:  # fmt: skip
        """One request with the current token; the answer and the token it carried."""
        sent = dict(headers or {})
        token = self._token_source(deadline) if self._token_source is not None else None
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        try:
            answer = httpclient.request(method, url, timeout=timeout, deadline=deadline, headers=sent,
                                        **{"max_answer": MAX_RESOURCE_BYTES, **request})  # fmt: skip
        except ValueError as error:  # a URL urllib3 cannot use (a port past 65535): never "our bug", never lost
            raise StateBucketError(0, f"the request could not be made: {type(error).__name__}: {error}", what) from None
        return answer, token


class Listing:
    """A prefix's objects, a page per request as they are iterated, up to MAX_PAGES pages; once
    iterated, ``truncated`` says whether more were left unlisted, ``count`` how many were listed
    and ``pages`` in how many pages."""

    def __init__(self, page: Callable[[str | None], tuple[list[Listed], str | None]]) -> None:
        self._page = page
        self.truncated = False
        self.count = 0
        self.pages = 0

    def __iter__(self) -> Iterator[Listed]:
        token: str | None = None
        for _ in range(MAX_PAGES):
            items, token = self._page(token)
            self.count, self.pages = self.count + len(items), self.pages + 1
            yield from items
            if token is None:
                return
        self.truncated = True


def _retrying(limits: CallLimits, sleep: Any) -> tenacity.Retrying:
    """The one retry policy: transient failures only, waiting as Retry-After asks (capped) or with
    jittered exponential backoff, while a whole request still fits before the call's end; the last
    failure raised as it was."""
    return tenacity.Retrying(
        retry=tenacity.retry_if_exception(_transient),
        wait=_AsAskedElseJittered(),
        stop=_WholeRequestFits(limits),
        sleep=sleep,
        reraise=True,
    )


class _AsAskedElseJittered(tenacity.wait.wait_base):
    """The wait a 429's or 503's Retry-After asks for (at most MAX_RETRY_AFTER), else jittered
    exponential backoff. Whether a whole request still fits after it is the stop's to decide."""

    def __init__(self) -> None:
        self._jittered = tenacity.wait_random_exponential(multiplier=0.25, max=2.0)

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        error = retry_state.outcome.exception() if retry_state.outcome else None
        asked = getattr(error, "retry_after", None)
        return min(asked, MAX_RETRY_AFTER) if asked is not None else self._jittered(retry_state)


def _retry_after(answer: httpclient.Answer) -> float | None:
    """A 429's or 503's Retry-After in seconds; None for none, or an HTTP date (jittered backoff then)."""
    value = answer.headers.get("retry-after", "").strip() if answer.status in (429, 503) else ""
    return float(value) if value.isascii() and value.isdigit() and len(value) <= 6 else None


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


def _listed(item: Mapping[str, Any], with_metadata: bool = False) -> Listed:
    size = item.get("size")
    return Listed(
        name=item["name"],
        generation=int(item["generation"]) if str(item.get("generation", "")).isdigit() else 0,
        size=int(size) if str(size).isdigit() else None,
        content_encoding=(item.get("contentEncoding") or None),
        metadata=_metadata(item.get("metadata")) if with_metadata else {},
    )


def _metadata(values: Any) -> dict[str, str]:
    """An object's custom metadata: its string pairs; none at all when more than Cloud Storage allows."""
    if not isinstance(values, dict):
        return {}
    pairs = {k: v for k, v in values.items() if isinstance(k, str) and isinstance(v, str)}
    return pairs if sum(len(k) + len(v) for k, v in pairs.items()) <= MAX_METADATA_CHARS else {}
