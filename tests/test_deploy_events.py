"""``deploy/deploy.sh events``: SendGrid's Event Webhook as a public HTTP function, its verification
key from Secret Manager (checked, and readable by the function's service account), without the
SendGrid API key, the URL to paste into SendGrid; ``teardown.sh events``; GOOGLE_CLOUD_PROJECT in
every function's environment. The fake gcloud records each call; the real one parses them."""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest

from tests.test_deploy import BYTECODE, FAKE_BIN, REAL_GCLOUD, ROOT, SA, normalized, replay_dry_run, run_script
from tests.test_webhook import key_pair

EVENTS_ARGS = ("events", "--project", "acme-prod")
URL = "https://us-central1-acme-prod.cloudfunctions.net/storage-notifier-events"
KEY_SECRET_NAME = "sendgrid-webhook-public-key"  # the secret's name (deploy.sh's default), not a secret
KEY_SECRET_EXISTS = {"FAKE_GCLOUD_EXISTING": "secret"}


def _events_deploy(gen_flag: str = "--gen2", key_secret_name: str = KEY_SECRET_NAME) -> list[str]:
    return [
        "functions", "deploy", "storage-notifier-events", gen_flag, "--project=acme-prod", "--region=us-central1",
        "--runtime=python312", f"--source={ROOT}", "--entry-point=sendgrid_events", "--trigger-http",
        "--allow-unauthenticated", *(["--concurrency=32"] if gen_flag == "--gen2" else []),
        f"--service-account={SA}", *(["--memory=512Mi", "--cpu=1"] if gen_flag == "--gen2" else ["--memory=256MB"]),
        "--timeout=60s",
        "--max-instances=10", "--env-vars-file=ENV",
        f"--set-secrets=SENDGRID_WEBHOOK_PUBLIC_KEY={key_secret_name}:latest",  # never the API key
        BYTECODE, "--quiet",
    ]  # fmt: skip


def _key_secret_calls(key_secret_name: str = KEY_SECRET_NAME) -> list[list[str]]:
    return [
        ["secrets", "describe", key_secret_name, "--project=acme-prod"],
        ["secrets", "add-iam-policy-binding", key_secret_name, "--project=acme-prod", f"--member=serviceAccount:{SA}",
         "--role=roles/secretmanager.secretAccessor", "--condition=None", "--quiet"],
    ]  # fmt: skip


def _env_vars(env_file: str) -> dict[str, str]:
    """deploy.sh's --env-vars-file: one ``NAME: "value"`` line each, the value a JSON string."""
    pairs = (line.split(": ", 1) for line in env_file.splitlines())
    return {name: json.loads(value) for name, value in pairs}


def test_events_checks_and_grants_the_key_secret_then_deploys_a_public_function_and_prints_its_url(tmp_path):
    result, calls = run_script("deploy.sh", *EVENTS_ARGS, tmp_path=tmp_path, **KEY_SECRET_EXISTS)
    assert result.returncode == 0, result.stderr
    *secret, deploy, url = (c["argv"] for c in calls)
    assert secret == _key_secret_calls()
    assert normalized(deploy) == _events_deploy()
    assert not any("SENDGRID_API_KEY" in arg for arg in deploy)
    env = _env_vars(calls[2]["env_file"])
    assert (env["GOOGLE_CLOUD_PROJECT"], env["NOTIFY_DEADLINE_SECONDS"]) == ("acme-prod", "45")
    assert env["NOTIFY_BACKEND"] == "console"
    assert url == ["functions", "describe", "storage-notifier-events", "--gen2", "--project=acme-prod",
                   "--region=us-central1", "--format=value(url)"]  # fmt: skip
    assert URL in result.stdout
    assert "Event Webhook" in result.stdout and '"Signed Event Webhook"' in result.stdout
    assert all(e in result.stdout for e in ("Delivered", "Bounced", "Dropped", "Spam Reports"))
    assert not any("invoker" in " ".join(c["argv"]) or "scheduler" in c["argv"] for c in calls)


def test_events_takes_the_key_secret_option_and_gen1(tmp_path):
    args = (*EVENTS_ARGS, "--gen1", "--webhook-key-secret", "sg-hook-key")
    result, calls = run_script("deploy.sh", *args, tmp_path=tmp_path, **KEY_SECRET_EXISTS)
    assert result.returncode == 0, result.stderr
    *secret, deploy, url = (c["argv"] for c in calls)
    assert secret == _key_secret_calls("sg-hook-key")
    assert normalized(deploy) == _events_deploy("--no-gen2", "sg-hook-key")
    assert url[-1] == "--format=value(httpsTrigger.url)"
    assert "sg-hook-key" in result.stdout


def test_the_env_file_backend_is_console_for_events_only(tmp_path):
    env_file = tmp_path / "env.yaml"
    env_file.write_text(
        'NOTIFY_BACKEND: "sendgrid"\nNOTIFY_FROM: "alerts@acme.example"\nNOTIFY_TO: "ops@acme.example"\n'
    )
    result, calls = run_script("deploy.sh", *EVENTS_ARGS, "--env-file", str(env_file), tmp_path=tmp_path,
                               **KEY_SECRET_EXISTS)  # fmt: skip
    assert result.returncode == 0, result.stderr
    (deploy,) = [c for c in calls if c["argv"][:2] == ["functions", "deploy"]]
    assert deploy["env_file"].count("NOTIFY_BACKEND:") == 1
    env = _env_vars(deploy["env_file"])
    assert (env["NOTIFY_BACKEND"], env["NOTIFY_FROM"], env["NOTIFY_TO"]) == ("console", "alerts@acme.example",
                                                                              "ops@acme.example")  # fmt: skip
    result, calls = run_script("deploy.sh", "flush", "--project", "acme-prod", "--env-file", str(env_file),
                               tmp_path=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    (deploy,) = [c for c in calls if c["argv"][:2] == ["functions", "deploy"]]
    assert _env_vars(deploy["env_file"])["NOTIFY_BACKEND"] == "sendgrid"
    assert "--set-secrets=SENDGRID_API_KEY=sendgrid-api-key:latest" in deploy["argv"]
    assert not any(c["argv"][0] == "secrets" for c in calls)


def test_a_missing_key_secret_stops_before_the_deploy_saying_how_to_create_it(tmp_path):
    result, calls = run_script("deploy.sh", *EVENTS_ARGS, "--webhook-key-secret", "sg-hook-key", tmp_path=tmp_path)
    assert result.returncode == 1
    assert [c["argv"] for c in calls] == _key_secret_calls("sg-hook-key")[:1]
    assert "secret sg-hook-key does not exist in project acme-prod" in result.stderr
    assert "gcloud secrets create sg-hook-key --project=acme-prod --replication-policy=automatic --data-file=-" in (
        result.stderr
    )
    assert "Mail Settings > Event Webhook" in result.stderr and "Signed Event Webhook" in result.stderr


def test_a_key_secret_that_cannot_be_read_stops_before_the_deploy_with_gcloud_s_reason(tmp_path):
    result, calls = run_script("deploy.sh", *EVENTS_ARGS, tmp_path=tmp_path, FAKE_GCLOUD_DENIED="secrets describe")
    assert result.returncode == 1
    assert [c["argv"] for c in calls] == _key_secret_calls()[:1]
    assert "PERMISSION_DENIED" in result.stderr
    assert f"could not check that secret {KEY_SECRET_NAME} exists" in result.stderr
    assert "does not exist" not in result.stderr


@pytest.mark.skipif(REAL_GCLOUD is None, reason="the real gcloud is not installed")
def test_the_create_command_it_suggests_parses_with_the_real_gcloud(tmp_path):
    result, _ = run_script("deploy.sh", *EVENTS_ARGS, tmp_path=tmp_path)
    (suggested,) = [line.strip() for line in result.stderr.splitlines() if "gcloud secrets create" in line]
    words = shlex.split(suggested.split("<", 1)[0])
    assert words[:3] == ["gcloud", "secrets", "create"]
    log = tmp_path / "parsed.jsonl"
    subprocess.run([str(FAKE_BIN / "gcloud"), *words[1:]], input=b"MFkw", env={
        "PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "FAKE_GCLOUD_LOG": str(log), "FAKE_GCLOUD_REAL": REAL_GCLOUD,
    }, check=True, timeout=120)  # fmt: skip
    (call,) = [json.loads(line) for line in log.read_text().splitlines()]
    assert call["real_exit"] == 1, call
    assert "You do not currently have an active account selected" in call["real_stderr"], call


def test_a_bad_key_secret_name_is_a_usage_error(tmp_path):
    result, calls = run_script("deploy.sh", *EVENTS_ARGS, "--webhook-key-secret", "no/slashes", tmp_path=tmp_path)
    assert (result.returncode, calls) == (2, [])
    assert "--webhook-key-secret" in result.stderr


def test_the_usage_says_the_signature_is_the_authentication(tmp_path):
    result, _ = run_script("deploy.sh", "--help", tmp_path=tmp_path)
    assert result.returncode == 0
    assert "PUBLIC HTTP function" in result.stdout and "signature of each batch is the authentication" in result.stdout


@pytest.mark.parametrize("existing", ["secret", ""])
def test_the_events_dry_run_replays_to_the_same_calls_and_prints_the_url(tmp_path, existing):
    dry, dry_calls = run_script("deploy.sh", *EVENTS_ARGS, "--dry-run", tmp_path=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert dry_calls == []
    replayed, replay_calls = replay_dry_run(dry.stdout, tmp_path=tmp_path, FAKE_GCLOUD_EXISTING=existing)
    real, real_calls = run_script("deploy.sh", *EVENTS_ARGS, tmp_path=tmp_path, FAKE_GCLOUD_EXISTING=existing)
    assert replayed.returncode == real.returncode == (0 if existing else 1), replayed.stderr
    assert [normalized(c["argv"]) for c in replay_calls] == [normalized(c["argv"]) for c in real_calls]
    assert [c.get("env_file") for c in replay_calls] == [c.get("env_file") for c in real_calls]
    if existing:
        assert URL in replayed.stdout
    else:
        assert "gcloud secrets create sendgrid-webhook-public-key" in replayed.stderr


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
    result, calls = run_script(script, *args, tmp_path=tmp_path, parse_check=True,
                               FAKE_GCLOUD_EXISTING="function,secret")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert calls
    if script == "deploy.sh":
        assert [c["argv"][:2] for c in calls[:2]] == [["secrets", "describe"], ["secrets", "add-iam-policy-binding"]]
    for call in calls:
        verdict = (call["argv"], call["real_exit"], call["real_stderr"])
        assert call["real_exit"] == 1, verdict
        assert "You do not currently have an active account selected" in call["real_stderr"], verdict


def test_the_function_starts_deployed_with_the_environment_deploy_sh_writes(tmp_path, function_server_factory):
    """Deployed (K_SERVICE), with the env file deploy.sh wrote, the key and no SENDGRID_API_KEY:
    sendgrid_events starts and answers. Nothing here reaches Google: the state bucket's API and
    the metadata server point at a closed local port, and nothing reads them at start or on a 403."""
    env_file = tmp_path / "env.yaml"
    env_file.write_text('NOTIFY_FROM: "alerts@acme.example"\nNOTIFY_TO: "ops@acme.example"\n'
                        'NOTIFY_STATE_BUCKET: "acme-notifier-state"\n')  # fmt: skip
    result, calls = run_script("deploy.sh", *EVENTS_ARGS, "--env-file", str(env_file), tmp_path=tmp_path,
                               **KEY_SECRET_EXISTS)  # fmt: skip
    assert result.returncode == 0, result.stderr
    (deploy,) = [c for c in calls if c["argv"][:2] == ["functions", "deploy"]]
    env = _env_vars(deploy["env_file"])
    server = function_server_factory(
        target="sendgrid_events", K_SERVICE="storage-notifier-events", SENDGRID_WEBHOOK_PUBLIC_KEY=key_pair().public,
        NOTIFY_STORAGE_ENDPOINT="https://127.0.0.1:9", GCE_METADATA_HOST="127.0.0.1:9", **env,
    )  # fmt: skip
    status, answer = server.post(b"[]", {"Content-Type": "application/json"})
    assert status == 403, answer
    assert "signature" in answer
    assert not [line for line in server.new_log_lines(settle=0) if line["severity"] in ("ERROR", "CRITICAL")]
