"""Every HTTP request the function makes, SendGrid's and the state bucket's, over one urllib3 stack.

urllib3's pool managers keep connections alive per host (checking that an idle one was not closed
by the server before reusing it), share one TLS context (CA certificates looked up by hash, not
parsed up front, when the hashed folder covers the bundle: :mod:`notifier.truststore`; an https://
proxy's handshake uses it too), and go through the proxy that ``HTTPS_PROXY`` /
``HTTP_PROXY`` name unless ``NO_PROXY`` exempts the host: a tunnel (CONNECT, with the proxy URL's
credentials) for https, absolute URLs for http. Which proxy, if any, is read once per origin and
process, at its first request. What urllib3 lacks is added here: a deadline for the whole answer. A
socket timeout bounds each read (and the TLS handshake), so a server trickling its answer one byte
at a time could hold a request for ever; the watchdog (notifier.watchdog) shuts the connection's
socket at the deadline instead, on no thread of the request's own, from the TCP connect (its
timeout never past the deadline) through a proxy's CONNECT and the handshake to the answer's last
byte.

Every failure without an answer is an OSError (TimeoutError at the deadline; an unusable proxy
variable, named but never quoted: it may hold a password; IncompleteAnswer, with the status and
headers, when only the body failed); retrying is the
caller's (tenacity) decision, never urllib3's, and redirects are not followed.
"""

from __future__ import annotations

import http.client
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import HTTPError as Urllib3Error
from urllib3.exceptions import NewConnectionError, ProtocolError, ProxyError
from urllib3.exceptions import TimeoutError as Urllib3Timeout

from notifier import proxies, truststore
from notifier.watchdog import watching

# Our peers answer in a few hundred bytes (SendGrid) or a few KiB (a ledger record); anything past
# what the caller allows is a fault, or a hostile proxy, and is cut off with its connection dropped.
MAX_ANSWER = 1024 * 1024
# Kept-alive connections per host: one per thread sending at once, with room to spare (a connection
# returned to a full pool is closed, and the next request past it pays a new TLS handshake). At least
# this many; more when NOTIFY_MAX_IN_FLIGHT allows more requests at once (keep_connections_for).
_POOL_SIZE = 64
_SPARE_CONNECTIONS = 8
_NO_RETRIES = urllib3.Retry(total=False, redirect=False)  # urllib3 would build this for every request


@dataclass(frozen=True)
class Answer:
    status: int
    reason: str
    headers: Mapping[str, str] = field(repr=False)  # case-insensitive
    body: bytes = field(repr=False)
    cut: bool = False  # the answer was longer than the caller's limit: ``body`` is its start


def request(
    method: str,
    url: str,
    *,
    timeout: float,
    deadline: float,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    max_answer: int = MAX_ANSWER,
) -> Answer:
    """``method url`` and its whole answer, read before ``deadline`` (a ``time.monotonic()``
    value) or TimeoutError; each connect and read waits at most ``timeout``. Any other failure
    without an answer is an OSError. The answer's body is read up to ``max_answer`` bytes."""
    started = time.monotonic()
    timeout = max(0.001, min(timeout, deadline - started))
    opener, target = _opener_for(url)
    response = None
    scope = _Scope(deadline)
    try:
        with scope:
            response = opener.urlopen(
                method, target, body=body, headers=dict(headers or {}), retries=_NO_RETRIES, redirect=False,
                timeout=timeout, preload_content=False, decode_content=False,
            )  # fmt: skip
            # A body with a length (or chunked) that the watchdog cut short fails to read; one that
            # ends when the connection closes would look complete when it is not.
            ends_at_close = response.length_remaining is None and not response.chunked
            data = _read_at_most(response, max_answer + 1)
        if scope.fired and ends_at_close:
            raise TimeoutError
    except BaseException as error:
        failed = isinstance(error, OSError | http.client.HTTPException | Urllib3Error)
        late = time.monotonic() >= deadline
        if response is not None:
            response.close()  # closes its connection: it may be mid-answer
            response.release_conn()
            if failed:  # the status and headers came: the caller may need them (a 2xx took the request)
                if late:
                    why, kind = f"no complete answer within {deadline - started:.1f}s", LateAnswer
                else:
                    why, kind = _as_text(error), IncompleteAnswer
                raise kind(why, response.status, response.reason or "", response.headers) from None
        if late and failed:
            raise TimeoutError(f"no complete answer within {deadline - started:.1f}s") from None
        if isinstance(error, Urllib3Error):
            raise _as_os_error(error) from None
        if isinstance(error, http.client.HTTPException):  # read from http.client's response: as urllib3 would
            raise ConnectionError(f"{type(error).__name__}: {error}") from None
        raise
    cut = len(data) > max_answer
    if cut:  # the rest of the answer is still on the wire
        response.close()
    response.release_conn()
    return Answer(response.status, response.reason or "", response.headers, data[:max_answer], cut)


class IncompleteAnswer(ConnectionError):
    """The status line and headers came, the whole body did not (cut short, malformed, or still
    coming at the deadline). A 2xx means the server took the request: sending it again may do it
    twice."""

    def __init__(self, why: str, status: int, reason: str, headers: Mapping[str, str]) -> None:
        super().__init__(f"HTTP {status}, then {why}")
        self.status, self.reason, self.headers = status, reason, headers


class LateAnswer(IncompleteAnswer, TimeoutError):
    """An IncompleteAnswer whose body was still coming at the deadline."""


def _as_text(error: BaseException) -> str:
    if isinstance(error, Urllib3Error):
        error = _as_os_error(error)
    return f"{type(error).__name__}: {error}"


def _read_at_most(response: Any, limit: int) -> bytes:
    """Up to ``limit`` bytes of the body, read from http.client's response under urllib3's: the
    answer is neither decoded nor buffered, so urllib3's decoder and read buffer would only cost
    CPU on every request."""
    raw = response._fp if isinstance(response._fp, http.client.HTTPResponse) else response
    chunks, size = [], 0
    while size < limit:
        chunk = raw.read(min(64 * 1024, limit - size))
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    data = b"".join(chunks)
    if size < limit and getattr(raw, "length", None):  # http.client takes a length cut short for the end
        raise http.client.IncompleteRead(data, raw.length)
    return data


def _as_os_error(error: Urllib3Error) -> OSError:
    """urllib3's exception as the OSError under it, or one that says what happened."""
    cause = _underlying(error)
    if isinstance(error, ProxyError):  # its text holds no proxy URL, so no credentials
        what = cause if cause is not None else error.args[0] if error.args else error
        kind = TimeoutError if isinstance(cause, TimeoutError) else ConnectionError
        return kind(f"the proxy failed: {what}")  # e.g. "Tunnel connection failed: 407 Proxy ..."
    if isinstance(cause, OSError):
        return cause
    if isinstance(cause, http.client.HTTPException):
        return ConnectionError(f"{type(cause).__name__}: {cause}")
    if isinstance(error, Urllib3Timeout) and not isinstance(error, NewConnectionError):
        return TimeoutError(str(error))
    if isinstance(error, ProtocolError):
        return ConnectionError(str(error))
    return OSError(f"{type(error).__name__}: {error}")


def _underlying(error: BaseException) -> BaseException | None:
    """The socket's, TLS library's or http.client's own error that urllib3 wrapped, if any."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, OSError | http.client.HTTPException):
            return cause
        cause = getattr(cause, "original_error", None) or cause.__context__ or cause.__cause__
    return None


# ---------------------------------------------------------------------------------------------
# The deadline: every connection a request opens or uses is watched until its answer is read.


class _Scope:
    """While active on a thread, each connection that connects or sends on it is watched."""

    _active = threading.local()

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self._watches: dict[int, Any] = {}

    def __enter__(self) -> _Scope:
        _Scope._active.scope = self
        return self

    def __exit__(self, *exc: object) -> None:
        _Scope._active.scope = None
        for watch in self._watches.values():
            watch.__exit__(None, None, None)

    @property
    def fired(self) -> bool:
        return any(watch.fired for watch in self._watches.values())

    @classmethod
    def watch(cls, owner: object, sock: socket.socket | Callable[[], socket.socket | None]) -> None:
        """Watch ``sock`` (a socket, or a function giving whatever socket ``owner`` holds when the
        deadline comes), once per ``owner`` in this scope."""
        scope = getattr(cls._active, "scope", None)
        if scope is not None and id(owner) not in scope._watches:
            scope._watches[id(owner)] = watching(sock, scope.deadline).__enter__()


class _WatchedSSLSocket(ssl.SSLSocket):
    """A TLS socket whose handshake is watched. Wrapping detaches the plain socket the connection
    held (shutting that one down does nothing), and the handshake, bounded only by the socket
    timeout, runs before urllib3 hands the new socket to the connection."""

    def do_handshake(self, block: bool = False) -> None:
        _Scope.watch(self, self)
        super().do_handshake(block)


class _Watched:
    """Makes a connection watched from its connect (or first request, when kept alive) to the end
    of its answer."""

    sock: socket.socket | None
    _answering: socket.socket | None = None
    _holding = False  # sends of the request's head are held back (see request)
    _answered = False  # this connection has carried a whole exchange since it connected
    _held: bytes | None = None

    def connect(self) -> None:  # the TCP connect, a proxy's CONNECT (the handshake: _WatchedSSLSocket)
        _Scope.watch(self, self.watched_socket)
        self._answering = None
        self._answered = False
        super().connect()

    def request(self, *args: Any, **kwargs: Any) -> None:
        _Scope.watch(self, self.watched_socket)
        # On a kept-alive connection the head waits for the body's first bytes: one send, not two.
        # Not on a new one: there a request in one send can wait 40 ms for its answer. A TLS 1.3
        # server sends its session tickets after the handshake; a server that leaves Nagle on (as
        # Python's http.server does) holds its answer until they are acknowledged, and with no
        # second send of ours to carry that, our kernel delays the ACK (measured: 44 ms against 3).
        self._holding = self._answered and self.sock is not None
        try:
            super().request(*args, **kwargs)
            if self._held is not None:  # no body
                super().send(self._held)
        finally:
            self._holding, self._held = False, None

    def send(self, data: Any) -> None:
        if self._holding and isinstance(data, bytes):
            if self._held is None:
                self._held = data
                return
            data, self._holding, self._held = self._held + data, False, None
        elif self._held is not None:
            super().send(self._held)
            self._holding, self._held = False, None
        super().send(data)

    def putheader(self, header: str, *values: Any) -> None:
        # http.client's own: urllib3's only adds a scan of every value for its SKIP_HEADER, which
        # no request here sends.
        http.client.HTTPConnection.putheader(self, header, *values)  # type: ignore[arg-type]

    def getresponse(self, *args: Any, **kwargs: Any) -> Any:
        # http.client lets go of the socket (connection.sock = None) when the answer ends at close;
        # the answer is still read from it, and the watch must still find it.
        self._answering = self.sock
        self._answered = True
        return super().getresponse(*args, **kwargs)

    def watched_socket(self) -> socket.socket | None:
        return self.sock if self.sock is not None else self._answering


class _WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class _WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _HTTPPool(HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _HTTPSPool(HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


# ---------------------------------------------------------------------------------------------
# One pool manager per proxy (None: direct), per process.


_Route = tuple[urllib3.PoolManager | HTTPConnectionPool, bool]  # what sends, and whether it takes the whole URL
_UNUSABLE_PROXY = (
    "{upper}_PROXY (or {lower}_proxy): expected http://[USER:PASSWORD@]HOST[:PORT] or https://..., a port"
    " 1-65535 (the value is not shown: it may hold a password)"
)


def keep_connections_for(senders: int) -> None:
    """Keep a connection per host for each of ``senders`` requests sending at once (and a few more);
    called once at start-up (notifier.http), before the first request: pools built earlier keep
    their size."""
    _MANAGERS.pool_size = max(_POOL_SIZE, senders + _SPARE_CONNECTIONS)


class _Managers:
    def __init__(self) -> None:
        self.pool_size = _POOL_SIZE
        self._lock = threading.Lock()
        self._pid = 0
        self._by_proxy: dict[str | None, urllib3.PoolManager] = {}
        # Per origin, found at its first request (the proxy environment read then): what sends its
        # requests, and whether it takes the whole URL. A pool manager works it out for every request.
        self._routes: dict[tuple[str, str, int | None], _Route] = {}
        self._context: ssl.SSLContext | None = None
        self._parsed: dict[str, tuple[tuple[str, str, int | None], str]] = {}  # URL: origin, path and query

    def opener_for(self, url: str) -> tuple[urllib3.PoolManager | HTTPConnectionPool, str]:
        """What sends a request for ``url`` (its origin's pool, or for plain http through a proxy,
        the proxy manager, which adds the proxy's headers) and the target to give it."""
        parsed = self._parsed.get(url)
        if parsed is None:
            parsed = _parse(url)
            if len(self._parsed) >= _PARSED_URLS:  # a few URLs in practice; bounded whatever the caller
                self._parsed.clear()
            self._parsed[url] = parsed
        key, path = parsed
        with self._lock:
            if self._pid != os.getpid():  # inherited across fork: the parent's sockets are not ours
                self._by_proxy, self._routes, self._pid = {}, {}, os.getpid()
            route = self._routes.get(key)
            if route is None or (not route[1] and route[0].pool is None):  # closed past num_pools
                route = self._route(*key)
                if route is not None:
                    self._routes[key] = route
        if route is None:  # raised here, outside any handler: no exception holding the URL is attached
            raise OSError(_UNUSABLE_PROXY.format(upper=key[0].upper(), lower=key[0]))
        opener, whole_url = route
        return opener, url if whole_url else path

    def _route(self, scheme: str, host: str, port: int | None) -> _Route | None:
        """None: the proxy variable is unusable (config checks it at start-up; the environment may
        have changed since). urllib3's errors for it quote the URL, password and all."""
        proxy = proxies.proxy_for(scheme, host)
        manager = self._by_proxy.get(proxy)
        if manager is None:
            try:
                manager = self._new(proxy) if proxy is None or proxies.problem(proxy) is None else None
            except (ValueError, Urllib3Error):
                manager = None
            if manager is None:
                return None
            self._by_proxy[proxy] = manager
        if proxy is not None and scheme == "http":
            return manager, True
        return manager.connection_from_host(host, port, scheme), False

    def _new(self, proxy: str | None) -> urllib3.PoolManager:
        if self._context is None:  # once per process
            self._context = truststore.tls_context()
            self._context.sslsocket_class = _WatchedSSLSocket
        options: dict[str, Any] = {"maxsize": self.pool_size, "block": False, "ssl_context": self._context}
        if proxy is None:
            manager = urllib3.PoolManager(num_pools=16, **options)
        else:
            # An https:// proxy's own handshake: our watched socket class and trust, not urllib3's.
            manager = urllib3.ProxyManager(
                proxy, num_pools=16, proxy_headers=proxies.authorization(proxy), proxy_ssl_context=self._context,
                **options,
            )  # fmt: skip
        manager.pool_classes_by_scheme = {"http": _HTTPPool, "https": _HTTPSPool}
        return manager


_PARSED_URLS = 256


def _parse(url: str) -> tuple[tuple[str, str, int | None], str]:
    """``url``'s origin (scheme, host, port) and the target to ask its server for."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"expected an http(s):// URL, got {url!r}")
    return (parts.scheme, parts.hostname, parts.port), (parts.path or "/") + (f"?{parts.query}" if parts.query else "")


_MANAGERS = _Managers()
_opener_for = _MANAGERS.opener_for
