"""``make sandbox``'s folder: what it keeps there, and the lock that makes it one sandbox's at a time.

The folder is marked as the sandbox's own (so a folder of the user's is refused untouched) and locked
for the whole run (so a second ``make sandbox`` on it is refused instead of taking it over). Every
process the sandbox starts carries ``TAG=<folder>`` in its environment, so a run finds and stops what
an earlier, SIGKILLed one left running before it empties the outbox that one still wrote to.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from notifier.localcloud import stop_tagged

PROJECT = "sandbox"
MARKER = ".storage-notifier-sandbox"
MARKER_NOTE = "Made by `make sandbox` (python -m notifier sandbox): it empties outbox/ and rewrites gcloud/ each run.\n"
SAMPLE_CSV = "month,revenue\n2026-10,48213\n2026-11,51007\n"
TAG = "STORAGE_NOTIFIER_SANDBOX"  # inherited by every child: the emulator's JVM, the gunicorn worker


class SandboxError(Exception):
    """Start-up failed or a part stopped; the message says which, and where its log is."""


@dataclass(frozen=True)
class SandboxDir:
    """The sandbox's own folder and what it keeps there."""

    root: Path

    @property
    def gcloud(self) -> Path:
        return self.root / "gcloud"

    @property
    def boto(self) -> Path:
        return self.gcloud / "boto"

    @property
    def token(self) -> Path:
        return self.gcloud / "token"

    @property
    def outbox(self) -> Path:
        return self.root / "outbox"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def report(self) -> Path:
        return self.root / "report.csv"


def prepare(root: Path) -> tuple[SandboxDir, IO[str]]:
    """A new, empty or earlier sandbox folder, locked (held open: the lock), cleared of what a killed
    sandbox left running, with an empty outbox, the token, boto file and sample report; anything
    else is refused, untouched."""
    sandbox = SandboxDir(root.resolve())
    if sandbox.root.exists() and not sandbox.root.is_dir():
        raise SandboxError(f"--dir: {sandbox.root} is not a folder")
    if sandbox.root.is_dir() and any(sandbox.root.iterdir()) and not (sandbox.root / MARKER).is_file():
        raise SandboxError(
            f"--dir: {sandbox.root} is not empty and was not made by the sandbox (it has no {MARKER} file);"
            " pass a new or empty folder"
        )
    try:
        sandbox.root.mkdir(parents=True, exist_ok=True)
        lock = claim(sandbox)
    except OSError as error:
        raise SandboxError(f"--dir: cannot prepare {sandbox.root}: {error}") from None
    try:
        if left := stop_tagged(TAG, str(sandbox.root)):
            print(f"sandbox: stopped {left} process(es) left by an earlier sandbox that was killed")
        populate(sandbox)
    except BaseException:
        lock.close()
        raise
    return sandbox, lock


def claim(sandbox: SandboxDir) -> IO[str]:
    """``<folder>/lock``, locked and holding our pid; SandboxError naming the holder if another sandbox
    has it. The kernel drops the lock when the holder exits, however it ends."""
    lock = (sandbox.root / "lock").open("a+", encoding="utf-8", errors="replace")  # a+: the holder's pid stays readable
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.seek(0)
        holder = lock.read(20).strip() or "?"
        lock.close()
        raise SandboxError(f"a sandbox is already running in {sandbox.root} (pid {holder})") from None
    lock.seek(0)
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def populate(sandbox: SandboxDir) -> None:
    """The outbox emptied, the token, boto file and sample report written: what a run starts from."""
    try:
        for folder in (sandbox.gcloud, sandbox.logs):
            folder.mkdir(parents=True, exist_ok=True)
        (sandbox.root / MARKER).write_text(MARKER_NOTE, encoding="utf-8")
        if sandbox.outbox.exists():  # ours: each run starts with no mail
            shutil.rmtree(sandbox.outbox)
        sandbox.outbox.mkdir()
        sandbox.token.write_text("sandbox-token-fake-gcs-server-ignores-it\n", encoding="utf-8")
        sandbox.boto.write_text("[GSUtil]\nuse_gcloud_storage = True\n", encoding="utf-8")
        sandbox.report.write_text(SAMPLE_CSV, encoding="utf-8")
    except OSError as error:
        raise SandboxError(f"--dir: cannot prepare {sandbox.root}: {error}") from None


def write_gcloud_config(sandbox: SandboxDir, storage_url: str) -> None:
    """The sandbox's gcloud configuration, rewritten each run (the port changes). gcloud reads
    ``configurations/config_<active>``: a top-level ``properties`` file is only migrated there once,
    so a later run's port would be ignored. ``gce`` caches "not on Compute Engine": no metadata probe."""
    properties = (
        f"[core]\nproject = {PROJECT}\ndisable_usage_reporting = True\n\n"
        f"[api_endpoint_overrides]\nstorage = {storage_url}/storage/v1/\n\n"
        f"[auth]\naccess_token_file = {sandbox.token}\n\n"
        "[component_manager]\ndisable_update_check = True\n"
    )
    configurations = sandbox.gcloud / "configurations"
    configurations.mkdir(exist_ok=True)
    (configurations / "config_default").write_text(properties, encoding="utf-8")
    (sandbox.gcloud / "active_config").write_text("default", encoding="utf-8")
    (sandbox.gcloud / "gce").write_text("False", encoding="utf-8")
