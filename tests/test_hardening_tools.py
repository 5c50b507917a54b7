"""Issue 12, the tools: `demo --outbox` deletes only what the demo made; deploy.sh reads env.yaml
as YAML, prints a dry-run script no env file can break out of, and reads --timeout as decimal."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import read_eml
from tests.test_deploy import DEPLOY, KEY, REAL_GCLOUD, deploy_calls, run_script

ROOT = Path(__file__).resolve().parent.parent
MARKER = ".storage-notifier-demo"
DEPLOY_ARGS = ("finalize", "--project", "acme-prod", "--bucket", "acme-uploads", "--trigger-location", "us")
BUNDLED_PYTHON = (
    Path(os.path.realpath(REAL_GCLOUD)).parent.parent / "platform/bundledpythonunix/bin/python3"
    if REAL_GCLOUD
    else None
)


# --- demo --outbox ----------------------------------------------------------------------------


def run_demo(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NOTIFY_")}
    env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(
        [sys.executable, "-m", "notifier", "demo", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every path below ``folder`` with its bytes (None for folders)."""
    return {str(p.relative_to(folder)): (None if p.is_dir() else p.read_bytes()) for p in sorted(folder.rglob("*"))}


def user_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "home"
    (folder / "photos").mkdir(parents=True)
    (folder / "photos" / "cat.jpg").write_bytes(b"\xff\xd8 a cat")
    (folder / "thesis.txt").write_text("three years of work")
    (folder / "letter.eml").write_text("Subject: keep me\n\nmine, not the demo's")
    (folder / "ledger.sqlite3").write_text("my accounts")
    (folder / "deadletter").mkdir()
    (folder / "deadletter" / "note.json").write_text("{}")
    return folder


@pytest.mark.parametrize(
    ("outbox", "cwd"),
    [
        pytest.param("{home}", ".", id="absolute"),
        pytest.param(".", "{home}", id="dot"),
        pytest.param("photos/..", "{home}", id="dot-dot"),
        pytest.param("{link}", ".", id="symlink"),
    ],
)
def test_demo_deletes_nothing_in_a_folder_it_did_not_make(tmp_path, outbox, cwd):
    home = user_folder(tmp_path)
    (tmp_path / "link").symlink_to(home)
    before = snapshot(home)
    names = {"home": str(home), "link": str(tmp_path / "link")}

    result = run_demo("--outbox", outbox.format(**names), cwd=tmp_path / cwd.format(**names))

    assert result.returncode == 2, result.stdout + result.stderr
    assert "--outbox" in result.stderr
    assert "not made by the demo" in result.stderr
    assert snapshot(home) == before
    assert "Starting the function" not in result.stdout, "refused before serving anything"


def test_demo_refuses_a_file_as_outbox(tmp_path):
    precious = tmp_path / "precious.txt"
    precious.write_text("do not touch")
    result = run_demo("--outbox", str(precious), cwd=tmp_path)
    assert result.returncode == 2
    assert "--outbox" in result.stderr
    assert "not a folder" in result.stderr
    assert precious.read_text() == "do not touch"


def test_demo_twice_in_the_default_outbox_replaces_only_its_own_mail(tmp_path):
    first = run_demo(cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    outbox = tmp_path / "outbox" / "demo"
    assert (outbox / MARKER).is_file(), "the demo marks the folder it made"
    first_mails = sorted(outbox.glob("*.eml"))
    assert len(first_mails) == 4
    (outbox / "notes.txt").write_text("the user's, dropped here later")

    second = run_demo(cwd=tmp_path)

    assert second.returncode == 0, second.stdout + second.stderr
    mails = sorted(outbox.glob("*.eml"))
    assert len(mails) == 4
    assert not set(mails) & set(first_mails), "the earlier run's mails are replaced"
    assert sorted(read_eml(p)["X-Categories"].split(", ")[1] for p in mails) == [
        "archive",
        "delete",
        "finalize",
        "metadata",
    ]
    assert (outbox / "notes.txt").read_text() == "the user's, dropped here later"
    assert "duplicate" in second.stdout, "a fresh ledger: only the resent event is a duplicate"


def test_demo_uses_a_new_or_empty_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_demo("--outbox", str(empty), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(list(empty.glob("*.eml"))) == 4
    assert (empty / MARKER).is_file()


def test_demo_again_keeps_the_users_files_that_look_like_its_own(tmp_path):
    outbox = tmp_path / "x" / "demo1"
    first = run_demo("--outbox", str(outbox), cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    first_mails = set(outbox.glob("*.eml"))
    assert len(first_mails) == 4
    assert not (outbox / "deadletter").exists(), "the demo's events all deliver: no dead letters"
    (outbox / "notes-from-me.eml").write_text("x\n")
    (outbox / "deadletter").mkdir()
    (outbox / "deadletter" / "my.json").write_text("{}\n")

    second = run_demo("--outbox", str(outbox), cwd=tmp_path)

    assert second.returncode == 0, second.stdout + second.stderr
    assert (outbox / "notes-from-me.eml").read_text() == "x\n"
    assert (outbox / "deadletter" / "my.json").read_text() == "{}\n"
    mails = set(outbox.glob("*.eml")) - {outbox / "notes-from-me.eml"}
    assert len(mails) == 4
    assert not mails & first_mails, "the first run's own mails are replaced"
    listed = json.loads((outbox / MARKER).read_text())["files"]
    written = [p.name for p in mails] + [p.name for p in outbox.glob("ledger.sqlite3*")]
    assert sorted(listed) == sorted(written), "the marker lists exactly what the second run wrote"


def test_demo_removes_nothing_a_tampered_marker_lists_outside_its_files(tmp_path):
    outbox = tmp_path / "demo"
    first = run_demo("--outbox", str(outbox), cwd=tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    outside = tmp_path / "outside.txt"
    outside.write_text("not the demo's")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "x.eml").write_text("not the demo's")
    (outbox / "link.eml").symlink_to(outside)
    (outbox / "linked-dir").symlink_to(tmp_path / "elsewhere")
    (outbox / "mine").mkdir()
    (outbox / "mine" / "kept.txt").write_text("mine")
    (outbox / "alias").symlink_to(outbox / "mine")
    (outbox / MARKER).write_text(
        json.dumps(
            {
                "files": [
                    "../outside.txt",
                    str(outside),
                    "link.eml",
                    "linked-dir/x.eml",
                    "linked-dir",
                    "mine",
                    "alias/kept.txt",
                    "mine/../link.eml",
                    "x\u0000.eml",
                    ".",
                    "",
                    MARKER,
                    7,
                ]
            }
        )
    )
    before = {**snapshot(outbox), **snapshot(tmp_path / "elsewhere")}

    second = run_demo("--outbox", str(outbox), cwd=tmp_path)

    assert second.returncode == 0, second.stdout + second.stderr
    assert outside.read_text() == "not the demo's"
    assert (tmp_path / "elsewhere" / "x.eml").read_text() == "not the demo's"
    assert (outbox / "link.eml").is_symlink()
    assert (outbox / "linked-dir").is_symlink()
    assert (outbox / "mine" / "kept.txt").read_text() == "mine", "a listed folder goes only when empty"
    after = {**snapshot(outbox), **snapshot(tmp_path / "elsewhere")}
    assert set(before) - set(after) == set(), "nothing the marker listed was removed"


def test_demo_removes_the_files_and_empty_folder_its_marker_lists(tmp_path):
    outbox = tmp_path / "demo"
    (outbox / "deadletter").mkdir(parents=True)
    (outbox / "old.eml").write_text("an earlier run's")
    (outbox / "deadletter" / "a.json").write_text("{}")
    (outbox / "keep.eml").write_text("the user's")
    (outbox / MARKER).write_text(json.dumps({"files": ["old.eml", "deadletter", "deadletter/a.json"]}))

    result = run_demo("--outbox", str(outbox), cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert not (outbox / "old.eml").exists()
    assert not (outbox / "deadletter").exists(), "its folder goes once its listed files are gone"
    assert (outbox / "keep.eml").read_text() == "the user's"


@pytest.mark.parametrize("marker", ["not json at all\n", "{}", '{"files": []}', '["x.eml"]'])
def test_demo_with_a_marker_listing_nothing_removes_nothing_and_runs(tmp_path, marker):
    outbox = tmp_path / "demo"
    outbox.mkdir()
    (outbox / MARKER).write_text(marker)
    (outbox / "x.eml").write_text("the user's")
    (outbox / ".x.tmp").write_text("the user's")

    result = run_demo("--outbox", str(outbox), cwd=tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert (outbox / "x.eml").read_text() == "the user's"
    assert (outbox / ".x.tmp").read_text() == "the user's"
    assert len(list(outbox.glob("*.eml"))) == 5, "its four emails next to the user's"


# --- deploy.sh: the env file ------------------------------------------------------------------

HOSTILE_ENV = (
    'NOTIFY_TO: "ops@example.com\n'
    "EOF\n"
    "touch {pwned}-1\n"
    '"\n'
    "NOTIFY_FROM: 'it''s $(touch {pwned}-2) `touch {pwned}-3`'\n"
    'NOTIFY_SUBJECT_PREFIX: "a\\nEOF\\ntouch {pwned}-4\\n\\u00e9"\n'
)


def hostile_env_file(tmp_path: Path) -> tuple[Path, str]:
    pwned = str(tmp_path / "pwned")
    env_file = tmp_path / "env.yaml"
    env_file.write_text(HOSTILE_ENV.format(pwned=pwned))
    return env_file, pwned


def test_dry_run_script_writes_the_env_file_exactly_and_runs_nothing_from_it(tmp_path):
    env_file, pwned = hostile_env_file(tmp_path)
    args = (*DEPLOY_ARGS, "--env-file", str(env_file))
    dry, dry_calls = run_script("deploy.sh", *args, "--dry-run", tmp_path=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert dry_calls == []

    script = tmp_path / "dry-run.sh"
    script.write_text(dry.stdout)
    replayed, replay_calls = run_script(str(script), tmp_path=tmp_path)
    _, real_calls = run_script("deploy.sh", *args, tmp_path=tmp_path)

    assert replayed.returncode == 0, replayed.stderr
    assert not list(tmp_path.glob("pwned*")), "nothing in the env file ran as a command"
    (replayed_deploy,) = deploy_calls(replay_calls)
    (real_deploy,) = deploy_calls(real_calls)
    assert replayed_deploy["env_file"] == real_deploy["env_file"], "byte for byte"
    lines = real_deploy["env_file"].splitlines()
    assert lines[:3] == [
        "NOTIFY_TO: " + json.dumps(f"ops@example.com EOF touch {pwned}-1 "),
        "NOTIFY_FROM: " + json.dumps(f"it's $(touch {pwned}-2) `touch {pwned}-3`"),
        "NOTIFY_SUBJECT_PREFIX: " + json.dumps(f"a\nEOF\ntouch {pwned}-4\n\u00e9"),
    ]


@pytest.mark.skipif(REAL_GCLOUD is None, reason="the real gcloud is not installed")
def test_the_real_gcloud_reads_the_env_file_deploy_sh_writes(tmp_path):
    env_file, _ = hostile_env_file(tmp_path)
    result, calls = run_script(
        "deploy.sh", *DEPLOY_ARGS, "--env-file", str(env_file), tmp_path=tmp_path, parse_check=True
    )
    assert result.returncode == 0, result.stderr
    for call in calls:
        assert call["real_exit"] == 1, call["real_stderr"]
        assert "You do not currently have an active account selected" in call["real_stderr"]


SECRET_SPELLINGS = [
    pytest.param(f"'SENDGRID_API_KEY': '{KEY}'\n", id="single-quoted-key"),
    pytest.param(f'"SENDGRID_API_KEY": "{KEY}"\n', id="double-quoted-key"),
    pytest.param(f'"SENDGRID\\x5fAPI_KEY": "{KEY}"\n', id="escaped-key"),
    pytest.param(f"{{NOTIFY_TO: a@example.com, SENDGRID_API_KEY: {KEY}}}\n", id="flow-map"),
    pytest.param(f"? SENDGRID_API_KEY\n: {KEY}\n", id="complex-key"),
    pytest.param(f'<<: {{SENDGRID_API_KEY: "{KEY}"}}\nNOTIFY_TO: "a@example.com"\n', id="merge-key"),
    pytest.param(f"sendgrid_api_key: {KEY}\n", id="lower-case"),
    pytest.param(f"SMTP_PASSWORD: {KEY}\n", id="smtp-password"),
]


@pytest.mark.parametrize("content", SECRET_SPELLINGS)
@pytest.mark.parametrize("dry_run", [[], ["--dry-run"]], ids=["run", "dry-run"])
def test_a_secret_in_the_env_file_is_refused_however_it_is_spelled(tmp_path, content, dry_run):
    env_file = tmp_path / "env.yaml"
    env_file.write_text(content)
    result, calls = run_script("deploy.sh", *DEPLOY_ARGS, "--env-file", str(env_file), *dry_run, tmp_path=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Secret Manager" in result.stderr
    assert str(env_file) in result.stderr
    assert KEY not in result.stdout + result.stderr
    assert calls == []
    assert "gcloud functions deploy" not in result.stdout


NOT_AN_ENV_MAP = [
    pytest.param(b"- NOTIFY_TO\n- a@example.com\n", "expected a map", id="list"),
    pytest.param(b"just some text\n", "expected a map", id="scalar"),
    pytest.param(b"NOTIFY_TO:\n  address: a@example.com\n", "NOTIFY_TO: expected a string", id="nested"),
    pytest.param(b"NOTIFY_MAX_ATTEMPTS: 5\n", "NOTIFY_MAX_ATTEMPTS: expected a string", id="number"),
    pytest.param(b"NOTIFY_TO:\n", "NOTIFY_TO: expected a string", id="empty-value"),
    pytest.param(b'NOTIFY_TO: "a@example.com\nNOTIFY_FROM: "SG.never-shown', "line 2", id="bad-yaml"),
    pytest.param(b"X_GOOGLE_THING: 'a'\n", "reserved", id="reserved"),
    pytest.param(b"'NOTIFY=TO': 'a'\n", "environment variable name", id="equals-in-key"),
    pytest.param(b"1: 'a'\n", "environment variable name", id="number-key"),
    pytest.param(b"NOTIFY_TO: '\xff\xfe'\n", "UTF-8", id="not-utf8"),
]


@pytest.mark.parametrize(("content", "message"), NOT_AN_ENV_MAP)
def test_an_env_file_that_is_not_a_flat_map_of_strings_is_refused(tmp_path, content, message):
    env_file = tmp_path / "env.yaml"
    env_file.write_bytes(content)
    result, calls = run_script("deploy.sh", *DEPLOY_ARGS, "--env-file", str(env_file), tmp_path=tmp_path)
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"--env-file: {env_file}:" in result.stderr
    assert message in result.stderr
    assert "SG.never-shown" not in result.stderr, "values are never echoed"
    assert calls == []


def test_settings_deploy_sh_owns_are_replaced_however_they_are_spelled(tmp_path):
    env_file = tmp_path / "env.yaml"
    env_file.write_text(
        '{"NOTIFY_DEADLINE_SECONDS": "999", \'NOTIFY_KEY_SECRET\': other, NOTIFY_TO: a@example.com,'
        ' "GOOGLE_CLOUD_PROJECT": another-project}\n'
    )
    result, calls = run_script(
        "deploy.sh", *DEPLOY_ARGS, "--env-file", str(env_file), "--secret", "sg-key", tmp_path=tmp_path
    )
    assert result.returncode == 0, result.stderr
    (deploy,) = deploy_calls(calls)
    assert deploy["env_file"] == (
        'NOTIFY_TO: "a@example.com"\nNOTIFY_DEADLINE_SECONDS: "45"\nTHREADS: "40"\nNOTIFY_MAX_IN_FLIGHT: "32"\n'
        'NOTIFY_KEY_SECRET: "sg-key"\nGOOGLE_CLOUD_PROJECT: "acme-prod"\n'
    )


@pytest.mark.parametrize(("timeout", "seconds"), [("0030s", 30), ("089s", 89), ("060", 60), ("540s", 540)])
def test_timeout_is_read_as_decimal(tmp_path, timeout, seconds):
    result, calls = run_script("deploy.sh", *DEPLOY_ARGS, "--timeout", timeout, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    (deploy,) = deploy_calls(calls)
    assert f"--timeout={seconds}s" in deploy["argv"]
    assert f'NOTIFY_DEADLINE_SECONDS: "{seconds - 15}"' in deploy["env_file"]


@pytest.mark.parametrize("timeout", ["0019s", "00000000000000000000541s", "99999999999999999999s"])
def test_timeout_out_of_range_is_refused_whatever_its_zeros(tmp_path, timeout):
    result, calls = run_script("deploy.sh", *DEPLOY_ARGS, "--timeout", timeout, tmp_path=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "--timeout" in result.stderr
    assert calls == []


# --- deploy/envfile.py with the Python and YAML parser the gcloud CLI bundles -----------------


def run_envfile(python: list[str], env_file: Path, path_dirs: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*python, str(DEPLOY / "envfile.py"), str(env_file), "--drop", "NOTIFY_KEY_SECRET"],
        env={"PATH": os.pathsep.join(path_dirs)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.skipif(REAL_GCLOUD is None, reason="the real gcloud is not installed")
@pytest.mark.parametrize("interpreter", ["bundled", "no-pyyaml"])
def test_envfile_reads_yaml_with_gclouds_own_parser(tmp_path, interpreter):
    python = [str(BUNDLED_PYTHON)] if interpreter == "bundled" else [sys.executable, "-S"]
    env_file, pwned = hostile_env_file(tmp_path)
    gcloud_dir = str(Path(REAL_GCLOUD).parent)

    result = run_envfile(python, env_file, [gcloud_dir])

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "NOTIFY_TO: " + json.dumps(f"ops@example.com EOF touch {pwned}-1 ")
    refused = tmp_path / "refused.yaml"
    refused.write_text(f'"SENDGRID\\x5fAPI_KEY": "{KEY}"\n')
    result = run_envfile(python, refused, [gcloud_dir])
    assert result.returncode == 2
    assert "Secret Manager" in result.stderr
    assert KEY not in result.stderr


@pytest.mark.skipif(REAL_GCLOUD is None, reason="the real gcloud is not installed")
def test_deploy_sh_needs_nothing_but_gcloud_to_read_the_env_file(tmp_path):
    """No python3 on PATH: deploy.sh runs envfile.py with gcloud's Python and YAML parser (dry run:
    gcloud itself is never called)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "mktemp", "rm", "cat", "basename", "readlink"):
        (bin_dir / tool).symlink_to(shutil.which(tool))
    (bin_dir / "gcloud").symlink_to(REAL_GCLOUD)
    env_file, pwned = hostile_env_file(tmp_path)

    result, _ = run_script(
        "deploy.sh", *DEPLOY_ARGS, "--env-file", str(env_file), "--dry-run", tmp_path=tmp_path, path_dirs=[str(bin_dir)]
    )

    assert result.returncode == 0, result.stderr
    assert json.dumps(f"ops@example.com EOF touch {pwned}-1 ") in result.stdout


def test_envfile_without_any_yaml_parser_says_what_it_needs(tmp_path):
    env_file, _ = hostile_env_file(tmp_path)
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    result = run_envfile([sys.executable, "-S"], env_file, [str(empty_bin)])
    assert result.returncode == 2
    assert "PyYAML" in result.stderr and "gcloud" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
