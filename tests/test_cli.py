"""python -m notifier: emit, preview and demo, run as a user would."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from notifier.tools.cli import main
from tests.conftest import read_eml

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def server(function_server_factory):
    return function_server_factory()


@pytest.mark.parametrize("mode", [["--mode", "binary"], ["--mode", "structured"], ["--gen1"]])
def test_emit_posts_an_event_the_function_turns_into_an_email(server, capsys, mode):
    before = server.emails()
    name = f"emitted/{mode[-1]} file #1.csv"

    code = main(
        [
            "emit",
            "metadata",
            f"gs://acme/{name}",
            "--url",
            server.url,
            "--size",
            "4096",
            "--content-type",
            "text/csv",
            "--meta",
            "team=finance",
            *mode,
        ]
    )

    assert code == 0
    assert "HTTP 200" in capsys.readouterr().out
    (new,) = [p for p in server.emails() if p not in before]
    text = read_eml(new).get_body(("plain",)).get_content()
    assert name in text
    assert "4.0 KiB (4,096 bytes)" in text
    assert "team = finance" in text


def test_emit_to_nothing_says_what_to_do(capsys):
    code = main(["emit", "finalize", "gs://b/o", "--url", "http://127.0.0.1:9", "--timeout", "2"])
    assert code == 1
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err


@pytest.mark.parametrize("uri", ["b/o", "gs://b", "gs:///o", "gs://b/"])
def test_bad_uri_is_a_clear_error(capsys, uri):
    assert main(["emit", "finalize", uri]) == 1
    assert "expected gs://BUCKET/OBJECT" in capsys.readouterr().err


def test_preview_writes_text_html_and_eml_without_sending(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NOTIFY_TO", "ops@example.com")
    monkeypatch.delenv("SENDGRID_API_KEY", raising=False)

    code = main(["preview", "delete", "gs://acme/old/<b>report</b>.csv", "--out", str(tmp_path)])

    assert code == 0
    files = {p.suffix: p for p in tmp_path.iterdir()}
    assert set(files) == {".txt", ".html", ".eml"}
    assert "<b>report</b>.csv" in files[".txt"].read_text()
    assert "&lt;b&gt;report&lt;/b&gt;.csv" in files[".html"].read_text()
    assert read_eml(files[".eml"])["Subject"].startswith("Deleted: old/<b>report</b>.csv")
    assert "Subject: Deleted:" in capsys.readouterr().out


def test_demo_ends_with_four_emails_one_per_kind(tmp_path):
    outbox = tmp_path / "demo"
    (outbox).mkdir()
    (outbox / ".storage-notifier-demo").write_text('{"files": ["stale.eml"]}')  # an earlier demo's folder
    (outbox / "stale.eml").write_text("left over from an earlier run")

    result = subprocess.run(
        [sys.executable, "-m", "notifier", "demo", "--outbox", str(outbox)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    emails = sorted(outbox.glob("*.eml"))
    assert len(emails) == 4
    kinds = sorted(read_eml(p)["X-Categories"].split(", ")[1] for p in emails)
    assert kinds == ["archive", "delete", "finalize", "metadata"]
    for path in emails:
        assert str(path) in result.stdout
    outcomes = re.findall(r"^  (?:INFO|WARNING|ERROR)\s+(\S+):", result.stdout, re.MULTILINE)
    assert outcomes == ["sent", "sent", "sent", "sent", "duplicate"], result.stdout


def test_negative_size_is_refused_before_anything_is_sent(capsys):
    with pytest.raises(SystemExit) as caught:
        main(["emit", "finalize", "gs://b/o", "--size", "-1", "--url", "http://127.0.0.1:9"])
    assert caught.value.code == 2
    assert (
        """argument --size: expected a size such as 1024 (bytes), "1 KiB" or "5 MB", got '-1'"""
        in capsys.readouterr().err
    )


def test_preview_needs_no_delivery_settings(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SENDGRID_API_KEY", "SG.preview-key")
    monkeypatch.delenv("NOTIFY_FROM", raising=False)
    monkeypatch.delenv("NOTIFY_TO", raising=False)
    assert main(["preview", "finalize", "gs://acme/x.csv", "--out", str(tmp_path)]) == 0
    assert len(list(tmp_path.glob("*.eml"))) == 1
    assert "SG.preview-key" not in capsys.readouterr().out


def test_replay_sends_dead_letters_once_through_the_ledger(tmp_path, monkeypatch, capsys):
    from notifier.events import decode
    from notifier.ledger.local import LocalDeadLetters
    from notifier.pipeline import Pipeline
    from tests.conftest import settings_for, storage_cloud_event

    env = {"NOTIFY_OUTBOX_DIR": str(tmp_path / "out"), "NOTIFY_DEAD_LETTER_DIR": str(tmp_path / "dead"),
           "NOTIFY_TO": "ops@example.com", "NOTIFY_BACKEND": "outbox"}  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = settings_for(**env)
    event = decode(storage_cloud_event(name="reports/lost.csv", generation="9"))
    (notification,) = settings.rules.route(event)
    message = Pipeline(settings).renderer.render(notification)
    LocalDeadLetters(tmp_path / "dead").put(notification.id, {
        "notification_id": notification.id, "rule": "default", "event": event.to_dict(),
        "message": message.to_dict(), "error": "HTTP 401", "status": 401,
    })  # fmt: skip

    assert main(["replay", "--dry-run"]) == 0
    assert f"would replay {notification.id}" in capsys.readouterr().out
    assert main(["replay", "--since", "1h"]) == 0
    out = capsys.readouterr().out
    assert f"sent          {notification.id}: Uploaded: reports/lost.csv (acme)" in out
    assert "1 of 1 dead letter(s) delivered" in out
    (eml,) = (tmp_path / "out").glob("*.eml")
    assert read_eml(eml)["X-Notification-Id"] == notification.id
    assert main(["replay"]) == 0
    assert "No dead letters to replay" in capsys.readouterr().out
    assert len(list((tmp_path / "out").glob("*.eml"))) == 1


def test_replay_rejects_a_bad_since(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("NOTIFY_OUTBOX_DIR", str(tmp_path))
    assert main(["replay", "--since", "last tuesday"]) == 1
    assert "--since: expected an ISO 8601 time or a duration" in capsys.readouterr().err
