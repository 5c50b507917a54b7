"""A small local load balancer: one URL in front of several function instances, as Cloud Run's
front end is in front of a function's instances.

Requests go to the instances in turn (round robin). An instance that cannot be reached, or that
drops the connection, gets the request answered 502, and the caller (the Pub/Sub emulator)
redelivers, as it would for any non-2xx answer. It counts requests and answers, so a chaos run
knows when the platform has gone quiet, and times each answer by its status (`make burst`).
"""

from __future__ import annotations

import http.client
import itertools
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from bench.httpd import LocalServer, QuietHandler, answer, forward, passed_on, read_body

MAX_BODY_BYTES = 10 * 1024 * 1024  # the function refuses far less; a push body is a few KB
UPSTREAM_TIMEOUT = 120.0  # longer than any delivery; the emulator gives up on its own clock


@dataclass
class Balancer(LocalServer):
    """``with Balancer([url1, url2]) as balancer:`` serves on :attr:`url` until the block ends."""

    upstreams: list[str]
    statuses: Counter = field(default_factory=Counter)  # HTTP status answered (502: upstream unreachable)
    # HTTP status → how long each such answer took, in seconds
    answer_seconds: dict[int, list[float]] = field(default_factory=lambda: defaultdict(list))
    in_flight: int = 0
    most_in_flight: int = 0  # the caller's concurrency, as seen here
    last_request: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        if not self.upstreams:
            raise ValueError("Balancer: expected at least one upstream URL")
        self._targets = [_host_port(url) for url in self.upstreams]
        self._next = itertools.cycle(range(len(self._targets)))
        self._lock = threading.Lock()
        self._listen(self._handler(), _QuietServer)
        self.url += "/"

    def quiet_for(self) -> float:
        """Seconds since the last request ended (0 while one is in flight)."""
        with self._lock:
            return 0.0 if self.in_flight else time.monotonic() - self.last_request

    def _pick(self) -> tuple[str, int]:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            return self._targets[next(self._next)]

    def _done(self, status: int, seconds: float = 0.0) -> None:
        with self._lock:
            self.in_flight -= 1
            self.statuses[status] += 1
            self.answer_seconds[status].append(seconds)
            self.last_request = time.monotonic()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        balancer = self

        class Handler(QuietHandler):
            def _serve(self) -> None:
                body = read_body(self, MAX_BODY_BYTES)
                if body is None:
                    return  # refused: 400, 411 or 413 (read_body answered)
                headers = passed_on(self.headers.items())
                status, started = 502, time.monotonic()
                upstream = balancer._pick()
                try:
                    status, answer_headers, body = forward(upstream, self.command, self.path, headers, body,
                                                           timeout=UPSTREAM_TIMEOUT)  # fmt: skip
                except (OSError, http.client.HTTPException):
                    answer_headers, body = [], b"upstream unreachable"
                finally:
                    balancer._done(status, time.monotonic() - started)
                answer(self, status, answer_headers, body)

            do_GET = do_POST = _serve

        return Handler


class _QuietServer(ThreadingHTTPServer):
    request_queue_size = 128  # the emulators' pushes arrive in bursts

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a caller closing a kept-alive connection is not news; failures are answered 502


def _host_port(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname:
        raise ValueError(f"Balancer: expected an http://host:port URL, got {url!r}")
    return parts.hostname, parts.port or 80
