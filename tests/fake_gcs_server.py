"""The tests' handle on fake-gcs-server: one server per session, a clean slate and a proxy per test.

The server is started by :func:`notifier.tools.localcloud.running_fake_gcs` (the ``gcs_server`` fixture in
conftest). Each test gets :class:`FakeGcs` (the ``fake_gcs`` fixture): every bucket emptied, the
state bucket made, and a :class:`bench.gcs_faults.GcsFaultProxy` in front, which the code under
test reaches through ``STORAGE_EMULATOR_HOST``. The proxy records each request (``requests``), fails
the next ones on demand (``fail_next``: a status or a fault name such as ``"reset_after"``) and runs
``before_forward`` just before a request reaches the server, so a test can change an object between
two of the code's requests.

One gap is filled by the proxy rather than the server: fake-gcs-server checks ``ifGenerationMatch``
on uploads only, so the proxy answers 412 to a conditional read or delete of a generation that is
no longer live, as Cloud Storage does (a stale release must not delete a claim taken over since).

Test helpers (``put``, ``read_json``, ``names``, ``blob``) talk to the server directly: they are
neither recorded nor failed.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from google.cloud import storage

from bench.gcs_faults import GcsFaultProxy, ProxiedRequest
from notifier.tools.localcloud import FakeGcsServer

STATE_BUCKET = "notifier-state"


@dataclass(frozen=True)
class FakeGcs:
    """fake-gcs-server with a recording, fault-injecting proxy in front, for one test."""

    server: FakeGcsServer
    proxy: GcsFaultProxy

    @property
    def url(self) -> str:
        """What ``STORAGE_EMULATOR_HOST`` points at: the proxy."""
        return self.proxy.url

    @property
    def requests(self) -> list[ProxiedRequest]:
        return self.proxy.requests

    @property
    def fail_next(self) -> list[int | str]:
        """Statuses (or fault names) answered to the next object requests, in order."""
        return self.proxy.fail_next

    def before_forward(self, hook: Callable[[ProxiedRequest], None] | None) -> None:
        """Run ``hook`` just before each request that reaches the server (None: stop)."""
        self.proxy.before_forward = hook

    def client(self) -> storage.Client:
        """A client talking to the server directly (not recorded, never failed)."""
        return self.server.client()

    def bucket(self, name: str) -> storage.Bucket:
        """The bucket ``name`` on the server, made if it is not there yet."""
        return self.server.bucket(name)

    def put(self, bucket: str, name: str, data: bytes, content_type: str = "application/json", **fields: Any) -> int:
        """Store ``data`` as ``bucket/name`` (``fields``: blob properties such as content_encoding);
        its generation."""
        blob = self.bucket(bucket).blob(name)
        for key, value in fields.items():
            setattr(blob, key, value)
        blob.upload_from_string(data, content_type=content_type)
        return blob.generation

    def blob(self, bucket: str, name: str) -> storage.Blob | None:
        """The object's resource as the server holds it (generation, metadata, ...), or None."""
        return self.client().bucket(bucket).get_blob(name)

    def read_json(self, bucket: str, name: str) -> Any:
        """The object's content parsed as JSON, or None if there is no such object."""
        blob = self.blob(bucket, name)
        return None if blob is None else json.loads(blob.download_as_bytes())

    def names(self, bucket: str, prefix: str = "") -> list[str]:
        return sorted(blob.name for blob in self.client().list_blobs(bucket, prefix=prefix))


def clean_slate(server: FakeGcsServer) -> None:
    """Every bucket gone but the state bucket, which is left empty: no test sees another's objects."""
    client = server.client()
    for bucket in client.list_buckets():
        for blob in client.list_blobs(bucket):
            blob.delete()
        if bucket.name != STATE_BUCKET:
            bucket.delete()
    server.bucket(STATE_BUCKET)
