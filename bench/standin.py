"""A local SendGrid stand-in for chaos runs and benchmarks: it answers /v3/mail/send, optionally
injecting faults, and remembers every message it accepted.

Faults, each with its own probability: 500/503, 429 with rate-limit headers, a connection reset
(no answer at all), and "accepted then timed out" (the message counts as accepted, but the answer
comes after the client gave up, so the client cannot know it was sent).
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from bench.httpd import LocalServer, QuietHandler, answer, read_body, reset

MAX_BODY_BYTES = 32 * 1024 * 1024  # SendGrid takes 30 MB per message


@dataclass
class Faults:
    server_error: float = 0.0  # 500 or 503
    rate_limit: float = 0.0  # 429 with X-RateLimit-Reset one second ahead
    reset: float = 0.0  # close the connection without answering
    accepted_then_timeout: float = 0.0  # accept, then answer only after `hang` seconds
    hang: float = 2.0
    latency: float = 0.0  # added to every answer


@dataclass
class Acceptance:
    notification_id: str
    subject: str
    ambiguous: bool  # the client was never told
    at: float = 0.0  # time.time() when it was accepted (a chaos run matches it to the function's log)


@dataclass
class StandIn(LocalServer):
    faults: Faults = field(default_factory=Faults)
    seed: int = 1
    accepted: list[Acceptance] = field(default_factory=list)
    requests: int = 0
    keep: bool = True  # remember each accepted message (chaos runs); benchmarks only count
    answered: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._lock = threading.Lock()
        self._listen(self._handler())

    def _decide(self) -> str:
        with self._lock:
            self.requests += 1
            roll, f = self._random.random(), self.faults
            for name, chance in (("server_error", f.server_error), ("rate_limit", f.rate_limit),
                                 ("reset", f.reset), ("accepted_then_timeout", f.accepted_then_timeout)):  # fmt: skip
                if roll < chance:
                    self.answered[name] += 1
                    return name
                roll -= chance
            self.answered["accepted"] += 1
            return "accepted"

    def _accept(self, payload: dict, ambiguous: bool) -> None:
        if not self.keep:
            return
        with self._lock:
            self.accepted.append(
                Acceptance(
                    payload.get("custom_args", {}).get("notification_id", ""),
                    payload.get("subject", ""),
                    ambiguous,
                    time.time(),
                )
            )

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:  # GET /accepted: how many messages it took, for a benchmark's checks
                if self.path != "/accepted":
                    self._answer(404, b'{"errors":[{"message":"not found"}]}')
                    return
                with stand_in._lock:
                    taken = stand_in.answered["accepted"] + stand_in.answered["accepted_then_timeout"]
                self._answer(200, json.dumps({"accepted": taken}).encode(), {"Content-Type": "application/json"})

            def do_POST(self) -> None:
                body = read_body(self, MAX_BODY_BYTES)
                if body is None:
                    return  # refused: 400, 411 or 413 (read_body answered)
                if stand_in.faults.latency:
                    time.sleep(stand_in.faults.latency)
                decision = stand_in._decide()
                if decision == "reset":
                    reset(self)
                    return
                if decision == "server_error":
                    self._answer(stand_in._random.choice((500, 503)), b'{"errors":[{"message":"chaos"}]}')
                    return
                if decision == "rate_limit":
                    reset_at = str(int(time.time()) + 1)
                    self._answer(429, b'{"errors":[{"message":"too many"}]}', {"X-RateLimit-Reset": reset_at})
                    return
                payload = json.loads(body)
                stand_in._accept(payload, ambiguous=decision == "accepted_then_timeout")
                if decision == "accepted_then_timeout":
                    time.sleep(stand_in.faults.hang)
                self._answer(202, b"", {"X-Message-Id": f"standin-{stand_in.requests}"})

            def _answer(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
                answer(self, status, (headers or {}).items(), body)

        return Handler


def main(argv: list[str] | None = None) -> int:
    """Serve in this process until terminated; the first line printed is the URL."""
    import argparse
    import signal
    import sys

    parser = argparse.ArgumentParser(description="A local SendGrid stand-in (accepts every message).")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every answer")
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="serve HTTPS, as SendGrid does")
    args = parser.parse_args(argv)
    stand_in = StandIn(Faults(latency=args.latency), keep=False)
    if args.tls:
        import ssl

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*args.tls)
        # The handshake happens in the handler's thread, not in the accepting one.
        stand_in._server.socket = context.wrap_socket(
            stand_in._server.socket, server_side=True, do_handshake_on_connect=False
        )
        stand_in.url = stand_in.url.replace("http://127.0.0.1", "https://localhost")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print(stand_in.url, flush=True)
    stand_in._server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
