"""What the local stand-ins share: a threaded HTTP server run for a ``with`` block, and the two
halves of proxying a request (forward it upstream; answer the caller, who may have gone)."""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

# Headers about one connection, not the message: never passed through a proxy.
HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"})
_BYTE_COUNT = re.compile(r"[0-9]{1,20}")  # int() would also take "-1", "+5", "1_0" and other digits
READ_TIMEOUT = 30.0  # seconds a client may leave a request half sent before its connection is closed


class LocalServer:
    """Serves ``handler`` on a free 127.0.0.1 port, in a daemon thread, from ``__enter__`` to
    ``__exit__``; subclasses call :meth:`_listen` from ``__post_init__``."""

    url: str

    def _listen(
        self, handler: type[BaseHTTPRequestHandler], server: type[ThreadingHTTPServer] = ThreadingHTTPServer
    ) -> None:
        if handler.timeout is None:  # a stalled client would hold its thread for ever
            handler = type(handler.__name__, (handler,), {"timeout": READ_TIMEOUT})
        self._server = server(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def read_body(handler: BaseHTTPRequestHandler, limit: int) -> bytes | None:
    """The request's body, by its Content-Length (none: empty). None once a length that is not a
    whole number of bytes has been answered 400, one over ``limit`` 413, or a Transfer-Encoding
    (chunked) body 411: a negative length would read to the end of the stream, a huge one for ever,
    and unread chunks would be taken for the next request. The connection is then closed (what
    follows cannot be framed)."""
    if coding := handler.headers.get("Transfer-Encoding"):
        _refuse(handler, 411, f"Transfer-Encoding: {coding[:40]!r} is not read here; send a Content-Length")
        return None
    declared = {value.strip() for value in handler.headers.get_all("Content-Length") or ()}
    if not declared:
        return b""
    value = declared.pop()
    if declared or not _BYTE_COUNT.fullmatch(value):
        _refuse(handler, 400, f"Content-Length: expected one whole number of bytes, got {value[:40]!r}")
        return None
    if int(value) > limit:
        _refuse(handler, 413, f"Content-Length: {int(value)} bytes is over the limit of {limit}")
        return None
    return handler.rfile.read(int(value))


def _refuse(handler: BaseHTTPRequestHandler, status: int, message: str) -> None:
    answer(handler, status, [("Content-Type", "text/plain; charset=utf-8")], message.encode())
    handler.close_connection = True


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 (kept-alive connections, as real clients use) and no access log: the stand-ins' base."""

    protocol_version = "HTTP/1.1"
    # TCP_NODELAY, as the servers stood in for do (nginx's tcp_nodelay, Go's net/http, Envoy). With
    # Nagle on, an answer written after a TLS 1.3 server's session tickets waits for the client's
    # delayed ACK of them: 40 ms on a client's first request, a cost no real front end charges.
    disable_nagle_algorithm = True

    def log_message(self, *args: object) -> None:
        pass


def passed_on(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The request headers a proxy passes on."""
    return {key: value for key, value in headers if key.lower() not in HOP_BY_HOP}


def forward(
    upstream: tuple[str, int], method: str, path: str, headers: dict[str, str], body: bytes, timeout: float
) -> tuple[int, list[tuple[str, str]], bytes]:
    """One request to ``upstream`` on a new connection: its status, headers and whole body."""
    connection = http.client.HTTPConnection(*upstream, timeout=timeout)
    try:
        connection.request(method, path, body=body or None, headers=headers)
        response = connection.getresponse()
        return response.status, response.getheaders(), response.read()
    finally:
        connection.close()


def reset(handler: BaseHTTPRequestHandler) -> None:
    """Close the connection with a TCP reset (SO_LINGER 0), as a dropped connection looks to a client."""
    handler.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    handler.close_connection = True


def answer(handler: BaseHTTPRequestHandler, status: int, headers: Iterable[tuple[str, str]], body: bytes) -> None:
    """Send a whole answer (our own Content-Length); a caller that already gave up is no error."""
    try:
        handler.send_response(status)
        for key, value in headers:
            if key.lower() not in HOP_BY_HOP and key.lower() != "content-length":
                handler.send_header(key, value)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)
    except OSError:
        pass  # the caller gave up first (a slow or hung answer)
