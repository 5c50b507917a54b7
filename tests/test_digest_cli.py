"""python -m notifier flush | pending, and what check-config, route and replay say and do about
digests: run as a user would, against the outbox (or SendGrid on a local server) with the SQLite
ledger and the digest store beside it."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from notifier.digest import FLUSH_GRACE_SECONDS
from notifier.pipeline import Pipeline
from notifier.tools.cli import main
from tests.conftest import SECRET_KEY, read_eml, storage_cloud_event

RULES = """
[[rules]]
name = "reports"
events = ["finalize"]
include = ["reports/**"]
to = ["ops@example.com", "lead@example.com"]
digest = "10m"
group_by = ["bucket", "folder"]

[[rules]]
name = "uploads"
events = ["finalize"]
include = ["uploads/**"]
to = ["ops@example.com"]
max_emails = "20/h"
group_by = ["bucket"]
"""
TEN_MINUTES = 600


def _window(minutes_ago: int, length: int = TEN_MINUTES) -> datetime:
    """The start of the window that began ``minutes_ago`` (or just before), UTC-aligned."""
    now = int(datetime.now(UTC).timestamp()) - minutes_ago * 60
    return datetime.fromtimestamp(now // length * length, UTC)


def _stamp(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


@pytest.fixture
def deployment(clean_notifier_env, tmp_path, monkeypatch):
    """The environment a local deployment runs with: rules with digests, the outbox, the SQLite
    ledger (the digest store lives in its file) and a dead-letter folder."""
    (tmp_path / "notify.toml").write_text(RULES, encoding="utf-8")
    env = {
        "NOTIFY_CONFIG": str(tmp_path / "notify.toml"), "NOTIFY_BACKEND": "outbox",
        "NOTIFY_OUTBOX_DIR": str(tmp_path / "out"), "NOTIFY_LEDGER_FILE": str(tmp_path / "ledger.sqlite3"),
        "NOTIFY_DEAD_LETTER_DIR": str(tmp_path / "dead"), "NOTIFY_FROM": "Alerts <alerts@example.com>",
        "NOTIFY_TO": "ops@example.com",
    }  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return tmp_path


def _post(names: list[str], when: datetime, *, bucket: str = "acme") -> list[str]:
    """Deliver a finalize event per name, as the function does; the outcome of each."""
    pipeline = Pipeline.from_environment()
    outcomes = []
    for i, name in enumerate(names):
        event = storage_cloud_event(
            bucket=bucket, name=name, event_id=f"evt-{name}", generation=str(1000 + i), updated=_stamp(when)
        )
        outcomes += [o.outcome for o in pipeline.handle(event)]
    return outcomes


def _emails(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "out").glob("*.eml"))


def _run(capsys, *argv: str) -> tuple[int, str]:
    """Exit status and the command's own lines (the JSON log lines left out)."""
    code = main(list(argv))
    out = capsys.readouterr().out
    return code, "\n".join(line for line in out.splitlines() if not line.startswith('{"'))


# --- flush ------------------------------------------------------------------------------------


def test_flush_sends_the_due_digests_one_line_each_and_all_sends_the_rest(deployment, capsys):
    old, current = _window(120), _window(0)
    assert _post(["reports/a.csv", "reports/b.csv", "reports/c.csv"], old) == ["batched"] * 3
    assert _post(["reports/2026/d.csv"], current) == ["batched"]

    code, out = _run(capsys, "flush")

    assert code == 0, out
    label = f"{old:%H:%M}–{old + timedelta(minutes=10):%H:%M} UTC"
    (line,) = [line for line in out.splitlines() if line.startswith("sent:")]
    assert line.startswith(f"sent: rule reports, bucket acme, folder reports/ ({label}): 3 event(s), message id ")
    assert out.splitlines()[-1] == "1 digest(s): 1 sent."
    digests = [read_eml(path) for path in _emails(deployment)]  # the rule sends each recipient their own copy
    assert sorted(eml["To"] for eml in digests) == ["lead@example.com", "ops@example.com"]
    (digest_id,) = {eml["X-Notification-Id"] for eml in digests}  # one digest, two envelopes
    assert digest_id in line

    code, out = _run(capsys, "flush")  # the current window is not due: nothing to do
    assert (code, out) == (0, "Nothing is due (1 held event(s) wait for their window; --all sends them now).")

    code, out = _run(capsys, "flush", "--all")
    assert code == 0, out
    assert "sent: rule reports, bucket acme, folder reports/2026/ (" in out
    assert ": 1 event(s), message id " in out
    assert len(_emails(deployment)) == 4
    assert _run(capsys, "flush", "--all") == (0, "Nothing is held.")


def test_flush_exits_1_when_a_digest_is_dead_lettered_and_replay_sends_it_once(deployment, capsys, monkeypatch,
                                                                                 httpserver):  # fmt: skip
    old = _window(120)
    assert _post(["reports/a.csv", "reports/b.csv"], old) == ["batched"] * 2
    monkeypatch.setenv("NOTIFY_BACKEND", "sendgrid")
    monkeypatch.setenv("SENDGRID_API_KEY", SECRET_KEY)
    monkeypatch.setenv("SENDGRID_API_HOST", httpserver.url_for("").rstrip("/"))
    httpserver.expect_oneshot_request("/v3/mail/send").respond_with_json({"errors": [{"message": "bad"}]}, 400)

    code, out = _run(capsys, "flush")

    assert code == 1, out
    assert out.startswith("dead-lettered: rule reports, bucket acme, folder reports/ (")
    assert out.splitlines()[-1] == "1 digest(s): 1 dead-lettered."
    (letter,) = (deployment / "dead").glob("*.json")
    code, out = _run(capsys, "flush", "--all")  # parked: only replay sends it
    assert code == 0, out
    assert out.startswith("parked: rule reports")

    code, out = _run(capsys, "replay", "--dry-run")
    assert code == 0, out
    assert (
        f"would send the digest {letter.stem} again: rule reports, bucket acme, folder reports/: 2 held event(s)" in out
    )

    httpserver.expect_oneshot_request("/v3/mail/send").respond_with_data("", 202, headers={"X-Message-Id": "m-1"})
    code, out = _run(capsys, "replay")

    assert code == 0, out
    assert re.search(rf"^sent\s+{letter.stem}: rule reports, bucket acme, folder reports/ \(.*\): 2 event\(s\),"
                     r" message id m-1$", out, re.MULTILINE), out  # fmt: skip
    assert "1 of 1 dead letter(s) delivered or already sent." in out
    assert not list((deployment / "dead").glob("*.json"))
    assert len(httpserver.log) == 2
    assert _run(capsys, "replay") == (0, f"No dead letters to replay in {deployment / 'dead'}.")
    assert _run(capsys, "flush", "--all") == (0, "Nothing is held.")


def test_replay_of_a_digest_letter_whose_rule_lost_its_digest_is_refused_and_kept(deployment, capsys, monkeypatch):
    from notifier.ledger.local import LocalDeadLetters

    LocalDeadLetters(deployment / "dead").put("d" * 32, {
        "digest": {"rule": "gone", "group": "ab" * 12, "group_of": "rule gone", "windows": [[0, 1]], "events": 2},
        "rule": "gone", "error": "HTTP 400", "status": 400, "subject": "2 new objects",
    })  # fmt: skip
    LocalDeadLetters(deployment / "dead").put("e" * 32, {"digest": {"group": "../../etc"}, "rule": "reports"})

    code, out = _run(capsys, "replay")

    assert code == 1, out
    assert f"{'e' * 32}.json: digest: expected the group's key (24 hex digits)" in out
    assert re.search(rf"^refused\s+{'d' * 32}: rule gone: no such rule", out, re.MULTILINE), out
    assert len(list((deployment / "dead").glob("*.json"))) == 2
    pipeline = Pipeline.from_environment()  # the pipeline's own replay says the same
    outcomes = {letter.notification_id: pipeline.replay(letter) for letter in pipeline.dead_letters.list()}
    assert {key: [o.outcome for o in found] for key, found in outcomes.items()} == {
        "d" * 32: ["refused"], "e" * 32: ["invalid"]
    }  # fmt: skip
    assert len(list((deployment / "dead").glob("*.json"))) == 2


# --- pending ----------------------------------------------------------------------------------


def test_pending_lists_each_group_its_windows_and_when_it_is_due(deployment, capsys):
    old, current = _window(120), _window(0)
    _post(["reports/a.csv", "reports/b.csv"], old)
    _post(["reports/c.csv"], old + timedelta(minutes=10))
    _post(["reports/2026/d.csv"], current)

    code, out = _run(capsys, "pending")

    assert code == 0, out
    lines = out.splitlines()
    first = lines.index("rule reports, bucket acme, folder reports/: 3 event(s)")
    assert lines[first + 1] == f"  {old:%H:%M}–{old + timedelta(minutes=10):%H:%M} UTC: 2 event(s)"
    assert (
        lines[first + 2] == f"  {old + timedelta(minutes=10):%H:%M}–{old + timedelta(minutes=20):%H:%M} UTC: 1 event(s)"
    )
    assert lines[first + 3] == "  → one email, due now"
    due = current + timedelta(seconds=TEN_MINUTES + FLUSH_GRACE_SECONDS)
    assert f"  → one email, due {due:%Y-%m-%d %H:%M:%S} UTC (later if more events come)" in lines
    assert lines[-1] == "2 group(s), 4 held event(s)."

    code, text = _run(capsys, "pending", "--json")
    listing = json.loads(text)
    assert code == 0
    assert (listing["events"], listing["truncated"], listing["unreadable"]) == (4, False, 0)
    by_folder = {dict(g["values"])["folder"]: g for g in listing["groups"]}
    assert [w["events"] for w in by_folder["reports/"]["runs"][0]["windows"]] == [2, 1]
    assert by_folder["reports/"]["runs"][0]["due_now"] is True
    assert by_folder["reports/2026/"]["runs"][0]["due"] == due.isoformat()


def test_pending_says_nothing_is_held(deployment, capsys):
    assert _run(capsys, "pending") == (0, f"Nothing is held in {deployment / 'ledger.sqlite3'}.")
    assert json.loads(_run(capsys, "pending", "--json")[1])["groups"] == []


# --- check-config and route -------------------------------------------------------------------


def test_check_config_says_each_rules_digest_or_cap(deployment, capsys):
    code, out = _run(capsys, "check-config")
    assert code == 0, out
    assert "  reports: finalize → 2 recipient(s), digest 10m (max wait 1h, by bucket, folder)" in out.splitlines()
    assert "  uploads: finalize → 1 recipient(s), max 20 emails per 1 hour (by bucket)" in out.splitlines()


def test_route_says_an_event_would_be_held_for_the_digest_of_its_window(deployment, capsys):
    code, out = _run(capsys, "route", "finalize", "gs://acme/reports/q3.csv")
    assert code == 0, out
    assert re.search(r"^    held for the digest of \d\d:\d0–\d\d:\d0 UTC \(rule reports, bucket acme, folder reports/\)",
                     out, re.MULTILINE), out  # fmt: skip
    assert out.splitlines()[-1] == "0 email(s) would be sent now; 1 held for a digest."

    code, out = _run(capsys, "route", "finalize", "gs://acme/uploads/x.bin")
    assert code == 0, out
    assert re.search(r"^    sent alone while under the cap \(the first 20 of \d\d:00–\d\d:00 UTC\), then held for that"
                     r" window's digest \(rule uploads, bucket acme\)", out, re.MULTILINE), out  # fmt: skip
    assert out.splitlines()[-1] == "1 email(s) would be sent."


@pytest.mark.parametrize("minutes", [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3, 4, 5], [0, 2]])
def test_pendings_due_time_is_the_first_moment_the_flush_sends_the_run(minutes):
    from notifier.batching import Batching
    from notifier.digest import Group, HeldEntry, due_runs
    from notifier.tools.digest_commands import due_at

    batching, start = {"r": Batching.digest(60.0, 180.0)}, 1_800_000_000 // 60 * 60
    entries = [HeldEntry(Group("0" * 24, "r"), start + m * 60, f"id-{m}", "finalize", "b", f"o{m}") for m in minutes]
    for run in due_runs(entries, batching, 0, everything=True):
        due = due_at(run, batching["r"])
        sent = [r.windows[0] for r in due_runs(entries, batching, due)]
        assert run.windows[0] in sent
        assert run.windows[0] not in [r.windows[0] for r in due_runs(entries, batching, due - 1)]


def test_pending_says_when_the_listing_was_cut_or_held_objects_it_did_not_write(deployment, capsys, monkeypatch):
    from notifier.ledger.digests import HeldListing, MemoryDigestStore

    class CutListing(MemoryDigestStore):  # a state bucket with more entries than one listing reads, and planted ones
        def pending(self) -> HeldListing:
            return HeldListing(super().pending().entries, truncated=True, unreadable=3)

    store = CutListing()
    monkeypatch.setattr("notifier.holding.create_digest_store", lambda ledger: store)
    _post(["reports/a.csv"], _window(0))

    code, out = _run(capsys, "pending")

    assert code == 0, out
    assert "The listing stopped early: more events are held than one listing reads (the flush gets them)." in out
    assert "3 object(s) among the held entries are not entries the notifier wrote (ignored" in out
    listing = json.loads(_run(capsys, "pending", "--json")[1])
    assert (listing["truncated"], listing["unreadable"], listing["events"]) == (True, 3, 1)


def test_events_held_for_a_rule_that_lost_its_digest_are_listed_and_flush_exits_1(deployment, capsys):
    _post(["reports/a.csv"], _window(120))
    toml = deployment / "notify.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace('digest = "10m"\ngroup_by = ["bucket", "folder"]\n', ""))

    code, out = _run(capsys, "pending")
    assert code == 0, out
    assert "  → never sent: rule reports has no digest or max_emails today; restore it (or delete these entries)" in out
    assert json.loads(_run(capsys, "pending", "--json")[1])["groups"][0]["orphaned"] is True

    code, out = _run(capsys, "flush", "--all")
    assert code == 1, out
    assert out.startswith("refused: rule reports, bucket acme, folder reports/ (")
    assert not _emails(deployment)


def test_pending_and_flush_against_the_state_bucket(deployment, capsys, monkeypatch, fake_gcs):
    from tests.fake_gcs_server import STATE_BUCKET

    monkeypatch.delenv("NOTIFY_LEDGER_FILE")
    monkeypatch.setenv("NOTIFY_STATE_BUCKET", STATE_BUCKET)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.url)
    old = _window(120)
    assert _post(["reports/a.csv", "reports/b.csv"], old) == ["batched", "batched"]
    assert _post(["reports/a.csv"], old) == ["duplicate"]  # redelivered

    code, out = _run(capsys, "pending")
    assert code == 0, out
    assert "rule reports, bucket acme, folder reports/: 2 event(s)" in out.splitlines()
    assert out.splitlines()[-1] == "1 group(s), 2 held event(s)."

    code, out = _run(capsys, "flush")
    assert code == 0, out
    assert out.startswith("sent: rule reports, bucket acme, folder reports/ (")
    assert ": 2 event(s), message id " in out
    assert len(_emails(deployment)) == 2  # one digest, each recipient their own copy
    assert _run(capsys, "pending") == (0, f"Nothing is held in gs://{STATE_BUCKET}.")
