"""Processes a tool starts and always stops: process groups, signals, free ports, readiness polls,
the function served by functions-framework, and the leftovers of a tool that was killed.

Tooling for ``make demo``, ``make sandbox``, ``make chaos``, the benchmarks and the tests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from notifier.config import ROOT

Log = IO[bytes] | int


class LocalCloudError(OSError):
    """A local server is missing, did not start, or refused a request; the message says which."""


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stopped(BaseException):
    """A signal asked the tool (sandbox, chaos) to stop: a BaseException, so nothing on the way swallows it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP raise :class:`Stopped` in the main thread, so every part is
    stopped on the way out; a second signal is ignored, so it cannot cut that clean-up short."""

    def stop(signum: int, frame: Any) -> None:
        if _in_finalizer(frame):  # Python would ignore the Stopped raised there: ask again in a moment
            threading.Timer(0.05, os.kill, (os.getpid(), signum)).start()
            return
        for sig in STOP_SIGNALS:
            signal.signal(sig, signal.SIG_IGN)
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, stop) for sig in STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


_FINALIZER_CODE = weakref.finalize.__call__.__code__


def _in_finalizer(frame: Any) -> bool:
    """Whether the signal interrupted a finalizer (weakref.finalize, a __del__), whose exceptions
    Python reports as "Exception ignored in" and drops."""
    while frame is not None:
        if frame.f_code is _FINALIZER_CODE or frame.f_code.co_name == "__del__":
            return True
        frame = frame.f_back
    return False


def start_group(command: list[str], *, env: Mapping[str, str] | None = None, log: Log = subprocess.DEVNULL,
                cwd: Path | None = None) -> subprocess.Popen:  # fmt: skip
    """``command`` in a new session (its own process group), output to ``log``, no stdin; a
    terminal's Ctrl-C reaches only us, and we stop the group in order."""
    return subprocess.Popen(
        command, env=dict(env) if env is not None else None, cwd=cwd, stdin=subprocess.DEVNULL,
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def stop_group(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM to the whole group, SIGKILL after ``grace`` seconds; returns once the leader is reaped
    and nothing of the group is left."""
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            break  # the whole group is gone
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        if not _group_alive(process.pid):
            break
        time.sleep(0.1)  # the leader is gone but a child (the emulator's JVM) is still ending
    process.poll()


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def free_port() -> int:
    """A port nothing listens on now, on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Whether an answer (status, the start of its body) is the server we started, not another program
# that took the port between choosing it and our server binding it (the emulator's JVM takes seconds).
AnswerCheck = Callable[[int, bytes], bool]
ANSWER_BYTES = 64 * 1024


def wait_until_answering(
    url: str, process: subprocess.Popen, what: str, timeout: float, *, answers_as: AnswerCheck | None = None
) -> None:
    """Until ``url`` answers as ``answers_as`` accepts (without it, any HTTP status means serving),
    or ``process`` dies. Another answer while our process lives: polled again until ``timeout``, then
    an error saying another program may hold the port."""
    give_up, foreign = time.monotonic() + timeout, False
    while time.monotonic() < give_up:
        if process.poll() is not None:
            raise LocalCloudError(f"{what} exited with status {process.returncode} before serving on {url}")
        try:
            status, body = _get(url)
        except OSError:
            time.sleep(0.05)
            continue
        if answers_as is None or answers_as(status, body):
            return
        foreign = True
        time.sleep(0.1)
    if foreign:
        port = urllib.parse.urlsplit(url).port
        raise LocalCloudError(f"port {port} answers, but not as {what} (another program holds it?)")
    raise LocalCloudError(f"{what} did not answer on {url} within {timeout:.0f}s")


def _get(url: str) -> tuple[int, bytes]:
    return local_request(url, timeout=2)


def local_request(
    url: str, body: bytes | None = None, headers: Mapping[str, str] | None = None, *, timeout: float,
    answer_bytes: int = ANSWER_BYTES,
) -> tuple[int, bytes]:  # fmt: skip
    """A GET (or, with ``body``, a POST) to a server we started: its status and the start of its
    answer (at most ``answer_bytes``), whatever the status. OSError when it does not answer."""
    method = "GET" if body is None else "POST"
    request = urllib.request.Request(url, data=body, method=method, headers=dict(headers or {}))  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 - our own loopback server
            return response.status, response.read(answer_bytes)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read(answer_bytes)


# ---------------------------------------------------------------------------------------------
# Processes left by a tool that was killed


def stop_tagged(name: str, value: str, grace: float = 10.0) -> int:
    """Stop every process (but this one) whose environment holds ``name=value`` exactly: SIGTERM,
    then SIGKILL to those left after ``grace`` seconds. How many there were. A tool that tags what it
    starts (children inherit the environment, whatever group they start) finds its own leftovers
    after a SIGKILL, which no clean-up of its own could handle. The tag is read again before each
    signal: a pid that ended meanwhile may already be another program's."""
    entry = f"{name}={value}".encode()
    tagged = _processes_with(entry)

    def still_tagged(pid: int) -> bool:
        return _running(pid) and _carries(pid, entry)

    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, grace)):
        for pid in filter(still_tagged, tagged):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        give_up = time.monotonic() + wait
        while any(map(still_tagged, tagged)) and time.monotonic() < give_up:
            time.sleep(0.1)
    return len(tagged)


def _processes_with(entry: bytes) -> list[int]:
    if not Path("/proc").is_dir():  # macOS: no way to read other processes' environments; none found
        return []
    pids = (int(proc.name) for proc in Path("/proc").iterdir() if proc.name.isdigit())
    return [pid for pid in pids if pid != os.getpid() and _carries(pid, entry)]


def _carries(pid: int, entry: bytes) -> bool:
    """Whether process ``pid``'s environment holds ``entry`` (``NAME=value``) exactly."""
    try:
        return entry in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return False  # gone meanwhile, or another user's


def _running(pid: int) -> bool:
    """Alive and not a zombie (one left for a parent that does not reap counts as stopped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def start_server(
    port: int, env: dict[str, str], log_file: Any, *, source: Path = ROOT / "main.py",
    target: str = "handle_storage_event", **popen: Any,
) -> subprocess.Popen:  # fmt: skip
    """functions-framework serving ``target`` (the event function, or ``flush_digests``) from
    ``source``, as Cloud Run functions does; ``popen``: more Popen options (the benchmarks pin the
    process to a CPU)."""
    command = [
        sys.executable,
        "-m",
        "functions_framework",
        "--target",
        target,
        "--source",
        str(source),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT, **popen)


def wait_until_serving(url: str, server: subprocess.Popen, timeout: float = 30.0) -> None:
    """Until the function answers as functions-framework does (a GET is not an event: 405), or it
    exits; an OSError saying which, or that another program answers on its port."""
    wait_until_answering(url, server, "the function", timeout, answers_as=lambda status, _body: status == 405)


def stop_server(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()
