"""deploy/ scripts run for real, with a fake gcloud first on PATH that records every call.

Where the real gcloud is installed, the calls are also handed to its parser (no account, no
network: a well-formed command line fails with "no active account", a malformed one with exit 2).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pathspec
import pytest

from tests.conftest import CE_TYPES as GEN2_TYPES
from tests.conftest import GEN1_TYPES

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
FAKE_BIN = Path(__file__).parent / "fake_gcloud"
REAL_GCLOUD = shutil.which("gcloud")
TRIGGERS = ["finalize", "delete", "archive", "metadata"]
SA = "storage-notifier@acme-prod.iam.gserviceaccount.com"
KEY = "SG.deploy-test-key-never-in-argv.abcdefghijklmnop"
# The build's compileall then writes checked-hash bytecode for our source, which still matches it once
# the image's mtimes are normalized (bench/workspace.py says why; tests/test_bench.py checks it).
BYTECODE = "--update-build-env-vars=SOURCE_DATE_EPOCH=315532801"


def run_script(script, *args, tmp_path, stdin="", parse_check=False, path_dirs=None, **env):
    log = tmp_path / "gcloud-calls.jsonl"
    log.unlink(missing_ok=True)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFIER_", "GOOGLE_CLOUD", "NOTIFY_"))}
    system_path = [p for p in os.environ["PATH"].split(os.pathsep) if p]
    full_env.update(
        PATH=os.pathsep.join(path_dirs if path_dirs is not None else [str(FAKE_BIN), *system_path]),
        FAKE_GCLOUD_LOG=str(log),
        TMPDIR=str(tmp_path),
        **env,
    )
    if parse_check and REAL_GCLOUD:
        full_env["FAKE_GCLOUD_REAL"] = REAL_GCLOUD
    result = subprocess.run(
        ["bash", str(DEPLOY / script), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=full_env,
        cwd=tmp_path,
        timeout=300,
        check=False,
    )
    calls = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return result, calls


def replay_dry_run(printed: str, *, tmp_path, **env):
    """Run what a ``--dry-run`` printed, as the user would paste it, against the fake gcloud."""
    script = tmp_path / "dry-run.sh"
    script.write_text(printed)
    return run_script(str(script), tmp_path=tmp_path, **env)


def deploy_calls(calls):
    return [c for c in calls if c["argv"][:2] == ["functions", "deploy"]]


def expected_gen2(trigger, *, location="us-central1", retry="--retry", memory="512Mi", timeout="60s"):
    return [
        "functions", "deploy", f"storage-notifier-{trigger}", "--gen2", "--project=acme-prod",
        "--region=us-central1", "--runtime=python312", f"--source={ROOT}", "--entry-point=handle_storage_event",
        f"--trigger-event-filters=type={GEN2_TYPES[trigger]}", "--trigger-event-filters=bucket=acme-uploads",
        f"--trigger-location={location}", f"--trigger-service-account={SA}", "--concurrency=32",
        f"--service-account={SA}", f"--memory={memory}", "--cpu=1", f"--timeout={timeout}", "--max-instances=10",
        "--env-vars-file=ENV", "--set-secrets=SENDGRID_API_KEY=sendgrid-api-key:latest", BYTECODE, retry, "--quiet",
    ]  # fmt: skip


def expected_gen1(trigger):
    return [
        "functions", "deploy", f"storage-notifier-{trigger}", "--no-gen2", "--project=acme-prod",
        "--region=us-central1", "--runtime=python312", f"--source={ROOT}", "--entry-point=handle_storage_event",
        "--trigger-resource=acme-uploads", f"--trigger-event={GEN1_TYPES[trigger]}",
        f"--service-account={SA}", "--memory=256MB", "--timeout=60s", "--max-instances=10",
        "--env-vars-file=ENV", "--set-secrets=SENDGRID_API_KEY=sendgrid-api-key:latest", BYTECODE, "--retry",
        "--quiet",
    ]  # fmt: skip


def normalized(argv):
    return ["--env-vars-file=ENV" if a.startswith("--env-vars-file=") else a for a in argv]


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_gen2_deploy_command_line_per_trigger(tmp_path, trigger):
    result, calls = run_script(
        "deploy.sh",
        trigger,
        "--project",
        "acme-prod",
        "--bucket",
        "acme-uploads",
        tmp_path=tmp_path,
        FAKE_GCLOUD_LOCATION="US-CENTRAL1",
    )

    assert result.returncode == 0, result.stderr
    describe, deploy, invoker = calls
    assert describe["argv"] == [
        "storage",
        "buckets",
        "describe",
        "gs://acme-uploads",
        "--project=acme-prod",
        "--format=value(location)",
    ]
    assert normalized(deploy["argv"]) == expected_gen2(trigger)
    assert 'NOTIFY_DEADLINE_SECONDS: "45"' in deploy["env_file"]
    assert invoker["argv"] == [
        "functions", "add-invoker-policy-binding", f"storage-notifier-{trigger}", "--project=acme-prod",
        "--region=us-central1", f"--member=serviceAccount:{SA}", "--quiet",
    ]  # fmt: skip


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_gen1_deploy_command_line_per_trigger(tmp_path, trigger):
    result, calls = run_script(
        "deploy.sh",
        trigger,
        "--gen1",
        "--project",
        "acme-prod",
        "--bucket",
        "gs://acme-uploads/",
        tmp_path=tmp_path,
    )

    assert result.returncode == 0, result.stderr
    (deploy,) = calls  # no location lookup, no invoker binding on 1st gen
    assert normalized(deploy["argv"]) == expected_gen1(trigger)


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_per_trigger_script_is_deploy_sh_with_that_trigger(tmp_path, trigger):
    args = ("--project", "acme-prod", "--bucket", "acme-uploads", "--trigger-location", "eu")
    _, via_script = run_script(f"{trigger}.sh", *args, tmp_path=tmp_path)
    _, via_deploy = run_script("deploy.sh", trigger, *args, tmp_path=tmp_path)
    assert [normalized(c["argv"]) for c in via_script] == [normalized(c["argv"]) for c in via_deploy]
    assert len(via_script) == 2


def test_all_deploys_four_functions_from_the_same_source_and_entry_point(tmp_path):
    result, calls = run_script(
        "deploy.sh",
        "all",
        "--project",
        "acme-prod",
        "--bucket",
        "acme-uploads",
        tmp_path=tmp_path,
        FAKE_GCLOUD_LOCATION="EU",
    )

    assert result.returncode == 0, result.stderr
    deploys = deploy_calls(calls)
    assert [d["argv"][2] for d in deploys] == [f"storage-notifier-{t}" for t in TRIGGERS]
    for flag in ("--source=", "--entry-point=", "--trigger-location="):
        values = {next(a for a in d["argv"] if a.startswith(flag)) for d in deploys}
        assert len(values) == 1, values
    assert f"--source={ROOT}" in deploys[0]["argv"]
    assert "--trigger-location=eu" in deploys[0]["argv"]
    assert sum(c["argv"][:3] == ["storage", "buckets", "describe"] for c in calls) == 1


def test_options_and_environment_shape_the_command(tmp_path):
    env_file = tmp_path / "env.yaml"
    env_file.write_text('NOTIFY_TO: "finance@example.com"\nNOTIFY_DEADLINE_SECONDS: "999"\n')
    result, calls = run_script(
        "deploy.sh", "delete", "--bucket", "acme-uploads", "--no-retry", "--memory", "512Mi",
        "--timeout", "120s", "--max-instances", "3", "--name-prefix", "acme-mail", "--secret", "sg-key",
        "--service-account", "mailer@acme-prod.iam.gserviceaccount.com", "--env-file", str(env_file),
        tmp_path=tmp_path, GOOGLE_CLOUD_PROJECT="acme-prod", NOTIFIER_REGION="europe-west1",
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    (deploy,) = deploy_calls(calls)
    argv = deploy["argv"]
    assert argv[2] == "acme-mail-delete"
    for expected in (
        "--no-retry",
        "--memory=512Mi",
        "--timeout=120s",
        "--max-instances=3",
        "--region=europe-west1",
        "--set-secrets=SENDGRID_API_KEY=sg-key:latest",
        "--service-account=mailer@acme-prod.iam.gserviceaccount.com",
    ):
        assert expected in argv
    assert "--retry" not in argv
    assert 'NOTIFY_TO: "finance@example.com"' in deploy["env_file"]
    assert 'NOTIFY_DEADLINE_SECONDS: "105"' in deploy["env_file"], "deadline = timeout - 15 s"
    assert 'NOTIFY_KEY_SECRET: "sg-key"' in deploy["env_file"], "messages name the secret to fix"
    assert "999" not in deploy["env_file"]


BAD_INPUT = [
    pytest.param(["finalise", "--project", "acme-prod", "--bucket", "b-1"], "unknown trigger 'finalise'", id="trigger"),
    pytest.param([], "expected one TRIGGER", id="no-trigger"),
    pytest.param(["finalize", "delete", "--project", "acme-prod", "--bucket", "b-1"], "expected one TRIGGER", id="two"),
    pytest.param(["finalize", "--bucket", "b-1"], "no project", id="no-project"),
    pytest.param(["finalize", "--project", "Acme_Prod", "--bucket", "b-1"], "not a project ID", id="project"),
    pytest.param(["finalize", "--project", "acme-prod"], "no bucket", id="no-bucket"),
    pytest.param(["finalize", "--project", "acme-prod", "--bucket", "Bad_Bucket"], "not a valid", id="bucket-case"),
    pytest.param(["finalize", "--project", "acme-prod", "--bucket", "ab"], "not a valid", id="bucket-short"),
    pytest.param(["finalize", "--project", "acme-prod", "--bucket", "192.168.1.1"], "not a valid", id="bucket-ip"),
    pytest.param(["finalize", "--project", "acme-prod", "--bucket", "google-x"], "not a valid", id="bucket-goog"),
    pytest.param(["finalize", "--project", "acme-prod", "--bucket", "a" * 64], "not a valid", id="bucket-long"),
    pytest.param(["finalize", "--project", "acme-prod", "--bucket", "b;rm -rf"], "not a valid", id="bucket-shell"),
    pytest.param(["finalize", "--project", "acme-prod", "--bucket", "b-1", "--region", "moon"], "not a region", id="region"),
    pytest.param(["finalize", "--project", "acme-prod", "--bucket", "b-1", "--timeout", "900s"], "20s to 540s", id="timeout"),
    pytest.param(["finalize", "--project", "acme-prod", "--bucket", "b-1", "--memory", "lots"], "--memory", id="memory"),
    pytest.param(["finalize", "--project", "acme-prod", "--bucket", "b-1", "--runtime", "python39"], "python312", id="runtime"),
    pytest.param(["finalize", "--project", "acme-prod", "--bucket", "b-1", "--max-instances", "0"], "--max-instances", id="max"),
    pytest.param(["finalize", "--project", "acme-prod", "--bucket", "b-1", "--frobnicate"], "unknown option", id="option"),
    pytest.param(["finalize", "--project", "acme-prod", "--bucket"], "--bucket needs a value", id="no-value"),
    pytest.param(["finalize", "--project", "acme-prod", "--bucket", "b-1", "--env-file", "/nope.yaml"], "does not exist", id="env"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), BAD_INPUT)
def test_bad_input_is_a_usage_error_and_runs_nothing(tmp_path, args, message):
    result, calls = run_script("deploy.sh", *args, tmp_path=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert "--help" in result.stderr
    assert calls == []


def test_an_env_file_holding_the_key_is_refused(tmp_path):
    env_file = tmp_path / "env.yaml"
    env_file.write_text(f'SENDGRID_API_KEY: "{KEY}"\n')
    result, calls = run_script(
        "deploy.sh",
        "finalize",
        "--project",
        "acme-prod",
        "--bucket",
        "b-1",
        "--env-file",
        str(env_file),
        tmp_path=tmp_path,
    )
    assert result.returncode == 2
    assert "Secret Manager" in result.stderr
    assert KEY not in result.stderr + result.stdout
    assert calls == []


def test_missing_gcloud_says_how_to_install_it(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "mktemp", "grep", "rm", "cat", "basename"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    result, _ = run_script(
        "deploy.sh",
        "finalize",
        "--project",
        "acme-prod",
        "--bucket",
        "b-1",
        tmp_path=tmp_path,
        path_dirs=[str(bin_dir)],
    )
    assert result.returncode == 127
    assert "gcloud not found: install the Google Cloud CLI" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("gen", ["--gen2", "--gen1"])
def test_dry_run_prints_a_script_that_makes_exactly_the_same_calls(tmp_path, gen):
    args = ("all", gen, "--project", "acme-prod", "--bucket", "acme-uploads")
    dry, dry_calls = run_script("deploy.sh", *args, "--dry-run", tmp_path=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert dry_calls == [], "a dry run runs nothing"
    assert "gcloud functions deploy storage-notifier-finalize" in dry.stdout

    replayed, replay_calls = replay_dry_run(dry.stdout, tmp_path=tmp_path)
    _, real_calls = run_script("deploy.sh", *args, tmp_path=tmp_path)

    assert replayed.returncode == 0, replayed.stderr
    assert [normalized(c["argv"]) for c in replay_calls] == [normalized(c["argv"]) for c in real_calls]
    assert [c.get("env_file") for c in replay_calls] == [c.get("env_file") for c in real_calls]


def test_setup_creates_what_is_missing_and_sends_the_key_through_stdin(tmp_path):
    result, calls = run_script(
        "setup.sh",
        "--project",
        "acme-prod",
        "--state-bucket",
        "acme-state",
        tmp_path=tmp_path,
        stdin=KEY + "\n",
    )

    assert result.returncode == 0, result.stderr
    argvs = [c["argv"] for c in calls]
    assert argvs[0][:2] == ["services", "enable"]
    for api in (
        "eventarc.googleapis.com",
        "run.googleapis.com",
        "secretmanager.googleapis.com",
        "pubsub.googleapis.com",
        "cloudbuild.googleapis.com",
        "artifactregistry.googleapis.com",
    ):
        assert api in argvs[0]
    assert [
        "iam",
        "service-accounts",
        "create",
        "storage-notifier",
        "--project=acme-prod",
        "--display-name=storage-notifier runtime",
    ] in argvs
    roles = {a.split("=", 1)[1] for argv in argvs for a in argv if a.startswith("--role=")}
    assert roles == {
        "roles/eventarc.eventReceiver",
        "roles/logging.logWriter",
        "roles/pubsub.publisher",
        "roles/secretmanager.secretAccessor",
        "roles/storage.objectAdmin",
    }
    publisher = next(a for a in argvs if "--role=roles/pubsub.publisher" in a)
    assert "--member=serviceAccount:service-123456789012@gs-project-accounts.iam.gserviceaccount.com" in publisher
    assert [
        "secrets",
        "create",
        "sendgrid-api-key",
        "--project=acme-prod",
        "--replication-policy=automatic",
    ] in argvs
    (add,) = [c for c in calls if c["argv"][:3] == ["secrets", "versions", "add"]]
    assert add["stdin_sha256"] == hashlib.sha256(KEY.encode()).hexdigest(), "key without its newline"
    accessor = next(a for a in argvs if "--role=roles/secretmanager.secretAccessor" in a)
    assert accessor[:3] == ["secrets", "add-iam-policy-binding", "sendgrid-api-key"]
    assert f"--member=serviceAccount:{SA}" in accessor
    assert any(a[:3] == ["storage", "buckets", "create"] and "gs://acme-state" in a for a in argvs)
    assert [
        "storage", "buckets", "update", "gs://acme-state", "--project=acme-prod",
        f"--lifecycle-file={ROOT}/deploy/state-lifecycle.json",
    ] in argvs  # fmt: skip
    lifecycle = json.loads((ROOT / "deploy/state-lifecycle.json").read_text())
    assert lifecycle["rule"][0]["condition"]["matchesPrefix"] == ["ledger/"]
    assert KEY not in json.dumps(argvs) + result.stdout + result.stderr


def test_setup_is_idempotent_when_everything_exists(tmp_path):
    result, calls = run_script(
        "setup.sh",
        "--project",
        "acme-prod",
        "--keep-secret",
        "--state-bucket",
        "acme-state",
        tmp_path=tmp_path,
        FAKE_GCLOUD_EXISTING="service-account,secret,bucket",
    )
    assert result.returncode == 0, result.stderr
    assert not [c for c in calls if "create" in c["argv"] or c["argv"][:3] == ["secrets", "versions", "add"]]


def test_setup_without_a_key_on_stdin_stops(tmp_path):
    result, calls = run_script("setup.sh", "--project", "acme-prod", tmp_path=tmp_path, stdin="")
    assert result.returncode == 2
    assert "no SendGrid API key" in result.stderr
    assert not [c for c in calls if c["argv"][:3] == ["secrets", "versions", "add"]]


def test_setup_dry_run_reads_no_key_and_runs_nothing(tmp_path):
    result, calls = run_script("setup.sh", "--project", "acme-prod", "--dry-run", tmp_path=tmp_path, stdin=KEY)
    assert result.returncode == 0, result.stderr
    assert calls == []
    assert "gcloud secrets versions add sendgrid-api-key --project=acme-prod --data-file=-" in result.stdout
    assert KEY not in result.stdout + result.stderr


@pytest.mark.parametrize(("gen", "flag"), [("--gen2", "--gen2"), ("--gen1", "--no-gen2")])
def test_logs_reads_the_triggers_function_with_the_right_flags(tmp_path, gen, flag):
    result, calls = run_script(
        "logs.sh",
        "metadata",
        gen,
        "--project",
        "acme-prod",
        "--limit",
        "7",
        "--min-log-level=error",
        "--",
        "--start-time",
        "2026-11-01",
        tmp_path=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    assert [c["argv"] for c in calls] == [[
        "functions", "logs", "read", "storage-notifier-metadata", flag, "--project=acme-prod",
        "--region=us-central1", "--limit=7", "--min-log-level=error", "--start-time", "2026-11-01",
    ]]  # fmt: skip


@pytest.mark.parametrize(
    "args",
    [
        ["all", "--project", "acme-prod"],
        ["finalize"],
        ["finalize", "--project", "acme-prod", "--limit", "5000"],
    ],
)
def test_logs_bad_input_runs_nothing(tmp_path, args):
    result, calls = run_script("logs.sh", *args, tmp_path=tmp_path)
    assert result.returncode == 2
    assert calls == []


def test_teardown_all_deletes_the_four_functions(tmp_path):
    result, calls = run_script("teardown.sh", "all", "--project", "acme-prod", tmp_path=tmp_path,
                               FAKE_GCLOUD_EXISTING="function")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [c["argv"] for c in calls if "delete" in c["argv"]] == [
        ["functions", "delete", f"storage-notifier-{t}", "--gen2", "--project=acme-prod", "--region=us-central1",
         "--quiet"] for t in TRIGGERS
    ]  # fmt: skip


@pytest.mark.skipif(REAL_GCLOUD is None, reason="the real gcloud is not installed")
@pytest.mark.parametrize(
    ("script", "args", "stdin"),
    [
        ("deploy.sh", ["finalize", "--project", "acme-prod", "--bucket", "acme-uploads"], ""),
        (
            "deploy.sh",
            ["archive", "--gen1", "--project", "acme-prod", "--bucket", "acme-uploads", "--no-retry"],
            "",
        ),
        ("setup.sh", ["--project", "acme-prod", "--state-bucket", "acme-state"], KEY),
        ("logs.sh", ["delete", "--project", "acme-prod", "--min-log-level=error"], ""),
        ("logs.sh", ["delete", "--gen1", "--project", "acme-prod"], ""),
        ("teardown.sh", ["metadata", "--project", "acme-prod"], ""),
        ("teardown.sh", ["metadata", "--gen1", "--project", "acme-prod"], ""),
    ],
)
def test_every_command_line_parses_with_the_real_gcloud(tmp_path, script, args, stdin):
    result, calls = run_script(script, *args, tmp_path=tmp_path, stdin=stdin, parse_check=True,
                               FAKE_GCLOUD_EXISTING="function")  # teardown: describe, then delete  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert calls
    for call in calls:
        verdict = (call["real_exit"], call["real_stderr"])
        assert call["real_exit"] == 1, verdict
        assert "You do not currently have an active account selected" in call["real_stderr"], verdict


def test_every_script_is_shellcheck_clean_and_strict():
    shellcheck = str(Path(sys.executable).parent / "shellcheck")
    scripts = sorted(DEPLOY.glob("*.sh"))
    assert len(scripts) == 11  # alerts.sh, _http_functions.sh
    result = subprocess.run(
        [shellcheck, "--external-sources", *map(str, scripts)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout
    for script in scripts:
        if script.name not in ("_common.sh", "_http_functions.sh"):  # sourced, never run
            assert "set -euo pipefail" in script.read_text(), script.name
            assert os.access(script, os.X_OK), f"{script.name} is not executable"


def _repo_files():
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\n")
    return sorted(f for f in listed if f and (ROOT / f).is_file())


def test_gcloudignore_uploads_exactly_what_runs():
    spec = pathspec.GitIgnoreSpec.from_lines((ROOT / ".gcloudignore").read_text().splitlines())
    files = _repo_files()
    uploaded = {f for f in files if not spec.match_file(f)}
    runtime = {"main.py", "requirements.txt"} | {
        f for f in files if f.startswith(("notifier/", "templates/")) and "__pycache__" not in f
    } - {f for f in files if f.startswith("notifier/tools/")}
    assert uploaded == runtime
    assert "notifier/pipeline.py" in uploaded and "notifier/tools/cli.py" not in uploaded
    assert {"notify.toml"} == {f for f in ["notify.toml", "tests/x.py"] if not spec.match_file(f)}
    for never in (
        "tests/test_http.py",
        "deploy/deploy.sh",
        ".venv/bin/python",
        "outbox/x.eml",
        ".git/HEAD",
        "bench/run.py",
        "notifier/__pycache__/cli.cpython-311.pyc",
        "deploy/env.yaml",
        "README.md",
        "notifier/.env",
        "notifier/ledger.sqlite3",
        "bench/reference/floor/main.py",  # a main.py below the top level is not the function
        "tests/requirements.txt",
    ):
        assert spec.match_file(never), never


@pytest.mark.skipif(REAL_GCLOUD is None, reason="the real gcloud is not installed")
def test_gcloud_itself_agrees_on_the_upload_set(tmp_path):
    # A clean copy of the tracked tree, so stray local files do not count.
    copy = tmp_path / "src"
    for name in _repo_files():
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, copy / name)
    (copy / "notifier" / "__pycache__").mkdir()
    (copy / "notifier" / "__pycache__" / "x.pyc").write_bytes(b"")
    env = {**os.environ, "CLOUDSDK_CONFIG": str(tmp_path / "cfg"), "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
    try:
        listed = subprocess.run(
            [REAL_GCLOUD, "meta", "list-files-for-upload", str(copy)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    finally:
        shutil.rmtree(copy)  # the copy holds the test suite's fake keys, which no file may keep
    spec = pathspec.GitIgnoreSpec.from_lines((ROOT / ".gcloudignore").read_text().splitlines())
    assert sorted(listed) == sorted(f for f in _repo_files() if not spec.match_file(f))
    assert "main.py" in listed and "requirements.txt" in listed
