"""``make demo``: serve the real function locally, send one event of each kind, show the emails.

Each event goes over HTTP in a different delivery format the platform uses, so the demo walks the
same path a deployed function does.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from email import message_from_binary_file, policy
from pathlib import Path
from typing import Any

from notifier.cli import build_request
from notifier.config import ROOT

DEMO_EVENTS = (
    # kind, object, size, content type, delivery format
    ("finalize", "reports/2026/Q3 revenue.csv", 48_213, "text/csv", "binary"),
    ("metadata", "reports/2026/Q3 revenue.csv", 48_213, "text/csv", "structured"),
    ("archive", "images/logo.png", 912_044, "image/png", "gen1"),
    ("delete", "tmp/upload #7?.part", 0, "application/octet-stream", "binary"),
)
# The demo marks the outbox folder it makes; a later run empties only a marked folder, and only of
# what a run writes there (emails, the SQLite ledger, dead letters), so --outbox . deletes nothing.
MARKER = ".storage-notifier-demo"
DEMO_FILES = ("*.eml", ".*.tmp", "ledger.sqlite3", "ledger.sqlite3-wal", "ledger.sqlite3-shm", "ledger.sqlite3-journal")
DEAD_LETTER_FILES = ("*.json", ".*.tmp")


class OutboxRefused(Exception):
    """--outbox names something the demo may not write to or empty."""


def run_demo(outbox: Path, bucket: str = "acme-uploads") -> int:
    outbox = outbox.resolve()
    try:
        prepare_outbox(outbox)
    except OutboxRefused as error:
        print(f"demo: --outbox: {error}", file=sys.stderr)
        return 2
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "NOTIFY_BACKEND": "outbox",
        "NOTIFY_OUTBOX_DIR": str(outbox),
        # Pinned inside the outbox, so a run writes nowhere else (and the next run can clear them).
        "NOTIFY_LEDGER_FILE": str(outbox / "ledger.sqlite3"),
        "NOTIFY_DEAD_LETTER_DIR": str(outbox / "deadletter"),
        "NOTIFY_FROM": os.environ.get("NOTIFY_FROM", "Storage Alerts <alerts@example.com>"),
        "NOTIFY_TO": os.environ.get("NOTIFY_TO", "Data Team <data-team@example.com>"),
    }
    print(f"Starting the function on {url} (outbox backend, {outbox})")
    with tempfile.TemporaryFile() as server_log:
        server = start_server(port, env, server_log)
        try:
            wait_until_serving(url, server)
            sent = []
            for kind, name, size, content_type, mode in DEMO_EVENTS:
                request = build_request(
                    kind, bucket, name, size=size, content_type=content_type, metadata={"team": "finance"}, mode=mode
                )
                status = _post(url, request)
                print(f"  sent {kind:<8} gs://{bucket}/{name}  as {mode:<10} → HTTP {status}")
                sent.append(request)
            # Cloud Storage delivers at least once: the ledger turns a redelivery into a log line.
            status = _post(url, sent[0])
            print(f"  sent the first event again, as the platform may → HTTP {status}")
        finally:
            stop_server(server)
        server_log.seek(0)
        outcomes = [line for line in server_log.read().decode().splitlines() if '"outcome"' in line]
    print("\nWhat the function logged (one JSON line per notification, as Cloud Logging shows them):")
    for line in outcomes:
        entry = json.loads(line)
        print(f"  {entry['severity']:<7} {entry['message']}  [{entry.get('duration_ms', '?')} ms]")
    emails = sorted(outbox.glob("*.eml"))
    print(f"\n{len(emails)} email(s) in the outbox:")
    for path in emails:
        with path.open("rb") as handle:
            subject = message_from_binary_file(handle, policy=policy.default)["Subject"]
        shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
        print(f"  {shown}\n      Subject: {subject}")
    print("\nOpen one in a mail client, or: python -m notifier preview finalize gs://acme-uploads/report.csv")
    if len(emails) != len(DEMO_EVENTS):
        print(f"expected {len(DEMO_EVENTS)} emails; the function's log follows", file=sys.stderr)
        print("\n".join(outcomes), file=sys.stderr)
        return 1
    return 0


def prepare_outbox(outbox: Path) -> None:
    """A new or empty folder gets the marker; a marked folder loses an earlier run's files; anything
    else is refused."""
    if outbox.exists() and not outbox.is_dir():
        raise OutboxRefused(f"{outbox} is not a folder")
    if (outbox / MARKER).is_file():
        remove_demo_files(outbox)
        return
    if outbox.is_dir() and any(outbox.iterdir()):
        raise OutboxRefused(
            f"{outbox} is not empty and was not made by the demo (it has no {MARKER} file); "
            "the demo only empties folders it made: pass a new or empty folder, or remove this one yourself"
            " (an outbox from a demo older than the marker is one to remove)"
        )
    try:
        outbox.mkdir(parents=True, exist_ok=True)
        (outbox / MARKER).write_text("Made by `python -m notifier demo`: the next demo run replaces its emails here.\n")
    except OSError as error:
        raise OutboxRefused(f"cannot create {outbox}: {error.strerror}") from None


def remove_demo_files(outbox: Path) -> None:
    """Remove what an earlier run wrote, and nothing else (links are removed, not followed)."""
    for folder, patterns in ((outbox, DEMO_FILES), (outbox / "deadletter", DEAD_LETTER_FILES)):
        if folder.is_symlink() or not folder.is_dir():
            continue
        for pattern in patterns:
            for path in folder.glob(pattern):
                if path.is_symlink() or path.is_file():
                    path.unlink()
    with contextlib.suppress(OSError):  # not empty: someone else's files stay
        (outbox / "deadletter").rmdir()


def _post(url: str, request: tuple[dict[str, str], bytes]) -> int:
    headers, body = request
    http_request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    with urllib.request.urlopen(http_request, timeout=30) as response:  # noqa: S310
        return response.status


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    port: int, env: dict[str, str], log_file: Any, *, source: Path = ROOT / "main.py", **popen: Any
) -> subprocess.Popen:
    """functions-framework serving ``handle_storage_event`` from ``source``, as Cloud Run functions
    does; ``popen``: more Popen options (the benchmarks pin the process to a CPU)."""
    command = [
        sys.executable,
        "-m",
        "functions_framework",
        "--target",
        "handle_storage_event",
        "--source",
        str(source),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, **popen)


def wait_until_serving(url: str, server: subprocess.Popen, timeout: float = 30.0) -> None:
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        if server.poll() is not None:
            raise OSError(f"the function exited with status {server.returncode} before serving")
        try:
            # GET is not an event: the framework answers 405 without calling the function.
            urllib.request.urlopen(url, timeout=1).close()  # noqa: S310
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise OSError(f"the function did not answer on {url} within {timeout:.0f}s")


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
