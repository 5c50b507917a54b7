"""deploy/alerts.sh (and setup.sh --alert-email) run for real against the fake gcloud.

A thin wrapper in front of tests/fake_gcloud answers the few monitoring calls whose output the script
reads (the channel list and create, the policy list, a missing metric) and keeps each rendered file
the script hands to gcloud; the fake records argv and, with parse_check, has the real gcloud parse it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_deploy import FAKE_BIN, REAL_GCLOUD, replay_dry_run, run_script

CHANNEL = "projects/acme-prod/notificationChannels/777"
METRIC_TYPE = "logging.googleapis.com/user/storage-notifier-outcomes"
WRAPPER = f"""#!{sys.executable}
import json, os, subprocess, sys
argv = sys.argv[1:]
words = [a for a in argv if not a.startswith("-")]
for arg in argv:
    for flag in ("--config-from-file=", "--policy-from-file="):
        if arg.startswith(flag):
            with open(arg[len(flag):], encoding="utf-8") as handle:
                record = {{"argv": argv, "file": handle.read()}}
            with open(os.environ["FAKE_ALERTS_FILES"], "a", encoding="utf-8") as log:
                log.write(json.dumps(record) + "\\n")
fake = subprocess.run([{str(FAKE_BIN / "gcloud")!r}, *argv], stdin=sys.stdin, capture_output=True, text=True)
out = fake.stdout
if words[:3] == ["logging", "metrics", "describe"] and os.environ.get("FAKE_ALERTS_NO_METRIC"):
    print("ERROR: (gcloud.logging.metrics.describe) NOT_FOUND: Metric not found", file=sys.stderr)
    sys.exit(1)
if words[:4] == ["beta", "monitoring", "channels", "list"]:
    out += os.environ.get("FAKE_ALERTS_CHANNEL", "")
if words[:4] == ["beta", "monitoring", "channels", "create"]:
    out += {CHANNEL!r} + "\\n"
if words[:4] == ["alpha", "monitoring", "policies", "list"]:
    policies = json.loads(os.environ.get("FAKE_ALERTS_POLICIES", "{{}}"))  # label value -> policy name
    wanted = next(a for a in argv if a.startswith("--filter=")).split("=", 2)[-1].strip('"')
    out += "".join(name + "\\n" for label, name in policies.items() if wanted in (label, "userLabels.storage_notifier:*"))
sys.stdout.write(out)
sys.stderr.write(fake.stderr)
sys.exit(fake.returncode)
"""


@pytest.fixture
def gcloud_dirs(tmp_path):
    wrapper = tmp_path / "wrapper"
    wrapper.mkdir()
    (wrapper / "gcloud").write_text(WRAPPER)
    (wrapper / "gcloud").chmod(0o755)
    return [str(wrapper), *[p for p in os.environ["PATH"].split(os.pathsep) if p]]


def run_alerts(script, *args, tmp_path, gcloud_dirs, parse_check=False, stdin="", **env):
    files = tmp_path / "rendered.jsonl"
    files.unlink(missing_ok=True)
    result, calls = run_script(script, *args, tmp_path=tmp_path, path_dirs=gcloud_dirs, parse_check=parse_check,
                               stdin=stdin, FAKE_ALERTS_FILES=str(files), **env)  # fmt: skip
    rendered = [json.loads(line) for line in files.read_text().splitlines()] if files.exists() else []
    return result, calls, rendered


def argvs(calls):
    return [c["argv"] for c in calls]


def rendered_for(rendered, *prefix):
    (found,) = [json.loads(r["file"]) for r in rendered if r["argv"][: len(prefix)] == list(prefix)]
    return found


def policy_file(rendered, label):
    (found,) = [
        policy
        for r in rendered
        if r["argv"][:3] == ["alpha", "monitoring", "policies"]
        for policy in [json.loads(r["file"])]
        if policy["userLabels"]["storage_notifier"] == label
    ]
    return found


def no_temp_paths(argv):
    return [
        a.split("=", 1)[0] + "=FILE" if a.startswith(("--config-from-file=", "--policy-from-file=")) else a
        for a in argv
    ]


ARGS = ("--project", "acme-prod", "--alert-email", "ops@example.com")


def test_first_run_creates_the_metric_channel_and_three_policies(tmp_path, gcloud_dirs):
    result, calls, rendered = run_alerts("alerts.sh", *ARGS, "--expect-every", "6", tmp_path=tmp_path,
                                         gcloud_dirs=gcloud_dirs, FAKE_ALERTS_NO_METRIC="1")  # fmt: skip

    assert result.returncode == 0, result.stderr
    made = [no_temp_paths(a) for a in argvs(calls)]
    assert made == [
        ["services", "enable", "monitoring.googleapis.com", "logging.googleapis.com", "--project=acme-prod"],
        ["logging", "metrics", "describe", "storage-notifier-outcomes", "--project=acme-prod"],
        ["logging", "metrics", "create", "storage-notifier-outcomes", "--project=acme-prod", "--config-from-file=FILE"],
        ["beta", "monitoring", "channels", "list", "--project=acme-prod",
         '--filter=type="email" AND labels.email_address="ops@example.com"', "--format=value(name)", "--limit=1"],
        ["beta", "monitoring", "channels", "create", "--project=acme-prod", "--type=email",
         "--display-name=storage-notifier alerts (ops@example.com)", "--channel-labels=email_address=ops@example.com",
         "--format=value(name)"],
        *[
            step
            for label in ("dead-letters", "retrying", "no-sent")
            for step in (
                ["alpha", "monitoring", "policies", "list", "--project=acme-prod",
                 f'--filter=userLabels.storage_notifier="{label}"', "--format=value(name)", "--limit=1"],
                ["alpha", "monitoring", "policies", "create", "--project=acme-prod", "--policy-from-file=FILE",
                 f"--notification-channels={CHANNEL}"],
            )
        ],
    ]  # fmt: skip

    metric = rendered_for(rendered, "logging", "metrics", "create")
    assert metric["filter"] == (
        'jsonPayload.logger="storage-notifier" AND jsonPayload.outcome:* AND '
        '(resource.type="cloud_run_revision" OR resource.type="cloud_function")'
    )
    assert (metric["metricDescriptor"]["metricKind"], metric["metricDescriptor"]["valueType"]) == ("DELTA", "INT64")
    assert {label["key"] for label in metric["metricDescriptor"]["labels"]} == {"outcome", "rule"}
    assert metric["labelExtractors"] == {
        "outcome": "EXTRACT(jsonPayload.outcome)",
        "rule": "EXTRACT(jsonPayload.rule)",
    }

    dead = policy_file(rendered, "dead-letters")
    assert [c["conditionThreshold"]["filter"] for c in dead["conditions"]] == [
        f'metric.type="{METRIC_TYPE}" AND resource.type="{resource}" AND '
        'metric.label.outcome=one_of("dead-lettered","partially-sent","bounced","dropped")'
        for resource in ("cloud_run_revision", "cloud_function")
    ]
    for condition in dead["conditions"]:
        threshold = condition["conditionThreshold"]
        assert threshold["aggregations"][0]["alignmentPeriod"] == "600s"
        assert (threshold["comparison"], threshold["thresholdValue"], threshold["duration"]) == (
            "COMPARISON_GT",
            0,
            "0s",
        )

    retrying = policy_file(rendered, "retrying")
    for condition in retrying["conditions"]:
        threshold = condition["conditionThreshold"]
        assert 'metric.label.outcome="retrying"' in threshold["filter"]
        assert threshold["aggregations"][0]["alignmentPeriod"] == "900s"
        assert (threshold["comparison"], threshold["thresholdValue"]) == ("COMPARISON_GT", 20)

    (absent,) = [c["conditionAbsent"] for c in policy_file(rendered, "no-sent")["conditions"]]
    assert absent["filter"] == (
        f'metric.type="{METRIC_TYPE}" AND resource.type="cloud_run_revision" AND metric.label.outcome="sent"'
    )
    assert absent["duration"] == "21600s"


def test_options_shape_the_rendered_policies(tmp_path, gcloud_dirs):
    result, _, rendered = run_alerts("alerts.sh", *ARGS, "--gen1", "--retrying-threshold", "5", "--expect-every",
                                     "23", tmp_path=tmp_path, gcloud_dirs=gcloud_dirs)  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert {c["conditionThreshold"]["thresholdValue"] for c in policy_file(rendered, "retrying")["conditions"]} == {5}
    (absent,) = [c["conditionAbsent"] for c in policy_file(rendered, "no-sent")["conditions"]]
    assert 'resource.type="cloud_function"' in absent["filter"]
    assert absent["duration"] == f"{23 * 3600}s"


def test_a_second_run_updates_in_place_and_reuses_the_channel(tmp_path, gcloud_dirs):
    existing = {label: f"projects/acme-prod/alertPolicies/{n}" for n, label in enumerate(["dead-letters", "retrying"])}
    result, calls, rendered = run_alerts("alerts.sh", *ARGS, tmp_path=tmp_path, gcloud_dirs=gcloud_dirs,
                                         FAKE_ALERTS_CHANNEL=CHANNEL + "\n",
                                         FAKE_ALERTS_POLICIES=json.dumps(existing))  # fmt: skip

    assert result.returncode == 0, result.stderr
    made = [no_temp_paths(a) for a in argvs(calls)]
    assert not [a for a in made if "create" in a]
    assert ["logging", "metrics", "update", "storage-notifier-outcomes", "--project=acme-prod",
            "--config-from-file=FILE"] in made  # fmt: skip
    for name in existing.values():
        assert ["alpha", "monitoring", "policies", "update", name, "--project=acme-prod", "--policy-from-file=FILE",
                f"--set-notification-channels={CHANNEL}"] in made  # fmt: skip
    assert not [a for a in made if '--filter=userLabels.storage_notifier="no-sent"' in a], "no --expect-every"
    assert "exists: email channel" in result.stderr
    assert len(rendered) == 3


def test_expect_every_zero_removes_only_the_absence_policy(tmp_path, gcloud_dirs):
    existing = {"dead-letters": "projects/acme-prod/alertPolicies/1", "no-sent": "projects/acme-prod/alertPolicies/3"}
    result, calls, _ = run_alerts("alerts.sh", *ARGS, "--expect-every", "0", tmp_path=tmp_path,
                                  gcloud_dirs=gcloud_dirs, FAKE_ALERTS_POLICIES=json.dumps(existing))  # fmt: skip

    assert result.returncode == 0, result.stderr
    deletes = [a for a in argvs(calls) if a[:4] == ["alpha", "monitoring", "policies", "delete"]]
    assert deletes == [
        ["alpha", "monitoring", "policies", "delete", existing["no-sent"], "--project=acme-prod", "--quiet"]
    ]


def test_remove_deletes_the_policies_and_the_metric_and_keeps_the_channel(tmp_path, gcloud_dirs):
    existing = {"dead-letters": "projects/acme-prod/alertPolicies/1", "retrying": "projects/acme-prod/alertPolicies/2"}
    result, calls, _ = run_alerts("alerts.sh", "--remove", "--project", "acme-prod", tmp_path=tmp_path,
                                  gcloud_dirs=gcloud_dirs, FAKE_ALERTS_POLICIES=json.dumps(existing))  # fmt: skip

    assert result.returncode == 0, result.stderr
    assert argvs(calls) == [
        ["alpha", "monitoring", "policies", "list", "--project=acme-prod", "--filter=userLabels.storage_notifier:*",
         "--format=value(name)"],
        *[["alpha", "monitoring", "policies", "delete", name, "--project=acme-prod", "--quiet"]
          for name in existing.values()],
        ["logging", "metrics", "describe", "storage-notifier-outcomes", "--project=acme-prod"],
        ["logging", "metrics", "delete", "storage-notifier-outcomes", "--project=acme-prod", "--quiet"],
    ]  # fmt: skip
    assert "the email channel is kept" in result.stderr


def test_remove_twice_skips_what_is_gone(tmp_path, gcloud_dirs):
    result, calls, _ = run_alerts("alerts.sh", "--remove", "--project", "acme-prod", tmp_path=tmp_path,
                                  gcloud_dirs=gcloud_dirs, FAKE_ALERTS_NO_METRIC="1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not [a for a in argvs(calls) if "delete" in a]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--project", "acme-prod"), "--alert-email: needed"),
        (("--project", "acme-prod", "--alert-email", "ops@"), "--alert-email: 'ops@' is not an email address"),
        (("--project", "acme-prod", "--alert-email", 'a"b@example.com'), "--alert-email: 'a\"b@example.com'"),
        (("--project", "acme-prod", "--alert-email", "a@b.com,c@d.com"), "is not an email address"),
        ((*ARGS, "--expect-every", "24"), "--expect-every: expected whole hours from 1 to 23"),
        ((*ARGS, "--expect-every", "1.5"), "at most 23.5 hours"),
        ((*ARGS, "--expect-every", "-3"), "--expect-every: expected whole hours"),
        ((*ARGS, "--retrying-threshold", "0"), "--retrying-threshold: expected a whole number from 1 to 100000"),
        ((*ARGS, "--retrying-threshold", "many"), "--retrying-threshold: expected a whole number"),
        ((*ARGS, "--retrying-threshold"), "--retrying-threshold needs a value"),
        ((*ARGS, "--channel", "x"), "unknown argument --channel"),
    ],
)
def test_bad_options_are_usage_errors_naming_the_option_and_run_nothing(tmp_path, gcloud_dirs, args, message):
    result, calls, _ = run_alerts("alerts.sh", *args, tmp_path=tmp_path, gcloud_dirs=gcloud_dirs)
    assert result.returncode == 2
    assert message in result.stderr
    assert calls == []


def test_dry_run_prints_a_script_that_makes_the_same_calls(tmp_path, gcloud_dirs):
    args = (*ARGS, "--expect-every", "4", "--retrying-threshold", "7")
    dry, dry_calls, _ = run_alerts("alerts.sh", *args, "--dry-run", tmp_path=tmp_path, gcloud_dirs=gcloud_dirs)
    assert dry.returncode == 0, dry.stderr
    assert dry_calls == []
    assert '"thresholdValue": 7' in dry.stdout and '"duration": "14400s"' in dry.stdout, "the files are shown"

    for env in ({"FAKE_ALERTS_NO_METRIC": "1"}, {"FAKE_ALERTS_CHANNEL": CHANNEL, "FAKE_ALERTS_POLICIES":
                                                json.dumps({"retrying": "projects/acme-prod/alertPolicies/9"})}):  # fmt: skip
        files = tmp_path / "rendered.jsonl"
        files.unlink(missing_ok=True)
        replayed, replay_calls = replay_dry_run(dry.stdout, tmp_path=tmp_path, path_dirs=gcloud_dirs,
                                                FAKE_ALERTS_FILES=str(files), **env)  # fmt: skip
        replay_files = [json.loads(line)["file"] for line in files.read_text().splitlines()]
        real, real_calls, real_files = run_alerts("alerts.sh", *args, tmp_path=tmp_path, gcloud_dirs=gcloud_dirs, **env)

        assert replayed.returncode == real.returncode == 0, replayed.stderr + real.stderr
        assert [no_temp_paths(c["argv"]) for c in replay_calls] == [no_temp_paths(c["argv"]) for c in real_calls]
        assert replay_files == [r["file"] for r in real_files]


def test_setup_with_an_alert_email_sets_up_the_alerts_too(tmp_path, gcloud_dirs):
    result, calls, rendered = run_alerts("setup.sh", *ARGS, "--keep-secret", "--gen1", "--expect-every", "12",
                                         "--retrying-threshold", "50", tmp_path=tmp_path, gcloud_dirs=gcloud_dirs,
                                         FAKE_GCLOUD_EXISTING="service-account,secret")  # fmt: skip

    assert result.returncode == 0, result.stderr
    made = argvs(calls)
    assert made[0][:2] == ["services", "enable"], "setup's own steps first"
    assert ["beta", "monitoring", "channels", "create"] in [a[:4] for a in made]
    assert {c["conditionThreshold"]["thresholdValue"] for c in policy_file(rendered, "retrying")["conditions"]} == {50}
    (absent,) = [c["conditionAbsent"] for c in policy_file(rendered, "no-sent")["conditions"]]
    assert (absent["duration"], 'resource.type="cloud_function"' in absent["filter"]) == ("43200s", True)


def test_setup_without_an_alert_email_makes_no_alerts(tmp_path, gcloud_dirs):
    result, calls, _ = run_alerts("setup.sh", "--project", "acme-prod", "--keep-secret", tmp_path=tmp_path,
                                  gcloud_dirs=gcloud_dirs, FAKE_GCLOUD_EXISTING="service-account,secret")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not [a for a in argvs(calls) if "monitoring" in a or a[:2] == ["logging", "metrics"]]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--expect-every", "6"), "--expect-every: needs --alert-email ADDR"),
        (("--retrying-threshold", "6"), "--retrying-threshold: needs --alert-email ADDR"),
        (("--alert-email", "not-an-address"), "--alert-email: 'not-an-address' is not an email address"),
        (("--alert-email", "ops@example.com", "--expect-every", "48"), "--expect-every: expected whole hours"),
    ],
)
def test_setup_refuses_bad_alert_options_before_changing_anything(tmp_path, gcloud_dirs, args, message):
    result, calls, _ = run_alerts("setup.sh", "--project", "acme-prod", "--keep-secret", *args, tmp_path=tmp_path,
                                  gcloud_dirs=gcloud_dirs)  # fmt: skip
    assert result.returncode == 2
    assert message in result.stderr
    assert calls == []


@pytest.mark.skipif(REAL_GCLOUD is None, reason="the real gcloud is not installed")
@pytest.mark.parametrize(
    ("args", "env"),
    [
        ((*ARGS, "--expect-every", "6"), {"FAKE_ALERTS_NO_METRIC": "1"}),
        ((*ARGS, "--expect-every", "6"), {"FAKE_ALERTS_CHANNEL": CHANNEL, "FAKE_ALERTS_POLICIES": json.dumps(
            {"dead-letters": "projects/acme-prod/alertPolicies/1", "no-sent": "projects/acme-prod/alertPolicies/3"})}),
        ((*ARGS, "--expect-every", "0"), {"FAKE_ALERTS_POLICIES": '{"no-sent": "projects/acme-prod/alertPolicies/3"}'}),
        (("--remove", "--project", "acme-prod"), {"FAKE_ALERTS_POLICIES": '{"retrying": "projects/acme-prod/alertPolicies/2"}'}),
    ],
)  # fmt: skip
def test_every_command_line_parses_with_the_real_gcloud(tmp_path, gcloud_dirs, args, env):
    result, calls, _ = run_alerts("alerts.sh", *args, tmp_path=tmp_path, gcloud_dirs=gcloud_dirs, parse_check=True,
                                  **env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(calls) >= 4
    for call in calls:
        verdict = (call["argv"], call["real_exit"], call["real_stderr"])
        assert call["real_exit"] == 1, verdict
        assert "You do not currently have an active account selected" in call["real_stderr"], verdict


def _sdk_python() -> tuple[str, Path] | None:
    if REAL_GCLOUD is None:
        return None
    sdk = Path(os.path.realpath(REAL_GCLOUD)).parent.parent
    python = sdk / "platform" / "bundledpythonunix" / "bin" / "python3"
    return (str(python), sdk) if python.exists() and (sdk / "lib" / "googlecloudsdk").is_dir() else None


# Reads the messages the way gcloud does (apitools' PyValueToMessage); a field or enum value the API
# does not know lands in the message's unrecognized fields, which this reports with its path.
SDK_CHECK = """
import json, sys
sdk = sys.argv[1]
sys.path[:0] = [sdk + "/lib", sdk + "/lib/third_party"]
from apitools.base.protorpclite import messages as protorpc
from apitools.base.py import encoding
from googlecloudsdk.generated_clients.apis.logging.v2 import logging_v2_messages as logging_v2
from googlecloudsdk.generated_clients.apis.monitoring.v3 import monitoring_v3_messages as monitoring_v3

def unknown(message, path="."):
    found = [path + name for name in message.all_unrecognized_fields()]
    for field in message.all_fields():
        if isinstance(field, protorpc.MessageField):
            values = getattr(message, field.name)
            for index, value in enumerate(values if field.repeated else [values]):
                if isinstance(value, protorpc.Message):
                    found += unknown(value, f"{path}{field.name}[{index}].")
    return found

kinds = {"metric": logging_v2.LogMetric, "policy": monitoring_v3.AlertPolicy}
print(json.dumps([unknown(encoding.PyValueToMessage(kinds[kind], json.loads(text))) for kind, text in json.load(sys.stdin)]))
"""


@pytest.mark.skipif(_sdk_python() is None, reason="the Google Cloud SDK's own Python and libraries are not installed")
def test_rendered_files_hold_only_fields_and_values_gcloud_knows(tmp_path, gcloud_dirs):
    result, _, rendered = run_alerts("alerts.sh", *ARGS, "--expect-every", "6", tmp_path=tmp_path,
                                     gcloud_dirs=gcloud_dirs, FAKE_ALERTS_NO_METRIC="1")  # fmt: skip
    assert result.returncode == 0, result.stderr
    documents = [("metric" if r["argv"][0] == "logging" else "policy", r["file"]) for r in rendered]
    assert [kind for kind, _ in documents] == ["metric", "policy", "policy", "policy"]
    python, sdk = _sdk_python()
    checked = subprocess.run([python, "-c", SDK_CHECK, str(sdk)], input=json.dumps(documents), capture_output=True,
                             text=True, check=True, timeout=60)  # fmt: skip
    assert json.loads(checked.stdout) == [[], [], [], []]
    # The check itself catches a misspelt field and an enum value the API lacks.
    wrong = [("policy", json.dumps({"combiner": "EITHER", "conditions": [{"conditionTreshold": {}}]}))]
    checked = subprocess.run([python, "-c", SDK_CHECK, str(sdk)], input=json.dumps(wrong), capture_output=True,
                             text=True, check=True, timeout=60)  # fmt: skip
    assert json.loads(checked.stdout) == [[".combiner", ".conditions[0].conditionTreshold"]]


# gcloud's own --filter engine (googlecloudsdk.core.resource.resource_filter), on resources shaped as
# the list commands return them.
FILTER_CHECK = """
import json, sys
sdk = sys.argv[1]
sys.path[:0] = [sdk + "/lib", sdk + "/lib/third_party"]
from googlecloudsdk.core.resource import resource_filter
cases = json.load(sys.stdin)
print(json.dumps([[r["name"] for r in resources if resource_filter.Compile(f).Evaluate(r)] for f, resources in cases]))
"""


@pytest.mark.skipif(_sdk_python() is None, reason="the Google Cloud SDK's own Python and libraries are not installed")
def test_the_list_filters_select_our_channel_and_policies_in_gclouds_own_filter_engine(tmp_path, gcloud_dirs):
    _, calls, _ = run_alerts("alerts.sh", *ARGS, "--expect-every", "2", tmp_path=tmp_path, gcloud_dirs=gcloud_dirs)
    _, removal, _ = run_alerts("alerts.sh", "--remove", "--project", "acme-prod", tmp_path=tmp_path,
                               gcloud_dirs=gcloud_dirs)  # fmt: skip
    filters = [a.split("=", 1)[1] for c in calls + removal for a in c["argv"] if a.startswith("--filter=")]
    channels = [
        {"name": "ours", "type": "email", "labels": {"email_address": "ops@example.com"}},
        {"name": "other-address", "type": "email", "labels": {"email_address": "dev@example.com"}},
        {"name": "sms", "type": "sms", "labels": {"number": "+15555550100"}},
    ]
    policies = [{"name": label, "userLabels": {"storage_notifier": label}} for label in ("dead-letters", "retrying",
                                                                                          "no-sent")]  # fmt: skip
    policies.append({"name": "someone-else", "userLabels": {"team": "web"}})
    cases = [(filters[0], channels), *[(f, policies) for f in filters[1:]]]
    python, sdk = _sdk_python()
    checked = subprocess.run([python, "-c", FILTER_CHECK, str(sdk)], input=json.dumps(cases), capture_output=True,
                             text=True, check=True, timeout=60)  # fmt: skip
    assert json.loads(checked.stdout) == [
        ["ours"], ["dead-letters"], ["retrying"], ["no-sent"], ["dead-letters", "retrying", "no-sent"]
    ]  # fmt: skip


def test_the_shared_alert_options_file_is_shellcheck_clean():
    # tests/test_deploy.py checks deploy/*.sh; the file they source from deploy/alerts/ is checked here.
    shellcheck = str(Path(sys.executable).parent / "shellcheck")
    options = Path(__file__).resolve().parent.parent / "deploy" / "alerts" / "options.sh"
    result = subprocess.run([shellcheck, str(options)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout
