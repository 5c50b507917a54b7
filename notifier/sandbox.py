"""``make sandbox``: a local cloud to try the function with the real gcloud CLI and gsutil.

It starts, in this order, the Pub/Sub emulator and its topic, the function under functions-framework
(the settings model of a deployment: the state bucket, ``notify.toml`` and templates from the project),
a push subscription to the function, then fake-gcs-server publishing the watched bucket's object
notifications to the topic, and the two buckets. It prints how to point gcloud and gsutil at it and
then one line per outcome the function logs, until Ctrl-C, SIGTERM or SIGHUP stops everything it
started. All it writes lives in one folder it marks as its own (default ``.sandbox/``, git-ignored),
so the user's own gcloud configuration and credentials are never read or written.
"""

from __future__ import annotations

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
from collections import deque
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path
from typing import IO, Any, TypeVar

from notifier.config import ROOT
from notifier.demo import free_port, wait_until_serving
from notifier.localcloud import (
    STOP_SIGNALS,
    EventSink,
    LocalCloudError,
    Stopped,
    fake_gcs_binary,
    pubsub_emulator_problem,
    running_fake_gcs,
    running_pubsub_emulator,
    start_group,
    stop_group,
    stop_on_signals,
)
from notifier.log import LINE_LIMIT, for_terminal, redact, register_secret

PROJECT = "sandbox"
UPLOADS = "sandbox-uploads"  # the watched bucket
STATE = "sandbox-state"  # NOTIFY_STATE_BUCKET: the ledger and dead letters, as deployed
TOPIC = "sandbox-uploads"
SUBSCRIPTION = "sandbox-notifier"
DEFAULT_DIR = ROOT / ".sandbox"
MARKER = ".storage-notifier-sandbox"
MARKER_NOTE = "Made by `make sandbox` (python -m notifier sandbox): it empties outbox/ and rewrites gcloud/ each run.\n"
SAMPLE_CSV = "month,revenue\n2026-10,48213\n2026-11,51007\n"
# Only for the outbox: with SendGrid or SMTP the user's own addresses are used, or none (config says so).
LOCAL_ADDRESSES = {
    "NOTIFY_FROM": "Storage Alerts <alerts@example.com>",
    "NOTIFY_TO": "Data Team <data-team@example.com>",
}
SECRETS = ("SENDGRID_API_KEY", "SMTP_PASSWORD")
FUNCTION_READY_TIMEOUT = 60.0
HEALTH_INTERVAL = 5.0  # seconds between checks that the emulators still answer
SHOWN_CHARS = 300  # of one warning or error line
_ALARMING = re.compile(r"\b(?:ERROR|CRITICAL|WARNING)\b|Traceback|Error\b|Exception\b")
T = TypeVar("T")


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


@dataclass(frozen=True)
class Ports:
    """Chosen before anything starts: the function needs fake-gcs-server's URL before it is up."""

    emulator: int
    function: int
    storage: int

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
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]  # lines reach a pipe at once
    for name in SECRETS:
        register_secret(os.environ.get(name, "").strip())
    ports = Ports(*distinct_free_ports(3))
    try:
        check_tools()
        sandbox = prepare(root or DEFAULT_DIR)
        env = function_env(os.environ, sandbox, ports.storage_url)
        check_function_settings(env)
    except SandboxError as error:
        print(f"sandbox: {redact(str(error))}", file=sys.stderr)
        return 2
    try:
        with stop_on_signals():
            serve(sandbox, ports, env)
    except Stopped as stop:
        lead = "\n" if sys.stdout.isatty() else ""  # after the terminal's ^C
        print(f"{lead}sandbox: stopped ({stop}): the function, fake-gcs-server and the Pub/Sub emulator have exited")
        return 0 if stop.signum == signal.SIGINT else 128 + stop.signum
    except (SandboxError, LocalCloudError, OSError) as error:
        print(f"sandbox: {redact(str(error))}\nsandbox: stopped everything it had started", file=sys.stderr)
        return 1
    return 0


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
        Renderer.for_settings(load_settings(env), check_builtin=True)
    except ConfigError as error:
        raise SandboxError("the function's settings are not valid:\n  " + "\n  ".join(error.problems)) from None
    except TemplateError as error:
        raise SandboxError(f"the function's templates are not valid: {error}") from None


def check_tools() -> None:
    """Both emulators can run here, before anything is started or written."""
    if problem := pubsub_emulator_problem():
        raise SandboxError(problem)
    try:
        fake_gcs_binary()
    except LocalCloudError as error:
        raise SandboxError(str(error)) from None


# ---------------------------------------------------------------------------------------------
# The folder


def prepare(root: Path) -> SandboxDir:
    """A new, empty or earlier sandbox folder, with an empty outbox, the token, boto file and sample
    report; anything else is refused, untouched."""
    sandbox = SandboxDir(root.resolve())
    if sandbox.root.exists() and not sandbox.root.is_dir():
        raise SandboxError(f"--dir: {sandbox.root} is not a folder")
    if sandbox.root.is_dir() and any(sandbox.root.iterdir()) and not (sandbox.root / MARKER).is_file():
        raise SandboxError(
            f"--dir: {sandbox.root} is not empty and was not made by the sandbox (it has no {MARKER} file);"
            " pass a new or empty folder"
        )
    try:
        for folder in (sandbox.root, sandbox.gcloud, sandbox.logs):
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
    return sandbox


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


def function_env(environ: Mapping[str, str], sandbox: SandboxDir, storage_url: str) -> dict[str, str]:
    """The function's environment: the user's, plus the state bucket on fake-gcs-server, and the
    outbox unless the user chose SendGrid or SMTP. NOTIFY_FROM/NOTIFY_TO only fill what notify.toml
    and the user leave open (the config treats them as defaults for rules without their own)."""
    env = {**environ, "NOTIFY_STATE_BUCKET": STATE, "STORAGE_EMULATOR_HOST": storage_url, "PYTHONUNBUFFERED": "1"}
    if not real_backend(environ):
        env |= {"NOTIFY_BACKEND": "outbox", "NOTIFY_OUTBOX_DIR": str(sandbox.outbox)}
        env |= {name: value for name, value in LOCAL_ADDRESSES.items() if not environ.get(name, "").strip()}
    return env


def real_backend(environ: Mapping[str, str]) -> str | None:
    """The variable that makes the function really send mail, if the user set one."""
    return next((name for name in ("SENDGRID_API_KEY", "SMTP_URL") if environ.get(name, "").strip()), None)


# ---------------------------------------------------------------------------------------------
# Serving


def serve(sandbox: SandboxDir, ports: Ports, env: Mapping[str, str]) -> None:
    """Start every part in order, print how to use them, then follow the function's log; returns
    only by an exception, after which every part started is stopped."""
    write_gcloud_config(sandbox, ports.storage_url)
    with ExitStack() as stack:
        try:
            emulator_log = stack.enter_context((sandbox.logs / "pubsub-emulator.log").open("wb"))
            storage_log = stack.enter_context((sandbox.logs / "fake-gcs-server.log").open("wb"))
            output = start_parts(stack, sandbox, ports, env, (emulator_log, storage_log))
            print_ready(sandbox, Path.cwd())
            health = {
                "the Pub/Sub emulator": (ports.emulator, emulator_log),
                "fake-gcs-server": (ports.storage, storage_log),
            }
            follow(output, health, Path.cwd())
        finally:  # whatever ended it, a signal now must not cut short the stopping below
            for sig in STOP_SIGNALS:
                signal.signal(sig, signal.SIG_IGN)


def start_parts(
    stack: ExitStack, sandbox: SandboxDir, ports: Ports, env: Mapping[str, str], logs: tuple[IO[bytes], IO[bytes]]
) -> FunctionOutput:
    """Emulator, topic, function, subscription, fake-gcs-server, buckets: each part is up before
    the next one needs it, and no event can be published before the push subscription exists."""
    emulator_log, storage_log = logs
    print("sandbox: starting the Pub/Sub emulator (its JVM takes a few seconds)…")
    emulator = _start(stack, running_pubsub_emulator(PROJECT, port=ports.emulator, log=emulator_log,
                                                     gcloud_config=sandbox.gcloud), emulator_log)  # fmt: skip
    emulator.create_topic(TOPIC)
    print(f"sandbox: Pub/Sub emulator on {emulator.host}, topic {TOPIC}")
    output = stack.enter_context(running_function(ports.function, env))
    emulator.create_push_subscription(SUBSCRIPTION, TOPIC, f"{ports.function_url}/")
    backend = f"{real_backend(os.environ)} is set: it sends real mail" if real_backend(os.environ) else "outbox backend"
    print(f"sandbox: function on {ports.function_url} ({backend}), push subscription {SUBSCRIPTION}")
    sink = EventSink(emulator.host, PROJECT, TOPIC, bucket=UPLOADS)  # the state bucket's own writes publish nothing
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


def print_ready(sandbox: SandboxDir, cwd: Path) -> None:
    report, uri = shlex.quote(shown(sandbox.report, cwd)), f"gs://{UPLOADS}/reports/report.csv"
    print(
        "\nIn another terminal:\n"
        f"export CLOUDSDK_CONFIG={shlex.quote(str(sandbox.gcloud))} BOTO_CONFIG={shlex.quote(str(sandbox.boto))}\n"
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

    def __init__(self, stream: IO[bytes]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.tail: deque[str] = deque(maxlen=20)
        threading.Thread(target=self._pump, args=(stream,), name="function-output", daemon=True).start()

    def _pump(self, stream: IO[bytes]) -> None:
        for raw in iter(lambda: stream.readline(LINE_LIMIT), b""):  # a longer line arrives in pieces
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.tail.append(line)
            self.lines.put(line)
        self.lines.put(None)  # the function has exited

    def last_lines(self) -> str:
        return "\n".join(f"  | {for_terminal(line, SHOWN_CHARS)}" for line in self.tail)


@contextmanager
def running_function(port: int, env: Mapping[str, str]) -> Iterator[FunctionOutput]:
    """functions-framework serving ``handle_storage_event`` in its own process group (a terminal's
    Ctrl-C reaches only us), until it answers; stopped on the way out."""
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "functions_framework", "--target", "handle_storage_event",
               "--source", str(ROOT / "main.py"), "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    process = start_group(command, env=env, log=subprocess.PIPE, cwd=ROOT)
    try:
        assert process.stdout is not None
        output = FunctionOutput(process.stdout)
        try:
            wait_until_serving(url, process, FUNCTION_READY_TIMEOUT)
        except OSError as error:
            raise SandboxError(f"{error}; its last lines:\n{output.last_lines()}") from None
        yield output
    finally:
        stop_group(process)


def follow(output: FunctionOutput, health: Mapping[str, tuple[int, IO[bytes]]], cwd: Path) -> None:
    """Print a line per outcome (and per warning or error) until the function or an emulator stops."""
    while True:
        try:
            line = output.lines.get(timeout=HEALTH_INTERVAL)
        except queue.Empty:
            check_health(health)
            continue
        if line is None:
            raise SandboxError(f"the function exited; its last lines:\n{output.last_lines()}")
        if (text := human_line(line, cwd)) is not None:
            print(text)


def check_health(health: Mapping[str, tuple[int, IO[bytes]]]) -> None:
    """Each server still accepts connections. A bare connection, not a request: the emulator logs
    several lines per request, which would grow its log all day."""
    for what, (port, log) in health.items():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        except OSError as error:
            raise SandboxError(f"{what} stopped listening on 127.0.0.1:{port} ({error}); its log: {log.name}") from None


# ---------------------------------------------------------------------------------------------
# Log lines → human lines


def human_line(line: str, cwd: Path) -> str | None:
    """An outcome as one readable line, a warning or error compactly, anything else not at all."""
    try:
        entry = json.loads(line)
    except ValueError:
        entry = None
    if not isinstance(entry, dict):
        return f"  function: {for_terminal(line.strip(), SHOWN_CHARS)}" if _ALARMING.search(line) else None
    if "outcome" in entry:
        return outcome_line(entry, cwd)
    severity = str(entry.get("severity", ""))
    if severity in ("WARNING", "ERROR", "CRITICAL"):
        return f"  {severity.lower()}: {for_terminal(str(entry.get('message', '')), SHOWN_CHARS)}"
    return None


def outcome_line(entry: Mapping[str, Any], cwd: Path) -> str:
    """``sent      finalize gs://B/O → To  outbox/x.eml``; other outcomes say why instead of where."""
    outcome, kind = str(entry.get("outcome")), str(entry.get("kind", "?"))
    text = f"{outcome:<9} {kind:<8} gs://{entry.get('bucket', '?')}/{entry.get('object', '?')}"
    emls = [Path(p) for p in str(entry.get("message_id") or "").split(",") if p.endswith(".eml")]
    if outcome == "sent":
        count = entry.get("recipients")
        who = addressees(emls) or (f"{count} recipient(s)" if count is not None else "")
        text += f" → {who}" if who else ""
        text += f"  {', '.join(shown(p, cwd) for p in emls)}" if emls else ""
    elif detail := entry.get("error") or entry.get("reason"):
        text += f": {detail}"
    return for_terminal(text, 2 * SHOWN_CHARS)  # object names are untrusted: no escape sequences


def addressees(emls: list[Path]) -> str:
    """The To headers of the written copies, each address once."""
    found: dict[str, None] = {}
    for path in emls:
        try:
            with path.open("rb") as handle:
                headers = BytesHeaderParser(policy=default_policy).parse(handle)
        except OSError:
            continue
        for address in getattr(headers.get("To"), "addresses", ()):
            found.setdefault(str(address))
    return ", ".join(found)


def shown(path: Path, cwd: Path) -> str:
    return str(path.relative_to(cwd)) if path.is_relative_to(cwd) else str(path)
