"""``deploy/deploy.sh events``: SendGrid's Event Webhook as a public HTTP function, its verification
key from Secret Manager, the URL to paste into SendGrid; ``teardown.sh events``; GOOGLE_CLOUD_PROJECT
in every function's environment. The fake gcloud records each call; the real one parses them."""

from __future__ import annotations

import pytest

from tests.test_deploy import BYTECODE, REAL_GCLOUD, ROOT, SA, normalized, replay_dry_run, run_script

EVENTS_ARGS = ("events", "--project", "acme-prod")
URL = "https://us-central1-acme-prod.cloudfunctions.net/storage-notifier-events"
KEY_SECRET_NAME = "sendgrid-webhook-public-key"  # the secret's name (deploy.sh's default), not a secret


def _events_deploy(gen_flag: str = "--gen2", key_secret_name: str = KEY_SECRET_NAME) -> list[str]:
    return [
        "functions", "deploy", "storage-notifier-events", gen_flag, "--project=acme-prod", "--region=us-central1",
        "--runtime=python312", f"--source={ROOT}", "--entry-point=sendgrid_events", "--trigger-http",
        "--allow-unauthenticated", *(["--concurrency=1"] if gen_flag == "--gen2" else []),
        f"--service-account={SA}", f"--memory={'256Mi' if gen_flag == '--gen2' else '256MB'}", "--timeout=60s",
        "--max-instances=10", "--env-vars-file=ENV",
        f"--set-secrets=SENDGRID_API_KEY=sendgrid-api-key:latest,SENDGRID_WEBHOOK_PUBLIC_KEY={key_secret_name}:latest",
        BYTECODE, "--quiet",
    ]  # fmt: skip


def test_events_deploys_a_public_http_function_with_the_key_secret_and_prints_its_url(tmp_path):
    result, calls = run_script("deploy.sh", *EVENTS_ARGS, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    deploy, url = (c["argv"] for c in calls)
    assert normalized(deploy) == _events_deploy()
    assert 'GOOGLE_CLOUD_PROJECT: "acme-prod"' in calls[0]["env_file"]
    assert 'NOTIFY_DEADLINE_SECONDS: "45"' in calls[0]["env_file"]
    assert url == ["functions", "describe", "storage-notifier-events", "--gen2", "--project=acme-prod",
                   "--region=us-central1", "--format=value(url)"]  # fmt: skip
    assert URL in result.stdout
    assert "Event Webhook" in result.stdout and '"Signed Event Webhook"' in result.stdout
    assert all(e in result.stdout for e in ("Delivered", "Bounced", "Dropped", "Spam Reports"))
    assert not any("invoker" in " ".join(c["argv"]) or "scheduler" in c["argv"] for c in calls)


def test_events_takes_the_key_secret_option_and_gen1(tmp_path):
    args = (*EVENTS_ARGS, "--gen1", "--webhook-key-secret", "sg-hook-key")
    result, calls = run_script("deploy.sh", *args, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    deploy, url = (c["argv"] for c in calls)
    assert normalized(deploy) == _events_deploy("--no-gen2", "sg-hook-key")
    assert url[-1] == "--format=value(httpsTrigger.url)"
    assert "sg-hook-key" in result.stdout


def test_a_bad_key_secret_name_is_a_usage_error(tmp_path):
    result, calls = run_script("deploy.sh", *EVENTS_ARGS, "--webhook-key-secret", "no/slashes", tmp_path=tmp_path)
    assert (result.returncode, calls) == (2, [])
    assert "--webhook-key-secret" in result.stderr


def test_the_usage_says_the_signature_is_the_authentication(tmp_path):
    result, _ = run_script("deploy.sh", "--help", tmp_path=tmp_path)
    assert result.returncode == 0
    assert "PUBLIC HTTP function" in result.stdout and "signature of each batch is the authentication" in result.stdout


def test_the_events_dry_run_replays_to_the_same_calls_and_prints_the_url(tmp_path):
    dry, dry_calls = run_script("deploy.sh", *EVENTS_ARGS, "--dry-run", tmp_path=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert dry_calls == []
    replayed, replay_calls = replay_dry_run(dry.stdout, tmp_path=tmp_path)
    _, real_calls = run_script("deploy.sh", *EVENTS_ARGS, tmp_path=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    assert [normalized(c["argv"]) for c in replay_calls] == [normalized(c["argv"]) for c in real_calls]
    assert [c.get("env_file") for c in replay_calls] == [c.get("env_file") for c in real_calls]
    assert URL in replayed.stdout


@pytest.mark.parametrize(
    "args",
    [("finalize", "--project", "acme-prod", "--bucket", "acme-uploads", "--trigger-location", "us"),
     ("flush", "--project", "acme-prod")],
)  # fmt: skip
def test_every_function_gets_the_project_for_trace_correlation(tmp_path, args):
    env_file = tmp_path / "env.yaml"
    env_file.write_text('GOOGLE_CLOUD_PROJECT: "someone-else"\nNOTIFY_TO: "ops@example.com"\n')
    result, calls = run_script("deploy.sh", *args, "--env-file", str(env_file), tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    (deploy,) = [c for c in calls if c["argv"][:2] == ["functions", "deploy"]]
    assert 'GOOGLE_CLOUD_PROJECT: "acme-prod"' in deploy["env_file"]
    assert "someone-else" not in deploy["env_file"], "the deployment's project, not the file's"


def test_teardown_events_deletes_only_its_function(tmp_path):
    result, calls = run_script("teardown.sh", "events", "--project", "acme-prod", tmp_path=tmp_path,
                               FAKE_GCLOUD_EXISTING="function")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [c["argv"] for c in calls if "delete" in c["argv"]] == [
        ["functions", "delete", "storage-notifier-events", "--gen2", "--project=acme-prod", "--region=us-central1",
         "--quiet"],
    ]  # fmt: skip


@pytest.mark.skipif(REAL_GCLOUD is None, reason="the real gcloud is not installed")
@pytest.mark.parametrize(
    ("script", "args"),
    [("deploy.sh", EVENTS_ARGS), ("deploy.sh", (*EVENTS_ARGS, "--gen1")), ("teardown.sh", EVENTS_ARGS)],
)
def test_every_events_command_line_parses_with_the_real_gcloud(tmp_path, script, args):
    result, calls = run_script(script, *args, tmp_path=tmp_path, parse_check=True, FAKE_GCLOUD_EXISTING="function")
    assert result.returncode == 0, result.stderr
    assert calls
    for call in calls:
        verdict = (call["argv"], call["real_exit"], call["real_stderr"])
        assert call["real_exit"] == 1, verdict
        assert "You do not currently have an active account selected" in call["real_stderr"], verdict
