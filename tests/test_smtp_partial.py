"""Issue 14, item 7a: an SMTP server that refuses some recipients and accepts the others.

``sendmail`` raises only when every recipient of a copy is refused; otherwise it returns the refused
ones. Each refused address is named in the outcome line, retried while its refusal is transient
(4xx) and dead-lettered for just itself when it is permanent (5xx) or the retries run out; nobody
who got the email gets it twice, neither from a retry nor from a replay.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import sqlite3
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from cloudevents.conversion import to_binary

from notifier.ledger import DeadLetter, Ledger, LedgerError
from notifier.ledger.bucket import StateBucket
from notifier.ledger.gcs import GcsLedger
from notifier.ledger.local import LocalDeadLetters
from notifier.ledger.memory import MemoryLedger
from notifier.ledger.sqlite import SqliteLedger
from notifier.mail import smtp
from notifier.pipeline import Pipeline, RetryLater
from notifier.tools.cli import main
from notifier.tools.processes import free_port
from tests.conftest import settings_for, storage_cloud_event

EVERYONE = ("a@example.com", "b@example.com", "c@example.com")
NO_SUCH_USER = "550 5.1.1 <c@example.com>: no such user"
MAILBOX_BUSY = "450 4.2.1 <b@example.com>: mailbox busy, try again later"


class Relay:
    """An aiosmtpd handler refusing RCPT TO for some addresses with scripted replies (one per try;
    once a script is used up, the address is accepted); records who got each message."""

    def __init__(self, refusals: dict[str, Iterator[str]] | None = None) -> None:
        self.refusals = refusals or {}
        self.received: list[list[str]] = []  # the accepted recipients of each message, in order

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        reply = next(self.refusals.get(address, iter(())), None)
        if reply is not None:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.received.append(list(envelope.rcpt_tos))
        return "250 OK"

    def copies(self) -> Counter[str]:
        """How many copies each address got."""
        return Counter(itertools.chain.from_iterable(self.received))


@pytest.fixture
def relay() -> Iterator[tuple[Relay, int]]:
    handler = Relay()
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield handler, controller.port
    controller.stop()


def _rules(folder: Path, *, separate: bool) -> Path:
    path = folder / "notify.toml"
    path.write_text(
        f"""
[defaults]
from = "Storage Alerts <alerts@example.com>"

[[rules]]
name = "reports"
include = ["reports/**"]
to = {json.dumps(list(EVERYONE))}
separate_envelopes = {str(separate).lower()}
""",
        encoding="utf-8",
    )
    return path


def _env(folder: Path, port: int, *, separate: bool, **extra: str) -> dict[str, str]:
    return {
        "NOTIFY_BACKEND": "smtp",
        "SMTP_URL": f"smtp://127.0.0.1:{port}?tls=none",
        "NOTIFY_CONFIG": str(_rules(folder, separate=separate)),
        "NOTIFY_DEAD_LETTER_DIR": str(folder / "dead"),
        "NOTIFY_LEDGER_FILE": str(folder / "ledger.sqlite3"),
        **extra,
    }


def _pipeline(folder: Path, port: int, *, separate: bool, **extra: str) -> Pipeline:
    """The pipeline in-process, so the backend's sleep between retries is recorded, not slept."""
    settings = settings_for(**_env(folder, port, separate=separate, **extra))
    pipeline = Pipeline(settings, ledger=MemoryLedger(), dead_letters=LocalDeadLetters(folder / "dead"))
    pipeline.backend.sleeps = []
    pipeline.backend.sleep = pipeline.backend.sleeps.append
    return pipeline


def _letters(folder: Path) -> list[dict]:
    return [json.loads(p.read_text(encoding="utf-8")) for p in sorted((folder / "dead").glob("*.json"))]


def _outcome_lines(lines: list[dict]) -> list[dict]:
    return [line for line in lines if "outcome" in line]


@pytest.mark.parametrize("separate", [True, False], ids=["separate-envelopes", "one-envelope"])
def test_a_permanent_refusal_reaches_the_others_and_is_dead_lettered_for_just_that_address(
    function_server_factory, relay, tmp_path, monkeypatch, capsys, separate
):
    handler, port = relay
    handler.refusals = {"c@example.com": itertools.repeat(NO_SUCH_USER)}
    env = _env(tmp_path, port, separate=separate)
    server = function_server_factory(**env)
    server.new_log_lines()

    status, _ = server.post(*reversed(to_binary(storage_cloud_event(name="reports/q3.csv", generation="42"))))

    assert status == 200, "nothing a redelivery could fix: the platform must not send it again"
    assert handler.copies() == Counter({"a@example.com": 1, "b@example.com": 1})
    (line,) = _outcome_lines(server.new_log_lines())
    assert line["outcome"] == "partially-sent"
    assert line["severity"] == "ERROR"
    assert line["refused"] == [{"address": "c@example.com", "status": 550, "transient": False}]
    assert "c@example.com" in line["message"] and "550" in line["message"]
    assert line["message_id"]
    (letter,) = _letters(tmp_path)
    assert letter["refused_recipients"] == ["c@example.com"]
    assert letter["notification_id"] == line["notification_id"]
    assert line["dead_letter"].endswith(f"{line['notification_id']}.json")

    # The platform redelivers anyway: the ledger says it was dealt with, nobody gets a second copy.
    assert server.post(*reversed(to_binary(storage_cloud_event(name="reports/q3.csv", generation="42"))))[0] == 200
    assert handler.copies() == Counter({"a@example.com": 1, "b@example.com": 1})

    # The mailbox exists now: replay sends to it, and only to it.
    handler.refusals = {}
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("NOTIFY_FROM", "Storage Alerts <alerts@example.com>")
    capsys.readouterr()
    assert main(["replay", "--dry-run"]) == 0
    shown = capsys.readouterr().out
    assert "to: c@example.com" in shown and "a@example.com" not in shown and "b@example.com" not in shown
    assert main(["replay"]) == 0, capsys.readouterr().out
    assert handler.received[-1] == ["c@example.com"]
    assert handler.copies() == Counter({"a@example.com": 1, "b@example.com": 1, "c@example.com": 1})
    assert _letters(tmp_path) == []
    assert main(["replay"]) == 0
    assert handler.copies() == Counter(EVERYONE)


@pytest.mark.parametrize("separate", [True, False], ids=["separate-envelopes", "one-envelope"])
def test_a_transient_refusal_is_retried_for_that_address_only(relay, tmp_path, capsys, separate):
    handler, port = relay
    handler.refusals = {"b@example.com": iter([MAILBOX_BUSY])}
    pipeline = _pipeline(tmp_path, port, separate=separate)

    (outcome,) = pipeline.handle(storage_cloud_event(name="reports/q3.csv"))

    assert outcome.outcome == "sent"
    assert handler.copies() == Counter(EVERYONE), "each address exactly once"
    assert handler.received[-1] == ["b@example.com"], "the retry was for the refused address alone"
    assert len(pipeline.backend.sleeps) == 1
    (line,) = _outcome_lines([json.loads(text) for text in capsys.readouterr().out.splitlines()])
    assert (line["outcome"], line["attempts"]) == ("sent", 2)
    assert "refused" not in line
    assert _letters(tmp_path) == []


@pytest.mark.parametrize("separate", [True, False], ids=["separate-envelopes", "one-envelope"])
def test_a_refusal_still_transient_after_the_retries_is_dead_lettered_for_that_address(
    relay, tmp_path, capsys, separate
):
    handler, port = relay
    handler.refusals = {"b@example.com": itertools.repeat(MAILBOX_BUSY)}
    pipeline = _pipeline(tmp_path, port, separate=separate, NOTIFY_MAX_ATTEMPTS="3")
    event = storage_cloud_event(name="reports/q3.csv")

    try:
        (outcome,) = pipeline.handle(event)
    except RetryLater:
        pytest.fail("a redelivery would send a second copy to a@ and c@, who have theirs")
    assert outcome.outcome == "partially-sent"
    assert handler.copies() == Counter({"a@example.com": 1, "c@example.com": 1})
    assert len(pipeline.backend.sleeps) == 2
    (line,) = _outcome_lines([json.loads(text) for text in capsys.readouterr().out.splitlines()])
    assert line["refused"] == [{"address": "b@example.com", "status": 450, "transient": True}]
    assert line["attempts"] == 3
    (letter,) = _letters(tmp_path)
    assert letter["refused_recipients"] == ["b@example.com"]
    assert "450" in letter["error"] and "after 3 attempt(s)" in letter["error"]

    assert pipeline.handle(event)[0].outcome == "duplicate"  # a redelivery sends nothing
    handler.refusals = {}
    (stored,) = pipeline.dead_letters.list()
    (replayed,) = pipeline.replay(stored)
    assert replayed.outcome == "sent"
    assert handler.received[-1] == ["b@example.com"]
    assert handler.copies() == Counter(EVERYONE)
    assert _letters(tmp_path) == []


def test_every_recipient_refused_is_still_one_dead_letter_for_everyone(relay, tmp_path, capsys):
    handler, port = relay
    handler.refusals = {address: itertools.repeat(f"550 5.1.1 <{address}>: no such user") for address in EVERYONE}
    pipeline = _pipeline(tmp_path, port, separate=True)

    (outcome,) = pipeline.handle(storage_cloud_event(name="reports/q3.csv"))

    assert outcome.outcome == "dead-lettered"
    assert handler.received == []
    (letter,) = _letters(tmp_path)
    assert "refused_recipients" not in letter  # nobody got it: a replay sends to everyone
    assert all(address in letter["error"] for address in EVERYONE)
    assert pipeline.backend.sleeps == []


def test_a_letter_narrowed_to_recipients_no_longer_in_the_rule_is_refused(relay, tmp_path, monkeypatch, capsys):
    handler, port = relay
    pipeline, path = _letter_with_refused(handler, port, tmp_path, ["evil@attacker.example"])  # it can only narrow

    (stored,) = pipeline.dead_letters.list()
    (replayed,) = pipeline.replay(stored)

    assert replayed.outcome == "refused"
    assert handler.copies() == Counter({"a@example.com": 1, "b@example.com": 1})
    assert "evil@attacker.example" not in capsys.readouterr().out.replace("\\", "")
    assert path.exists()


@pytest.mark.parametrize("planted", ["c@example.com", [], [7], ["x" * 400]], ids=["string", "empty", "number", "long"])
def test_a_malformed_refused_recipients_list_is_not_replayed(relay, tmp_path, capsys, planted):
    handler, port = relay
    pipeline, path = _letter_with_refused(handler, port, tmp_path, planted)
    capsys.readouterr()

    (stored,) = pipeline.dead_letters.list()
    (replayed,) = pipeline.replay(stored)

    assert replayed.outcome == "invalid"
    assert "refused_recipients: expected a list of 1 to" in capsys.readouterr().out
    assert handler.copies() == Counter({"a@example.com": 1, "b@example.com": 1})
    assert path.exists(), "an unreadable letter is kept for a person to fix"


class UnwritableDeadLetters(LocalDeadLetters):
    def put(self, notification_id, record):
        raise OSError(28, "No space left on device")


def test_a_partial_send_whose_letter_cannot_be_stored_is_not_redelivered_to_everyone(relay, tmp_path, capsys):
    handler, port = relay
    handler.refusals = {"c@example.com": itertools.repeat(NO_SUCH_USER)}
    settings = settings_for(**_env(tmp_path, port, separate=True))
    pipeline = Pipeline(settings, ledger=MemoryLedger(), dead_letters=UnwritableDeadLetters(tmp_path / "dead"))
    event = storage_cloud_event(name="reports/q3.csv")

    (outcome,) = pipeline.handle(event)  # no RetryLater: a redelivery would mail a@ and b@ again

    assert outcome.outcome == "partially-sent"
    (line,) = _outcome_lines([json.loads(text) for text in capsys.readouterr().out.splitlines()])
    assert line["severity"] == "ERROR"
    assert "c@example.com" in line["error"] and "could not be stored" in line["error"]
    assert "dead_letter" not in line
    assert pipeline.handle(event)[0].outcome == "duplicate"
    assert handler.copies() == Counter({"a@example.com": 1, "b@example.com": 1})


def _letter_with_refused(handler, port, tmp_path, planted):
    """The pipeline and the dead letter of a 550 for c@, its refused_recipients replaced by ``planted``;
    the relay then accepts everyone."""
    handler.refusals = {"c@example.com": itertools.repeat(NO_SUCH_USER)}
    pipeline = _pipeline(tmp_path, port, separate=True)
    pipeline.handle(storage_cloud_event(name="reports/q3.csv"))
    (path,) = sorted((tmp_path / "dead").glob("*.json"))
    record = json.loads(path.read_text(encoding="utf-8"))
    record["refused_recipients"] = planted
    path.write_text(json.dumps(record), encoding="utf-8")
    handler.refusals = {}
    return pipeline, path


DISCONNECT = "disconnect"  # MailFailingRelay: drop the connection instead of answering MAIL FROM


class MailFailingRelay(Relay):
    """A Relay whose MAIL FROM fails from the ``fail_from``-th one on (counted across connections):
    answered with ``failure``, or the connection dropped when it is DISCONNECT."""

    def __init__(self, refusals: dict[str, Iterator[str]], *, fail_from: int, failure: str | None) -> None:
        super().__init__(refusals)
        self.fail_from, self.failure, self.mails = fail_from, failure, 0

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        self.mails += 1
        if self.failure is not None and self.mails >= self.fail_from:
            if self.failure == DISCONNECT:
                server.transport.abort()
            return self.failure
        envelope.mail_from = address
        return "250 OK"


@pytest.fixture
def failing_relay() -> Iterator[tuple[MailFailingRelay, int]]:
    handler = MailFailingRelay({}, fail_from=1, failure=None)
    controller = Controller(handler, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield handler, controller.port
    controller.stop()


EXPECTED_REFUSAL = {  # the final failure → how the recipients it left without the email are reported
    "550 5.7.1 sender blocked now": (550, False),
    "421 4.3.2 shutting down": (421, True),
    DISCONNECT: (421, True),  # no reply: reported as RFC 5321's "closing the channel", transient
}


@pytest.mark.parametrize("separate", [True, False], ids=["separate-envelopes", "one-envelope"])
@pytest.mark.parametrize("failure", list(EXPECTED_REFUSAL), ids=["550", "421", "disconnect"])
def test_a_retry_that_fails_for_the_whole_message_keeps_who_already_got_it(
    failing_relay, tmp_path, capsys, failure, separate
):
    handler, port = failing_relay
    handler.refusals = {"b@example.com": iter([MAILBOX_BUSY])}
    handler.fail_from, handler.failure = (4 if separate else 2), failure  # the retry's connection fails
    pipeline = _pipeline(tmp_path, port, separate=separate, NOTIFY_MAX_ATTEMPTS="2")
    event = storage_cloud_event(name="reports/q3.csv")

    try:
        (outcome,) = pipeline.handle(event)
    except RetryLater:
        pytest.fail("a redelivery would send a second copy to a@ and c@, who have theirs")

    assert outcome.outcome == "partially-sent"
    assert handler.copies() == Counter({"a@example.com": 1, "c@example.com": 1})
    status, transient = EXPECTED_REFUSAL[failure]
    (line,) = _outcome_lines([json.loads(text) for text in capsys.readouterr().out.splitlines()])
    assert line["refused"] == [{"address": "b@example.com", "status": status, "transient": transient}]
    (letter,) = _letters(tmp_path)
    assert letter["refused_recipients"] == ["b@example.com"]

    assert pipeline.handle(event)[0].outcome == "duplicate"
    handler.failure = None
    (stored,) = pipeline.dead_letters.list()
    assert pipeline.replay(stored)[0].outcome == "sent"
    assert handler.copies() == Counter(EVERYONE)
    assert _letters(tmp_path) == []


@pytest.mark.parametrize("failure", ["550 5.7.1 sender blocked now", DISCONNECT], ids=["550", "disconnect"])
def test_a_later_envelope_whose_connection_fails_leaves_the_first_accepted(failing_relay, tmp_path, capsys, failure):
    handler, port = failing_relay
    handler.fail_from, handler.failure = 2, failure  # a@'s copy goes; b@'s and c@'s never do
    pipeline = _pipeline(tmp_path, port, separate=True, NOTIFY_MAX_ATTEMPTS="3")

    (outcome,) = pipeline.handle(storage_cloud_event(name="reports/q3.csv"))

    assert outcome.outcome == "partially-sent"
    assert handler.copies() == Counter({"a@example.com": 1})
    status, transient = EXPECTED_REFUSAL[failure]
    (line,) = _outcome_lines([json.loads(text) for text in capsys.readouterr().out.splitlines()])
    assert line["refused"] == [
        {"address": address, "status": status, "transient": transient} for address in ("b@example.com", "c@example.com")
    ]
    (letter,) = _letters(tmp_path)
    assert letter["refused_recipients"] == ["b@example.com", "c@example.com"]


class FlakyDeadLetters(LocalDeadLetters):
    """Letters whose ``put`` fails with a LedgerError ``failures`` times, then works; ``only_for``:
    just for that id (None: for every id)."""

    def __init__(self, directory: Path, *, failures: int, only_for: str | None = None) -> None:
        super().__init__(directory)
        self.failures, self.only_for, self.tries = failures, only_for, 0

    def put(self, notification_id, record):
        if self.only_for in (None, notification_id):
            self.tries += 1
            if self.tries <= self.failures:
                raise LedgerError("state bucket: 503 Service Unavailable")
        return super().put(notification_id, record)


def _partial_for_b_and_c(handler, port, tmp_path) -> tuple[Pipeline, Path]:
    """A send that reached a@ alone (550 for b@ and c@) and its letter; the relay then accepts b@."""
    refusals = {a: itertools.repeat(f"550 5.1.1 <{a}>: no such user") for a in ("b@example.com", "c@example.com")}
    handler.refusals = refusals
    pipeline = _pipeline(tmp_path, port, separate=True)
    pipeline.sleeps = []
    pipeline.sleep = pipeline.sleeps.append
    assert pipeline.handle(storage_cloud_event(name="reports/q3.csv"))[0].outcome == "partially-sent"
    (path,) = sorted((tmp_path / "dead").glob("*.json"))
    handler.refusals = {"c@example.com": refusals["c@example.com"]}
    return pipeline, path


def test_a_partial_sends_letter_is_stored_when_the_state_bucket_fails_once(relay, tmp_path, capsys):
    handler, port = relay
    handler.refusals = {"c@example.com": itertools.repeat(NO_SUCH_USER)}
    settings = settings_for(**_env(tmp_path, port, separate=True))
    letters = FlakyDeadLetters(tmp_path / "dead", failures=1)
    pipeline = Pipeline(settings, ledger=MemoryLedger(), dead_letters=letters)
    pipeline.sleep = (sleeps := []).append

    (outcome,) = pipeline.handle(storage_cloud_event(name="reports/q3.csv"))

    assert outcome.outcome == "partially-sent"
    (letter,) = _letters(tmp_path)
    assert letter["refused_recipients"] == ["c@example.com"]
    assert len(sleeps) == 1, "tried again after a pause, as the sent mark is"
    (line,) = _outcome_lines([json.loads(text) for text in capsys.readouterr().out.splitlines()])
    assert line["dead_letter"].endswith(f"{outcome.notification_id}.json")


def test_a_replay_whose_narrowed_letter_cannot_be_stored_says_who_got_it_and_who_did_not(relay, tmp_path, capsys):
    handler, port = relay
    pipeline, path = _partial_for_b_and_c(handler, port, tmp_path)
    pipeline.dead_letters = UnwritableDeadLetters(tmp_path / "dead")
    (stored,) = pipeline.dead_letters.list()
    capsys.readouterr()

    (replayed,) = pipeline.replay(stored)

    assert replayed.outcome == "partially-sent"
    assert handler.copies() == Counter({"a@example.com": 1, "b@example.com": 1})
    lines = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    (error,) = [line for line in lines if line["severity"] == "ERROR"]
    assert error["already_sent"] == ["b@example.com"]
    assert error["still_to_send"] == ["c@example.com"]
    assert "b@example.com" in error["message"] and "c@example.com" in error["message"]
    assert path.exists(), "the old letter is all that says c@ still needs it"


def test_a_renamed_letter_is_narrowed_in_place_when_the_new_one_cannot_be_stored(relay, tmp_path, capsys):
    handler, port = relay
    pipeline, path = _partial_for_b_and_c(handler, port, tmp_path)
    renamed = path.with_name("renamed-by-hand.json")
    path.rename(renamed)
    pipeline.dead_letters = FlakyDeadLetters(tmp_path / "dead", failures=99, only_for=path.stem)
    (stored,) = pipeline.dead_letters.list()

    (replayed,) = pipeline.replay(stored)

    assert replayed.outcome == "partially-sent"
    assert handler.copies() == Counter({"a@example.com": 1, "b@example.com": 1})
    assert not path.exists()
    (letter,) = _letters(tmp_path)
    assert letter["refused_recipients"] == ["c@example.com"], "narrowed: the next replay skips b@"

    handler.refusals = {}
    (stored,) = pipeline.dead_letters.list()
    assert pipeline.replay(stored)[0].outcome == "sent"
    assert handler.copies() == Counter(EVERYONE)
    assert _letters(tmp_path) == []


def test_a_bug_after_the_first_copy_went_leaves_the_others_dead_lettered_alone(relay, tmp_path, capsys, monkeypatch):
    handler, port = relay
    copies = itertools.count()
    real_as_mime = smtp.as_mime

    def as_mime_failing_after_the_first(message, envelope):
        if next(copies) >= 1:
            raise ValueError("a bug building the second copy")
        return real_as_mime(message, envelope)

    monkeypatch.setattr(smtp, "as_mime", as_mime_failing_after_the_first)
    pipeline = _pipeline(tmp_path, port, separate=True)

    (outcome,) = pipeline.handle(storage_cloud_event(name="reports/q3.csv"))

    assert outcome.outcome == "partially-sent", "dead-lettered for everyone, replay would mail a@ again"
    assert handler.copies() == Counter({"a@example.com": 1})
    (line,) = _outcome_lines([json.loads(text) for text in capsys.readouterr().out.splitlines()])
    assert [(r["address"], r["status"], r["transient"]) for r in line["refused"]] == [
        ("b@example.com", 554, False),
        ("c@example.com", 554, False),
    ]
    assert "ValueError: a bug building the second copy" in line["error"]


# Issue 14 (7a follow-up): the ledger, not the untrusted letter, says who is still owed the email, so
# a stale, copied or edited letter never mails someone who has it (and never drops someone who does not).


@pytest.fixture(params=["memory", "sqlite", "gcs"])
def ledger_kind(request) -> str:
    if request.param == "gcs":
        request.getfixturevalue("fake_gcs")
    return request.param


def _ledger(kind: str, folder: Path) -> Ledger:
    if kind == "memory":
        return MemoryLedger()
    if kind == "sqlite":
        return SqliteLedger(folder / "ledger.sqlite3")
    return GcsLedger(StateBucket("notifier-state", os.environ["STORAGE_EMULATOR_HOST"], retry_budget=0.0))


def _letter_named(pipeline: Pipeline, name: str) -> DeadLetter:
    """The one stored dead letter called ``name`` (its file name without .json)."""
    (letter,) = [item for item in pipeline.dead_letters.list() if item.notification_id == name]
    return letter


def _partial_for_b_and_c_in(kind, handler, port, tmp_path) -> tuple[Pipeline, Path]:
    """A send that reached a@ alone (550 for b@ and c@, b@'s once), stored in a ``kind`` ledger."""
    handler.refusals = {
        "b@example.com": iter(["550 5.1.1 <b@example.com>: no such user"]),
        "c@example.com": itertools.repeat(NO_SUCH_USER),
    }
    pipeline = _pipeline(tmp_path, port, separate=True)
    pipeline.ledger = _ledger(kind, tmp_path)
    pipeline.sleep = [].append  # the ledger's and letters' retries are not slept
    assert pipeline.handle(storage_cloud_event(name="reports/q3.csv"))[0].outcome == "partially-sent"
    (path,) = sorted((tmp_path / "dead").glob("*.json"))
    return pipeline, path


def _replay_everything(pipeline: Pipeline) -> None:
    for letter in list(pipeline.dead_letters.list()):
        pipeline.replay(letter)


def test_a_copy_of_the_letter_replayed_after_the_first_replay_mails_nobody_twice(relay, tmp_path, ledger_kind):
    handler, port = relay
    pipeline, path = _partial_for_b_and_c_in(ledger_kind, handler, port, tmp_path)
    letter = json.loads(path.read_text(encoding="utf-8"))
    path.with_name("backup-copy.json").write_text(json.dumps(letter), encoding="utf-8")  # saved aside
    original = _letter_named(pipeline, path.stem)

    assert pipeline.replay(original)[0].outcome == "partially-sent"  # b@ now, c@ still refused
    assert handler.copies() == Counter({"a@example.com": 1, "b@example.com": 1})
    copy = _letter_named(pipeline, "backup-copy")
    assert copy.record["refused_recipients"] == ["b@example.com", "c@example.com"]
    pipeline.replay(copy)

    assert handler.copies() == Counter({"a@example.com": 1, "b@example.com": 1}), "b@ has it: the ledger says so"
    handler.refusals = {}
    _replay_everything(pipeline)
    _replay_everything(pipeline)
    assert handler.copies() == Counter(EVERYONE)
    assert _letters(tmp_path) == []


def test_a_copy_without_its_refused_recipients_mails_only_who_the_ledger_says_is_owed(relay, tmp_path, ledger_kind):
    handler, port = relay
    pipeline, path = _partial_for_b_and_c_in(ledger_kind, handler, port, tmp_path)
    letter = json.loads(path.read_text(encoding="utf-8"))
    del letter["refused_recipients"]
    path.with_name("backup-copy.json").write_text(json.dumps(letter), encoding="utf-8")
    handler.refusals = {}

    copy = _letter_named(pipeline, "backup-copy")
    assert pipeline.replay(copy)[0].outcome == "sent"

    assert handler.copies() == Counter(EVERYONE), "a@ has it: the ledger says only b@ and c@ are owed"
    _replay_everything(pipeline)
    assert handler.copies() == Counter(EVERYONE)
    assert _letters(tmp_path) == []


def test_a_letter_narrowed_by_hand_does_not_drop_who_else_is_owed(relay, tmp_path, ledger_kind):
    handler, port = relay
    pipeline, path = _partial_for_b_and_c_in(ledger_kind, handler, port, tmp_path)
    letter = json.loads(path.read_text(encoding="utf-8"))
    path.with_name("only-b.json").write_text(json.dumps({**letter, "refused_recipients": ["b@example.com"]}))
    handler.refusals = {}

    only_b = _letter_named(pipeline, "only-b")
    assert pipeline.replay(only_b)[0].outcome == "sent"
    assert handler.copies() == Counter({"a@example.com": 1, "b@example.com": 1})
    (original,) = pipeline.dead_letters.list()
    assert pipeline.replay(original)[0].outcome == "sent", "c@ is still owed: the ledger says so"

    assert handler.copies() == Counter(EVERYONE)
    assert _letters(tmp_path) == []


class RemoveFailingDeadLetters(LocalDeadLetters):
    """Letters whose first ``remove`` fails (the state bucket is down for a moment)."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory)
        self.removals = 0

    def remove(self, notification_id: str) -> None:
        self.removals += 1
        if self.removals == 1:
            raise LedgerError("state bucket: 503 Service Unavailable")
        super().remove(notification_id)


def test_a_renamed_letter_left_behind_by_a_failed_remove_mails_nobody_twice(relay, tmp_path, ledger_kind):
    handler, port = relay
    pipeline, path = _partial_for_b_and_c_in(ledger_kind, handler, port, tmp_path)
    renamed = path.rename(path.with_name("renamed-by-hand.json"))
    pipeline.dead_letters = RemoveFailingDeadLetters(tmp_path / "dead")

    (stored,) = pipeline.dead_letters.list()
    with contextlib.suppress(LedgerError):
        pipeline.replay(stored)  # b@ now; c@'s letter stored under its id; removing the renamed one fails
    assert handler.copies() == Counter({"a@example.com": 1, "b@example.com": 1})
    assert renamed.exists()

    handler.refusals = {}
    wider = _letter_named(pipeline, renamed.stem)
    assert wider.record["refused_recipients"] == ["b@example.com", "c@example.com"]
    pipeline.replay(wider)
    assert handler.copies() == Counter(EVERYONE), "b@ has it: the ledger says so"
    _replay_everything(pipeline)
    assert handler.copies() == Counter(EVERYONE)
    assert _letters(tmp_path) == []


def test_a_letter_naming_only_who_has_it_now_is_a_duplicate_and_removed(relay, tmp_path, ledger_kind):
    handler, port = relay
    pipeline, path = _partial_for_b_and_c_in(ledger_kind, handler, port, tmp_path)
    letter = json.loads(path.read_text(encoding="utf-8"))
    path.with_name("only-b.json").write_text(json.dumps({**letter, "refused_recipients": ["b@example.com"]}))
    original = _letter_named(pipeline, path.stem)
    assert pipeline.replay(original)[0].outcome == "partially-sent"  # b@ now; c@ still refused
    sent_so_far = handler.copies()

    only_b = _letter_named(pipeline, "only-b")
    assert pipeline.replay(only_b)[0].outcome == "duplicate"

    assert handler.copies() == sent_so_far == Counter({"a@example.com": 1, "b@example.com": 1})
    assert not path.with_name("only-b.json").exists()
    handler.refusals = {}
    _replay_everything(pipeline)
    assert handler.copies() == Counter(EVERYONE), "c@ is still owed: the duplicate left the ledger as it was"


def test_a_transient_failure_replaying_a_narrowed_letter_keeps_its_record_dead(relay, tmp_path):
    # The record as the code before owed lists left it (dead, no list): the letter alone narrows the
    # replay. A 4xx during that replay must not delete the record, or a redelivery of the event would
    # mail a@ (who has it) again.
    handler, port = relay
    handler.refusals = {"b@example.com": itertools.repeat(NO_SUCH_USER)}
    pipeline = _pipeline(tmp_path, port, separate=True)
    pipeline.ledger = SqliteLedger(tmp_path / "ledger.sqlite3")
    pipeline.sleep = [].append
    event = storage_cloud_event(name="reports/q3.csv", generation="42")
    assert [o.outcome for o in pipeline.handle(event)] == ["partially-sent"]
    with sqlite3.connect(tmp_path / "ledger.sqlite3") as db:
        db.execute("UPDATE ledger SET owed = NULL")
    handler.refusals = {"b@example.com": itertools.repeat("451 4.3.0 try again later")}

    (letter,) = pipeline.dead_letters.list()
    assert [o.outcome for o in pipeline.replay(letter)] == ["retrying"]
    assert [o.outcome for o in pipeline.handle(event)] == ["duplicate"]

    assert handler.copies() == Counter({"a@example.com": 1, "c@example.com": 1})
