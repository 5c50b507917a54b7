"""``make sandbox``'s folder: what it keeps there, and the lock that makes it one sandbox's at a time.

The folder is marked as the sandbox's own (so a folder of the user's is refused untouched) and locked
for the whole run (so a second ``make sandbox`` on it is refused instead of taking it over). Every
process the sandbox starts carries ``TAG=<folder>`` in its environment, so a run finds and stops what
an earlier, SIGKILLed one left running before it empties the outbox that one still wrote to.
"""

from __future__ import annotations

import errno
import fcntl
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from notifier.tools.processes import stop_tagged

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


def sandbox_at(root: Path) -> SandboxDir:
    """The folder ``--dir`` names, found without writing anything. A link to a folder is followed
    (the folder it names is the one shown from then on); a link to nothing is refused, as making
    its target would put the sandbox somewhere the user did not name. A file is refused too."""
    try:
        if root.is_symlink() and not root.exists():
            raise SandboxError(f"--dir: {root} is a link to {os.readlink(root)}, which does not exist; pass a folder")
        sandbox = SandboxDir(root.resolve())
        if sandbox.root.exists() and not sandbox.root.is_dir():
            raise SandboxError(f"--dir: {sandbox.root} is not a folder")
        return sandbox
    except (OSError, RuntimeError) as error:  # RuntimeError: a loop of links, before Python 3.13
        raise SandboxError(f"--dir: cannot use {root}: {error}") from None


# What a first start writes before it may be interrupted (an earlier version wrote the lock first).
FIRST_WRITTEN = frozenset({MARKER, "lock"})


def prepare(root: Path) -> tuple[SandboxDir, IO[str]]:
    """A new, empty or earlier sandbox folder, locked (held open: the lock), cleared of what a killed
    sandbox left running, with an empty outbox, the token, boto file and sample report; anything
    else is refused, untouched."""
    sandbox = sandbox_at(root)
    try:
        held = {path.name for path in sandbox.root.iterdir()} if sandbox.root.is_dir() else set()
        if not held <= FIRST_WRITTEN and MARKER not in held:
            raise SandboxError(
                f"--dir: {sandbox.root} is not empty and was not made by the sandbox (it has no {MARKER} file);"
                " pass a new or empty folder"
            )
        sandbox.root.mkdir(parents=True, exist_ok=True)
        if MARKER not in held:  # first, so a start interrupted from here on leaves a folder marked ours
            (sandbox.root / MARKER).write_text(MARKER_NOTE, encoding="utf-8")
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
    has it. The kernel drops the lock when the holder exits, however it ends. Never through a link:
    one planted as ``lock`` would have us truncate the file it names."""
    path = sandbox.root / "lock"
    try:
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    except OSError as error:
        if error.errno == errno.ELOOP:
            raise SandboxError(f"--dir: {path} is a symbolic link; remove it (the sandbox writes its own)") from None
        raise
    lock = os.fdopen(descriptor, "r+", encoding="utf-8", errors="replace")  # the holder's pid stays readable
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = lock.read(20).strip() or "?"
        lock.close()
        raise SandboxError(f"a sandbox is already running in {sandbox.root} (pid {holder})") from None
    lock.truncate()
    lock.write(f"{os.getpid()}\n")
    lock.flush()
    return lock


def populate(sandbox: SandboxDir) -> None:
    """The outbox emptied, the token, boto file and sample report written: what a run starts from."""
    try:
        for folder in (sandbox.gcloud, sandbox.logs):
            folder.mkdir(parents=True, exist_ok=True)
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
