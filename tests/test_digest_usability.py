"""The end-to-end review of issue 16 at a terminal: check-config refuses what the function refuses,
pending shows parked windows, the "and N more" command lists what the digest counts, the sandbox
says how to reach its state, and flush/pending keep their own lines apart from the JSON log."""

from __future__ import annotations

import json
import shlex
import sys

import pytest

from notifier import log
from notifier.digest_context import digest_context, sample_run
from notifier.pipeline import Pipeline
from notifier.tools.cli import main
from tests.conftest import SECRET_KEY
from tests.test_digest_cli import _post, _window, deployment  # noqa: F401 - the fixture

DIGEST_RULE = """
[[rules]]
name = "bulk"
events = ["finalize"]
to = ["ops@example.com"]
digest = "10m"
"""


def _own_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith('{"')]


# --- 1. check-config refuses what the function refuses -----------------------------------------


@pytest.fixture
def no_store(clean_notifier_env, tmp_path, monkeypatch):
    """A deployment (K_SERVICE set) with a digest rule and no NOTIFY_STATE_BUCKET."""
    (tmp_path / "notify.toml").write_text(DIGEST_RULE, encoding="utf-8")
    env = {
        "NOTIFY_CONFIG": str(tmp_path / "notify.toml"), "K_SERVICE": "storage-notifier",
        "SENDGRID_API_KEY": SECRET_KEY, "NOTIFY_FROM": "Alerts <alerts@example.com>",
    }  # fmt: skip
    for key, value in env.items():
        monkeypatch.setenv(key, value)


def test_check_config_refuses_a_digest_without_a_store_as_the_function_does(no_store, capsys):
    with pytest.raises(ValueError, match="NOTIFY_STATE_BUCKET") as refused:
        Pipeline.from_environment()
    capsys.readouterr()

    code = main(["check-config"])

    captured = capsys.readouterr()
    assert code == 1, captured.out
    assert str(refused.value) in captured.err
    assert "OK" not in captured.out


@pytest.mark.parametrize("command", ["pending", "flush"])
def test_pending_and_flush_without_a_store_say_it_once_as_an_error_line(no_store, capsys, command):
    code = main([command])

    captured = capsys.readouterr()
    assert code == 1
    assert "cannot start" not in captured.out + captured.err
    (line,) = [line for line in captured.err.splitlines() if "NOTIFY_STATE_BUCKET" in line]
    assert line.startswith("error: rule(s) bulk: ")


# --- 2. pending shows a dead-lettered window as parked -----------------------------------------


def test_pending_shows_a_dead_lettered_window_as_parked_not_due(deployment, capsys, monkeypatch, httpserver):  # noqa: F811
    old = _window(120)
    _post(["reports/a.csv", "reports/b.csv"], old)
    monkeypatch.setenv("NOTIFY_BACKEND", "sendgrid")
    monkeypatch.setenv("SENDGRID_API_KEY", SECRET_KEY)
    monkeypatch.setenv("SENDGRID_API_HOST", httpserver.url_for("").rstrip("/"))
    httpserver.expect_oneshot_request("/v3/mail/send").respond_with_json({"errors": [{"message": "bad"}]}, 400)
    assert main(["flush"]) == 1
    capsys.readouterr()

    assert main(["pending"]) == 0
    lines = _own_lines(capsys.readouterr().out)
    assert "  → one email, due now" not in lines
    assert "  → parked: dead-lettered; `python -m notifier replay` sends it" in lines

    assert main(["pending", "--json"]) == 0
    (group,) = json.loads(capsys.readouterr().out)["groups"]
    (run,) = group["runs"]
    assert (run["parked"], run["due_now"]) == (True, False)
    assert [w["parked"] for w in run["windows"]] == [True]


# --- 3. the "and N more" command lists what the digest counts ----------------------------------


@pytest.mark.parametrize(
    ("kinds", "flags"),
    [
        (("finalize",), [[]]),
        (("delete",), [["--soft-deleted"]]),
        (("archive",), [["--all-versions"]]),
        (("metadata",), [[]]),
        (("finalize", "delete", "archive"), [[], ["--all-versions"], ["--soft-deleted"]]),
    ],
)
def test_the_list_command_fits_the_kinds_it_lists(kinds, flags):
    run = sample_run(150, bucket="acme", name="it's $(x)/f.csv", kinds=kinds, folders=1)
    context = digest_context("bulk", run, run.entries)

    commands = [shlex.split(c.command) for c in context["list_commands"]]

    assert commands == [["gcloud", "storage", "ls", "--recursive", *f, "gs://acme/it's $(x)/"] for f in flags]
    assert context["list_command"] == context["list_commands"][0].command
    notes = " ".join(c.note for c in context["list_commands"])
    assert ("if soft delete is on" in notes) == ("delete" in kinds)


# --- 4. the sandbox says how to reach its state; pending creates no ledger file -----------------


def test_pending_reads_a_missing_ledger_file_without_creating_it(deployment, capsys):  # noqa: F811
    ledger = deployment / "ledger.sqlite3"
    assert main(["pending"]) == 0
    assert _own_lines(capsys.readouterr().out) == [f"Nothing is held in {ledger}."]
    assert not ledger.exists()


def test_the_sandbox_prints_the_environment_pending_and_flush_need(tmp_path, capsys):
    from notifier.tools.sandbox import print_ready
    from notifier.tools.sandbox_folder import SandboxDir

    sandbox = SandboxDir(tmp_path)
    env = {"NOTIFY_STATE_BUCKET": "sandbox-state", "STORAGE_EMULATOR_HOST": "http://127.0.0.1:4443",
           "NOTIFY_CONFIG": "/x/it's.toml", "NOTIFY_BACKEND": "outbox", "NOTIFY_OUTBOX_DIR": "/x/outbox"}  # fmt: skip

    print_ready(sandbox, tmp_path, env)

    (line,) = [line for line in capsys.readouterr().out.splitlines() if "-m notifier pending" in line]
    words = shlex.split(line)
    assert words[:2] == ["env", "NOTIFY_STATE_BUCKET=sandbox-state"]
    assert words[words.index("-m") - 1] == sys.executable, "the interpreter the sandbox runs, with our packages"
    for assignment in ("STORAGE_EMULATOR_HOST=http://127.0.0.1:4443", "NOTIFY_CONFIG=/x/it's.toml"):
        assert assignment in words


# --- 5. JSON log lines on stderr in flush/pending ---------------------------------------------


def test_flush_prints_its_own_lines_on_stdout_and_the_log_on_stderr(deployment, capsys):  # noqa: F811
    _post(["reports/a.csv", "reports/b.csv"], _window(120))
    capsys.readouterr()

    assert main(["flush", "--all"]) == 0

    captured = capsys.readouterr()
    assert captured.out.splitlines()[-1] == "1 digest(s): 1 sent."
    assert not [line for line in captured.out.splitlines() if line.startswith('{"')]
    logged = [json.loads(line) for line in captured.err.splitlines() if line.startswith('{"')]
    assert any(entry.get("events") == 2 for entry in logged)
    log.log(log.get_logger(), 20, "after the command")  # the function's lines stay on stdout
    assert '"after the command"' in capsys.readouterr().out
