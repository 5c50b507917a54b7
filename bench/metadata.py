"""A local stand-in for the metadata server a deployed function gets its access token from
(``GCE_METADATA_HOST``): it answers the default service account's token request, refuses one
without the ``Metadata-Flavor: Google`` header (as the real server does), and counts both, so a
benchmark can check that a deployed cold start really fetched its token."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

from bench.httpd import LocalServer, QuietHandler, answer

TOKEN_PATH = "/computeMetadata/v1/instance/service-accounts/default/token"  # noqa: S105 - a URL path, not a password
TOKEN = {"access_token": "ya29.bench-not-a-real-token", "expires_in": 3599, "token_type": "Bearer"}


@dataclass
class MetadataStandIn(LocalServer):
    """Serves in a thread of this process from ``__enter__`` to ``__exit__``; ``host`` is HOST:PORT."""

    tokens: int = 0  # token requests answered
    refused: int = 0  # requests without the Metadata-Flavor header
    other: int = 0  # any other path (answered 404)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self._listen(self._handler())
        self.host = self.url.removeprefix("http://")

    def _count(self, what: str) -> None:
        with self._lock:
            setattr(self, what, getattr(self, what) + 1)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        stand_in = self

        class Handler(QuietHandler):
            def do_GET(self) -> None:
                if self.headers.get("Metadata-Flavor") != "Google":
                    stand_in._count("refused")
                    answer(self, 403, [("Content-Type", "text/plain")], b"Missing Metadata-Flavor: Google header")
                elif self.path.split("?", 1)[0] == TOKEN_PATH:
                    stand_in._count("tokens")
                    body = json.dumps(TOKEN).encode()
                    answer(self, 200, [("Content-Type", "application/json"), ("Metadata-Flavor", "Google")], body)
                else:
                    stand_in._count("other")
                    answer(self, 404, [("Content-Type", "text/plain")], b"not served by the stand-in")

        return Handler
