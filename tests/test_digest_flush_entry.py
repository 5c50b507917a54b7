"""The scheduled flush as deployed: ``main.py: flush_digests`` over real HTTP (Cloud Scheduler's POST),
beside ``handle_storage_event`` holding events in the same state bucket (fake-gcs-server)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cloudevents.conversion import to_binary

from notifier.digest import SCHEDULE
from notifier.flush import FLUSH_BUDGET_SECONDS
from notifier.ledger.base import LedgerError
from notifier.ledger.digests import MemoryDigestStore
from notifier.ledger.memory import MemoryLedger
from notifier.pipeline import Pipeline
from notifier.scheduled_flush import answer
from notifier.tools.processes import free_port
from notifier.tools.sandbox_flush import FlushScheduler
from tests.conftest import read_eml, settings_for, storage_cloud_event
from tests.test_deploy import BYTECODE, REAL_GCLOUD, normalized, replay_dry_run, run_script

ROOT = Path(__file__).resolve().parent.parent
RULES = """
[[rules]]
name = "bulk"
include = ["bulk/**"]
to = ["ops@example.com"]
digest = "1m"
"""
needs_gcs_store = pytest.mark.skipif(
    importlib.util.find_spec("notifier.ledger.gcs_digests") is None, reason="the state bucket's digest store"
)


def _request(url: str, method: str) -> tuple[int, str, dict[str, str]]:
    request = urllib.request.Request(url, data=b"" if method == "POST" else None, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read().decode(), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode(), dict(error.headers)


@pytest.fixture
def servers(function_server_factory, fake_gcs, tmp_path):
    """The event function and the flush function, one state bucket, one outbox folder each."""
    rules = tmp_path / "notify.toml"
    rules.write_text(RULES)
    env = {"NOTIFY_CONFIG": str(rules), "NOTIFY_STATE_BUCKET": "notifier-state"}
    events = function_server_factory(**env)
    flush = function_server_factory(target="flush_digests", **env)
    return events, flush


def _hold(server, count: int) -> None:
    minutes_ago = (datetime.now(UTC) - timedelta(minutes=5)).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    for i in range(count):
        event = storage_cloud_event(name=f"bulk/f{i}.csv", event_id=f"bulk-{i}", updated=minutes_ago)
        status, body = server.post(*reversed(to_binary(event)))
        assert status == 200, body
    assert [line["outcome"] for line in server.new_log_lines() if "outcome" in line] == ["batched"] * count


@needs_gcs_store
def test_a_post_sends_the_due_digest_and_answers_counts_a_get_flushes_nothing(servers):
    events, flush = servers
    _hold(events, 1)  # one held event goes out as the ordinary email (the digest's own tests: test_digest_*)

    status, body, headers = _request(flush.url, "GET")
    assert (status, headers.get("Allow")) == (405, "POST"), body
    assert flush.emails() == [], "a GET flushed"

    status, body, headers = _request(flush.url, "POST")
    assert status == 200, body
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {"runs": 1, "sent": 1, "events": 1, "outcomes": {"sent": 1}}
    (eml,) = flush.emails()
    assert read_eml(eml)["Subject"] == "Uploaded: bulk/f0.csv (acme)"
    (line,) = [line for line in flush.new_log_lines() if "outcome" in line]
    assert (line["outcome"], line["events"]) == ("sent", 1)

    status, body, _ = _request(flush.url, "POST")  # the next minute's run: nothing left
    assert (status, json.loads(body)) == (200, {"runs": 0, "sent": 0, "events": 0, "outcomes": {}})


@needs_gcs_store
def test_a_listing_that_fails_answers_503_with_one_error_line(function_server_factory, fake_gcs, tmp_path):
    rules = tmp_path / "notify.toml"
    rules.write_text(RULES)
    flush = function_server_factory(target="flush_digests", NOTIFY_CONFIG=str(rules),
                                    NOTIFY_STATE_BUCKET="no-such-state-bucket")  # fmt: skip
    flush.new_log_lines()
    status, body, _ = _request(flush.url, "POST")
    assert status == 503, body
    assert "no-such-state-bucket" not in body, "the answer says where to look, not what is there"
    errors = [line for line in flush.new_log_lines() if line.get("severity") == "ERROR"]
    assert len(errors) == 1, errors
    assert "could not be listed" in errors[0]["message"] and errors[0]["outcome"] == "retrying"


def test_without_digest_rules_a_post_answers_nothing_to_do_and_a_head_is_refused(function_server_factory):
    flush = function_server_factory(target="flush_digests")
    status, body, _ = _request(flush.url, "POST")
    assert (status, json.loads(body)) == (200, {"runs": 0, "sent": 0, "events": 0, "outcomes": {}})
    assert _request(flush.url, "PUT")[0] == 405
    assert not [line for line in flush.new_log_lines() if "invalid event" in line.get("message", "")]


def test_the_event_functions_cold_start_loads_no_flush_code(tmp_path):
    code = (
        "import sys\n"
        "from functions_framework import create_app\n"
        f"create_app(target='handle_storage_event', source={str(ROOT / 'main.py')!r})\n"
        "print(sorted(m for m in sys.modules if m in ('notifier.flush', 'notifier.scheduled_flush')))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "NOTIFY_OUTBOX_DIR": str(tmp_path / "outbox"), "HOME": str(tmp_path)}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    main_source = (ROOT / "main.py").read_text()
    assert "def flush_digests" in main_source, "the flush is an entry point of the same module"


class _UnlistableStore(MemoryDigestStore):
    """The state bucket refusing the listing (what a revoked role or a deleted bucket gives)."""

    def pending(self):
        raise LedgerError("403 listing digest/ refused", misconfigured=True)


def test_a_bug_in_the_flush_is_a_500_with_its_traceback_not_an_invalid_event(tmp_path, capsys):
    rules = tmp_path / "notify.toml"
    rules.write_text(RULES)
    pipeline = Pipeline(settings_for(NOTIFY_BACKEND="console", NOTIFY_CONFIG=str(rules)), ledger=MemoryLedger(),
                        digests=_UnlistableStore())  # fmt: skip
    assert answer(pipeline, "POST")[1] == 503
    pipeline.flush = lambda: 1 / 0  # type: ignore[method-assign]
    body, status, _ = answer(pipeline, "POST")
    assert status == 500 and "ZeroDivisionError" not in body
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [line["severity"] for line in lines] == ["ERROR", "ERROR"]
    assert "could not be listed: 403 listing digest/ refused" in lines[0]["message"]
    assert lines[1]["message"].startswith("flush failed: ZeroDivisionError")
    assert "Traceback" in json.dumps(lines[1])
    assert not any("invalid event" in line["message"] for line in lines)


# --- deploy/deploy.sh flush: an HTTP function and the Cloud Scheduler job calling it -------------

FLUSH_SA = "storage-notifier@acme-prod.iam.gserviceaccount.com"
FLUSH_URL = "https://us-central1-acme-prod.cloudfunctions.net/storage-notifier-flush"
FLUSH_ARGS = ("flush", "--project", "acme-prod")


def _flush_deploy(gen_flag: str, *, timeout: str, deadline: str) -> list[str]:
    return [
        "functions", "deploy", "storage-notifier-flush", gen_flag, "--project=acme-prod", "--region=us-central1",
        "--runtime=python312", f"--source={ROOT}", "--entry-point=flush_digests", "--trigger-http",
        "--no-allow-unauthenticated", *(["--concurrency=32"] if gen_flag == "--gen2" else []),
        f"--service-account={FLUSH_SA}", *(["--memory=512Mi", "--cpu=1"] if gen_flag == "--gen2" else ["--memory=256MB"]),
        f"--timeout={timeout}", "--max-instances=10", "--env-vars-file=ENV",
        "--set-secrets=SENDGRID_API_KEY=sendgrid-api-key:latest", BYTECODE, "--quiet",
    ]  # fmt: skip


def _job_flags(deadline: str) -> list[str]:
    return [
        "--project=acme-prod", "--location=us-central1", f"--schedule={SCHEDULE}", f"--uri={FLUSH_URL}",
        "--http-method=POST", f"--oidc-service-account-email={FLUSH_SA}", f"--oidc-token-audience={FLUSH_URL}",
        f"--attempt-deadline={deadline}",
    ]  # fmt: skip


def test_flush_deploys_the_http_entry_point_grants_the_invoker_and_creates_the_minute_job(tmp_path):
    result, calls = run_script("deploy.sh", *FLUSH_ARGS, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    deploy, invoker, url, job_describe, job_create = (c["argv"] for c in calls)
    timeout = f"{int(FLUSH_BUDGET_SECONDS) + 60}s"  # the flush's budget, then one send with the usual deadline
    assert normalized(deploy) == _flush_deploy("--gen2", timeout=timeout, deadline="45")
    assert 'NOTIFY_DEADLINE_SECONDS: "45"' in calls[0]["env_file"], "each send: the triggers' deadline"
    assert invoker == [
        "functions", "add-invoker-policy-binding", "storage-notifier-flush", "--project=acme-prod",
        "--region=us-central1", f"--member=serviceAccount:{FLUSH_SA}", "--quiet",
    ]  # fmt: skip
    assert url == ["functions", "describe", "storage-notifier-flush", "--gen2", "--project=acme-prod",
                   "--region=us-central1", "--format=value(url)"]  # fmt: skip
    assert job_describe == ["scheduler", "jobs", "describe", "storage-notifier-flush", "--project=acme-prod",
                            "--location=us-central1"]  # fmt: skip
    assert job_create == ["scheduler", "jobs", "create", "http", "storage-notifier-flush", *_job_flags(timeout)]
    assert "--bucket" not in " ".join(" ".join(c["argv"]) for c in calls)


def test_flush_updates_the_job_that_exists_and_takes_the_timeout_and_gen1(tmp_path):
    result, calls = run_script("deploy.sh", *FLUSH_ARGS, "--gen1", "--timeout", "120s", tmp_path=tmp_path,
                               FAKE_GCLOUD_EXISTING="scheduler-job")  # fmt: skip
    assert result.returncode == 0, result.stderr
    deploy, invoker, url, _, job_update = (c["argv"] for c in calls)
    assert normalized(deploy) == _flush_deploy("--no-gen2", timeout="360s", deadline="105")
    assert 'NOTIFY_DEADLINE_SECONDS: "105"' in calls[0]["env_file"]
    assert invoker == [
        "functions", "add-iam-policy-binding", "storage-notifier-flush", "--project=acme-prod",
        "--region=us-central1", f"--member=serviceAccount:{FLUSH_SA}", "--role=roles/cloudfunctions.invoker",
        "--quiet",
    ]  # fmt: skip
    assert url[-1] == "--format=value(httpsTrigger.url)"
    assert job_update == ["scheduler", "jobs", "update", "http", "storage-notifier-flush", *_job_flags("360s")]


def test_a_flush_that_cannot_fit_a_1st_gen_timeout_is_a_usage_error(tmp_path):
    result, calls = run_script("deploy.sh", *FLUSH_ARGS, "--gen1", "--timeout", "301s", tmp_path=tmp_path)
    assert result.returncode == 2 and calls == []
    assert "--timeout" in result.stderr and "540s" in result.stderr


def test_the_flush_dry_run_replays_to_the_same_calls(tmp_path):
    dry, dry_calls = run_script("deploy.sh", *FLUSH_ARGS, "--dry-run", tmp_path=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert dry_calls == []
    replayed, replay_calls = replay_dry_run(dry.stdout, tmp_path=tmp_path)
    _, real_calls = run_script("deploy.sh", *FLUSH_ARGS, tmp_path=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    assert [normalized(c["argv"]) for c in replay_calls] == [normalized(c["argv"]) for c in real_calls]


def test_deploying_a_trigger_with_digest_rules_names_the_flush(tmp_path):
    rules = tmp_path / "rules.toml"
    rules.write_text('[[rules]]\nname = "bulk"\nto = ["ops@example.com"]\nmax_emails = "20/h"\n')
    env_file = tmp_path / "env.yaml"
    env_file.write_text(f'NOTIFY_CONFIG: "{rules}"\n')
    args = ("finalize", "--project", "acme-prod", "--bucket", "acme-uploads", "--trigger-location", "eu")
    result, _ = run_script("deploy.sh", *args, "--env-file", str(env_file), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "deploy/deploy.sh flush --project acme-prod" in result.stderr
    rules.write_text('[[rules]]\nname = "all"\nto = ["ops@example.com"]\n')
    result, _ = run_script("deploy.sh", *args, "--env-file", str(env_file), tmp_path=tmp_path)
    assert result.returncode == 0 and "flush" not in result.stderr


def test_setup_enables_cloud_scheduler_and_teardown_flush_deletes_the_job_then_the_function(tmp_path):
    result, calls = run_script("setup.sh", "--project", "acme-prod", "--keep-secret", tmp_path=tmp_path,
                               FAKE_GCLOUD_EXISTING="secret")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "cloudscheduler.googleapis.com" in calls[0]["argv"]
    result, calls = run_script("teardown.sh", "flush", "--project", "acme-prod", tmp_path=tmp_path,
                               FAKE_GCLOUD_EXISTING="function,scheduler-job")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [c["argv"] for c in calls if "delete" in c["argv"]] == [
        ["scheduler", "jobs", "delete", "storage-notifier-flush", "--project=acme-prod", "--location=us-central1",
         "--quiet"],
        ["functions", "delete", "storage-notifier-flush", "--gen2", "--project=acme-prod", "--region=us-central1",
         "--quiet"],
    ]  # fmt: skip
    result, calls = run_script("teardown.sh", "flush", "--project", "acme-prod", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "already gone: Cloud Scheduler job storage-notifier-flush" in result.stderr
    assert not [c for c in calls if "delete" in c["argv"]]


@pytest.mark.skipif(REAL_GCLOUD is None, reason="the real gcloud is not installed")
@pytest.mark.parametrize(
    ("script", "args", "existing"),
    [
        ("deploy.sh", [*FLUSH_ARGS], "function"),
        ("deploy.sh", [*FLUSH_ARGS, "--gen1"], "function,scheduler-job"),
        ("teardown.sh", ["flush", "--project", "acme-prod"], "function,scheduler-job"),
    ],
)
def test_every_flush_command_line_parses_with_the_real_gcloud(tmp_path, script, args, existing):
    result, calls = run_script(script, *args, tmp_path=tmp_path, parse_check=True, FAKE_GCLOUD_EXISTING=existing)
    assert result.returncode == 0, result.stderr
    assert len(calls) >= 3
    for call in calls:
        verdict = (call["argv"], call["real_exit"], call["real_stderr"])
        assert call["real_exit"] == 1, verdict
        assert "You do not currently have an active account selected" in call["real_stderr"], verdict


# --- make sandbox: the flush function on the deployed schedule ----------------------------------


class _Waits:
    """The scheduler's waits, answered at once: not stopped ``rounds`` times, then stopped."""

    def __init__(self, rounds: int) -> None:
        self.asked: list[float] = []
        self._rounds = rounds

    def __call__(self, seconds: float) -> bool:
        self.asked.append(seconds)
        return len(self.asked) > self._rounds


def _scheduler(url: str, waits: _Waits, said: list[str], at: datetime) -> FlushScheduler:
    return FlushScheduler(url, outbox="outbox", log="logs/flush.log", say=said.append, clock=at.timestamp,
                          wait=waits)  # fmt: skip


@needs_gcs_store
def test_the_sandbox_scheduler_posts_on_the_minute_and_says_what_a_run_sent(servers):
    events, flush = servers
    _hold(events, 1)
    waits, said = _Waits(rounds=2), []
    _scheduler(flush.url, waits, said, datetime(2026, 11, 29, 10, 0, 42, tzinfo=UTC)).run()
    assert waits.asked == [18.0, 18.0, 18.0], "each run waits for the top of the next minute"
    assert said == ["flushed   10:00 UTC: 1 digest(s) sent (1 event(s)) → outbox"], "a run with nothing says nothing"
    assert len(flush.emails()) == 1


@needs_gcs_store
def test_a_flush_the_sandbox_cannot_do_is_one_line_naming_its_log(function_server_factory, fake_gcs, tmp_path):
    rules = tmp_path / "notify.toml"
    rules.write_text(RULES)
    flush = function_server_factory(target="flush_digests", NOTIFY_CONFIG=str(rules),
                                    NOTIFY_STATE_BUCKET="no-such-state-bucket")  # fmt: skip
    said: list[str] = []
    _scheduler(flush.url, _Waits(rounds=1), said, datetime(2026, 11, 29, 10, 0, tzinfo=UTC)).run()
    (line,) = said
    assert line.startswith("  error: the flush at 10:00 UTC answered 503: the held events could not be listed")
    assert line.endswith("its log: logs/flush.log")


def test_a_flush_function_that_is_gone_is_said_not_raised():
    said: list[str] = []
    gone = f"http://127.0.0.1:{free_port()}"
    _scheduler(gone, _Waits(rounds=1), said, datetime(2026, 11, 29, 10, 0, tzinfo=UTC)).run()
    (line,) = said
    assert line.startswith("  error: the flush at 10:00 UTC could not reach the flush function")


def test_the_sandbox_runs_the_flush_and_has_a_digest_rule_unless_the_project_has_rules(tmp_path):
    from notifier.config import load_settings
    from notifier.tools.sandbox import SandboxDir, function_env

    sandbox = SandboxDir(tmp_path)
    (tmp_path / "outbox").mkdir()
    env = function_env({}, sandbox, "http://127.0.0.1:9")
    if (ROOT / "notify.toml").is_file():  # a developer's own rules win, as deployed
        assert "NOTIFY_CONFIG" not in env
        return
    rules = {rule.name: rule for rule in load_settings(env).rules.rules}
    assert rules["bulk"].delivery.batching is not None and rules["bulk"].delivery.batching.window == 60
    assert rules["bulk"].stop and rules["everything"].delivery.batching is None
    mine = tmp_path / "mine.toml"
    mine.write_text('[[rules]]\nname = "mine"\n')
    assert function_env({"NOTIFY_CONFIG": str(mine)}, sandbox, "http://127.0.0.1:9")["NOTIFY_CONFIG"] == str(mine)
