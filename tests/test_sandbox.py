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

from notifier.tools.localcloud import pubsub_emulator_problem
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
        first_command = time.monotonic()
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
        # The promise: three emails within 20 s of the first command (gcloud's own start-up included).
        assert time.monotonic() - first_command <= 20
        assert len(list(outbox.glob("*.eml"))) == 3
        assert (
            lines.wait_for(
                r"^sandbox logs \(function, flush, fake-gcs-server, Pub/Sub emulator, Event Webhook\): (.+)$", 0
            )[1]
            == str(sandbox / "logs") + "/"
        )
        function_log = (sandbox / "logs" / "function.log").read_text()
        assert function_log.count('"outcome": "sent"') == 3, function_log[-2000:]
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
    from notifier.tools.sandbox import SandboxDir, function_env

    sandbox = SandboxDir(tmp_path)
    (tmp_path / "outbox").mkdir()
    local = function_env({"NOTIFY_TO": "me@example.org"}, sandbox, "http://127.0.0.1:9")
    settings = load_settings(local)
    assert (settings.backend, settings.provider.directory, settings.state_bucket) == (
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
    from notifier.tools.sandbox_output import human_line

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
    from notifier.tools.sandbox_output import human_line

    hostile = "a\x1b]0;owned\x07\x1b[2Jb\u202etxt.exe"
    line = json.dumps(
        {"outcome": "invalid", "kind": "finalize", "bucket": "b", "object": hostile, "reason": "x\x1b[31m"}
    )

    shown = human_line(line, ROOT)

    assert shown is not None and not any(ch in shown for ch in "\x1b\x07\u202e")
    assert "\\x1b]0;owned\\x07" in shown and "\\u202e" in shown


@needs_emulator
def test_a_second_sandbox_on_its_folder_is_refused_and_one_killed_is_cleaned_up_by_the_next(tmp_path: Path) -> None:
    sandbox, tag = tmp_path / "sandbox", uuid.uuid4().hex
    command = [sys.executable, "-m", "notifier", "sandbox", "--dir", str(sandbox)]
    first, lines = start(command, clean_env(tag, tmp_path))
    second = third = None
    try:
        lines.wait_for(r"^sandbox ready: ", 120)
        config = (sandbox / "gcloud" / "configurations" / "config_default").read_text()
        (sandbox / "outbox" / "first.eml").write_text("the first sandbox's mail")

        second, second_lines = start(command, clean_env(tag, tmp_path))
        assert second.wait(timeout=60) == 2
        assert f"sandbox: a sandbox is already running in {sandbox} (pid {first.pid})" in second_lines.rest()
        assert (sandbox / "gcloud" / "configurations" / "config_default").read_text() == config
        assert (sandbox / "outbox" / "first.eml").is_file()

        left = {pid for pid in tagged_processes(tag) if pid != first.pid}
        assert len(left) >= 4, tagged_processes(tag)  # gcloud + JVM, function master + worker, fake-gcs-server
        first.kill()  # SIGKILL to the sandbox alone: the parts it started keep running
        first.wait(timeout=10)
        assert set(tagged_processes(tag)) == left

        third, third_lines = start(command, clean_env(tag, tmp_path))
        stopped = third_lines.wait_for(
            r"^sandbox: stopped (\d+) process\(es\) left by an earlier sandbox that was killed$", 60
        )
        assert int(stopped[1]) == len(left)
        third_lines.wait_for(r"^sandbox ready: ", 120)
        assert not left & set(tagged_processes(tag))
        os.killpg(third.pid, signal.SIGINT)
        assert third.wait(timeout=60) == 0
        nothing_left(tag)
    finally:
        for process in (first, second, third):
            if process is not None:
                stop_all(process, tag)


def test_a_port_another_program_answers_on_is_not_taken_for_the_function(tmp_path: Path) -> None:
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from notifier.tools.processes import wait_until_serving

    class Foreign(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *args: object) -> None:
            pass

    foreign = ThreadingHTTPServer(("127.0.0.1", 0), Foreign)
    threading.Thread(target=foreign.serve_forever, daemon=True).start()
    ours = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # alive, never serving
    port = foreign.server_address[1]
    try:
        with pytest.raises(
            OSError, match=rf"port {port} answers, but not as the function \(another program holds it\?\)"
        ):
            wait_until_serving(f"http://127.0.0.1:{port}", ours, timeout=1)
    finally:
        ours.kill()
        ours.wait()
        foreign.shutdown()
        foreign.server_close()


def test_the_emulators_are_recognised_by_their_answers() -> None:
    from notifier.tools.localcloud import answers_as_fake_gcs, answers_as_pubsub

    assert answers_as_fake_gcs(200, b'{"kind": "storage#buckets", "items": []}')
    assert not answers_as_fake_gcs(200, b"hello")
    assert not answers_as_fake_gcs(404, b'{"kind": "storage#buckets"}')
    assert answers_as_pubsub(200, b"{}")
    assert answers_as_pubsub(200, b'{"topics": []}')
    assert not answers_as_pubsub(200, b"<html>hello</html>")
    assert not answers_as_pubsub(405, b"{}")


@pytest.mark.parametrize(
    ("user", "function_deadline", "ack_deadline"),
    [
        ({}, "45", 60),
        ({"NOTIFY_DEADLINE_SECONDS": "100"}, "100", 115),
        ({"NOTIFY_DEADLINE_SECONDS": "585"}, "585", 600),  # the most the sandbox accepts
    ],
)
def test_pubsub_waits_for_the_function_as_a_deployment_does(
    tmp_path: Path, user: dict[str, str], function_deadline: str, ack_deadline: int
) -> None:
    from notifier.tools.sandbox import SandboxDir, ack_deadline_for, function_env

    env = function_env(user, SandboxDir(tmp_path), "http://127.0.0.1:9")

    assert env["NOTIFY_DEADLINE_SECONDS"] == function_deadline
    assert ack_deadline_for(env) == ack_deadline


def test_a_long_object_name_is_shortened_not_the_recipients_or_the_eml(tmp_path: Path) -> None:
    from notifier.tools.sandbox_output import human_line

    eml = tmp_path / "outbox" / ("x" * 200 + ".eml")
    eml.parent.mkdir()
    eml.write_bytes(b"To: Data Team <data-team@example.com>\r\nSubject: s\r\n\r\nbody\r\n")
    name = "reports/" + "a" * 1000 + "-end.csv"
    line = json.dumps({"outcome": "sent", "kind": "finalize", "bucket": "b", "object": name, "message_id": str(eml)})

    shown = human_line(line, tmp_path)

    assert shown is not None
    assert shown.startswith("sent      finalize gs://b/reports/aaa")
    assert "…" in shown and "a-end.csv → Data Team <data-team@example.com>  outbox/" + eml.name in shown
    assert len(shown) < 500


def test_ctrl_c_before_anything_started_exits_quietly(tmp_path: Path) -> None:
    script = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "import notifier.tools.sandbox as sandbox\n"
        "def interrupted_checks() -> None:\n"  # Ctrl-C while the tools are being checked
        "    os.kill(os.getpid(), signal.SIGINT)\n"
        "sandbox.check_tools = interrupted_checks\n"
        "sys.exit(sandbox.run_sandbox(Path(sys.argv[1])))\n"
    )
    tag = uuid.uuid4().hex
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "sandbox")], cwd=ROOT,
                          env=clean_env(tag, tmp_path), capture_output=True, text=True, timeout=60)  # fmt: skip
    assert "Traceback" not in done.stderr, done.stderr
    assert done.returncode == 0, done
    assert done.stdout.strip() == "sandbox: stopped (SIGINT): nothing had started yet"
    nothing_left(tag)


# ---------------------------------------------------------------------------------------------
# The folder, its lock, the settings and leftovers: checked in-process, no emulator needed


def without_user_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """This process's environment as clean_env makes a child's (restored after the test)."""
    from notifier.tools.sandbox_folder import TAG as SANDBOX_TAG

    dropped = ("NOTIFY_", "SENDGRID_", "SMTP_", "CLOUDSDK_", "BOTO_", "K_SERVICE")
    for key in [key for key in os.environ if key.startswith(dropped)]:
        monkeypatch.delenv(key)
    for key in ("STORAGE_EMULATOR_HOST", "PUBSUB_EMULATOR_HOST", SANDBOX_TAG):
        monkeypatch.delenv(key, raising=False)


def test_a_first_start_interrupted_after_the_lock_leaves_a_folder_the_next_run_takes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import notifier.tools.sandbox_folder as folder
    from notifier.tools.processes import Stopped

    def interrupted(name: str, value: str) -> int:  # Ctrl-C while leftovers are looked for
        raise Stopped(signal.SIGINT)

    monkeypatch.setattr(folder, "stop_tagged", interrupted)
    with pytest.raises(Stopped):
        folder.prepare(tmp_path / "sandbox")
    monkeypatch.setattr(folder, "stop_tagged", lambda name, value: 0)

    sandbox, lock = folder.prepare(tmp_path / "sandbox")

    lock.close()
    assert (sandbox.outbox.is_dir(), sandbox.report.read_text()) == (True, folder.SAMPLE_CSV)


@pytest.mark.parametrize("left", [["lock"], [".storage-notifier-sandbox"], ["lock", ".storage-notifier-sandbox"]])
def test_a_folder_holding_only_what_a_first_start_writes_is_taken(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, left: list[str]
) -> None:
    import notifier.tools.sandbox_folder as folder

    monkeypatch.setattr(folder, "stop_tagged", lambda name, value: 0)
    for name in left:  # an earlier version wrote the lock before the marker
        (tmp_path / name).write_text("")

    sandbox, lock = folder.prepare(tmp_path)

    lock.close()
    assert (sandbox.root / folder.MARKER).is_file() and sandbox.outbox.is_dir()


def test_an_unreadable_dir_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import notifier.tools.sandbox_folder as folder

    (tmp_path / "theirs.txt").write_text("x")
    iterdir = Path.iterdir

    def unreadable(self: Path):  # tests run as root, which reads any folder
        if self == tmp_path:
            raise PermissionError(13, "Permission denied", str(self))
        return iterdir(self)

    monkeypatch.setattr(Path, "iterdir", unreadable)
    with pytest.raises(folder.SandboxError, match=rf"--dir: cannot prepare {tmp_path}: .*Permission denied"):
        folder.prepare(tmp_path)


def test_a_dangling_link_as_dir_is_refused_and_creates_nothing(tmp_path: Path) -> None:
    import notifier.tools.sandbox_folder as folder

    (tmp_path / "sandbox").symlink_to(tmp_path / "elsewhere" / "sandbox")

    with pytest.raises(
        folder.SandboxError, match=rf"--dir: {tmp_path / 'sandbox'} is a link to {tmp_path / 'elsewhere'}/sandbox"
    ):
        folder.prepare(tmp_path / "sandbox")
    assert not (tmp_path / "elsewhere").exists()


def test_a_link_to_a_folder_is_followed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import notifier.tools.sandbox_folder as folder

    monkeypatch.setattr(folder, "stop_tagged", lambda name, value: 0)
    (tmp_path / "real").mkdir()
    (tmp_path / "sandbox").symlink_to(tmp_path / "real")

    sandbox, lock = folder.prepare(tmp_path / "sandbox")

    lock.close()
    assert sandbox.root == tmp_path / "real" and (tmp_path / "real" / "outbox").is_dir()


def test_a_link_planted_as_the_lock_is_refused_not_followed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import notifier.tools.sandbox_folder as folder

    monkeypatch.setattr(folder, "stop_tagged", lambda name, value: 0)
    _, lock = folder.prepare(tmp_path / "sandbox")
    lock.close()
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / "sandbox" / "lock").unlink()
    (tmp_path / "sandbox" / "lock").symlink_to(victim)

    with pytest.raises(folder.SandboxError, match=r"lock is a symbolic link"):
        folder.prepare(tmp_path / "sandbox")
    assert victim.read_text() == "keep me"


def test_a_pid_no_longer_tagged_is_not_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    import notifier.tools.processes as processes

    # The pid was listed as tagged, then the process ended and another (untagged) one got its pid.
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        monkeypatch.setattr(processes, "_processes_with", lambda entry: [other.pid])
        processes.stop_tagged("NOTIFIER_TEST_REUSED", uuid.uuid4().hex, grace=0.5)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def test_a_tagged_process_is_stopped() -> None:
    from notifier.tools.processes import stop_tagged

    value = uuid.uuid4().hex
    env = {**os.environ, "NOTIFIER_TEST_LEFTOVER": value}
    left = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env=env)
    try:
        assert stop_tagged("NOTIFIER_TEST_LEFTOVER", value, grace=10) == 1
        assert left.wait(timeout=10) == -signal.SIGTERM
    finally:
        left.kill()
        left.wait()


def _serve_must_not_be_reached(*args: object) -> None:
    raise AssertionError("the sandbox went on to start its parts")


@pytest.mark.parametrize(
    ("deadline", "message"),
    [
        ("soon", "NOTIFY_DEADLINE_SECONDS: expected a positive number of seconds, got 'soon'"),
        ("590", "NOTIFY_DEADLINE_SECONDS: 590 is more than the sandbox allows (585 s)"),
    ],
)
def test_settings_are_refused_before_the_last_runs_mail_is_touched(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], deadline: str, message: str
) -> None:
    import notifier.tools.sandbox as sandbox_module
    import notifier.tools.sandbox_folder as folder

    without_user_settings(monkeypatch)
    monkeypatch.setattr(folder, "stop_tagged", lambda name, value: 0)
    monkeypatch.setattr(sandbox_module, "check_tools", lambda: None)
    monkeypatch.setattr(sandbox_module, "serve", _serve_must_not_be_reached)
    earlier, lock = folder.prepare(tmp_path / "sandbox")
    lock.close()
    (earlier.outbox / "earlier.eml").write_text("the last run's mail")
    monkeypatch.setenv("NOTIFY_DEADLINE_SECONDS", deadline)

    assert sandbox_module._run(tmp_path / "sandbox", []) == 2

    assert message in capsys.readouterr().err
    assert (earlier.outbox / "earlier.eml").read_text() == "the last run's mail"
