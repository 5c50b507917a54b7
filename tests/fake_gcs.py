"""A tiny Cloud Storage JSON API that enforces generation preconditions, for pytest-httpserver.

gcp-storage-emulator ignores ``ifGenerationMatch`` (see shared/reference/storage-emulator.md), so
the paths where another delivery got there first are tested with the real client against this:
uploads, metadata and media reads, deletes and listings, each answering 412 like real GCS when a
precondition fails. Only what the ledger uses is implemented.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from email import message_from_bytes, policy
from urllib.parse import unquote

from werkzeug import Request, Response

_OBJECT = re.compile(r"^/(?:download/)?storage/v1/b/(?P<bucket>[^/]+)/o/(?P<name>.+)$")
_UPLOAD = re.compile(r"^/upload/storage/v1/b/(?P<bucket>[^/]+)/o$")
_LIST = re.compile(r"^/storage/v1/b/(?P<bucket>[^/]+)/o$")


class FakeGcs:
    def __init__(self) -> None:
        self.objects: dict[tuple[str, str], tuple[int, bytes, dict]] = {}
        self.requests: list[tuple[str, str, dict[str, str]]] = []
        self._generations = itertools.count(1_700_000_000_000_000)
        self._lock = threading.Lock()
        self.fail_next: list[int] = []  # statuses to answer object requests with, before behaving normally
        self.fail_message = "injected"

    def put(self, bucket: str, name: str, data: bytes) -> int:
        with self._lock:
            generation = next(self._generations)
            self.objects[bucket, name] = (generation, data, {})
            return generation

    def read(self, bucket: str, name: str) -> dict | None:
        held = self.objects.get((bucket, name))
        return json.loads(held[1]) if held else None

    def __call__(self, request: Request) -> Response:
        self.requests.append((request.method, request.path, dict(request.args)))
        if self.fail_next and "/o" in request.path:  # not the client's background bucket lookups
            return _json({"error": {"code": self.fail_next[0], "message": self.fail_message}}, self.fail_next.pop(0))
        with self._lock:
            if match := _UPLOAD.match(request.path):
                return self._upload(match["bucket"], request)
            if (match := _LIST.match(request.path)) and request.method == "GET":
                prefix = request.args.get("prefix", "")
                items = [
                    self._resource(b, n)
                    for (b, n) in sorted(self.objects)
                    if b == match["bucket"] and n.startswith(prefix)
                ]
                return _json({"kind": "storage#objects", "items": items})
            if match := _OBJECT.match(request.path):
                return self._object(match["bucket"], unquote(match["name"]), request)
        return _json({"error": {"code": 404, "message": f"no route {request.path}"}}, 404)

    def _upload(self, bucket: str, request: Request) -> Response:
        parts = list(message_from_bytes(
            b"Content-Type: " + request.headers["Content-Type"].encode() + b"\r\n\r\n" + request.get_data(),
            policy=policy.HTTP,
        ).iter_parts())  # fmt: skip
        metadata = json.loads(parts[0].get_payload(decode=True))
        name = metadata["name"]
        if (failed := self._precondition(bucket, name, request)) is not None:
            return failed
        self.objects[bucket, name] = (next(self._generations), parts[1].get_payload(decode=True), metadata)
        return _json(self._resource(bucket, name))

    def _object(self, bucket: str, name: str, request: Request) -> Response:
        held = self.objects.get((bucket, name))
        if held is None:
            return _json({"error": {"code": 404, "message": "No such object"}}, 404)
        if (failed := self._precondition(bucket, name, request)) is not None:
            return failed
        if request.method == "DELETE":
            del self.objects[bucket, name]
            return Response(status=204)
        if request.path.startswith("/download/") or request.args.get("alt") == "media":
            return Response(held[1], headers={"X-Goog-Generation": str(held[0])})
        return _json(self._resource(bucket, name))

    def _precondition(self, bucket: str, name: str, request: Request) -> Response | None:
        wanted = request.args.get("ifGenerationMatch")
        if wanted is None:
            return None
        held = self.objects.get((bucket, name))
        if int(wanted) != (held[0] if held else 0):
            return _json({"error": {"code": 412, "message": "conditionNotMet"}}, 412)
        return None

    def _resource(self, bucket: str, name: str) -> dict:
        generation, data, metadata = self.objects[bucket, name]
        return {
            "kind": "storage#object", "bucket": bucket, "name": name, "generation": str(generation),
            "metageneration": "1", "size": str(len(data)), "metadata": metadata.get("metadata", {}),
            "contentType": metadata.get("contentType", "application/octet-stream"),
        }  # fmt: skip


def _json(body: dict, status: int = 200) -> Response:
    return Response(json.dumps(body), status=status, content_type="application/json")
