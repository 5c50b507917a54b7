"""Shared fixtures: settings, events, and the real function served over HTTP in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from cloudevents.http import CloudEvent

from notifier.config import Settings, load_settings
from notifier.demo import free_port, start_server, stop_server, wait_until_serving
from notifier.events import object_resource
from notifier.events import storage_cloud_event as build_cloud_event

DATA = Path(__file__).parent / "data"
# The platform's event types, written out here rather than imported from the code under test,
# so a typo in its tables fails a test.
CE_TYPES = {
    "finalize": "google.cloud.storage.object.v1.finalized",
    "delete": "google.cloud.storage.object.v1.deleted",
    "archive": "google.cloud.storage.object.v1.archived",
    "metadata": "google.cloud.storage.object.v1.metadataUpdated",
}
GEN1_TYPES = {
    "finalize": "google.storage.object.finalize",
    "delete": "google.storage.object.delete",
    "archive": "google.storage.object.archive",
    "metadata": "google.storage.object.metadataUpdate",
}
SECRET_KEY = "SG.test-secret-key-must-never-be-printed.0123456789"


def settings_for(**env: str) -> Settings:
    base = {"NOTIFY_FROM": "Alerts <alerts@example.com>", "NOTIFY_TO": "ops@example.com", **env}
    return load_settings(base)


def storage_cloud_event(
    kind: str = "finalize",
    bucket: str = "acme",
    name: str = "reports/q3.csv",
    event_id: str = "evt-1",
    **overrides: Any,
) -> CloudEvent:
    data = object_resource(kind, bucket, name, size=2048, content_type="text/csv")
    data.update(overrides)
    return build_cloud_event(kind, data, event_id)


def read_eml(path: Path) -> EmailMessage:
    return message_from_bytes(path.read_bytes(), policy=policy.default)


@dataclass
class FunctionServer:
    """The real function under functions-framework, with its stdout captured as JSON lines."""

    url: str
    process: subprocess.Popen
    log_path: Path
    outbox: Path
    _read: int = field(default=0)

    def post(self, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    def output(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def new_log_lines(self, settle: float = 0.05) -> list[dict[str, Any]]:
        """JSON lines logged since the last call (other output, like gunicorn's, is skipped)."""
        time.sleep(settle)  # the worker flushes each line as it logs; give the pipe a moment
        text = self.output()
        new, self._read = text[self._read :], len(text)
        lines = []
        for line in new.splitlines():
            if line.startswith("{"):
                lines.append(json.loads(line))
        return lines

    def emails(self) -> list[Path]:
        return sorted(self.outbox.glob("*.eml"))


@pytest.fixture(scope="module")
def function_server_factory() -> Iterator:
    servers: list[FunctionServer] = []
    tmp = Path(tempfile.mkdtemp(prefix="notifier-server-"))

    def start(**env: str) -> FunctionServer:
        index = len(servers)
        outbox = tmp / f"outbox-{index}"
        log_path = tmp / f"server-{index}.log"
        full_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "SENDGRID_"))},
            "NOTIFY_FROM": "Storage Alerts <alerts@example.com>",
            "NOTIFY_TO": "ops@example.com",
            "NOTIFY_OUTBOX_DIR": str(outbox),
            "NOTIFY_DEAD_LETTER_DIR": str(tmp / f"deadletter-{index}"),
            **env,
        }
        port = free_port()
        with log_path.open("wb") as log_file:
            process = start_server(port, full_env, log_file)
        server = FunctionServer(f"http://127.0.0.1:{port}", process, log_path, outbox)
        servers.append(server)
        try:
            wait_until_serving(server.url, process)
        except OSError as error:
            raise OSError(f"{error}\n{server.output()}") from None
        return server

    yield start
    for server in servers:
        stop_server(server.process)


@dataclass(frozen=True)
class StorageEmulator:
    url: str
    bucket: str


@pytest.fixture(scope="session")
def storage_emulator() -> Iterator[StorageEmulator]:
    """gcp-storage-emulator, in memory, with the state bucket made."""
    port = free_port()
    command = [str(Path(sys.executable).parent / "gcp-storage-emulator"), "start", "--host", "127.0.0.1",
               "--port", str(port), "--in-memory", "--default-bucket", "notifier-state"]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_serving(url, process)
        yield StorageEmulator(url, "notifier-state")
    finally:
        stop_server(process)


@pytest.fixture(scope="session", autouse=True)
def _the_suite_leaves_the_checkout_alone():
    """Tests write to temporary folders only: no outbox, dead letters or previews in the repo."""
    root = Path(__file__).resolve().parent.parent
    watched = [root / name for name in ("outbox", "deadletter", "preview")]
    before = {path: path.exists() for path in watched}
    yield
    created = [str(path) for path in watched if path.exists() and not before[path]]
    assert not created, f"tests wrote into the checkout: {created}"
