"""``make sandbox``: a local cloud to try the function with the real gcloud CLI and gsutil.

It starts, in this order, the Pub/Sub emulator and its topic, the function under functions-framework
(the settings model of a deployment: the state bucket, ``notify.toml`` and templates from the project,
else ``sandbox.toml`` here), a push subscription to the function, then fake-gcs-server publishing the
watched bucket's object notifications to the topic, the two buckets, and the flush of held digests on
its deployed schedule (:mod:`notifier.tools.sandbox_flush`), and, for the outbox's mail, SendGrid's
signed Event Webhook (:mod:`notifier.tools.sandbox_sendgrid`). It prints how to point gcloud and gsutil at it and
then one line per outcome the function logs, until Ctrl-C, SIGTERM or SIGHUP stops everything it
started. All it writes lives in one folder it marks as its own (default ``.sandbox/``, git-ignored),
so the user's own gcloud configuration and credentials are never read or written.
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TypeVar

from notifier.config import ROOT
from notifier.log import LINE_LIMIT, for_terminal, redact, register_secret
from notifier.tools.localcloud import (
    EventSink,
    fake_gcs_binary,
    pubsub_emulator_problem,
    running_fake_gcs,
    running_pubsub_emulator,
)
from notifier.tools.processes import (
    STOP_SIGNALS,
    LocalCloudError,
    Stopped,
    free_port,
    start_server,
    stop_group,
    stop_on_signals,
    wait_until_serving,
)
from notifier.tools.sandbox_flush import AfterAnswer, start_flush
from notifier.tools.sandbox_folder import (
    PROJECT,
    TAG,
    SandboxDir,
    SandboxError,
    prepare,
    sandbox_at,
    write_gcloud_config,
)
from notifier.tools.sandbox_output import SHOWN_CHARS, human_line, say, shown
from notifier.tools.sandbox_sendgrid import sent_from_line, start_sendgrid

UPLOADS = "sandbox-uploads"  # the watched bucket
STATE = "sandbox-state"  # NOTIFY_STATE_BUCKET: the ledger and dead letters, as deployed
TOPIC = "sandbox-uploads"
SUBSCRIPTION = "sandbox-notifier"
DEFAULT_DIR = ROOT / ".sandbox"
# The rules when the project has none: as without rules, and a digest for bulk/ to see one.
SANDBOX_RULES = Path(__file__).with_name("sandbox.toml")
# Only for the outbox: with SendGrid or SMTP the user's own addresses are used, or none (config says so).
LOCAL_ADDRESSES = {
    "NOTIFY_FROM": "Storage Alerts <alerts@example.com>",
    "NOTIFY_TO": "Data Team <data-team@example.com>",
}
SECRETS = ("SENDGRID_API_KEY", "SMTP_PASSWORD")
FUNCTION_READY_TIMEOUT = 60.0
HEALTH_INTERVAL = 5.0  # seconds between checks that the emulators still answer
# As deployed: deploy.sh gives the function timeout - 15 s, and Eventarc's ack deadline is the timeout.
FUNCTION_DEADLINE = "45"
ACK_MARGIN, ACK_DEADLINE_MAX = 15, 600
DEADLINE_MAX = ACK_DEADLINE_MAX - ACK_MARGIN  # a longer function deadline could not keep the margin
T = TypeVar("T")


@dataclass(frozen=True)
class Ports:
    """Chosen before anything starts: the function needs fake-gcs-server's URL before it is up."""

    emulator: int
    function: int
    storage: int
    flush: int  # flush_digests, which the sandbox calls every minute
    webhook: int  # sendgrid_events, to which the sandbox posts SendGrid's events

    @property
    def storage_url(self) -> str:
        return f"http://127.0.0.1:{self.storage}"

    @property
    def function_url(self) -> str:
        return f"http://127.0.0.1:{self.function}"


# ---------------------------------------------------------------------------------------------
# Entry point


def run_sandbox(root: Path | None = None) -> int:
    """Serve from ``root`` (default ``.sandbox`` beside main.py) until a signal; 0 after Ctrl-C
    (128 + N after another signal), 1 if a part failed, 2 if something is missing or the folder is refused."""
    started: list[str] = []  # the parts begun, to say what a signal stopped
    try:
        with stop_on_signals():  # first: a Ctrl-C at once is a clean stop too, not a traceback
            sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # lines reach a pipe at once
            return _run(root or DEFAULT_DIR, started)
    except Stopped as stop:
        lead = "\n" if sys.stdout.isatty() else ""  # after the terminal's ^C
        print(f"{lead}sandbox: stopped ({stop}): {what_stopped(started)}")
        return 0 if stop.signum == signal.SIGINT else 128 + stop.signum


def _run(root: Path, started: list[str]) -> int:
    """Check, claim the folder, start and follow; the exit status (a signal ends it by :class:`Stopped`)."""
    for name in SECRETS:
        register_secret(os.environ.get(name, "").strip())
    try:
        check_tools()
        ports = Ports(*distinct_free_ports(5))
        sandbox = sandbox_at(root)  # where it will write, nothing written yet
        env = function_env({**os.environ, TAG: str(sandbox.root)}, sandbox, ports.storage_url)
        check_function_settings(env)  # before prepare() empties the last run's outbox
        _, lock = prepare(sandbox.root)
    except SandboxError as error:
        print(f"sandbox: {redact(str(error))}", file=sys.stderr)
        return 2
    with lock:  # held until the end: a second sandbox on the folder is refused
        os.environ[TAG] = str(sandbox.root)  # inherited by every process started from here on
        try:
            serve(sandbox, ports, env, started)
        except (SandboxError, LocalCloudError, OSError) as error:
            print(f"sandbox: {redact(str(error))}\nsandbox: stopped everything it had started", file=sys.stderr)
            return 1
    return 0


def what_stopped(started: list[str]) -> str:
    """What a signal stopped, as the parts begun say: ``the Pub/Sub emulator and the function have exited``."""
    if not started:
        return "nothing had started yet"
    parts = started[0] if len(started) == 1 else f"{', '.join(started[:-1])} and {started[-1]}"
    return f"{parts} {'has' if len(started) == 1 else 'have'} exited"


def distinct_free_ports(count: int) -> list[int]:
    ports: list[int] = []
    while len(ports) < count:  # the kernel may hand out a port just released again
        if (port := free_port()) not in ports:
            ports.append(port)
    return ports


def check_function_settings(env: Mapping[str, str]) -> None:
    """The settings and templates the function will load, checked as it does, before anything starts."""
    from notifier.config import ConfigError, load_settings
    from notifier.render import Renderer, TemplateError

    try:
        settings = load_settings(env)
        Renderer.for_settings(settings, check_builtin=True)
    except ConfigError as error:
        raise SandboxError("the function's settings are not valid:\n  " + "\n  ".join(error.problems)) from None
    except TemplateError as error:
        raise SandboxError(f"the function's templates are not valid: {error}") from None
    if settings.deadline_seconds > DEADLINE_MAX:
        raise SandboxError(
            f"NOTIFY_DEADLINE_SECONDS: {env['NOTIFY_DEADLINE_SECONDS'].strip()} is more than the sandbox allows"
            f" ({DEADLINE_MAX} s): Pub/Sub's ack deadline is at most {ACK_DEADLINE_MAX} s and must exceed the"
            f" function's deadline by {ACK_MARGIN} s, or Pub/Sub would redeliver while a send is under way"
        )


def check_tools() -> None:
    """Both emulators can run here, before anything is started or written."""
    if problem := pubsub_emulator_problem():
        raise SandboxError(problem)
    try:
        fake_gcs_binary()
    except LocalCloudError as error:
        raise SandboxError(str(error)) from None


def function_env(environ: Mapping[str, str], sandbox: SandboxDir, storage_url: str) -> dict[str, str]:
    """The function's environment: the user's, plus the state bucket on fake-gcs-server, and the
    outbox unless the user chose SendGrid or SMTP. NOTIFY_FROM/NOTIFY_TO only fill what notify.toml
    and the user leave open (the config treats them as defaults for rules without their own)."""
    env = {**environ, "NOTIFY_STATE_BUCKET": STATE, "STORAGE_EMULATOR_HOST": storage_url, "PYTHONUNBUFFERED": "1"}
    if not environ.get("NOTIFY_DEADLINE_SECONDS", "").strip():
        env["NOTIFY_DEADLINE_SECONDS"] = FUNCTION_DEADLINE
    if not environ.get("NOTIFY_CONFIG", "").strip() and not (ROOT / "notify.toml").is_file():
        env["NOTIFY_CONFIG"] = str(SANDBOX_RULES)
    if not real_backend(environ):
        env |= {"NOTIFY_BACKEND": "outbox", "NOTIFY_OUTBOX_DIR": str(sandbox.outbox)}
        env |= {name: value for name, value in LOCAL_ADDRESSES.items() if not environ.get(name, "").strip()}
    return env


def ack_deadline_for(env: Mapping[str, str]) -> int:
    """The push subscription's ack deadline: the function's deadline and a margin, as Eventarc's is the
    function timeout, so Pub/Sub never redelivers while a send is still under way (Pub/Sub: 10-600 s)."""
    try:
        deadline = float(env.get("NOTIFY_DEADLINE_SECONDS", FUNCTION_DEADLINE))
    except ValueError:  # refused by check_function_settings before this is used
        deadline = float(FUNCTION_DEADLINE)
    return max(10, min(ACK_DEADLINE_MAX, math.ceil(deadline) + ACK_MARGIN))


def real_backend(environ: Mapping[str, str]) -> str | None:
    """The variable that makes the function really send mail, if the user set one."""
    return next((name for name in ("SENDGRID_API_KEY", "SMTP_URL") if environ.get(name, "").strip()), None)


# ---------------------------------------------------------------------------------------------
# Serving


def serve(sandbox: SandboxDir, ports: Ports, env: Mapping[str, str], started: list[str]) -> None:
    """Start every part in order (naming each in ``started`` as it begins), print how to use them,
    then follow the function's log; returns only by an exception, after which every part started is stopped."""
    write_gcloud_config(sandbox, ports.storage_url)
    with ExitStack() as stack:
        try:
            emulator_log, storage_log, function_log, flush_log, webhook_log = (
                stack.enter_context((sandbox.logs / name).open("wb"))
                for name in ("pubsub-emulator.log", "fake-gcs-server.log", "function.log", "flush.log",
                             "sendgrid-events.log")
            )  # fmt: skip
            real = real_backend(env)  # real mail: SendGrid's own events go to a deployed webhook (SMTP has none)
            logged = "function, flush, fake-gcs-server, Pub/Sub emulator" + ("" if real else ", Event Webhook")
            print(f"sandbox logs ({logged}): {shown(sandbox.logs, Path.cwd())}/")
            output = start_parts(stack, sandbox, ports, env, (emulator_log, storage_log, function_log), started)
            digests = None if real else AfterAnswer(sent_from_line)  # the flush's digests, for the player
            start_flush(stack, sandbox, ports.flush, env, flush_log, started, digests)
            player = None if real else start_sendgrid(stack, sandbox, ports.webhook, env, webhook_log, started)
            if digests is not None and player is not None:
                digests.attach(player.queue)
            print_ready(sandbox, Path.cwd(), env)
            health = {
                "the Pub/Sub emulator": (ports.emulator, emulator_log),
                "fake-gcs-server": (ports.storage, storage_log),
                "the flush function": (ports.flush, flush_log),
            } | ({"the Event Webhook function": (ports.webhook, webhook_log)} if player else {})
            follow(output, health, Path.cwd(), player.offer if player else None)
        finally:  # whatever ended it, a signal now must not cut short the stopping below
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)


def start_parts(
    stack: ExitStack, sandbox: SandboxDir, ports: Ports, env: Mapping[str, str],
    logs: tuple[IO[bytes], IO[bytes], IO[bytes]], started: list[str],
) -> FunctionOutput:  # fmt: skip
    """Emulator, topic, function, subscription, fake-gcs-server, buckets: each part is up before
    the next one needs it, and no event can be published before the push subscription exists."""
    emulator_log, storage_log, function_log = logs
    print("sandbox: starting the Pub/Sub emulator (its JVM takes a few seconds)…")
    started.append("the Pub/Sub emulator")
    emulator = _start(stack, running_pubsub_emulator(PROJECT, port=ports.emulator, log=emulator_log,
                                                     gcloud_config=sandbox.gcloud), emulator_log)  # fmt: skip
    emulator.create_topic(TOPIC)
    print(f"sandbox: Pub/Sub emulator on {emulator.host}, topic {TOPIC}")
    started.append("the function")
    output = stack.enter_context(running_function(ports.function, env, function_log))
    emulator.create_push_subscription(SUBSCRIPTION, TOPIC, f"{ports.function_url}/", ack_deadline=ack_deadline_for(env))
    backend = f"{real_backend(os.environ)} is set: it sends real mail" if real_backend(os.environ) else "outbox backend"
    print(f"sandbox: function on {ports.function_url} ({backend}), push subscription {SUBSCRIPTION}")
    sink = EventSink(emulator.host, PROJECT, TOPIC, bucket=UPLOADS)  # the state bucket's own writes publish nothing
    started.append("fake-gcs-server")
    storage = _start(stack, running_fake_gcs(port=ports.storage, events=sink, log=storage_log), storage_log)
    from google.api_core.exceptions import GoogleAPICallError

    try:
        for bucket in (UPLOADS, STATE):
            storage.bucket(bucket)
    except GoogleAPICallError as error:
        raise SandboxError(
            f"fake-gcs-server: cannot create the buckets: {error} (its log: {storage_log.name})"
        ) from None
    print(f"sandbox: fake-gcs-server on {storage.url}: gs://{UPLOADS} (watched), gs://{STATE} (state bucket)")
    return output


def _start(stack: ExitStack, manager: AbstractContextManager[T], log: IO[bytes]) -> T:
    try:
        return stack.enter_context(manager)
    except LocalCloudError as error:
        raise SandboxError(f"{error} (its log: {log.name})") from None


# What `python -m notifier pending | flush` need to read the sandbox's state as its function does.
STATE_VARIABLES = ("NOTIFY_STATE_BUCKET", "STORAGE_EMULATOR_HOST", "NOTIFY_CONFIG", "NOTIFY_BACKEND",
                   "NOTIFY_OUTBOX_DIR", *LOCAL_ADDRESSES)  # fmt: skip


def print_ready(sandbox: SandboxDir, cwd: Path, env: Mapping[str, str]) -> None:
    report, uri = shlex.quote(shown(sandbox.report, cwd)), f"gs://{UPLOADS}/reports/report.csv"
    state = " ".join(shlex.quote(f"{name}={env[name]}") for name in STATE_VARIABLES if name in env)
    print(
        "\nIn another terminal:\n"
        f"export CLOUDSDK_CONFIG={shlex.quote(str(sandbox.gcloud))} BOTO_CONFIG={shlex.quote(str(sandbox.boto))}\n"
        f"env {state} {shlex.quote(shown(Path(sys.executable), cwd))} -m notifier pending"
        "  # held digests (flush --all: send them now)\n"
        f"env {state} {shlex.quote(shown(Path(sys.executable), cwd))} -m notifier status {uri}"
        "  # what became of its emails: outcome, delivery events\n"
        f"sandbox ready: gs://{UPLOADS} → {shown(sandbox.outbox, cwd)}\n"
        f"  gsutil cp {report} gs://{UPLOADS}/reports/\n"
        f"  gcloud storage objects update {uri} --custom-metadata=owner=finance\n"
        f"  gcloud storage rm {uri}\n"
        "(`gcloud storage rm` against fake-gcs-server then prints \"ERROR: 'NoneType' object has no attribute"
        " 'items'\": the object is deleted and the event sent all the same.)\n"
        "Ctrl-C stops everything. One line per notification as events arrive:"
    )


# ---------------------------------------------------------------------------------------------
# The function


class FunctionOutput:
    """The function's output, line by line, read by a thread so its pipe never fills; the last
    lines are kept to explain an exit."""

    def __init__(self, stream: IO[bytes], log: IO[bytes]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.tail: deque[str] = deque(maxlen=20)
        threading.Thread(target=self._pump, args=(stream, log), name="function-output", daemon=True).start()

    def _pump(self, stream: IO[bytes], log: IO[bytes]) -> None:
        for raw in iter(lambda: stream.readline(LINE_LIMIT), b""):  # a longer line arrives in pieces
            with contextlib.suppress(OSError, ValueError):  # the log is kept as is; a full disk or a
                log.write(raw)  # closed log (the sandbox is stopping) does not stop the terminal's lines
                log.flush()
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.tail.append(line)
            self.lines.put(line)
        self.lines.put(None)  # the function has exited

    def last_lines(self) -> str:
        return "\n".join(f"  | {for_terminal(line, SHOWN_CHARS)}" for line in self.tail)


@contextmanager
def running_function(port: int, env: Mapping[str, str], log: IO[bytes]) -> Iterator[FunctionOutput]:
    """functions-framework serving ``handle_storage_event`` in its own process group (a terminal's
    Ctrl-C reaches only us), until it answers; its output also copied to ``log``; stopped on the way out."""
    url = f"http://127.0.0.1:{port}"
    process = start_server(port, dict(env), subprocess.PIPE, start_new_session=True, stdin=subprocess.DEVNULL)
    try:
        assert process.stdout is not None
        output = FunctionOutput(process.stdout, log)
        try:
            wait_until_serving(url, process, FUNCTION_READY_TIMEOUT)
        except OSError as error:
            raise SandboxError(f"{error}; its last lines:\n{output.last_lines()}") from None
        yield output
    finally:
        stop_group(process)


def follow(output: FunctionOutput, health: Mapping[str, tuple[int, IO[bytes]]], cwd: Path,
           also: Callable[[str], None] | None = None) -> None:  # fmt: skip
    """Print a line per outcome (and per warning or error) until the function or an emulator stops;
    ``also`` gets every line (SendGrid's player looks for the sent ones)."""
    while True:
        try:
            line = output.lines.get(timeout=HEALTH_INTERVAL)
        except queue.Empty:
            check_health(health)
            continue
        if line is None:
            raise SandboxError(f"the function exited; its last lines:\n{output.last_lines()}")
        if also is not None:
            also(line)
        if (text := human_line(line, cwd)) is not None:
            say(text)  # whole, beside the threads of sandbox_sendgrid


def check_health(health: Mapping[str, tuple[int, IO[bytes]]]) -> None:
    """Each server still accepts connections. A bare connection, not a request: the emulator logs
    several lines per request, which would grow its log all day."""
    for what, (port, log) in health.items():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        except OSError as error:
            raise SandboxError(f"{what} stopped listening on 127.0.0.1:{port} ({error}); its log: {log.name}") from None
