"""`make sandbox` as a user runs it: the real Pub/Sub emulator, fake-gcs-server, the function, and the
real gcloud CLI and gsutil in a second "terminal"; then Ctrl-C, and nothing may be left running.

Every process a test starts carries a tag in its environment (inherited by the emulator's JVM and
every other child, whatever session they start), so the test finds, and in the end kills, all of them.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO

import pytest

from notifier.localcloud import pubsub_emulator_problem
from tests.conftest import read_eml

ROOT = Path(__file__).resolve().parent.parent
TAG = "NOTIFIER_SANDBOX_TEST_TAG"
UPLOADS = "sandbox-uploads"
OBJECT = "reports/report.csv"
SUBJECTS = {  # what each action's email is called, from the project's templates
    "finalize": f"Uploaded: {OBJECT} ({UPLOADS})",
    "metadata": f"Metadata changed: {OBJECT} ({UPLOADS})",
    "delete": f"Deleted: {OBJECT} ({UPLOADS})",
}
needs_emulator = pytest.mark.skipif(pubsub_emulator_problem() is not None, reason=str(pubsub_emulator_problem()))


class Lines:
    """A process's output, line by line, read by a thread, so waiting for a line has a deadline."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.seen: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._ended = False
        threading.Thread(target=self._pump, args=(stream,), daemon=True).start()

    def _pump(self, stream: IO[bytes]) -> None:
        for raw in stream:
            self._queue.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self._queue.put(None)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first line (seen before or arriving within ``timeout``) that ``pattern`` matches."""
        matches = (re.search(pattern, line) for line in self.seen)
        if found := next((m for m in matches if m), None):
            return found
        give_up = time.monotonic() + timeout
        while not self._ended and (left := give_up - time.monotonic()) > 0:
            try:
                line = self._queue.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                self._ended = True
                break
            self.seen.append(line)
            if found := re.search(pattern, line):
                return found
        raise AssertionError(f"no line matching {pattern!r} within {timeout:.0f}s; output:\n" + "\n".join(self.seen))

    def rest(self, timeout: float = 10.0) -> str:
        """Every line up to the end of the output."""
        with contextlib.suppress(AssertionError):
            self.wait_for(r"(?!)", timeout)  # matches nothing: reads to the end
        return "\n".join(self.seen)


def clean_env(tag: str, home: Path, **extra: str) -> dict[str, str]:
    """A user's environment with none of the settings that change where mail goes or which cloud is
    used, and a throwaway HOME, so neither our tools nor gcloud read the real one."""
    dropped = ("NOTIFY_", "SENDGRID_", "SMTP_", "MAKE", "MFLAGS", "CLOUDSDK_", "BOTO_", "K_SERVICE")
    env = {key: value for key, value in os.environ.items() if not key.startswith(dropped)}
    env.pop("STORAGE_EMULATOR_HOST", None)
    env.pop("PUBSUB_EMULATOR_HOST", None)
    return {**env, TAG: tag, "HOME": str(home), **extra}


def tagged_processes(tag: str, session: int | None = None) -> dict[int, str]:
    """pid → command line of every live process carrying ``tag``, or in ``session``."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode("utf-8", "replace")
        except OSError:
            continue  # gone meanwhile, or not ours
        if f"{TAG}={tag}".encode() in environ or (session is not None and int(fields[3]) == session):
            found[int(proc.name)] = command.strip()
    return found


def eventually(check: Callable[[], object], timeout: float) -> object:
    """``check()`` once it is truthy (polled), else its last value."""
    give_up = time.monotonic() + timeout
    while not (result := check()) and time.monotonic() < give_up:
        time.sleep(0.1)
    return result


def nothing_left(tag: str, session: int | None = None) -> None:
    """Nothing tagged is running (a process just ended may take a moment to be reaped)."""
    left = eventually(lambda: not tagged_processes(tag, session), 10) or tagged_processes(tag, session)
    assert left is True, f"left running: {left}"


def kill_tagged(tag: str) -> None:
    for pid in tagged_processes(tag):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def port_is_free(port: int) -> bool:
    """Nothing listens on ``port`` (SO_REUSEADDR, as a server starting there would bind it)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start(command: list[str], env: dict[str, str]) -> tuple[subprocess.Popen, Lines]:
    """``command`` from the project root in a new session, as a terminal runs it in the foreground."""
    process = subprocess.Popen(
        command, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    assert process.stdout is not None
    return process, Lines(process.stdout)


def stop_all(process: subprocess.Popen, tag: str) -> None:
    """The finally of every test: whatever happened, nothing it started keeps running."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    kill_tagged(tag)
    process.wait(timeout=30)


@needs_emulator
def test_make_sandbox_gsutil_and_gcloud_give_one_email_per_action_and_ctrl_c_leaves_nothing(tmp_path: Path) -> None:
    sandbox, tag = tmp_path / "sandbox", uuid.uuid4().hex
    home, user_home = tmp_path / "home", tmp_path / "user-home"  # the second terminal's, to check
    home.mkdir()
    user_home.mkdir()
    # -o: the virtualenv counts as up to date, so a requirements file edited meanwhile does not make
    # this test run pip; the recipe is the user's.
    make = ["make", "-s", "-o", ".venv/.installed", "sandbox", f"SANDBOX_DIR={sandbox}"]
    process, lines = start(make, clean_env(tag, home))
    try:
        ready = lines.wait_for(r"^sandbox ready: gs://sandbox-uploads → (.+)$", 120)
        outbox = ROOT / ready[1]
        assert outbox == sandbox / "outbox"
        export = lines.wait_for(r"^export (CLOUDSDK_CONFIG=.*)$", 0)[1]
        assigned = dict(part.split("=", 1) for part in shlex.split(export))
        assert sorted(assigned) == ["BOTO_CONFIG", "CLOUDSDK_CONFIG"]
        assert all(Path(path).is_relative_to(sandbox) for path in assigned.values()), assigned
        ports = {int(port) for port in re.findall(r"127\.0\.0\.1:(\d+)", "\n".join(lines.seen))}
        assert len(ports) == 3, lines.seen  # the emulator, the function, fake-gcs-server
        lines.wait_for(r"^Ctrl-C stops everything", 5)

        # The second terminal: the printed export line, then the three printed commands, as typed.
        commands = [line.strip() for line in lines.seen if line.startswith(("  gsutil ", "  gcloud "))]
        assert [c.split()[:3] for c in commands] == [["gsutil", "cp", str(sandbox / "report.csv")],
                                                     ["gcloud", "storage", "objects"], ["gcloud", "storage", "rm"]]  # fmt: skip
        user = clean_env(tag, user_home, **assigned)
        for command in commands:
            done = subprocess.run(shlex.split(command), cwd=ROOT, env=user, capture_output=True, text=True, timeout=120)
            harmless = "rm" in command and "'NoneType' object has no attribute 'items'" in done.stderr
            assert done.returncode == 0 or harmless, f"{command}: {done.returncode}\n{done.stderr}"

        for kind, subject in SUBJECTS.items():
            line = lines.wait_for(rf"^sent\s+{kind}\s+gs://{UPLOADS}/{OBJECT} → (.+?)  (\S+\.eml)$", 20)
            assert line[1] == "Data Team <data-team@example.com>"
            eml = read_eml(ROOT / line[2])
            assert (ROOT / line[2]).parent == outbox
            assert (eml["Subject"], eml["To"]) == (subject, "Data Team <data-team@example.com>")
        assert len(list(outbox.glob("*.eml"))) == 3
        assert list(user_home.rglob("*")) == []  # gcloud and gsutil wrote only into the sandbox's config

        os.killpg(process.pid, signal.SIGINT)  # a terminal's Ctrl-C: make and the sandbox both get it
        # make waits for its child, then ends itself by the same signal, as it does on every Ctrl-C.
        assert process.wait(timeout=60) == -signal.SIGINT
        assert "sandbox: stopped (SIGINT)" in lines.rest()
        nothing_left(tag, session=process.pid)
        assert [port for port in ports if not port_is_free(port)] == []
    finally:
        stop_all(process, tag)


def test_without_java_it_names_the_package_and_starts_nothing(tmp_path: Path) -> None:
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        pytest.skip("needs the gcloud CLI")
    path, tag = tmp_path / "bin", uuid.uuid4().hex
    path.mkdir()
    (path / "gcloud").symlink_to(gcloud)  # gcloud on PATH, java not
    env = clean_env(tag, tmp_path, PATH=str(path))
    command = [sys.executable, "-m", "notifier", "sandbox", "--dir", str(tmp_path / "sandbox")]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    assert "sudo apt-get install openjdk-17-jre-headless" in done.stderr
    assert not (tmp_path / "sandbox").exists()
    nothing_left(tag)


def test_a_folder_it_did_not_make_is_refused_untouched(tmp_path: Path) -> None:
    (tmp_path / "outbox").mkdir()
    (tmp_path / "outbox" / "mine.eml").write_text("keep me")
    command = [sys.executable, "-m", "notifier", "sandbox", "--dir", str(tmp_path)]
    done = subprocess.run(command, cwd=ROOT, env=clean_env("-", tmp_path), capture_output=True, text=True, timeout=60)
    if pubsub_emulator_problem() is None:
        assert done.returncode == 2, done
        assert f"{tmp_path} is not empty and was not made by the sandbox" in done.stderr
    assert (tmp_path / "outbox" / "mine.eml").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outbox"]


@needs_emulator
def test_sigterm_while_the_emulator_starts_stops_it_and_its_jvm(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    command = [sys.executable, "-m", "notifier", "sandbox", "--dir", str(tmp_path / "sandbox")]
    process, lines = start(command, clean_env(tag, tmp_path))
    try:
        lines.wait_for(r"starting the Pub/Sub emulator", 30)
        jvm = eventually(lambda: [c for c in tagged_processes(tag).values() if "java" in c.split()[0]], 60)
        assert jvm, f"no JVM started: {tagged_processes(tag)}"
        port = int(re.findall(r"--host-port=127\.0\.0\.1:(\d+)", " ".join(tagged_processes(tag).values()))[0])
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 128 + signal.SIGTERM
        assert "sandbox: stopped (SIGTERM)" in lines.rest()
        nothing_left(tag)
        assert port_is_free(port)
    finally:
        stop_all(process, tag)


@needs_emulator
def test_settings_the_function_would_refuse_are_named_before_anything_starts(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    env = clean_env(tag, tmp_path, NOTIFY_TEMPLATES_DIR=str(tmp_path / "no-such-folder"))
    command = [sys.executable, "-m", "notifier", "sandbox", "--dir", str(tmp_path / "sandbox")]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done
    assert f"NOTIFY_TEMPLATES_DIR: {str(tmp_path / 'no-such-folder')!r} is not a directory" in done.stderr
    assert "starting" not in done.stdout
    nothing_left(tag)


@needs_emulator
def test_a_function_that_dies_stops_the_rest_and_says_why(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex
    command = [sys.executable, "-m", "notifier", "sandbox", "--dir", str(tmp_path / "sandbox")]
    process, lines = start(command, clean_env(tag, tmp_path))
    try:
        lines.wait_for(r"^sandbox ready: ", 120)
        function = [pid for pid, cmd in tagged_processes(tag).items() if "functions_framework" in cmd]
        os.killpg(os.getpgid(min(function)), signal.SIGKILL)  # the function's own group, as a crash
        assert process.wait(timeout=60) == 1
        output = lines.rest()
        assert "sandbox: the function exited; its last lines:" in output
        assert "sandbox: stopped everything it had started" in output
        nothing_left(tag)
    finally:
        stop_all(process, tag)


def test_the_function_gets_the_outbox_unless_the_user_chose_a_real_backend(tmp_path: Path) -> None:
    from notifier.config import load_settings
    from notifier.sandbox import SandboxDir, function_env

    sandbox = SandboxDir(tmp_path)
    (tmp_path / "outbox").mkdir()
    local = function_env({"NOTIFY_TO": "me@example.org"}, sandbox, "http://127.0.0.1:9")
    settings = load_settings(local)
    assert (settings.backend, settings.outbox_dir, settings.state_bucket) == (
        "outbox",
        tmp_path / "outbox",
        "sandbox-state",
    )
    assert settings.storage_emulator_host == "http://127.0.0.1:9"
    assert (local["NOTIFY_TO"], local["NOTIFY_FROM"]) == ("me@example.org", "Storage Alerts <alerts@example.com>")

    real = function_env({"SENDGRID_API_KEY": "SG.x"}, sandbox, "http://127.0.0.1:9")
    assert [name for name in ("NOTIFY_BACKEND", "NOTIFY_OUTBOX_DIR", "NOTIFY_FROM", "NOTIFY_TO") if name in real] == []
    assert real["NOTIFY_STATE_BUCKET"] == "sandbox-state"


def test_log_lines_become_one_short_line_each_and_never_a_secret() -> None:
    from notifier.log import register_secret
    from notifier.sandbox import human_line

    secret = "SG.sandbox-secret-never-shown-0123456789"
    register_secret(secret)
    retrying = '{"outcome": "retrying", "kind": "finalize", "bucket": "b", "object": "o.csv", "error": "HTTP 503", "recipients": 1}'
    assert human_line(retrying, ROOT) == "retrying  finalize gs://b/o.csv: HTTP 503"
    assert human_line('{"severity": "WARNING", "message": "slow ledger"}', ROOT) == "  warning: slow ledger"
    assert human_line('{"severity": "INFO", "message": "ready"}', ROOT) is None
    assert human_line("[2026-11-28] [7] [INFO] Booting worker", ROOT) is None
    shown = human_line(f"Traceback: ValueError: bad key {secret}", ROOT)
    assert shown is not None and shown.startswith("  function: Traceback") and secret not in shown


def test_an_object_name_cannot_send_escape_sequences_to_the_terminal() -> None:
    from notifier.sandbox import human_line

    hostile = "a\x1b]0;owned\x07\x1b[2Jb\u202etxt.exe"
    line = json.dumps(
        {"outcome": "invalid", "kind": "finalize", "bucket": "b", "object": hostile, "reason": "x\x1b[31m"}
    )

    shown = human_line(line, ROOT)

    assert shown is not None and not any(ch in shown for ch in "\x1b\x07\u202e")
    assert "\\x1b]0;owned\\x07" in shown and "\\u202e" in shown
