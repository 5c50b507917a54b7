"""HTTP(S) connections kept alive between requests, one per thread.

The sendgrid client builds a urllib opener (about 0.5 ms of CPU) and opens a new connection, with
a new TLS handshake, for every email. An instance sending thousands of emails pays that thousands
of times; this keeps one connection per sending thread instead, as browsers and urllib3 do.
urllib3 would do it too, but costs 40 ms of import on every cold start.

Like the client it replaces (urllib), it goes through the proxy that HTTPS_PROXY / HTTP_PROXY name,
unless NO_PROXY exempts the host: a tunnel (CONNECT) for https, absolute URLs for http.

A socket timeout bounds each read, not the whole answer: a server trickling its body could hold a
request past its deadline. One watchdog thread shuts the socket of any request still running at
its deadline (notifier.watchdog), so the request fails there, on its own thread.
"""

from __future__ import annotations

import base64
import http.client
import os
import select
import ssl
import threading
import time
import urllib.request
from dataclasses import dataclass
from email.message import Message as Headers
from urllib.parse import SplitResult, unquote, urlsplit

from notifier.watchdog import watching

# Reused only while idle for less than this, or the server's Keep-Alive timeout if shorter:
# a connection the server has already closed would fail the next request.
IDLE_LIMIT = 15.0
_MARGIN = 1.0
# SendGrid answers in a few hundred bytes; anything past this is a fault (or a hostile proxy) and is
# cut off here, with the connection dropped, rather than read into memory whole.
MAX_ANSWER = 1024 * 1024


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    headers: Headers
    body: bytes


class _Slot(threading.local):
    connection: http.client.HTTPConnection | None = None
    expires: float = 0.0
    pid: int = 0


class KeepAlive:
    """POSTs to one origin over this thread's kept-alive connection."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s):// URL, got {url!r}")
        self._https = parts.scheme == "https"
        self._host, self._port = parts.hostname, parts.port
        self.path = parts.path or "/"
        self._proxy = _proxy_for(parts.scheme, parts.hostname)
        self._proxy_headers = _proxy_authorization(self._proxy)
        if self._proxy is not None and not self._https:  # a plain-http proxy takes the absolute URL
            self.path = parts._replace(query="", fragment="").geturl()
        self._context: ssl.SSLContext | None = None
        self._lock = threading.Lock()
        self._slot = _Slot()

    def post(self, body: bytes, headers: dict[str, str], timeout: float, deadline: float) -> Answer:
        """Send ``body`` and read the whole answer before ``deadline`` (a ``time.monotonic()``
        value), else TimeoutError; on any error the connection is dropped."""
        connection, started = self._connection(timeout), time.monotonic()
        try:
            if connection.sock is None:
                connection.connect()  # each step bounded by the timeout, the whole checked below
                if time.monotonic() >= deadline:
                    raise TimeoutError
            with watching(connection.sock, deadline) as watch:
                connection.request("POST", self.path, body=body, headers=self._request_headers(headers))
                response = connection.getresponse()
                # A body with a length (or chunked) that the watchdog cut short raises IncompleteRead;
                # one that ends when the connection closes would look complete when it is not.
                ends_at_close = response.length is None and not response.chunked
                body = _read_at_most(response, MAX_ANSWER + 1)
                answer = Answer(response.status, response.reason, response.headers, body[:MAX_ANSWER])
            if watch.fired and ends_at_close:
                raise TimeoutError
        except BaseException as error:
            self._drop()
            if time.monotonic() >= deadline and isinstance(error, OSError | http.client.HTTPException):
                raise TimeoutError(f"no complete answer within {deadline - started:.1f}s") from None
            raise
        if response.will_close or len(body) > MAX_ANSWER:  # the rest of a cut answer is still on the wire
            self._drop()
        else:
            self._slot.expires = time.monotonic() + _keep_alive_seconds(response.headers)
        return answer

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        slot = self._slot
        if slot.pid != os.getpid():  # inherited across fork: the parent's socket, not ours to use
            slot.connection, slot.pid = None, os.getpid()
        if slot.connection is not None and (time.monotonic() >= slot.expires or _closed_by_peer(slot.connection)):
            self._drop()
        if slot.connection is None:
            host, port = (self._proxy.hostname, self._proxy.port) if self._proxy else (self._host, self._port)
            if self._https:
                slot.connection = http.client.HTTPSConnection(host, port, timeout=timeout, context=self._ssl_context())
                if self._proxy:
                    slot.connection.set_tunnel(self._host, self._port, headers=self._proxy_headers)
            else:
                slot.connection = http.client.HTTPConnection(host, port, timeout=timeout)
        connection = slot.connection
        connection.timeout = timeout
        if connection.sock is not None:
            connection.sock.settimeout(timeout)
        return connection

    def _request_headers(self, headers: dict[str, str]) -> dict[str, str]:
        if self._proxy is None or self._https:  # a tunnel authenticates once, at CONNECT
            return headers
        return {**headers, **self._proxy_headers}

    def _ssl_context(self) -> ssl.SSLContext:
        # One context for every connection: loading the CA store costs milliseconds.
        with self._lock:
            if self._context is None:
                self._context = ssl.create_default_context()
            return self._context

    def _drop(self) -> None:
        connection, self._slot.connection = self._slot.connection, None
        if connection is not None:
            connection.close()


def _closed_by_peer(connection: http.client.HTTPConnection) -> bool:
    """An idle kept-alive socket that is readable has been closed (or spoken to out of turn) by
    the server: reusing it would fail the next request and cost an attempt."""
    if connection.sock is None:
        return False
    try:
        readable, _, _ = select.select([connection.sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(readable)


def _proxy_for(scheme: str, host: str) -> SplitResult | None:
    """The proxy urllib would use for ``scheme://host``, from the environment, or None."""
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    return urlsplit(proxy if "://" in proxy else f"http://{proxy}")


def _proxy_authorization(proxy: SplitResult | None) -> dict[str, str]:
    if proxy is None or proxy.username is None:
        return {}
    credentials = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}".encode()
    return {"Proxy-Authorization": "Basic " + base64.b64encode(credentials).decode()}


def _keep_alive_seconds(headers: Headers) -> float:
    """How long the connection may idle before reuse: ``Keep-Alive: timeout=N`` caps IDLE_LIMIT."""
    for part in (headers.get("Keep-Alive") or "").split(","):
        name, _, value = part.strip().partition("=")
        if name.strip().lower() == "timeout":
            try:
                return max(0.0, min(IDLE_LIMIT, float(value) - _MARGIN))
            except ValueError:
                break
    return IDLE_LIMIT


def _read_at_most(response: http.client.HTTPResponse, limit: int) -> bytes:
    """The answer's body up to ``limit`` bytes (``read(n)`` may return less than n before the end)."""
    chunks, size = [], 0
    while size < limit:
        chunk = response.read(min(64 * 1024, limit - size))
        if not chunk:
            if response.length:  # read(n), unlike read(), returns b"" for a body cut short
                raise http.client.IncompleteRead(b"".join(chunks), response.length)
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
