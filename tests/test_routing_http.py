"""Routing end to end: a rules file, the real function over HTTP, the .eml files that come out."""

from __future__ import annotations

import pytest
from cloudevents.conversion import to_binary

from tests.conftest import read_eml, storage_cloud_event

RULES = """
ignore = ["**/*.part"]

[defaults]
from = "Storage Alerts <alerts@example.com>"
to = ["ops@example.com"]

[[rules]]
name = "finance-reports"
events = ["finalize"]
include = ["reports/**/*.csv"]
to = ["finance@example.com", "cfo@example.com"]
subject = "New report: {{ object.name }}"

[[rules]]
name = "raw-deletions"
events = ["delete"]
include = ["raw/**"]
to = ["Data Team <data-team@example.com>"]
cc = ["ops@example.com"]
separate_envelopes = false
"""


@pytest.fixture(scope="module")
def server(function_server_factory, tmp_path_factory, gcs_server):
    rules = tmp_path_factory.mktemp("rules") / "notify.toml"
    rules.write_text(RULES)
    return function_server_factory(
        NOTIFY_CONFIG=str(rules), NOTIFY_STATE_BUCKET="notifier-state", STORAGE_EMULATOR_HOST=gcs_server.url
    )


def _send(server, kind, name, bucket="acme-uploads", **data):
    before = set(server.emails())
    server.new_log_lines()
    event = storage_cloud_event(kind, bucket=bucket, name=name, event_id=f"{kind}-{bucket}-{name}", **data)
    status, _ = server.post(*reversed(to_binary(event)))
    assert status == 200
    new = [read_eml(p) for p in server.emails() if p not in before]
    return new, [line for line in server.new_log_lines() if "outcome" in line]


def _recipients(email):
    return sorted(a.addr_spec for field in ("To", "Cc") if email[field] for a in email[field].addresses)


def test_two_rules_give_two_different_recipient_sets(server):
    finance, finance_log = _send(server, "finalize", "reports/2026/q3.csv")
    raw, raw_log = _send(server, "delete", "raw/2026/dump.json")

    # Finance: one copy each, nobody sees the other; the rule's subject.
    assert sorted(_recipients(e) for e in finance) == [["cfo@example.com"], ["finance@example.com"]]
    assert {e["Subject"] for e in finance} == {"New report: reports/2026/q3.csv"}
    assert len({e["X-Notification-Id"] for e in finance}) == 1
    (line,) = finance_log
    assert (line["rule"], line["outcome"], line["recipients"]) == ("finance-reports", "sent", 2)

    # Raw deletions: one shared message, To and Cc visible.
    (email,) = raw
    assert email["To"].addresses[0].display_name == "Data Team"
    assert _recipients(email) == ["data-team@example.com", "ops@example.com"]
    assert email["Subject"].startswith("Deleted: raw/2026/dump.json")
    assert raw_log[0]["rule"] == "raw-deletions"


@pytest.mark.parametrize(
    ("kind", "name", "bucket", "data", "reason"),
    [
        ("finalize", "reports/2026/", "acme-uploads", {"size": "0"}, "folder placeholder"),
        ("finalize", "ledger/abc", "notifier-state", {}, "state bucket"),
        ("finalize", "reports/2026/q3.csv.part", "acme-uploads", {}, "ignore pattern"),
        ("finalize", "misc/readme.txt", "acme-uploads", {}, "no rule matches"),
        ("delete", "reports/2026/q3.csv", "acme-uploads", {}, "no rule matches"),
    ],
)
def test_ignored_events_send_nothing_and_log_one_line(server, kind, name, bucket, data, reason):
    emails, lines = _send(server, kind, name, bucket=bucket, **data)
    assert emails == []
    (line,) = lines
    assert (line["outcome"], line["severity"], line["object"]) == ("ignored", "INFO", name)
    assert reason in line["reason"]


def test_broken_rules_file_stops_the_function_with_the_message(function_server_factory, tmp_path):
    rules = tmp_path / "notify.toml"
    rules.write_text('[[rules]]\nname = "x"\nevents = ["finalise"]\nto = ["a@example.com"]\n')
    with pytest.raises(OSError, match="exited") as caught:
        function_server_factory(NOTIFY_CONFIG=str(rules))
    assert 'notify.toml: rules[0] (x): events: unknown event "finalise" (did you mean "finalize"?)' in str(caught.value)
