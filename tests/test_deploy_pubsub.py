"""deploy/ through Cloud Storage Pub/Sub notifications (issue 13 part 4), and the set-up gaps (part 5).

Same pattern as tests/test_deploy.py, whose helpers are reused: the scripts run for real with the fake
gcloud first on PATH, recording every call, and where the real gcloud is installed each call is also
handed to its parser. What `gcloud storage buckets notifications list` prints is rendered by the
real gcloud's own resource printer (its Python library, offline) from notification configurations,
with the --format the script passed, so the script's matching meets gcloud's real output.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_deploy import FAKE_BIN, REAL_GCLOUD, SA, expected_gen2, normalized, replay_dry_run, run_script

TRIGGERS = ["finalize", "delete", "archive", "metadata"]
# The Pub/Sub notification event types, written out (not read from the scripts).
NOTIFICATION_TYPES = {
    "finalize": "OBJECT_FINALIZE",
    "delete": "OBJECT_DELETE",
    "archive": "OBJECT_ARCHIVE",
    "metadata": "OBJECT_METADATA_UPDATE",
}
BUCKET = ("--project", "acme-prod", "--bucket", "acme-uploads")
PUBSUB = ("--via", "pubsub")
ALL_THERE = "bucket,function,topic"  # FAKE_GCLOUD_EXISTING for a teardown finding everything deployed
needs_real_gcloud = pytest.mark.skipif(REAL_GCLOUD is None, reason="the real gcloud is not installed")


def topic_id(trigger: str) -> str:
    return f"storage-notifier-{trigger}"


def topic_path(trigger: str) -> str:
    return f"projects/acme-prod/topics/{topic_id(trigger)}"


def argvs(calls: list[dict]) -> list[list[str]]:
    return [c["argv"] for c in calls]


def calls_of(calls: list[dict], *prefix: str) -> list[list[str]]:
    return [c["argv"] for c in calls if c["argv"][: len(prefix)] == list(prefix)]


def flag(argv: list[str], name: str) -> str | None:
    return next((a.split("=", 1)[1] for a in argv if a.startswith(f"{name}=")), None)


def expected_pubsub_gen2(trigger: str) -> list[str]:
    """Today's 2nd-gen deploy with --trigger-topic in place of the Eventarc storage filters."""
    argv = [a for a in expected_gen2(trigger) if not a.startswith(("--trigger-event-filters=", "--trigger-location="))]
    at = argv.index(f"--trigger-service-account={SA}")
    return [*argv[:at], f"--trigger-topic={topic_id(trigger)}", *argv[at:]]


def expected_notification(trigger: str, prefix: str | None) -> list[str]:
    return [
        "storage", "buckets", "notifications", "create", "gs://acme-uploads", f"--topic={topic_path(trigger)}",
        f"--event-types={NOTIFICATION_TYPES[trigger]}", *([f"--object-prefix={prefix}"] if prefix else []),
        "--payload-format=json", "--project=acme-prod",
    ]  # fmt: skip


# What gcloud prints for `storage buckets notifications list`: the records of
# lib/surface/storage/buckets/notifications/list.py, through gcloud's resource printer and --format.
_RENDER = """
import json, sys
from googlecloudsdk.core.resource import resource_printer, resource_projector
from googlecloudsdk.generated_clients.apis.storage.v1 import storage_v1_messages as messages
bucket, configs, fmt = json.load(sys.stdin)
records = [{"Bucket URL": "gs://" + bucket,
            "Notification Configuration": resource_projector.MakeSerializable(messages.Notification(**c))}
           for c in configs]
resource_printer.Print(records, fmt, out=sys.stdout)
"""


def listed(configs: list[dict], fmt: str, tmp_path: Path, bucket: str = "acme-uploads") -> str:
    sdk = Path(os.path.realpath(REAL_GCLOUD)).parent.parent
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(sdk / "lib"), str(sdk / "lib" / "third_party")]),
        "CLOUDSDK_CONFIG": str(tmp_path / "render-config"),
    }
    result = subprocess.run(
        [sys.executable, "-c", _RENDER],
        input=json.dumps([bucket, configs, fmt]),
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return result.stdout


def stored(create_argv: list[str], config_id: str) -> dict:
    """The configuration Cloud Storage keeps for a create call (its topic in the API's own form)."""
    config = {
        "id": config_id,
        "topic": "//pubsub.googleapis.com/" + flag(create_argv, "--topic"),
        "event_types": flag(create_argv, "--event-types").split(","),
        "payload_format": "JSON_API_V1",
    }
    if (prefix := flag(create_argv, "--object-prefix")) is not None:
        config["object_name_prefix"] = prefix
    return config


def list_format(calls: list[dict]) -> str:
    (listing,) = {flag(argv, "--format") for argv in calls_of(calls, "storage", "buckets", "notifications", "list")}
    return listing


# --- Part 4: deploy.sh --via pubsub --------------------------------------------------------------


@pytest.mark.parametrize("trigger", TRIGGERS)
def test_pubsub_deploy_makes_topic_function_and_notification(tmp_path, trigger):
    result, calls = run_script("deploy.sh", trigger, *BUCKET, *PUBSUB, "--prefix", "reports/", tmp_path=tmp_path)

    assert result.returncode == 0, result.stderr
    commands = [argv[:4] for argv in argvs(calls)]
    assert commands == [
        ["pubsub", "topics", "describe", topic_id(trigger)],
        ["pubsub", "topics", "create", topic_id(trigger)],
        ["functions", "deploy", topic_id(trigger), "--gen2"],
        ["functions", "add-invoker-policy-binding", topic_id(trigger), "--project=acme-prod"],
        ["storage", "buckets", "notifications", "list"],
        ["storage", "buckets", "notifications", "create"],
    ], "the notification comes last, once the function is there to receive what it publishes"
    _, topic_create, deploy, invoker, listing, create = argvs(calls)
    assert topic_create == ["pubsub", "topics", "create", topic_id(trigger), "--project=acme-prod"]
    assert normalized(deploy) == expected_pubsub_gen2(trigger)
    assert f"--member=serviceAccount:{SA}" in invoker
    assert listing[4:6] == ["gs://acme-uploads", "--project=acme-prod"]
    assert create == expected_notification(trigger, "reports/")
    assert "--skip-topic-setup" not in create, "gcloud grants the storage agent publish rights on the topic"
    assert not calls_of(calls, "storage", "buckets", "describe"), "no bucket location: topics are global"


def test_pubsub_deploy_without_prefix_notifies_for_the_whole_bucket(tmp_path):
    result, calls = run_script("deploy.sh", "delete", *BUCKET, *PUBSUB, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    (create,) = calls_of(calls, "storage", "buckets", "notifications", "create")
    assert create == expected_notification("delete", None)


def test_pubsub_deploy_on_gen1_uses_the_topic_trigger_without_eventarc_flags(tmp_path):
    result, calls = run_script("deploy.sh", "archive", "--gen1", *BUCKET, *PUBSUB, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    (deploy,) = calls_of(calls, "functions", "deploy")
    assert "--no-gen2" in deploy
    assert flag(deploy, "--trigger-topic") == topic_id("archive")
    assert not [a for a in deploy if a.startswith(("--trigger-resource", "--trigger-event", "--trigger-service"))]
    assert not calls_of(calls, "functions", "add-invoker-policy-binding")
    assert calls_of(calls, "storage", "buckets", "notifications", "create")


def test_pubsub_deploy_of_all_makes_four_topics_and_notifications(tmp_path):
    result, calls = run_script("deploy.sh", "all", *BUCKET, *PUBSUB, "--prefix", "in/", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    creates = calls_of(calls, "storage", "buckets", "notifications", "create")
    assert creates == [expected_notification(t, "in/") for t in TRIGGERS]
    deploys = calls_of(calls, "functions", "deploy")
    assert [flag(d, "--trigger-topic") for d in deploys] == [topic_id(t) for t in TRIGGERS]
    assert len({flag(d, "--source") for d in deploys} | {flag(d, "--entry-point") for d in deploys}) == 2


@pytest.mark.parametrize(
    ("trigger", "prefix"), [("finalize", "reports/"), ("all", "incoming/2026 Q4/it's 'quoted' \\ $(x)")]
)
def test_pubsub_dry_run_prints_a_script_making_the_same_calls(tmp_path, trigger, prefix):
    args = (trigger, *BUCKET, *PUBSUB, "--prefix", prefix)
    dry, dry_calls = run_script("deploy.sh", *args, "--dry-run", tmp_path=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert dry_calls == [], "a dry run runs nothing"
    lines = dry.stdout.splitlines()
    checks = [line for line in lines if "gcloud storage buckets notifications list gs://acme-uploads" in line]
    assert len(checks) == (4 if trigger == "all" else 1)
    assert all("|| gcloud storage buckets notifications create gs://acme-uploads" in line for line in checks)
    assert any("gcloud pubsub topics create storage-notifier-finalize" in line for line in lines)

    replayed, replay_calls = replay_dry_run(dry.stdout, tmp_path=tmp_path)
    _, real_calls = run_script("deploy.sh", *args, tmp_path=tmp_path)
    assert replayed.returncode == 0, replayed.stderr
    assert [normalized(c["argv"]) for c in replay_calls] == [normalized(c["argv"]) for c in real_calls]
    assert flag(calls_of(real_calls, "storage", "buckets", "notifications", "create")[0], "--object-prefix") == prefix


@needs_real_gcloud
@pytest.mark.parametrize(
    "prefix", ["reports/", " leading space, trailing tab\t", "Latin-1 ünïcode/ 'quotes'", "wider: 報告/€", None]
)
def test_a_second_deploy_finds_its_notification_and_creates_nothing(tmp_path, prefix):
    args = ("finalize", *BUCKET, *PUBSUB, *(("--prefix", prefix) if prefix else ()))
    first, first_calls = run_script("deploy.sh", *args, tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr
    (create,) = calls_of(first_calls, "storage", "buckets", "notifications", "create")
    answer = listed([stored(create, "17")], list_format(first_calls), tmp_path)

    again, again_calls = run_script(
        "deploy.sh", *args, tmp_path=tmp_path, FAKE_GCLOUD_EXISTING="topic", FAKE_GCLOUD_NOTIFICATIONS=answer
    )
    assert again.returncode == 0, again.stderr
    assert not [argv for argv in argvs(again_calls) if "create" in argv], "nothing made twice"
    assert calls_of(again_calls, "functions", "deploy"), "the function itself is deployed again"

    # The printed dry run carries the same check, and skips too.
    dry, _ = run_script("deploy.sh", *args, "--dry-run", tmp_path=tmp_path)
    _, replay_calls = replay_dry_run(
        dry.stdout, tmp_path=tmp_path, FAKE_GCLOUD_EXISTING="topic", FAKE_GCLOUD_NOTIFICATIONS=answer
    )
    assert not [argv for argv in argvs(replay_calls) if "create" in argv]


@needs_real_gcloud
def test_a_notification_for_another_prefix_or_event_is_not_taken_for_ours(tmp_path):
    args = ("finalize", *BUCKET, *PUBSUB, "--prefix", "reports/")
    _, first_calls = run_script("deploy.sh", *args, tmp_path=tmp_path)
    (create,) = calls_of(first_calls, "storage", "buckets", "notifications", "create")
    ours = stored(create, "1")
    others = [
        {**ours, "id": "2", "object_name_prefix": "reports/old/"},
        {**ours, "id": "3", "event_types": ["OBJECT_DELETE"]},
        {**ours, "id": "4", "topic": "//pubsub.googleapis.com/projects/other-proj/topics/storage-notifier-finalize"},
        {key: value for key, value in ours.items() if key != "object_name_prefix"} | {"id": "5"},
    ]
    answer = listed(others, list_format(first_calls), tmp_path)

    result, calls = run_script("deploy.sh", *args, tmp_path=tmp_path, FAKE_GCLOUD_NOTIFICATIONS=answer)
    assert result.returncode == 0, result.stderr
    assert calls_of(calls, "storage", "buckets", "notifications", "create") == [create]
    assert "3 other notification configuration(s) on gs://acme-uploads publish to" in result.stderr


@pytest.mark.parametrize("script", ["deploy.sh"])  # teardown does the rest: test_teardown_any_other_failure_...
def test_a_failed_listing_stops_before_anything_is_made_or_deleted(tmp_path, script):
    # gcloud refusing the listing (no permission, say): nothing may be created blindly.
    bin_dir = tmp_path / "failing-list"
    bin_dir.mkdir()
    wrapper = bin_dir / "gcloud"
    wrapper.write_text(
        "#!/usr/bin/env bash\n"
        'if [[ "$*" == "storage buckets notifications list"* ]]; then echo "ERROR: 403 Forbidden" >&2; exit 1; fi\n'
        f'exec {FAKE_BIN / "gcloud"} "$@"\n'
    )
    wrapper.chmod(0o755)
    system_path = [p for p in os.environ["PATH"].split(os.pathsep) if p]
    args = ("finalize", *BUCKET, *PUBSUB)
    result, calls = run_script(script, *args, tmp_path=tmp_path, path_dirs=[str(bin_dir), *system_path])
    assert result.returncode == 1
    assert "ERROR: 403 Forbidden" in result.stderr
    assert not calls_of(calls, "storage", "buckets", "notifications", "create")
    assert not [argv for argv in argvs(calls) if "delete" in argv]


BAD_PUBSUB_INPUT = [
    pytest.param(["--via", "sqs"], "--via: expected eventarc or pubsub, got 'sqs'", id="via"),
    pytest.param(["--via"], "--via needs a value", id="via-empty"),
    pytest.param(["--prefix", "reports/"], "Eventarc storage triggers filter on the bucket only", id="no-via"),
    pytest.param(["--via", "eventarc", "--prefix", "a/"], "use --via pubsub", id="eventarc-prefix"),
    pytest.param([*PUBSUB, "--prefix", ""], "--prefix needs a value", id="prefix-empty"),
    pytest.param([*PUBSUB, "--prefix", "a\nb"], "--prefix: an object name cannot hold a carriage return", id="lf"),
    pytest.param([*PUBSUB, "--prefix", "a\rb"], "--prefix: an object name cannot hold a carriage return", id="cr"),
    pytest.param([*PUBSUB, "--prefix", "é" * 513], "--prefix: at most 1024 bytes, got 1026", id="long"),
    pytest.param([*PUBSUB, "--prefix", "gs://acme-uploads/in/"], "--prefix: an object name prefix such as", id="url"),
    pytest.param([*PUBSUB, "--prefix", "caf\udce9/"], "--prefix: object names are UTF-8", id="not-utf8"),
    pytest.param([*PUBSUB, "--name-prefix", "google-mail"], "--name-prefix: Pub/Sub topic names", id="goog-topic"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "message"), BAD_PUBSUB_INPUT)
def test_bad_via_or_prefix_is_a_usage_error_naming_the_option(tmp_path, args, message):
    result, calls = run_script("deploy.sh", "finalize", *BUCKET, *args, tmp_path=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert calls == []


def test_a_prefix_of_exactly_1024_bytes_is_accepted(tmp_path):
    result, calls = run_script("deploy.sh", "finalize", *BUCKET, *PUBSUB, "--prefix", "é" * 512, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    (create,) = calls_of(calls, "storage", "buckets", "notifications", "create")
    assert flag(create, "--object-prefix") == "é" * 512


# --- Part 4: teardown.sh --via pubsub -----------------------------------------------------------


@needs_real_gcloud
def test_pubsub_teardown_removes_the_topics_notifications_then_function_then_topic(tmp_path):
    args = ("finalize", "--project", "acme-prod", *PUBSUB, "--bucket", "acme-uploads")
    first, first_calls = run_script("teardown.sh", *args, tmp_path=tmp_path, FAKE_GCLOUD_EXISTING=ALL_THERE)
    assert first.returncode == 0, first.stderr
    ours = f"//pubsub.googleapis.com/{topic_path('finalize')}"
    configs = [
        {"id": "3", "topic": ours, "event_types": ["OBJECT_FINALIZE"], "object_name_prefix": "reports/"},
        {"id": "4", "topic": "//pubsub.googleapis.com/projects/acme-prod/topics/someone-else"},
        {"id": "12", "topic": ours, "event_types": ["OBJECT_FINALIZE"], "object_name_prefix": "old/"},
    ]
    answer = listed(configs, list_format(first_calls), tmp_path)

    result, calls = run_script("teardown.sh", *args, tmp_path=tmp_path, FAKE_GCLOUD_NOTIFICATIONS=answer,
                               FAKE_GCLOUD_EXISTING=ALL_THERE)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [argv[:5] for argv in argvs(calls)] == [
        ["storage", "buckets", "describe", "gs://acme-uploads", "--project=acme-prod"],
        ["storage", "buckets", "notifications", "list", "gs://acme-uploads"],
        ["storage", "buckets", "notifications", "delete", "projects/_/buckets/acme-uploads/notificationConfigs/3"],
        ["storage", "buckets", "notifications", "delete", "projects/_/buckets/acme-uploads/notificationConfigs/12"],
        ["functions", "describe", "storage-notifier-finalize", "--gen2", "--project=acme-prod"],
        ["functions", "delete", "storage-notifier-finalize", "--gen2", "--project=acme-prod"],
        ["pubsub", "topics", "describe", "storage-notifier-finalize", "--project=acme-prod"],
        ["pubsub", "topics", "delete", "storage-notifier-finalize", "--project=acme-prod"],
    ]

    dry, dry_calls = run_script("teardown.sh", *args, "--dry-run", tmp_path=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert dry_calls == []
    _, replay_calls = replay_dry_run(dry.stdout, tmp_path=tmp_path, FAKE_GCLOUD_NOTIFICATIONS=answer,
                                     FAKE_GCLOUD_EXISTING=ALL_THERE)  # fmt: skip
    assert argvs(replay_calls) == argvs(calls)


def test_pubsub_teardown_of_all_deletes_four_topics(tmp_path):
    result, calls = run_script("teardown.sh", "all", "--project", "acme-prod", *PUBSUB, tmp_path=tmp_path,
                               NOTIFIER_BUCKET="acme-uploads", FAKE_GCLOUD_EXISTING=ALL_THERE)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert [argv[3] for argv in calls_of(calls, "pubsub", "topics", "delete")] == [topic_id(t) for t in TRIGGERS]
    assert len(calls_of(calls, "storage", "buckets", "notifications", "list")) == 4


# --- Teardown again after a partial one: what is gone is skipped -----------------------------------

TEARDOWN = ("finalize", "--project", "acme-prod", *PUBSUB, "--bucket", "acme-uploads")
# What `notifications list --format=value(id,topic)` prints for one configuration of ours (tab-separated).
OUR_NOTIFICATION = f"7\t//pubsub.googleapis.com/{topic_path('finalize')}\n"
GONE_MESSAGES = {
    "bucket": "bucket gs://acme-uploads not found",
    "function": "already gone: function storage-notifier-finalize (project acme-prod, region us-central1)",
    "topic": "already gone: topic storage-notifier-finalize (project acme-prod)",
}
DELETES = {
    "bucket": ["storage", "buckets", "notifications", "delete",
               "projects/_/buckets/acme-uploads/notificationConfigs/7", "--project=acme-prod"],
    "function": ["functions", "delete", "storage-notifier-finalize", "--gen2", "--project=acme-prod",
                 "--region=us-central1", "--quiet"],
    "topic": ["pubsub", "topics", "delete", "storage-notifier-finalize", "--project=acme-prod", "--quiet"],
}  # fmt: skip
KEPT_TOPIC = "topic storage-notifier-finalize kept"


def deletes(calls: list[dict]) -> list[list[str]]:
    return [argv for argv in argvs(calls) if "delete" in argv]


def teardown_and_replay(tmp_path, *args, **env):
    """teardown.sh, then its --dry-run script against the same fake cloud: both must agree."""
    result, calls = run_script("teardown.sh", *args, tmp_path=tmp_path, **env)
    dry, dry_calls = run_script("teardown.sh", *args, "--dry-run", tmp_path=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert dry_calls == []
    replayed, replay_calls = replay_dry_run(dry.stdout, tmp_path=tmp_path, **env)
    assert argvs(replay_calls) == argvs(calls)
    assert replayed.returncode == result.returncode, (replayed.stderr, result.stderr)
    if result.returncode:  # the same summary ("teardown incomplete: not removed: ...")
        assert replayed.stderr.splitlines()[-1] == result.stderr.splitlines()[-1], (replayed.stderr, result.stderr)
    return result, calls, replayed


@pytest.mark.parametrize("gone", [(), ("function",), ("topic",), ("bucket", "function", "topic")])
def test_teardown_deletes_what_is_there_and_skips_what_is_gone(tmp_path, gone):
    there = [kind for kind in ("bucket", "function", "topic") if kind not in gone]
    env = {"FAKE_GCLOUD_EXISTING": ",".join(there), "FAKE_GCLOUD_NOTIFICATIONS": OUR_NOTIFICATION}
    result, calls, replayed = teardown_and_replay(tmp_path, *TEARDOWN, **env)

    assert result.returncode == 0, result.stderr
    assert deletes(calls) == [DELETES[kind] for kind in there]
    for kind, message in GONE_MESSAGES.items():
        assert (message in result.stderr) == (kind in gone), (kind, result.stderr)
        assert (message in replayed.stderr) == (kind in gone), (kind, replayed.stderr)
    if "bucket" in gone:
        assert not calls_of(calls, "storage", "buckets", "notifications"), "no bucket, no configurations to list"


def test_teardown_twice_in_a_row_succeeds_and_the_second_deletes_nothing(tmp_path):
    first, first_calls = run_script("teardown.sh", "all", *TEARDOWN[1:], tmp_path=tmp_path,
                                    FAKE_GCLOUD_EXISTING=ALL_THERE)  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert len(deletes(first_calls)) == 8
    second, second_calls = run_script("teardown.sh", "all", *TEARDOWN[1:], tmp_path=tmp_path)
    assert second.returncode == 0, second.stderr
    assert deletes(second_calls) == []
    assert second.stderr.count("already gone: ") == 8
    assert second.stderr.count("bucket gs://acme-uploads not found") == 4


def test_eventarc_teardown_of_a_function_already_gone_succeeds(tmp_path):
    result, calls = run_script("teardown.sh", "finalize", "--project", "acme-prod", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    assert argvs(calls) == [["functions", "describe", "storage-notifier-finalize", "--gen2", "--project=acme-prod",
                             "--region=us-central1"]]  # fmt: skip
    assert GONE_MESSAGES["function"] in result.stderr, "a wrong --project or --region shows here"


# Denied command → the deletes still tried (a denied delete is tried too); "bucket" stands for the
# notification configuration. Notifications not (all) removed: the topic they publish to is kept, so a
# later deploy that recreates the topic does not revive configurations nobody knows about.
AFTER_A_REFUSAL = {
    "storage buckets describe": ["function"],
    "storage buckets notifications list": ["function"],
    "storage buckets notifications delete": ["bucket", "function"],
    "functions describe": ["bucket", "topic"],
    "functions delete": ["bucket", "function", "topic"],
    "pubsub topics delete": ["bucket", "function", "topic"],
}


@pytest.mark.parametrize("denied", AFTER_A_REFUSAL)
def test_teardown_any_other_failure_is_reported_after_doing_the_rest(tmp_path, denied):
    result, calls, replayed = teardown_and_replay(tmp_path, *TEARDOWN, FAKE_GCLOUD_EXISTING=ALL_THERE,
                                                  FAKE_GCLOUD_NOTIFICATIONS=OUR_NOTIFICATION,
                                                  FAKE_GCLOUD_DENIED=denied)  # fmt: skip
    for run in (result, replayed):
        assert run.returncode == 1
        assert "PERMISSION_DENIED" in run.stderr
        assert "already gone" not in run.stderr, "a refusal is not taken for absence"
        assert "teardown incomplete" in run.stderr.splitlines()[-1]
        assert (KEPT_TOPIC in run.stderr) == (denied.startswith("storage")), run.stderr
    assert deletes(calls) == [DELETES[kind] for kind in AFTER_A_REFUSAL[denied]]


def test_teardown_keeps_the_topic_when_the_notifications_could_not_be_listed(tmp_path):
    result, calls, replayed = teardown_and_replay(tmp_path, *TEARDOWN, FAKE_GCLOUD_EXISTING=ALL_THERE,
                                                  FAKE_GCLOUD_NOTIFICATIONS=OUR_NOTIFICATION,
                                                  FAKE_GCLOUD_DENIED="storage buckets notifications list")  # fmt: skip
    assert deletes(calls) == [DELETES["function"]]
    for run in (result, replayed):
        assert run.returncode == 1
        assert f"{KEPT_TOPIC}: notifications from gs://acme-uploads may still point at it" in run.stderr
        summary = run.stderr.splitlines()[-1]
        assert "notifications from gs://acme-uploads to storage-notifier-finalize" in summary
        assert "topic storage-notifier-finalize" in summary


def test_a_bucket_not_found_keeps_the_topic_and_fails(tmp_path):
    # A typo in --bucket: the real bucket's configurations may still publish to the topic.
    result, calls, replayed = teardown_and_replay(tmp_path, *TEARDOWN, FAKE_GCLOUD_EXISTING="function,topic")
    assert deletes(calls) == [DELETES["function"]]
    for run in (result, replayed):
        assert run.returncode == 1, run.stderr
        assert (f"bucket gs://acme-uploads not found: {KEPT_TOPIC} (its notifications, if any, live on another "
                "bucket?)") in run.stderr  # fmt: skip
        assert "already gone: notifications" not in run.stderr
        assert "topic storage-notifier-finalize" in run.stderr.splitlines()[-1]


# Refusals whose text holds "404" or "not found" (a project named shop-404, an auth error), as gcloud 528
# prints them (the first two as it formatted canned 403 answers): none is absence.
REFUSALS = {
    "storage buckets describe": "ERROR: (gcloud.storage.buckets.describe) [None] does not have permission to access"
    " b instance [acme-uploads] (or it may not exist): dev@shop-404.iam.gserviceaccount.com does not have storage."
    "buckets.get access to the Google Cloud Storage bucket. Permission 'storage.buckets.get' denied on resource (or"
    " it may not exist).",
    "functions describe": "ERROR: (gcloud.functions.describe) ResponseError: status=[403], code=[Ok], message=["
    "Permission 'cloudfunctions.functions.get' denied on resource 'projects/shop-404/locations/us-central1/"
    "functions/storage-notifier-finalize' (or resource may not exist).]",
    "pubsub topics describe": "ERROR: (gcloud.pubsub.topics.describe) There was a problem refreshing your current "
    "auth tokens: refresh token not found. Please run:\n\n  $ gcloud auth login",
}


@pytest.mark.parametrize("denied", REFUSALS)
def test_a_refusal_mentioning_404_or_not_found_is_not_taken_for_absence(tmp_path, denied):
    args = ("finalize", "--project", "shop-404", *PUBSUB, "--bucket", "acme-uploads")
    result, _, replayed = teardown_and_replay(tmp_path, *args, FAKE_GCLOUD_EXISTING=ALL_THERE,
                                              FAKE_GCLOUD_DENIED=denied, FAKE_GCLOUD_DENIED_ERROR=REFUSALS[denied])  # fmt: skip
    for run in (result, replayed):
        assert run.returncode == 1, run.stderr
        assert "already gone" not in run.stderr
        assert " not found: topic" not in run.stderr
        assert "teardown incomplete" in run.stderr.splitlines()[-1]


def test_a_project_named_like_a_status_code_still_skips_what_is_gone(tmp_path):
    args = ("finalize", "--project", "shop-403", *PUBSUB, "--bucket", "acme-uploads")
    result, calls, _ = teardown_and_replay(tmp_path, *args)
    assert result.returncode == 0, result.stderr
    assert "already gone: function storage-notifier-finalize (project shop-403, region us-central1)" in result.stderr
    assert deletes(calls) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([*PUBSUB], "no bucket: pass --bucket NAME"),
        (["--bucket", "acme-uploads"], "--bucket: only --via pubsub"),
        (["--via", "kafka"], "--via: expected eventarc or pubsub"),
        ([*PUBSUB, "--bucket", "Bad_Bucket"], "--bucket: 'Bad_Bucket' is not a valid"),
    ],
)
def test_teardown_bad_input_runs_nothing(tmp_path, args, message):
    result, calls = run_script("teardown.sh", "finalize", "--project", "acme-prod", *args, tmp_path=tmp_path)
    assert result.returncode == 2
    assert message in result.stderr
    assert calls == []


# --- Every command, through the real gcloud's parser ----------------------------------------------


@needs_real_gcloud
def test_every_pubsub_command_line_parses_with_the_real_gcloud(tmp_path):
    runs = [
        ("deploy.sh", ["metadata", *BUCKET, *PUBSUB, "--prefix", "in/ x/"], {}),
        ("deploy.sh", ["archive", "--gen1", *BUCKET, *PUBSUB, "--no-retry"], {}),
        (
            "setup.sh",
            ["--project", "acme-prod", "--keep-secret", "--bucket", "acme-uploads"],
            {"FAKE_GCLOUD_EXISTING": "service-account,secret"},
        ),
    ]
    seen = []
    for script, args, env in runs:
        result, calls = run_script(script, *args, tmp_path=tmp_path, parse_check=True, **env)
        assert result.returncode == 0, result.stderr
        seen += calls
    # Teardown needs a listed configuration to delete: rendered with the format it asks for.
    teardown = ("teardown.sh", "metadata", "--project", "acme-prod", *PUBSUB, "--bucket", "acme-uploads")
    _, first = run_script(*teardown, tmp_path=tmp_path, FAKE_GCLOUD_EXISTING=ALL_THERE)
    answer = listed([{"id": "9", "topic": f"//pubsub.googleapis.com/{topic_path('metadata')}"}], list_format(first),
                    tmp_path)  # fmt: skip
    result, calls = run_script(*teardown, tmp_path=tmp_path, parse_check=True, FAKE_GCLOUD_NOTIFICATIONS=answer,
                               FAKE_GCLOUD_EXISTING=ALL_THERE)  # fmt: skip
    assert result.returncode == 0, result.stderr
    seen += calls
    for existing in (ALL_THERE, ""):  # deletes, then describes that find nothing
        result, calls = run_script("teardown.sh", "delete", "--gen1", "--project", "acme-prod", tmp_path=tmp_path,
                                   parse_check=True, FAKE_GCLOUD_EXISTING=existing)  # fmt: skip
        assert result.returncode == 0, result.stderr
        seen += calls

    commands = {tuple(w for w in c["argv"] if not w.startswith("-"))[:4] for c in seen}
    for needed in [
        ("pubsub", "topics", "describe"), ("pubsub", "topics", "create"), ("pubsub", "topics", "delete"),
        ("storage", "buckets", "notifications", "list"), ("storage", "buckets", "notifications", "create"),
        ("storage", "buckets", "notifications", "delete"), ("storage", "buckets", "add-iam-policy-binding"),
        ("iam", "service-accounts", "add-iam-policy-binding"), ("storage", "buckets", "describe"),
        ("functions", "describe"), ("functions", "delete"),
    ]:  # fmt: skip
        assert any(command[: len(needed)] == needed for command in commands), needed
    assert any(flag(c["argv"], "--trigger-topic") for c in seen)
    for call in seen:
        verdict = (call["argv"], call["real_exit"], call["real_stderr"])
        assert call["real_exit"] == 1, verdict
        assert "You do not currently have an active account selected" in call["real_stderr"], verdict


# --- Part 5: setup.sh --bucket -------------------------------------------------------------------


def test_setup_bucket_grants_what_signed_links_and_attachments_need(tmp_path):
    result, calls = run_script(
        "setup.sh", "--project", "acme-prod", "--keep-secret", "--bucket", "gs://acme-uploads", "--bucket",
        "acme-reports", tmp_path=tmp_path, FAKE_GCLOUD_EXISTING="service-account,secret",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    member = f"--member=serviceAccount:{SA}"
    viewers = [argv for argv in argvs(calls) if "--role=roles/storage.objectViewer" in argv]
    assert viewers == [
        ["storage", "buckets", "add-iam-policy-binding", f"gs://{bucket}", member, "--role=roles/storage.objectViewer",
         "--condition=None", "--quiet"]
        for bucket in ("acme-uploads", "acme-reports")
    ]  # fmt: skip
    (signer,) = [argv for argv in argvs(calls) if "--role=roles/iam.serviceAccountTokenCreator" in argv]
    assert signer == [
        "iam", "service-accounts", "add-iam-policy-binding", SA, "--project=acme-prod", member,
        "--role=roles/iam.serviceAccountTokenCreator", "--condition=None", "--quiet",
    ]  # fmt: skip


def test_setup_grants_a_bucket_given_twice_once(tmp_path):
    result, calls = run_script(
        "setup.sh", "--project", "acme-prod", "--keep-secret", "--bucket", "acme-b", "--bucket", "acme-a",
        "--bucket", "gs://acme-b/", "--bucket", "acme-a", tmp_path=tmp_path, FAKE_GCLOUD_EXISTING="service-account,secret",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    viewers = [argv[3] for argv in argvs(calls) if "--role=roles/storage.objectViewer" in argv]
    assert viewers == ["gs://acme-b", "gs://acme-a"], "each bucket once, in the order first given"


def test_setup_without_bucket_grants_no_read_or_signing_role(tmp_path):
    result, calls = run_script("setup.sh", "--project", "acme-prod", "--keep-secret", tmp_path=tmp_path,
                               FAKE_GCLOUD_EXISTING="service-account,secret", NOTIFIER_BUCKET="acme-uploads")  # fmt: skip
    assert result.returncode == 0, result.stderr
    roles = {flag(argv, "--role") for argv in argvs(calls)}
    assert "roles/storage.objectViewer" not in roles
    assert "roles/iam.serviceAccountTokenCreator" not in roles


def test_setup_bucket_dry_run_prints_the_grants_and_a_bad_bucket_is_refused(tmp_path):
    dry, calls = run_script("setup.sh", "--project", "acme-prod", "--keep-secret", "--bucket", "acme-uploads",
                            "--dry-run", tmp_path=tmp_path)  # fmt: skip
    assert dry.returncode == 0, dry.stderr
    assert calls == []
    assert "gcloud storage buckets add-iam-policy-binding gs://acme-uploads" in dry.stdout
    assert "--role=roles/iam.serviceAccountTokenCreator" in dry.stdout

    bad, calls = run_script("setup.sh", "--project", "acme-prod", "--bucket", "Bad_Bucket", tmp_path=tmp_path)
    assert bad.returncode == 2
    assert "--bucket: 'Bad_Bucket' is not a valid" in bad.stderr
    assert calls == []


# --- Part 5: the project from gcloud's config ----------------------------------------------------


@pytest.mark.parametrize(
    ("script", "args"),
    [
        ("logs.sh", ["finalize"]),
        ("deploy.sh", ["finalize", "--bucket", "acme-uploads", *PUBSUB]),
        ("teardown.sh", ["finalize"]),
    ],
)
def test_the_project_falls_back_to_the_gcloud_config(tmp_path, script, args):
    result, calls = run_script(script, *args, tmp_path=tmp_path, FAKE_GCLOUD_CONFIG_PROJECT="acme-dev")
    assert result.returncode == 0, result.stderr
    assert calls
    assert all("--project=acme-dev" in argv for argv in argvs(calls)), argvs(calls)
    assert "project acme-dev (from gcloud config)" in result.stderr


def test_an_explicit_project_wins_over_the_gcloud_config(tmp_path):
    result, calls = run_script("logs.sh", "finalize", tmp_path=tmp_path, GOOGLE_CLOUD_PROJECT="acme-prod",
                               FAKE_GCLOUD_CONFIG_PROJECT="acme-dev")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "--project=acme-prod" in calls[0]["argv"]
    assert "gcloud config" not in result.stderr


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (None, "no project: pass --project ID, set GOOGLE_CLOUD_PROJECT or run 'gcloud config set project ID'"),
        ("Not_A_Project", "'Not_A_Project' (from gcloud config) is not a project ID"),
    ],
)
def test_no_usable_project_anywhere_is_a_usage_error(tmp_path, config, message):
    env = {"FAKE_GCLOUD_CONFIG_PROJECT": config} if config else {}
    result, calls = run_script("logs.sh", "finalize", tmp_path=tmp_path, **env)
    assert result.returncode == 2
    assert message in result.stderr
    assert calls == []
