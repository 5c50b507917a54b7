"""Shared fixtures: settings, events, and the real function served over HTTP in a subprocess."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from cloudevents.http import CloudEvent

from bench.gcs_faults import GcsFaultProxy
from notifier.config import Settings, load_settings
from notifier.payloads import object_resource
from notifier.payloads import storage_cloud_event as build_cloud_event
from notifier.tools.localcloud import FakeGcsServer, running_fake_gcs
from notifier.tools.processes import free_port, start_server, stop_server, wait_until_serving
from tests.fake_gcs_server import FakeGcs, clean_slate

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


def secret_traces(secret: str) -> tuple[str, ...]:
    """Pieces that any leak of ``secret`` holds: its first 9 characters (a prefix longer than 8 is a
    leak) as is, JSON-escaped or percent-encoded, or base64 from any position in a 3-byte group;
    and any 16 of its characters in a row, from anywhere in it (an echo without the "SG.")."""
    head = secret[:9]
    quoted = quote(head, safe="")
    every_byte = "".join(f"%{byte:02X}" for byte in head.encode())
    traces = {head, json.dumps(head)[1:-1], quoted, quoted.lower(), every_byte, every_byte.lower()}
    traces |= {secret[start : start + 16] for start in range(len(secret) - 15)}
    for shift in range(3):
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            traces.add(encode(b"\0" * shift + secret.encode()).decode()[4:16])  # the first group holds the filler
    return tuple(sorted(traces))


KEY_TRACES = secret_traces(SECRET_KEY)


def key_leaks(text: str | bytes, traces: tuple[str, ...] = KEY_TRACES) -> list[str]:
    """The traces (of SECRET_KEY unless told) found in ``text``; empty when there is none."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")  # the traces are ASCII: any byte-preserving decoding finds them
    return [trace for trace in traces if trace in text]


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


_PREVIOUS_SIGTERM = pytest.StashKey[Any]()


def _interrupt(signum: int, frame: object) -> None:
    signal.signal(signal.SIGTERM, lambda *_: None)  # a second one cannot cut the tear-down short
    raise KeyboardInterrupt(f"stopped by {signal.Signals(signum).name}")


def _default_sigterm_in_forked_children() -> None:
    # A forked worker (multiprocessing's pools) must die of SIGTERM, as pool.terminate() expects.
    if signal.getsignal(signal.SIGTERM) is _interrupt:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def pytest_configure(config: pytest.Config) -> None:
    """A SIGTERM (a CI job's timeout) ends the run as Ctrl-C does: pytest tears the fixtures down,
    so the servers they started (fake-gcs-server, the emulator, the function) are stopped too."""
    if threading.current_thread() is threading.main_thread():
        config.stash[_PREVIOUS_SIGTERM] = signal.signal(signal.SIGTERM, _interrupt)
        os.register_at_fork(after_in_child=_default_sigterm_in_forked_children)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _PREVIOUS_SIGTERM in config.stash:
        signal.signal(signal.SIGTERM, config.stash[_PREVIOUS_SIGTERM])


@pytest.fixture(scope="module")
def function_server_factory(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    servers: list[FunctionServer] = []
    tmp = tmp_path_factory.mktemp("notifier-server")  # under basetemp, where the key guard looks

    def start(*, target: str = "handle_storage_event", **env: str) -> FunctionServer:
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
            process = start_server(port, full_env, log_file, target=target)
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


@pytest.fixture
def clean_notifier_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only what each test sets: no NOTIFY_*/SENDGRID_* from the developer's shell; the console
    backend; run from an empty folder."""
    for var in list(os.environ):
        if var.startswith(("NOTIFY_", "SENDGRID_")) or var == "K_SERVICE":
            monkeypatch.delenv(var)
    monkeypatch.setenv("NOTIFY_BACKEND", "console")
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[FakeGcsServer]:
    """One fake-gcs-server for the whole session, with the state bucket made. Use ``fake_gcs`` in a
    test; a module-scoped function server may point STORAGE_EMULATOR_HOST at this one's url."""
    with running_fake_gcs() as server:
        clean_slate(server)
        yield server


@pytest.fixture
def fake_gcs(gcs_server: FakeGcsServer, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGcs]:
    """fake-gcs-server emptied for this test, behind a recording, fault-injecting proxy that the
    google-cloud-storage client reaches through STORAGE_EMULATOR_HOST (tests/fake_gcs_server.py)."""
    clean_slate(gcs_server)
    with GcsFaultProxy(gcs_server.url, preconditions=True) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        yield FakeGcs(gcs_server, proxy)
    clean_slate(gcs_server)


@pytest.fixture(scope="session", autouse=True)
def _the_suite_leaves_the_checkout_alone():
    """Tests write to temporary folders only: no outbox, dead letters or previews in the repo."""
    root = Path(__file__).resolve().parent.parent
    watched = [root / name for name in ("outbox", "deadletter", "preview")]
    before = {path: path.exists() for path in watched}
    yield
    created = [str(path) for path in watched if path.exists() and not before[path]]
    assert not created, f"tests wrote into the checkout: {created}"


# ---------------------------------------------------------------------------------------------
# The suite-wide key guard: nothing a test prints, logs or writes holds SECRET_KEY or a prefix of it
# longer than 8 characters. Only what the code under test produced is checked (captured output and
# files), never pytest's own report of a failed assertion, which may quote the key on purpose.


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator:
    report = yield
    if report.passed:
        # Sections pile up phase after phase: look at this phase's only (setup, call, teardown).
        this_phase = [(name, content) for name, content in report.sections if name.endswith(f" {report.when}")]
        leaked = [name for name, content in this_phase if key_leaks(content)]
        if leaked:
            report.outcome = "failed"
            report.longrepr = f"the SendGrid key, or a prefix of it longer than 8 characters, is in: {leaked}"
    return report


@pytest.fixture(scope="session", autouse=True)
def _output_read_through_capsys_is_checked_too() -> Iterator[None]:
    """Output a test reads with capsys/capfd never reaches the report sections: check it as it is read."""
    read = pytest.CaptureFixture.readouterr

    def readouterr(self: pytest.CaptureFixture) -> Any:
        result = read(self)
        for name, text in (("stdout", result.out), ("stderr", result.err)):
            if isinstance(text, str | bytes) and key_leaks(text):
                pytest.fail(f"the SendGrid key, or a prefix of it longer than 8 characters, is on {name}")
        return result

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pytest.CaptureFixture, "readouterr", readouterr)
        yield


def _bytes_of(path: Path) -> bytes:
    """What ``path`` holds; nothing once it is gone: SQLite removes its -wal and -shm files when a
    ledger's last connection is closed, which garbage collection may do between listing and reading."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return b""


@pytest.fixture(scope="session", autouse=True)
def _the_key_is_never_written_to_a_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every file the tests made (dead letters, outboxes, server logs) is free of the key."""
    yield
    written = [path for path in tmp_path_factory.getbasetemp().rglob("*") if path.is_file() and not path.is_symlink()]
    leaking = [str(path) for path in written if key_leaks(_bytes_of(path))]
    assert not leaking, f"files hold the SendGrid key, or a prefix of it longer than 8 characters: {leaking}"
