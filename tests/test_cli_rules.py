"""python -m notifier check-config and route: a rules file checked, and asked about objects, in-process."""

from __future__ import annotations

from pathlib import Path

import pytest

from notifier.tools.cli import main

EXAMPLE = Path(__file__).resolve().parent.parent / "notify.example.toml"

RULES = """\
ignore = ["**/_tmp/**", "**/*.part"]

[defaults]
from = "Storage Alerts <alerts@example.com>"
to = ["ops@example.com"]

[[rules]]
name = "finance-reports"
events = ["finalize"]
buckets = ["acme"]
include = ["reports/**/*.csv"]
content_types = ["text/csv"]
min_size = "1 KiB"
to = ["Finance <finance@example.com>"]
bcc = ["audit@example.com"]
subject = "New report: {{ object.name }} in {{ object.bucket }}"

[[rules]]
name = "big-files"
events = "finalize"
min_size = "1 MB"
to = "storage@example.com"

[[rules]]
name = "raw-deletions"
events = ["delete"]
include = ["raw/**"]
to = ["data-team@example.com"]
cc = ["ops@example.com"]
separate_envelopes = false

[[rules]]
name = "confidential"
metadata = { classification = "confidential" }
to = ["security@example.com"]
stop = true

[[rules]]
name = "team-finance"
metadata = { team = "finance" }
to = ["finance-team@example.com"]

[[rules]]
name = "catch-all"
exclude = ["raw/**", "reports/**"]
"""

BROKEN = """\
colour = "blue"

[[rules]]
name = "finance-reports"
events = ["finalise"]
to = ["finance.example.com"]

[[rules]]
name = "raw"
include = ["raw**"]
min_size = "lots"
"""


pytestmark = pytest.mark.usefixtures("clean_notifier_env")


@pytest.fixture
def rules_file(tmp_path, monkeypatch):
    path = tmp_path / "notify.toml"
    path.write_text(RULES, encoding="utf-8")
    monkeypatch.setenv("NOTIFY_CONFIG", str(path))
    return path


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


# -- check-config --------------------------------------------------------------------------------


def test_check_config_on_the_example_lists_each_rule(capsys):
    code, out, err = run(capsys, "check-config", str(EXAMPLE))
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"{EXAMPLE}: OK, 4 rule(s), backend console",
        "  finance-reports: finalize → 1 recipient(s)",
        "  raw-deletions: delete,archive → 2 recipient(s)",
        "  confidential: finalize,delete,archive,metadata → 1 recipient(s)",
        "  everything-else: finalize,delete,archive,metadata → 1 recipient(s)",
    ]


def test_check_config_without_an_argument_reads_notify_config(capsys, rules_file):
    code, out, err = run(capsys, "check-config")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"{rules_file}: OK, 6 rule(s), backend console",
        "  finance-reports: finalize → 2 recipient(s)",
        "  big-files: finalize → 1 recipient(s)",
        "  raw-deletions: delete → 2 recipient(s)",
        "  confidential: finalize,delete,archive,metadata → 1 recipient(s)",
        "  team-finance: finalize,delete,archive,metadata → 1 recipient(s)",
        "  catch-all: finalize,delete,archive,metadata → 1 recipient(s)",
    ]


def test_check_config_argument_wins_over_notify_config(capsys, tmp_path, monkeypatch):
    broken = tmp_path / "broken.toml"
    broken.write_text(BROKEN, encoding="utf-8")
    monkeypatch.setenv("NOTIFY_CONFIG", str(broken))
    code, out, err = run(capsys, "check-config", str(EXAMPLE))
    assert (code, err) == (0, "")
    assert out.startswith(f"{EXAMPLE}: OK, 4 rule(s)")


def test_check_config_on_a_broken_file_prints_every_problem_and_fails(capsys, tmp_path):
    broken = tmp_path / "notify.toml"
    broken.write_text(BROKEN, encoding="utf-8")
    code, out, err = run(capsys, "check-config", str(broken))
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "notify.toml: colour: unknown key",
        'notify.toml: rules[0] (finance-reports): events: unknown event "finalise" (did you mean "finalize"?)',
        "notify.toml: rules[0] (finance-reports): to: 'finance.example.com' is not a valid email address",
        "notify.toml: rules[1] (raw): include: bad glob: '**' must be a whole path segment, as in 'a/**/b' (in 'raw**')",
        'notify.toml: rules[1] (raw): min_size: expected a size such as 1024 (bytes), "1 KiB" or "5 MB", got \'lots\'',
        "5 problem(s) found.",
    ]


def test_check_config_reports_environment_and_file_problems_together(capsys, tmp_path, monkeypatch):
    broken = tmp_path / "notify.toml"
    broken.write_text('[[rules]]\nname = "r"\nstop = "yes"\n', encoding="utf-8")
    monkeypatch.setenv("NOTIFY_MAX_ATTEMPTS", "many")
    code, out, err = run(capsys, "check-config", str(broken))
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "NOTIFY_MAX_ATTEMPTS: expected a positive whole number, got 'many'",
        "notify.toml: rules[0] (r): stop: expected true or false, got the string 'yes'",
        "2 problem(s) found.",
    ]


def test_check_config_on_a_missing_file(capsys, tmp_path):
    missing = tmp_path / "nope.toml"
    code, out, err = run(capsys, "check-config", str(missing))
    assert (code, out) == (1, "")
    assert err.splitlines() == [f"NOTIFY_CONFIG: {str(missing)!r} is not a file", "1 problem(s) found."]


def test_check_config_compiles_subjects_as_the_function_would(capsys, tmp_path):
    path = tmp_path / "notify.toml"
    path.write_text('[[rules]]\nname = "r"\nsubject = "{{ object.name | shout }}"\n', encoding="utf-8")
    code, out, err = run(capsys, "check-config", str(path))
    assert (code, out) == (1, "")
    assert err.splitlines() == ["rule 'r': subject: No filter named 'shout'."]


def test_check_config_reports_an_address_ending_in_at(capsys, tmp_path):
    path = tmp_path / "notify.toml"
    path.write_text('[[rules]]\nname = "r"\nto = "ops@"\n', encoding="utf-8")
    code, out, err = run(capsys, "check-config", str(path))
    assert (code, out) == (1, "")
    assert err.splitlines() == [
        "notify.toml: rules[0] (r): to: 'ops@' is not a valid email address",
        "1 problem(s) found.",
    ]


# -- route ---------------------------------------------------------------------------------------


def test_route_prints_the_matching_rule_its_subject_and_recipients(capsys, rules_file):
    code, out, err = run(capsys, "route", "finalize", "gs://acme/reports/2026/q3.csv", "--size", "48213")
    assert (code, err) == (0, "")
    assert out.splitlines() == [
        f"finalize gs://acme/reports/2026/q3.csv (48213 bytes, text/csv) against {rules_file}:",
        "  rule finance-reports:",
        "    subject: New report: reports/2026/q3.csv in acme",
        "    to: Finance <finance@example.com>",
        "    bcc: audit@example.com",
        "    2 recipient(s), each their own copy",
        "1 email(s) would be sent.",
    ]


def test_route_prints_every_matching_rule_in_file_order(capsys, rules_file):
    code, out, _ = run(capsys, "route", "finalize", "gs://acme/reports/2026/q3.csv", "--size", "2000000")
    assert code == 0
    assert out.splitlines()[1:] == [
        "  rule finance-reports:",
        "    subject: New report: reports/2026/q3.csv in acme",
        "    to: Finance <finance@example.com>",
        "    bcc: audit@example.com",
        "    2 recipient(s), each their own copy",
        "  rule big-files:",
        "    subject: Uploaded: reports/2026/q3.csv (acme)",
        "    to: storage@example.com",
        "    1 recipient(s), each their own copy",
        "2 email(s) would be sent.",
    ]


def test_route_shows_a_shared_message_with_its_cc(capsys, rules_file):
    code, out, _ = run(capsys, "route", "delete", "gs://acme/raw/2026/dump.bin")
    assert code == 0
    assert out.splitlines() == [
        f"delete gs://acme/raw/2026/dump.bin (size unknown, application/octet-stream) against {rules_file}:",
        "  rule raw-deletions:",
        "    subject: Deleted: raw/2026/dump.bin (acme)",
        "    to: data-team@example.com",
        "    cc: ops@example.com",
        "    2 recipient(s), one shared message",
        "1 email(s) would be sent.",
    ]


def test_route_a_folder_placeholder_is_ignored(capsys, rules_file):
    code, out, _ = run(capsys, "route", "finalize", "gs://acme/docs/", "--size", "0")
    assert code == 0
    assert out.splitlines() == [
        f"finalize gs://acme/docs/ (0 bytes, application/octet-stream) against {rules_file}:",
        "No email: ignored: folder placeholder (name ends with '/', size 0)",
        "0 email(s) would be sent.",
    ]


def test_route_a_name_ending_in_slash_with_content_is_not_a_placeholder(capsys, rules_file):
    code, out, _ = run(capsys, "route", "finalize", "gs://acme/docs/", "--size", "5")
    assert code == 0
    assert "ignored" not in out
    assert out.splitlines()[1:] == [
        "  rule catch-all:",
        "    subject: Uploaded: docs/ (acme)",
        "    to: ops@example.com",
        "    1 recipient(s), each their own copy",
        "1 email(s) would be sent.",
    ]


@pytest.mark.parametrize(
    "uri", ["gs://acme/_tmp/x.csv", "gs://acme/reports/_tmp/q3.csv", "gs://acme/upload.part", "gs://b/a/b/c.part"]
)
def test_route_names_matching_the_ignore_globs_are_ignored(capsys, rules_file, uri):
    code, out, _ = run(capsys, "route", "finalize", uri, "--size", "5000000")
    assert code == 0
    assert out.splitlines()[1:] == [
        "No email: ignored: matches an ignore pattern of the rules file",
        "0 email(s) would be sent.",
    ]


@pytest.mark.parametrize("uri", ["gs://acme/upload.partial", "gs://acme/my_tmp/x.csv", "gs://acme/_tmp"])
def test_route_names_near_the_ignore_globs_are_not_ignored(capsys, rules_file, uri):
    code, out, _ = run(capsys, "route", "finalize", uri)
    assert code == 0
    assert "ignored" not in out
    assert "  rule catch-all:" in out.splitlines()


def test_route_the_state_bucket_is_ignored(capsys, rules_file, monkeypatch):
    monkeypatch.setenv("NOTIFY_STATE_BUCKET", "gs://notifier-state")
    code, out, _ = run(capsys, "route", "finalize", "gs://notifier-state/reports/q3.csv", "--size", "5000")
    assert code == 0
    assert out.splitlines()[1:] == [
        "No email: ignored: the function's own state bucket 'notifier-state'",
        "0 email(s) would be sent.",
    ]


@pytest.mark.parametrize(
    "args",
    [
        ["finalize", "gs://acme/reports/q3.csv", "--size", "1023"],  # below min_size
        ["finalize", "gs://acme/reports/q3.csv", "--size", "5000", "--content-type", "application/pdf"],
        ["finalize", "gs://other/reports/q3.csv", "--size", "5000"],  # not the finance bucket
        ["finalize", "gs://acme/reports/q3.txt", "--size", "5000"],  # not *.csv
        ["metadata", "gs://acme/reports/q3.csv", "--size", "5000"],  # not a finalize event
        ["delete", "gs://acme/reports/q3.csv"],  # raw-deletions wants raw/**; catch-all excludes reports/**
    ],
)
def test_route_when_no_rule_matches(capsys, rules_file, args):
    code, out, _ = run(capsys, "route", *args)
    assert code == 0
    assert out.splitlines()[1:] == ["No email: no rule matches.", "0 email(s) would be sent."]


@pytest.mark.parametrize(
    ("size", "expected"),
    [("1023", []), ("1024", ["finance-reports"]), ("999999", ["finance-reports"]), ("1000000", ["finance-reports", "big-files"])],
)  # fmt: skip
def test_route_uses_size_with_inclusive_bounds(capsys, rules_file, size, expected):
    code, out, _ = run(capsys, "route", "finalize", "gs://acme/reports/q3.csv", "--size", size)
    assert code == 0
    assert out.splitlines()[0] == f"finalize gs://acme/reports/q3.csv ({size} bytes, text/csv) against {rules_file}:"
    assert matched_rules(out) == expected


@pytest.mark.parametrize(
    ("content_type", "matches"),
    [("text/csv", True), ("Text/CSV; charset=utf-8", True), ("application/pdf", False), ("text/plain", False)],
)
def test_route_uses_content_type(capsys, rules_file, content_type, matches):
    code, out, _ = run(
        capsys, "route", "finalize", "gs://acme/reports/q3.csv", "--content-type", content_type, "--size", "4096"
    )
    assert code == 0
    assert f"(4096 bytes, {content_type})" in out.splitlines()[0]
    assert matched_rules(out) == (["finance-reports"] if matches else [])


def test_route_uses_meta_for_metadata_matching(capsys, rules_file):
    code, out, _ = run(capsys, "route", "finalize", "gs://acme/docs/plan.pdf", "--meta", "team=finance")
    assert code == 0
    assert matched_rules(out) == ["team-finance", "catch-all"]
    assert "    to: finance-team@example.com" in out.splitlines()


@pytest.mark.parametrize(
    "meta", [[], ["--meta", "team=sales"], ["--meta", "Team=finance"], ["--meta", "team=finance "]]
)
def test_route_metadata_must_match_exactly(capsys, rules_file, meta):
    code, out, _ = run(capsys, "route", "finalize", "gs://acme/docs/plan.pdf", *meta)
    assert code == 0
    assert matched_rules(out) == ["catch-all"]


def test_route_stop_ends_the_search(capsys, rules_file):
    args = ["route", "finalize", "gs://acme/docs/plan.pdf", "--meta", "team=finance"]
    code, out, _ = run(capsys, *args, "--meta", "classification=confidential")
    assert code == 0
    assert out.splitlines()[1:] == [
        "  rule confidential (stop):",
        "    subject: Uploaded: docs/plan.pdf (acme)",
        "    to: security@example.com",
        "    1 recipient(s), each their own copy",
        "1 email(s) would be sent.",
    ]


def test_route_stop_only_ends_the_search_when_its_rule_matches(capsys, rules_file):
    code, out, _ = run(capsys, "route", "finalize", "gs://acme/docs/plan.pdf", "--meta", "classification=public")
    assert code == 0
    assert "(stop)" not in out
    assert matched_rules(out) == ["catch-all"]


def test_route_rules_before_a_stop_rule_still_send(capsys, rules_file):
    args = [
        "route",
        "finalize",
        "gs://acme/reports/q3.csv",
        "--size",
        "2000000",
        "--meta",
        "classification=confidential",
    ]
    code, out, _ = run(capsys, *args)
    assert code == 0
    assert matched_rules(out) == ["finance-reports", "big-files", "confidential"]
    assert out.splitlines()[-1] == "3 email(s) would be sent."


def test_route_renders_the_subject_override_only_for_its_rule(capsys, rules_file):
    code, out, _ = run(capsys, "route", "finalize", "gs://acme/reports/a b.csv", "--size", "1000000")
    assert code == 0
    subjects = [line for line in out.splitlines() if line.startswith("    subject: ")]
    assert subjects == [
        "    subject: New report: reports/a b.csv in acme",
        "    subject: Uploaded: reports/a b.csv (acme)",
    ]


def test_route_the_example_file_as_its_comment_suggests(capsys, monkeypatch):
    monkeypatch.setenv("NOTIFY_CONFIG", str(EXAMPLE))
    code, out, _ = run(capsys, "route", "finalize", "gs://acme-uploads/reports/2026/q3.csv", "--size", "48213")
    assert code == 0
    assert out.splitlines() == [
        f"finalize gs://acme-uploads/reports/2026/q3.csv (48213 bytes, text/csv) against {EXAMPLE}:",
        "  rule finance-reports:",
        "    subject: New report: reports/2026/q3.csv",
        "    to: finance@example.com",
        "    1 recipient(s), each their own copy",
        "1 email(s) would be sent.",
    ]


def test_route_with_a_broken_rules_file_fails_with_its_problems(capsys, tmp_path, monkeypatch):
    broken = tmp_path / "notify.toml"
    broken.write_text(BROKEN, encoding="utf-8")
    monkeypatch.setenv("NOTIFY_CONFIG", str(broken))
    code, out, err = run(capsys, "route", "finalize", "gs://acme/x.csv")
    assert (code, out) == (1, "")
    assert err.startswith("error: invalid configuration:\n  notify.toml: colour: unknown key\n")
    assert err.count("\n  notify.toml: ") == 5


def matched_rules(out: str) -> list[str]:
    prefix = "  rule "
    return [
        line[len(prefix) :].removesuffix(":").removesuffix(" (stop)")
        for line in out.splitlines()
        if line.startswith(prefix)
    ]
