"""A fault-injecting proxy in front of fake-gcs-server, for chaos runs and the ledger's tests.

fake-gcs-server answers like Cloud Storage (generation preconditions included) but never fails;
real buckets do: 5xx, dropped connections and slow answers. Point ``STORAGE_EMULATOR_HOST`` at
:attr:`GcsFaultProxy.url` and every request is forwarded, recorded, and for the requests a
``target`` accepts, failed first as the faults say: queued statuses (``fail_next``, for tests that
need one exact failure) before random ones (chaos).
"""

from __future__ import annotations

import http.client
import json
import random
import socket
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlsplit

_HOP_BY_HOP = frozenset({"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "host"})


@dataclass(frozen=True)
class ProxiedRequest:
    """One request as the client sent it: ``path`` is percent-decoded, ``query`` the decoded arguments,
    ``object_name`` the object it is about (from the path, ``name=``, or a multipart upload's metadata)."""

    method: str
    path: str
    query: dict[str, str]
    object_name: str | None = None

    @classmethod
    def parse(cls, method: str, target: str, headers: Message, body: bytes) -> ProxiedRequest:
        parts = urlsplit(target)
        path, query = unquote(parts.path), dict(parse_qsl(parts.query))
        name = path.split("/o/", 1)[1] if "/o/" in path else query.get("name")
        if name is None and query.get("uploadType") == "multipart":
            name = _multipart_name(headers.get("Content-Type", ""), body)
        return cls(method, path, query, name)


def _multipart_name(content_type: str, body: bytes) -> str | None:
    message = message_from_bytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body, policy=policy.HTTP)
    for part in message.iter_parts():
        try:
            return json.loads(part.get_payload(decode=True)).get("name")
        except (ValueError, TypeError, AttributeError):
            return None
    return None


@dataclass(frozen=True)
class GcsFaults:
    server_error: float = 0.0  # answer 503 (or 500) without forwarding
    reset: float = 0.0  # close the connection without answering, before forwarding
    reset_after: float = 0.0  # forward (the change happens), then close without answering
    slow: float = 0.0  # forward, then answer only after `delay` seconds
    delay: float = 2.0


def object_requests(request: ProxiedRequest) -> bool:
    """The default target: requests about objects, not the client's bucket lookups."""
    return "/o" in request.path


@dataclass
class GcsFaultProxy:
    upstream: str  # http://127.0.0.1:PORT of fake-gcs-server
    faults: GcsFaults = field(default_factory=GcsFaults)
    target: Callable[[ProxiedRequest], bool] = object_requests
    seed: int = 1
    fail_next: list[int] = field(default_factory=list)  # statuses for the next targeted requests
    requests: list[ProxiedRequest] = field(default_factory=list)
    injected: Counter = field(default_factory=Counter)  # fault name → how many times

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._lock = threading.Lock()
        upstream = urlsplit(self.upstream)
        self._upstream = (upstream.hostname or "127.0.0.1", upstream.port or 80)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> GcsFaultProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _decide(self, request: ProxiedRequest) -> str | int:
        """'forward', a fault name, or a queued status to answer with."""
        with self._lock:
            self.requests.append(request)
            if not self.target(request):
                return "forward"
            if self.fail_next:
                status = self.fail_next.pop(0)
                self.injected[f"status {status}"] += 1
                return status
            roll, f = self._random.random(), self.faults
            for name, chance in (("server_error", f.server_error), ("reset", f.reset),
                                 ("reset_after", f.reset_after), ("slow", f.slow)):  # fmt: skip
                if roll < chance:
                    self.injected[name] += 1
                    return name
                roll -= chance
            return "forward"

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, list, bytes]:
        connection = http.client.HTTPConnection(*self._upstream, timeout=60)
        try:
            connection.request(method, path, body=body or None, headers=headers)
            response = connection.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            connection.close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _serve(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                request = ProxiedRequest.parse(self.command, self.path, self.headers, body)
                decision = proxy._decide(request)
                if isinstance(decision, int) or decision == "server_error":
                    status = decision if isinstance(decision, int) else proxy._random.choice((500, 503))
                    self._answer(status, [("Content-Type", "application/json")],
                                 json.dumps({"error": {"code": status, "message": "injected"}}).encode())  # fmt: skip
                    return
                if decision == "reset":
                    self._reset()
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
                status, answer_headers, answer = proxy._forward(self.command, self.path, headers, body)
                if decision == "reset_after":
                    self._reset()
                    return
                if decision == "slow":
                    time.sleep(proxy.faults.delay)
                self._answer(status, answer_headers, answer)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def _reset(self) -> None:
                # SO_LINGER 0: close with a TCP reset, as a dropped connection looks to the client.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True

            def _answer(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
                try:
                    self.send_response(status)
                    for key, value in headers:
                        if key.lower() not in _HOP_BY_HOP and key.lower() != "content-length":
                            self.send_header(key, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except OSError:
                    pass  # the client gave up first (a slow answer)

        return Handler
