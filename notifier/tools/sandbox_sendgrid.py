"""``make sandbox`` plays SendGrid's part after a send: its signed Event Webhook, end to end.

With the outbox backend nothing reports back as SendGrid does, so the sandbox does it: a P-256 key
pair made for this run (the private key only in this process's memory), ``sendgrid_events`` served
by a third functions-framework server with the public key as SENDGRID_WEBHOOK_PUBLIC_KEY and the
event function's state bucket, and a poster. For each ``sent`` outcome line of the event function,
and of the flush function (a digest; its id is the .eml's X-Notification-Id), it
reads the recipients from the ``.eml`` copies the outbox wrote (To and Cc; X-Notification-Id checked),
then signs and POSTs one SendGrid-shaped batch: ``processed`` and then ``delivered`` per recipient;
an address at ``bounce.test`` (a reserved domain) gets ``bounce`` instead, so the bounce WARNING and
``python -m notifier status`` can be seen too.
"""

from __future__ import annotations

import base64
import contextlib
import json
import queue
import secrets
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from email.parser import BytesHeaderParser
from email.policy import default as default_policy
from pathlib import Path
from typing import IO, Any

from notifier.ledger.history import NOTIFICATION_ID
from notifier.log import LINE_LIMIT, for_terminal
from notifier.tools.localcloud import json_object
from notifier.tools.processes import local_request, start_server, stop_group, wait_until_serving
from notifier.tools.sandbox_folder import SandboxDir, SandboxError
from notifier.tools.sandbox_output import SHOWN_CHARS, human_line, object_name, say, shown

TARGET = "sendgrid_events"
KEY_VARIABLE = "SENDGRID_WEBHOOK_PUBLIC_KEY"
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"  # notifier.webhook's, not imported: it loads Flask
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
BOUNCE_DOMAIN = "bounce.test"  # RFC 2606: never a real mailbox
BOUNCE_REASON = "550 5.1.1 The email account that you tried to reach does not exist"
READY_TIMEOUT = 60.0
POST_TIMEOUT = 30.0  # the webhook records within ~20 s
RETRY_WAITS = (1.0, 2.0, 4.0)  # SendGrid retries for a day; the sandbox gives up after a few seconds
MAX_RECIPIENTS = 500  # per notification: a batch of 1,000 events stays far under the webhook's 1 MiB
ANSWER_BYTES = 16 * 1024
ALARMING = ("WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class SigningKey:
    """This run's key pair: the private half signs the batches, the public half is what SendGrid
    shows as the verification key (base64 of the DER SubjectPublicKeyInfo)."""

    private: Any  # cryptography's EllipticCurvePrivateKey (imported lazily)
    public: str

    @classmethod
    def generate(cls) -> SigningKey:
        from cryptography.hazmat.primitives import serialization
        from cryptography.hazmat.primitives.asymmetric import ec

        private = ec.generate_private_key(ec.SECP256R1())
        der = private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return cls(private, base64.b64encode(der).decode("ascii"))

    def headers(self, body: bytes, timestamp: int) -> dict[str, str]:
        """SendGrid's: ECDSA P-256 with SHA-256 over timestamp + body, the DER signature in base64."""
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import ec

        signature = self.private.sign(str(timestamp).encode("ascii") + body, ec.ECDSA(hashes.SHA256()))
        return {SIGNATURE_HEADER: base64.b64encode(signature).decode("ascii"), TIMESTAMP_HEADER: str(timestamp)}

    def __repr__(self) -> str:  # never the private key, even in a traceback
        return f"SigningKey(public={self.public[:16]}…)"


@dataclass(frozen=True, slots=True)
class Sent:
    """What the poster needs of one ``sent`` outcome line (a digest's: kind "digest" and its group)."""

    notification_id: str
    message_id: str
    kind: str
    bucket: str
    object: str
    group: str = ""  # a digest's: ``rule bulk, bucket sandbox-uploads, folder bulk/``

    @property
    def emls(self) -> list[Path]:
        """The outbox's copies, as its receipt names them (``message_id``: comma-separated paths)."""
        return [Path(p) for p in self.message_id.split(",") if p.endswith(".eml")]

    def described(self) -> str:
        if self.group:
            return f"{'digest':<8} {for_terminal(self.group, SHOWN_CHARS)}"
        return f"{for_terminal(self.kind, 20):<8} gs://{for_terminal(self.bucket, 63)}/{object_name(self.object)}"


def sent_from_line(line: str) -> Sent | None:
    """The ``sent`` outcome in one of the event function's log lines, or a digest's in the flush
    function's (which names its group, not its id: the id is its copies' X-Notification-Id), else None."""
    try:
        entry = json.loads(line)
    except ValueError:
        return None
    if not isinstance(entry, dict) or entry.get("outcome") != "sent":
        return None
    texts = {name: entry.get(name) for name in ("message_id", "kind", "bucket", "object", "group_of")}
    message_id, kind, bucket, name, group = (v if isinstance(v, str) else "" for v in texts.values())
    notification_id = entry.get("notification_id")
    if notification_id is None and "group_of" in entry:  # the flush's line for a digest it sent
        notification_id, kind = digest_id(message_id), "digest"
    if not (isinstance(notification_id, str) and NOTIFICATION_ID.fullmatch(notification_id)):
        return None
    return Sent(notification_id, message_id, kind, bucket, name, group)


def _headers(path: Path) -> EmailMessage | None:
    try:
        with path.open("rb") as handle:
            return BytesHeaderParser(policy=default_policy).parse(handle)  # type: ignore[return-value]
    except OSError:
        return None


def digest_id(message_id: str) -> str | None:
    """A digest's notification id: the X-Notification-Id of the first copy its receipt names."""
    for path in Sent("", message_id, "", "", "").emls:
        if (headers := _headers(path)) is not None:
            return str(headers.get("X-Notification-Id", "")).strip()
    return None


def recipients_of(sent: Sent, outbox: Path) -> list[str]:
    """The To and Cc addresses of the outbox's copies of ``sent`` (each once, at most MAX_RECIPIENTS)."""
    return list(copies_of(sent, outbox))


def copies_of(sent: Sent, outbox: Path) -> dict[str, str]:
    """Each To and Cc address of the outbox's copies of ``sent`` (each once, at most MAX_RECIPIENTS),
    with the copy it is in, as the receipt names it: the message id SendGrid's events of that address
    name (``sg_message_id`` starts with it, as with SendGrid's X-Message-Id). The copies its receipt
    names, else those named by its id; only those whose X-Notification-Id is it."""
    emls = sent.emls or sorted(outbox.glob(f"*-{sent.notification_id}*.eml"))
    found: dict[str, str] = {}
    for path in emls:
        headers = _headers(path)
        if headers is None or str(headers.get("X-Notification-Id", "")).strip() != sent.notification_id:
            continue
        for field in ("To", "Cc"):
            for address in getattr(headers.get(field), "addresses", ()):
                if address.addr_spec and len(found) < MAX_RECIPIENTS:
                    found.setdefault(address.addr_spec, str(path))
    return found


def bounces(email: str) -> bool:
    return email.rpartition("@")[2].lower() == BOUNCE_DOMAIN


def events_for(
    sent: Sent,
    recipients: Sequence[str],
    now: int,
    new_id: Callable[[], str] = lambda: secrets.token_urlsafe(16),
    copies: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """SendGrid's events for ``sent``: ``processed`` for each recipient a second before ``now`` (so
    that status, which orders by time, shows them first), then ``delivered`` (or ``bounce`` at
    bounce.test) at ``now``. Our custom arg at top level, as SendGrid puts custom_args; each event's
    ``sg_message_id`` starts with the message id of the copy its address is in (``copies``), else the
    receipt's, so that status ties it to the message recorded as sent."""
    default_message_id = sent.message_id.split(",")[0] or sent.notification_id

    def event(name: str, email: str, index: int, **fields: Any) -> dict[str, Any]:
        message_id = (copies or {}).get(email, default_message_id)
        return {
            "email": email, "timestamp": now - 1 if name == "processed" else now, "event": name,
            "sg_event_id": new_id(), "sg_message_id": f"{message_id}.sandbox-{index}.0",
            "smtp-id": f"<{sent.notification_id}@storage-notifier>", "notification_id": sent.notification_id, **fields,
        }  # fmt: skip

    processed = [event("processed", email, i) for i, email in enumerate(recipients)]
    outcomes = [
        event("bounce", email, i, type="bounce", reason=BOUNCE_REASON, status="5.1.1",
              bounce_classification="Invalid Address")
        if bounces(email)
        else event("delivered", email, i, response="250 2.0.0 OK (sandbox)", tls=1)
        for i, email in enumerate(recipients)
    ]  # fmt: skip
    return processed + outcomes


def post_batch(url: str, body: bytes, headers: Mapping[str, str], timeout: float = POST_TIMEOUT) -> tuple[int, bytes]:
    """SendGrid's POST: the status and the start of the answer, whatever the status."""
    return local_request(
        url, body, {"Content-Type": "application/json", **headers}, timeout=timeout, answer_bytes=ANSWER_BYTES
    )


class SendGridPlayer:
    """Posts SendGrid's events for each ``sent`` line :meth:`offer` gets, from its own thread, so
    the terminal's lines never wait for the webhook. ``wait(seconds)`` returns True once stopped
    (a test answers False at once); ``say`` prints a line."""

    def __init__(
        self, url: str, key: SigningKey, outbox: Path, *, log: str, say: Callable[[str], None] = say,
        clock: Callable[[], float] = time.time, wait: Callable[[float], bool] | None = None,
    ) -> None:  # fmt: skip
        self.url, self.key, self.outbox, self.log = url, key, outbox, log
        self._say, self._clock = say, clock
        self._stopped = threading.Event()
        self._wait = wait or self._stopped.wait
        self._sent: queue.Queue[Sent | None] = queue.Queue()
        self._thread: threading.Thread | None = None

    def offer(self, line: str) -> None:
        """One of the event function's log lines: a ``sent`` outcome is queued, anything else ignored."""
        if (sent := sent_from_line(line)) is not None:
            self.queue(sent)

    def queue(self, sent: Sent) -> None:
        """A ``sent`` outcome read elsewhere (the flush function's, once its run has answered)."""
        self._sent.put(sent)

    def run(self) -> None:
        """The thread's loop until :meth:`stop` (a test calls it after queuing a None to end it)."""
        while not self._stopped.is_set() and (sent := self._sent.get()) is not None:
            try:
                self.play(sent)
            except Exception as error:  # noqa: BLE001 - a bug here must not end the events of later emails
                self._say(f"  error: the delivery events of {sent.notification_id} were not posted:"
                          f" {type(error).__name__}: {for_terminal(str(error), SHOWN_CHARS)}")  # fmt: skip

    def play(self, sent: Sent) -> None:
        """Post ``sent``'s events, retried a few times on 5xx or no answer; one line per recipient."""
        copies = copies_of(sent, self.outbox)
        recipients = list(copies)
        if not recipients:
            self._say(f"  warning: no recipients found in the outbox for notification {sent.notification_id}:"
                      " no delivery events sent")  # fmt: skip
            return
        body = json.dumps(events_for(sent, recipients, int(self._clock()), copies=copies)).encode()
        status, answer = 0, b""
        for wait in (*RETRY_WAITS, None):
            try:  # signed when posted, as SendGrid signs each attempt
                status, answer = post_batch(self.url, body, self.key.headers(body, int(self._clock())))
            except OSError as error:
                status, answer = 0, str(error).encode()
            if 0 < status < 500 or wait is None or self._wait(wait):
                break
        if self._stopped.is_set():  # the sandbox is stopping: the webhook may be gone already
            return
        if status != 200:
            said = for_terminal(answer.decode("utf-8", "replace").strip(), SHOWN_CHARS)
            self._say(f"  error: the Event Webhook answered {status or 'nothing'} to the delivery events of"
                      f" {sent.notification_id}: {said}; its log: {self.log}")  # fmt: skip
            return
        if (json_object(answer) or {}).get("unknown"):  # neither the history nor the ledger knows the id
            self._say(f"  warning: the Event Webhook does not know notification {sent.notification_id}: its"
                      f" delivery events were ignored; its log: {self.log}")  # fmt: skip
            return
        for email in recipients:
            word, why = ("bounce", f": {BOUNCE_REASON}") if bounces(email) else ("delivered", "")
            self._say(f"{word:<9} {sent.described()} → {for_terminal(email, SHOWN_CHARS)}{why}")

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="sendgrid-player", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """No further batch; one under way ends with the webhook server, which is stopped next."""
        self._stopped.set()
        self._sent.put(None)
        if self._thread is not None:
            self._thread.join(timeout=1.0)


def webhook_line(line: str, cwd: Path) -> str | None:
    """A warning or error of the webhook (a bounce's WARNING, a rejected batch) as one short line."""
    try:
        entry = json.loads(line)
    except ValueError:
        return human_line(line, cwd)  # a traceback or other alarming text
    if not isinstance(entry, dict) or str(entry.get("severity")) not in ALARMING:
        return None
    text = f"  {str(entry['severity']).lower()}: {for_terminal(str(entry.get('message', '')), SHOWN_CHARS)}"
    return text + whose(entry)


def whose(entry: Mapping[str, Any]) -> str:
    """`` (notification ID, rule R)`` when the line names them (a bounce's, a drop's, a spam report's)."""
    notification_id, rule = entry.get("notification_id"), entry.get("rule")
    if not isinstance(notification_id, str) or not notification_id:
        return ""
    named = f"rule {for_terminal(rule, 100)}" if isinstance(rule, str) and rule else ""
    return f" (notification {for_terminal(notification_id, 100)}{', ' + named if named else ''})"


def _pump(stream: IO[bytes], log: IO[bytes], say: Callable[[str], None], cwd: Path) -> None:
    for raw in iter(lambda: stream.readline(LINE_LIMIT), b""):
        with contextlib.suppress(OSError, ValueError):  # a full disk or a closed log stops no line
            log.write(raw)
            log.flush()
        if (text := webhook_line(raw.decode("utf-8", "replace").rstrip("\r\n"), cwd)) is not None:
            say(text)


@contextmanager
def running_webhook(
    port: int, env: Mapping[str, str], public_key: str, log: IO[bytes], *, say: Callable[[str], None] = say,
    cwd: Path | None = None,
) -> Iterator[str]:  # fmt: skip
    """functions-framework serving ``sendgrid_events`` with the event function's settings and
    ``public_key``, in its own process group; its output to ``log``, its warnings said; its URL once
    it answers; stopped on the way out."""
    url = f"http://127.0.0.1:{port}"
    process = start_server(port, {**env, KEY_VARIABLE: public_key}, subprocess.PIPE, target=TARGET,
                           start_new_session=True, stdin=subprocess.DEVNULL)  # fmt: skip
    try:
        assert process.stdout is not None
        threading.Thread(target=_pump, args=(process.stdout, log, say, cwd or Path.cwd()), name="webhook-output",
                         daemon=True).start()  # fmt: skip
        try:
            wait_until_serving(url, process, READY_TIMEOUT)  # a GET: 405, as the event function's
        except OSError as error:
            raise SandboxError(f"the Event Webhook function: {error} (its log: {log.name})") from None
        yield url
    finally:
        stop_group(process)


@contextmanager
def played_sendgrid(
    port: int, env: Mapping[str, str], outbox: Path, log: IO[bytes], *, shown_log: str,
    say: Callable[[str], None] = say,
) -> Iterator[SendGridPlayer]:  # fmt: skip
    """The webhook server and the poster, with a key pair made for this run; the poster stops first."""
    key = SigningKey.generate()
    with running_webhook(port, env, key.public, log, say=say) as url:
        player = SendGridPlayer(url, key, outbox, log=shown_log, say=say)
        player.start()
        try:
            yield player
        finally:
            player.stop()


def start_sendgrid(
    stack: ExitStack, sandbox: SandboxDir, port: int, env: Mapping[str, str], log: IO[bytes], started: list[str]
) -> SendGridPlayer:
    """The sandbox's part: the webhook and the player until ``stack`` closes, named in ``started``."""
    started.append("the Event Webhook function")
    shown_log = shown(Path(log.name), Path.cwd())
    player = stack.enter_context(played_sendgrid(port, env, sandbox.outbox, log, shown_log=shown_log))
    say(f"sandbox: sendgrid_events plays SendGrid's signed Event Webhook for each email (its log: {shown_log})")
    return player
