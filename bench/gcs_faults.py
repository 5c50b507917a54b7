"""A fault-injecting proxy in front of fake-gcs-server, for chaos runs and the ledger's tests.

fake-gcs-server answers like Cloud Storage (preconditions on uploads included) but never fails;
real buckets do: 5xx, dropped connections and slow answers. Point ``STORAGE_EMULATOR_HOST`` at
:attr:`GcsFaultProxy.url` and every request is forwarded, recorded, and for the requests a
``target`` accepts, failed first as the faults say: queued statuses or fault names (``fail_next``,
for tests that need one exact failure) before random ones (chaos). ``before_forward`` runs just
before a request reaches the server (a test changes an object between two of the client's
requests). With ``preconditions``, ``ifGenerationMatch`` on reads and deletes is enforced here,
as Cloud Storage does: fake-gcs-server checks it on uploads only.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import Message
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qsl, unquote, urlsplit

from bench.httpd import LocalServer, QuietHandler, answer, forward, passed_on, read_body, reset

MAX_BODY_BYTES = 64 * 1024 * 1024  # an upload of a 20 MiB attachment, with room to spare


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
class GcsFaultProxy(LocalServer):
    upstream: str  # http://127.0.0.1:PORT of fake-gcs-server
    faults: GcsFaults = field(default_factory=GcsFaults)
    target: Callable[[ProxiedRequest], bool] = object_requests
    seed: int = 1
    fail_next: list[int | str] = field(default_factory=list)  # statuses or fault names, for the next targeted requests
    fail_message: str = "injected"  # the error message answered with a queued status
    before_forward: Callable[[ProxiedRequest], None] | None = None
    preconditions: bool = False  # refuse stale conditional reads and deletes with 412
    requests: list[ProxiedRequest] = field(default_factory=list)
    injected: Counter = field(default_factory=Counter)  # fault name → how many times

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._lock = threading.Lock()
        self._writes = threading.Lock()  # a precondition checked, then the request forwarded, as one step
        upstream = urlsplit(self.upstream)
        self._upstream = (upstream.hostname or "127.0.0.1", upstream.port or 80)
        self._listen(self._handler())

    def _decide(self, request: ProxiedRequest) -> str | int:
        """'forward', a fault name, or a queued status to answer with."""
        with self._lock:
            self.requests.append(request)
            if not self.target(request):
                return "forward"
            if self.fail_next:
                fault = self.fail_next.pop(0)
                self.injected[f"status {fault}" if isinstance(fault, int) else fault] += 1
                return fault
            roll, f = self._random.random(), self.faults
            for name, chance in (("server_error", f.server_error), ("reset", f.reset),
                                 ("reset_after", f.reset_after), ("slow", f.slow)):  # fmt: skip
                if roll < chance:
                    self.injected[name] += 1
                    return name
                roll -= chance
            return "forward"

    def _stale(self, request: ProxiedRequest, target: str) -> bool:
        """A conditional read or delete of a generation that is no longer the live one."""
        wanted = request.query.get("ifGenerationMatch")
        if wanted is None or request.method not in ("GET", "DELETE") or "/o/" not in request.path:
            return False
        status, _, body = self._forward("GET", urlsplit(target).path.removeprefix("/download"), {}, b"")
        return status == 200 and json.loads(body).get("generation") != wanted  # a missing object: the server's 404

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, list, bytes]:
        status, answer_headers, answer = forward(self._upstream, method, path, headers, body, timeout=60)
        if "json" in dict((k.lower(), v) for k, v in answer_headers).get("content-type", ""):
            # Links in resources (an object's mediaLink) lead back through us, not around us.
            answer = answer.replace(self.upstream.rstrip("/").encode(), self.url.encode())
        return status, answer_headers, answer

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(QuietHandler):
            def _serve(self) -> None:
                body = read_body(self, MAX_BODY_BYTES)
                if body is None:
                    return  # refused: 400, 411 or 413 (read_body answered)
                request = ProxiedRequest.parse(self.command, self.path, self.headers, body)
                decision = proxy._decide(request)
                if isinstance(decision, int) or decision == "server_error":
                    status = decision if isinstance(decision, int) else proxy._random.choice((500, 503))
                    message = proxy.fail_message if isinstance(decision, int) else "injected"
                    self._error(status, message)
                    return
                if decision == "reset":
                    reset(self)
                    return
                headers = passed_on(self.headers.items())
                if proxy.before_forward is not None:
                    proxy.before_forward(request)
                checked = proxy.preconditions and (self.command != "GET" or "ifGenerationMatch" in request.query)
                with proxy._writes if checked else contextlib.nullcontext():
                    if checked and proxy._stale(request, self.path):
                        self._error(412, "At least one of the pre-conditions you specified did not hold.")
                        return
                    status, answer_headers, answer_body = proxy._forward(self.command, self.path, headers, body)
                if decision == "reset_after":
                    reset(self)
                    return
                if decision == "slow":
                    time.sleep(proxy.faults.delay)
                answer(self, status, answer_headers, answer_body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def _error(self, status: int, message: str) -> None:
                body = {"error": {"code": status, "message": message, "errors": [{"message": message}]}}
                answer(self, status, [("Content-Type", "application/json")], json.dumps(body).encode())

        return Handler
