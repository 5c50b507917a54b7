"""Issue 12, items 7 and 10: dead letters are untrusted input to `python -m notifier replay`.

Whoever can write to the state bucket (or the dead-letter folder) can plant or edit a letter. The
replay rebuilds every email from the stored *event* and today's rules; the stored message decides
nothing. These tests plant letters where the real CLI reads them and check the .eml files it sends.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from notifier.events import decode
from notifier.ledger import MAX_DEAD_LETTER_BYTES, DeadLetter, UnreadableLetter
from notifier.ledger.bucket import StateBucket
from notifier.ledger.gcs import GcsDeadLetters
from notifier.ledger.local import LocalDeadLetters
from notifier.mail.base import Backend, DeliveryError
from notifier.pipeline import Pipeline
from notifier.tools.cli import main
from tests.conftest import read_eml, storage_cloud_event

RULES = """
[defaults]
from = "Storage Alerts <alerts@example.com>"
to = ["ops@example.com"]

[[rules]]
name = "reports"
include = ["reports/**"]
to = ["finance@example.com"]
cc = ["audit@example.com"]
separate_envelopes = false
subject = "Report: {{ object.name }}"

[[rules]]
name = "raw"
include = ["raw/**"]
to = ["data@example.com"]
"""
EVIL = "evil@attacker.example"
# Not the suite's guarded SECRET_KEY: this one is planted in a dead letter file on purpose.
REPLAY_KEY = "SG.replay-test-key-planted-in-a-dead-letter.0123456789"


class RefusingBackend(Backend):
    """SendGrid saying 401 to everything: every notification becomes a genuine dead letter."""

    name = "refusing"

    def send(self, message, *, deadline):
        raise DeliveryError("the SendGrid API key is invalid or revoked (HTTP 401)", transient=False, status=401)


@pytest.fixture
def env(tmp_path, monkeypatch):
    """The environment `replay` runs in: outbox backend, SQLite ledger beside it, a rules file."""
    rules = tmp_path / "notify.toml"
    rules.write_text(RULES, encoding="utf-8")
    values = {
        "NOTIFY_BACKEND": "outbox",
        "NOTIFY_OUTBOX_DIR": str(tmp_path / "out"),
        "NOTIFY_DEAD_LETTER_DIR": str(tmp_path / "dead"),
        "NOTIFY_CONFIG": str(rules),
        "SENDGRID_API_KEY": REPLAY_KEY,
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("NOTIFY_STATE_BUCKET", raising=False)
    return tmp_path


def _dead_letter(name: str = "reports/q3.csv", generation: str = "42") -> Path:
    """Dead-letter one event through the real pipeline (state from the environment); its file."""
    pipeline = Pipeline.from_environment()
    pipeline.backend = RefusingBackend()
    (outcome,) = pipeline.handle(storage_cloud_event(name=name, generation=generation))
    assert outcome.outcome == "dead-lettered"
    return pipeline.settings.dead_letter_dir / f"{outcome.notification_id}.json"


def _plant(folder: Path, stem: str, record: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.json"
    path.write_text(json.dumps(record), encoding="utf-8")
    return path


def _edit(path: Path, change) -> None:
    record = json.loads(path.read_text(encoding="utf-8"))
    change(record)
    path.write_text(json.dumps(record), encoding="utf-8")


def _hijack(record: dict) -> None:
    """What an attacker with write access to the bucket does to a letter."""
    message = record["message"]
    message["envelopes"] = [{"to": [{"email": EVIL, "name": ""}], "cc": [], "bcc": [{"email": EVIL, "name": ""}]}]
    message["sender"] = {"email": "ceo@attacker.example", "name": "The CEO"}
    message["subject"] = "Urgent: reset your password"
    message["text"] = message["html"] = "Click http://attacker.example/login"
    message["headers"] = {"Bcc": EVIL, "X-Phish": "1"}
    message["reply_to"] = {"email": EVIL, "name": ""}


def _emails(env: Path) -> list[Path]:
    return sorted((env / "out").glob("*.eml"))


def test_a_planted_dead_letter_reaches_only_the_current_rules_recipients_once(env, capsys):
    genuine = _dead_letter()
    _edit(genuine, _hijack)
    renamed = genuine.with_name("0" * 32 + ".json")  # the same letter again, under another name
    shutil.copy(genuine, renamed)

    code = main(["replay"])

    out = capsys.readouterr().out
    (eml,) = _emails(env)
    email = read_eml(eml)
    assert (email["To"], email["Cc"], email["Bcc"]) == ("finance@example.com", "audit@example.com", None)
    assert email["From"] == "Storage Alerts <alerts@example.com>"
    assert email["Subject"] == "Report: reports/q3.csv"
    assert email["Reply-To"] is None and email["X-Phish"] is None
    assert "attacker" not in eml.read_text(encoding="utf-8")
    assert code == 0, out
    outcomes = re.findall(r"^(sent|duplicate)\s+(\S+):", out, re.MULTILINE)
    assert sorted(outcomes) == [("duplicate", genuine.stem), ("sent", "0" * 32)], out  # the copy came first
    assert f"{'0' * 32} is replayed as {genuine.stem}" in out
    assert not genuine.exists() and not renamed.exists()

    assert main(["replay"]) == 0  # nothing left, and still one email
    assert len(_emails(env)) == 1


def test_a_renamed_copy_of_a_replayed_letter_is_a_duplicate_not_a_second_email(env, capsys):
    genuine = _dead_letter()
    kept = genuine.read_bytes()
    assert main(["replay"]) == 0
    (genuine.parent / "renamed.json").write_bytes(kept)

    assert main(["replay"]) == 0

    assert re.search(r"^duplicate\s+renamed", capsys.readouterr().out, re.MULTILINE)
    assert len(_emails(env)) == 1


def test_dry_run_shows_who_would_get_what_from_todays_rules(env, capsys):
    genuine = _dead_letter()

    def hostile_error(record):
        _hijack(record)
        record["error"] = f"\x1b[2J{REPLAY_KEY} " + "x" * 5000

    _edit(genuine, hostile_error)

    code = main(["replay", "--dry-run"])

    out = capsys.readouterr().out
    assert code == 0, out
    assert f"would replay {genuine.stem}" in out
    assert "finalize gs://acme/reports/q3.csv" in out
    assert "rule reports" in out
    assert "subject: Report: reports/q3.csv" in out
    assert "to: finance@example.com" in out
    assert "cc: audit@example.com" in out
    assert "attacker" not in out and "password" not in out
    assert REPLAY_KEY not in out and "\x1b" not in out
    error_line = next(line for line in out.splitlines() if "earlier error" in line)
    assert "[redacted]" in error_line and len(error_line) < 400
    assert _emails(env) == []


@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]])
def test_a_malformed_letter_is_skipped_by_name_and_the_rest_go_through(env, capsys, dry_run):
    genuine = _dead_letter()
    event = json.loads(genuine.read_text(encoding="utf-8"))["event"]
    folder = genuine.parent
    (folder / "broken.json").write_text("{not json", encoding="utf-8")
    _plant(folder, "array", [1, 2])
    _plant(folder, "no-event", {"rule": "reports", "created": "2026-01-01T00:00:00+00:00"})
    _plant(folder, "no-rule", {"event": event})
    _plant(folder, "bad-generation", {"rule": "reports", "event": {**event, "generation": "forty-two"}})
    _plant(folder, "bad-bucket", {"rule": "reports", "event": {**event, "bucket": 7}})
    _plant(folder, "surrogate", {"rule": "reports", "event": {**event, "name": "reports/\ud800.csv"}})
    _plant(folder, "long-name", {"rule": "reports", "event": {**event, "name": "reports/" + "x" * 100_000}})
    _plant(folder, "bad-created", {"rule": "reports", "event": event, "created": 5})
    with (folder / "huge.json").open("wb") as handle:
        handle.truncate(MAX_DEAD_LETTER_BYTES + 1)  # sparse: costs no disk

    code = main(["replay", *dry_run])

    captured = capsys.readouterr()
    assert "Traceback" not in captured.err + captured.out
    skipped = {Path(m[0]).stem: m[1] for m in re.findall(r"^skipped (\S+): (.*)$", captured.out, re.MULTILINE)}
    assert set(skipped) == {
        "broken", "array", "no-event", "no-rule", "bad-generation", "bad-bucket", "bad-created", "huge", "long-name", "surrogate",
    }, captured.out  # fmt: skip
    assert "JSON" in skipped["broken"]
    assert "event" in skipped["no-event"]
    assert "rule" in skipped["no-rule"]
    assert "generation" in skipped["bad-generation"]
    assert "bucket" in skipped["bad-bucket"]
    assert "lone surrogate" in skipped["surrogate"]
    assert "event: data.name: 100,008 bytes of UTF-8, over the limit 1,024" in skipped["long-name"]
    assert "created" in skipped["bad-created"]
    assert "MiB" in skipped["huge"]
    assert code == 1
    assert len(_emails(env)) == (0 if dry_run else 1)
    assert (folder / "broken.json").exists(), "a skipped letter is kept for a person to look at"
    (folder / "huge.json").unlink()  # the suite's key guard reads every file left behind


def test_a_letter_whose_rule_is_gone_is_refused_unless_told_how(env, capsys):
    genuine = _dead_letter(name="raw/dump.bin")
    _edit(genuine, lambda record: (record.update(rule="retired"), _hijack(record)))

    assert main(["replay"]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^refused\s+" + genuine.stem + r": rule 'retired' no longer exists", out, re.MULTILINE), out
    assert "--rule NAME" in out and "--force" in out
    assert _emails(env) == [] and genuine.exists()

    assert main(["replay", "--rule", "nope"]) == 1
    assert "error: --rule: no rule named 'nope'; the rules are reports, raw" in capsys.readouterr().err

    assert main(["replay", "--rule", "reports"]) == 1  # a rule that would never have sent it
    assert "--rule: rule 'reports' does not match it either" in capsys.readouterr().out
    assert _emails(env) == []

    assert main(["replay", "--rule", "raw"]) == 0
    (eml,) = _emails(env)
    assert read_eml(eml)["To"] == "data@example.com"
    assert "attacker" not in eml.read_text(encoding="utf-8")
    assert not genuine.exists()


def test_rule_and_force_only_decide_for_letters_their_own_rule_no_longer_sends(env, capsys):
    _dead_letter(name="raw/dump.bin")  # rule "raw" still exists and matches

    assert main(["replay", "--rule", "reports"]) == 0

    (eml,) = _emails(env)
    assert read_eml(eml)["To"] == "data@example.com"


def test_pipeline_replay_logs_one_line_for_a_letter_it_will_not_send(env, capsys):
    pipeline = Pipeline.from_environment()
    event = decode(storage_cloud_event(name="reports/q3.csv", generation="3")).to_dict()
    gone = DeadLetter("gone", "", {"rule": "retired", "event": event}, "dead/gone.json")
    broken = DeadLetter("broken", "", {"rule": "reports", "event": {**event, "size": -1}}, "dead/broken.json")

    outcomes = [o.outcome for letter in (gone, broken) for o in pipeline.replay(letter)]

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert outcomes == ["refused", "invalid"]
    assert [line["outcome"] for line in lines] == ["refused", "invalid"]
    assert "--rule NAME" in lines[0]["message"] and "dead/gone.json" in lines[0]["message"]
    assert "event: data.size: expected a non-negative integer, got -1" in lines[1]["message"]
    assert _emails(env) == []


def test_force_routes_the_event_through_every_rule_that_matches_today(env, capsys):
    genuine = _dead_letter()
    _edit(genuine, lambda record: (record.update(rule="retired"), _hijack(record)))

    assert main(["replay", "--force"]) == 0

    (eml,) = _emails(env)
    email = read_eml(eml)
    assert (email["To"], email["Cc"]) == ("finance@example.com", "audit@example.com")
    assert "attacker" not in eml.read_text(encoding="utf-8")


def test_a_rule_that_no_longer_matches_the_object_is_refused(env, capsys):
    genuine = _dead_letter(name="raw/dump.bin")
    (env / "notify.toml").write_text(RULES.replace('include = ["raw/**"]', 'include = ["raw/**/*.csv"]'))

    assert main(["replay"]) == 1
    assert "rule 'raw' no longer matches finalize gs://acme/raw/dump.bin" in capsys.readouterr().out
    assert _emails(env) == [] and genuine.exists()


def test_a_letter_about_an_object_ignored_today_is_refused_even_with_force(env, capsys):
    genuine = _dead_letter()
    _edit(genuine, lambda record: record["event"].update(name="reports/x.part"))
    (env / "notify.toml").write_text('ignore = ["**/*.part"]\n' + RULES)

    assert main(["replay", "--force"]) == 1
    assert "ignore pattern" in capsys.readouterr().out
    assert _emails(env) == []


@pytest.mark.parametrize("since", ["99999999999d", "9" * 5000 + "h", "0001-01-01T00:00:00+01:00", "²d"])
def test_replay_since_out_of_range_is_a_clear_error(env, capsys, since):
    assert main(["replay", "--since", since]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --since:"), err
    assert "Traceback" not in err


# --- the state bucket: the same robustness in GcsDeadLetters.list -------------------------------


def _gcs_dead_letters() -> GcsDeadLetters:
    return GcsDeadLetters(StateBucket("notifier-state", os.environ["STORAGE_EMULATOR_HOST"]))


def test_gcs_dead_letters_list_yields_unreadable_objects_instead_of_raising(fake_gcs):
    fake_gcs.put("notifier-state", "deadletter/good.json", json.dumps({"created": "2026", "rule": "r"}).encode())
    fake_gcs.put("notifier-state", "deadletter/bad.json", b"\xff{")
    fake_gcs.put("notifier-state", "deadletter/list.json", b"[]")
    fake_gcs.put("notifier-state", "deadletter/big.json", b"{" + b" " * 200 + b"}")
    fake_gcs.put("notifier-state", "deadletter/", b"")  # a folder placeholder is not a letter
    dead_letters = _gcs_dead_letters()
    dead_letters.max_bytes = 100

    found = {item.notification_id: item for item in dead_letters.list()}

    assert set(found) == {"good", "bad", "list", "big"}
    assert isinstance(found["good"], DeadLetter) and found["good"].record["rule"] == "r"
    assert found["good"].source == "gs://notifier-state/deadletter/good.json"
    for name, why in (("bad", "JSON"), ("list", "JSON object"), ("big", "bytes")):
        assert isinstance(found[name], UnreadableLetter), name
        assert why in found[name].reason, found[name].reason
        assert found[name].source == f"gs://notifier-state/deadletter/{name}.json"


def test_a_planted_letter_in_the_state_bucket_reaches_only_the_current_recipients(env, fake_gcs, monkeypatch):
    monkeypatch.setenv("NOTIFY_STATE_BUCKET", "notifier-state")
    genuine = decode(storage_cloud_event(name="reports/q3.csv", generation="7"))
    record = {"rule": "reports", "event": genuine.to_dict(), "error": "HTTP 401", "created": "2026-01-01"}
    record["message"] = {"sender": {"email": EVIL, "name": ""}, "subject": "hi", "envelopes": []}
    fake_gcs.put("notifier-state", "deadletter/planted-1.json", json.dumps(record).encode())
    fake_gcs.put("notifier-state", "deadletter/planted-2.json", json.dumps(record).encode())
    fake_gcs.put("notifier-state", "deadletter/garbage.json", b"{")

    assert main(["replay"]) == 1  # the garbage one was skipped

    (eml,) = _emails(env)
    assert (read_eml(eml)["To"], read_eml(eml)["From"]) == (
        "finance@example.com",
        "Storage Alerts <alerts@example.com>",
    )
    assert fake_gcs.names("notifier-state", prefix="deadletter/") == ["deadletter/garbage.json"]


def test_local_dead_letters_list_bounds_and_names_what_it_cannot_read(tmp_path):
    folder = tmp_path / "dead"
    _plant(folder, "ok", {"rule": "r"})
    (folder / "dir.json").mkdir()
    (folder / "big.json").write_bytes(b"{" + b" " * 200 + b"}")
    dead_letters = LocalDeadLetters(folder)
    dead_letters.max_bytes = 100

    found = {item.notification_id: item for item in dead_letters.list()}

    assert isinstance(found["ok"], DeadLetter) and found["ok"].source == str(folder / "ok.json")
    assert isinstance(found["dir"], UnreadableLetter) and "not a regular file" in found["dir"].reason
    assert isinstance(found["big"], UnreadableLetter) and "bytes" in found["big"].reason


def test_a_gzip_bomb_among_the_dead_letters_is_skipped_unread(fake_gcs):
    """Cloud Storage decompresses an object stored with Content-Encoding gzip on download: 400 KB in
    the bucket once became a 400 MB letter in memory."""
    bomb = gzip.compress(b'{"junk": "' + b"x" * 50_000_000 + b'"}')
    fake_gcs.put("notifier-state", "deadletter/bomb.json", bomb, content_encoding="gzip")

    (letter,) = list(_gcs_dead_letters().list())

    assert isinstance(letter, UnreadableLetter)
    assert "Content-Encoding 'gzip'" in letter.reason
    assert [r for r in fake_gcs.requests if r.query.get("alt") == "media"] == [], "never downloaded"
