"""End to end over real HTTP: functions-framework serving main.py, events as the platform sends them."""

from __future__ import annotations

import base64
import json

import pytest
from cloudevents.conversion import to_binary, to_structured

from notifier.events import KINDS
from notifier.payloads import build_request
from tests.conftest import CE_TYPES, DATA, GEN1_TYPES, SECRET_KEY, read_eml, storage_cloud_event


@pytest.fixture(scope="module")
def server(function_server_factory):
    return function_server_factory(NOTIFY_BACKEND="outbox")


def _outcome_lines(server):
    return [line for line in server.new_log_lines() if "outcome" in line]


def _raw_tracebacks(server):
    return [line for line in server.output().splitlines() if "Traceback" in line and not line.startswith("{")]


def _only_new_email(server, before):
    new = [p for p in server.emails() if p not in before]
    assert len(new) == 1, new
    return read_eml(new[0])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_cloudevent_of_each_kind_and_mode_becomes_one_email(server, kind, mode):
    before = server.emails()
    server.new_log_lines()
    event = storage_cloud_event(kind, bucket="acme-uploads", name=f"in/{mode}/{kind}.csv", event_id=f"{mode}-{kind}")
    assert event["type"] == CE_TYPES[kind]
    headers, body = (to_binary if mode == "binary" else to_structured)(event)
    if mode == "binary":
        assert "ce-type" in headers
    else:
        assert headers["content-type"] == "application/cloudevents+json"

    status, _ = server.post(body, headers)

    assert status == 200
    email = _only_new_email(server, before)
    assert f"in/{mode}/{kind}.csv" in email["Subject"]
    assert email["X-Notification-Id"]
    (line,) = _outcome_lines(server)
    assert line["outcome"] == "sent"
    assert line["kind"] == kind
    assert line["event_id"] == f"{mode}-{kind}"
    assert line["notification_id"] == email["X-Notification-Id"]


@pytest.mark.parametrize("kind", KINDS)
def test_first_gen_background_event_of_each_type_is_converted_by_the_framework(server, kind):
    before = server.emails()
    server.new_log_lines()
    headers, body = build_request(kind, "legacy-bucket", f"gen1/{kind}.bin", mode="gen1", event_id=f"g1-{kind}")
    assert json.loads(body)["context"]["eventType"] == GEN1_TYPES[kind]

    status, _ = server.post(body, headers)

    assert status == 200
    email = _only_new_email(server, before)
    (line,) = _outcome_lines(server)
    assert (line["outcome"], line["kind"], line["bucket"]) == ("sent", kind, "legacy-bucket")
    assert f"gen1/{kind}.bin" in email.get_body(("plain",)).get_content()


CONFORMANCE = [
    # (file, content type, kind, object): Google's functions-framework conformance payloads.
    ("storage-cloudevent-input.json", "application/cloudevents+json", "finalize", "folder/Test.cs"),
    ("storage-legacy-input.json", "application/json", "finalize", "folder/Test.cs"),
    ("legacy_storage_change-legacy-input.json", "application/json", "delete", "MyFile"),
    ("legacy_storage_change-cloudevent-input.json", "application/cloudevents+json", "delete", "MyFile"),
]


def test_conformance_payloads_and_one_email_per_object_change(function_server_factory):
    """Posted as they are. Each pair is one change delivered 2nd-gen and 1st-gen style: one email."""
    server = function_server_factory()  # the payloads date from 2020: no age limit runs locally
    outcomes = []
    for fixture, content_type, kind, name in CONFORMANCE:
        status, _ = server.post((DATA / fixture).read_bytes(), {"Content-Type": content_type})
        assert status == 200
        (line,) = [line for line in server.new_log_lines() if "outcome" in line]
        assert (line["kind"], line["object"]) == (kind, name)
        outcomes.append(line["outcome"])
    assert outcomes == ["sent", "duplicate", "sent", "duplicate"]
    first, second = (read_eml(p) for p in server.emails())
    assert "352 bytes" in first.get_body(("plain",)).get_content()
    assert second["Subject"].startswith("Deleted: MyFile")


def test_an_event_older_than_the_age_limit_is_acknowledged_as_expired(function_server_factory):
    server = function_server_factory(NOTIFY_MAX_EVENT_AGE="24h")  # the default on Cloud Run functions
    before = server.emails()
    server.new_log_lines()
    status, _ = server.post((DATA / CONFORMANCE[0][0]).read_bytes(), {"Content-Type": CONFORMANCE[0][1]})
    assert status == 200
    (line,) = server.new_log_lines()
    assert (line["outcome"], line["severity"]) == ("expired", "INFO")
    assert "older than NOTIFY_MAX_EVENT_AGE=86400s" in line["message"]
    assert server.emails() == before


MALFORMED = [
    pytest.param(b"this is not json", {"Content-Type": "application/json"}, "neither a CloudEvent", id="not-json"),
    pytest.param(b"[1, 2, 3]", {"Content-Type": "application/json"}, "is not the JSON object", id="json-array"),
    pytest.param(b'"just a string"', {"Content-Type": "application/json"}, "is not the JSON object", id="json-string"),
    pytest.param(b"[" * 5000 + b"]" * 5000, {"Content-Type": "application/json"}, "is not the JSON object", id="deep"),
    pytest.param(b"\xff\xfe\xfa", {"Content-Type": "application/json"}, "", id="invalid-utf8"),
    pytest.param(b"", {"Content-Type": "application/json"}, "", id="empty"),
    pytest.param(
        json.dumps(
            {
                "context": {
                    "eventId": "x",
                    "eventType": "google.storage.object.finalize",
                    "resource": {
                        "service": "storage.googleapis.com",
                        "name": "projects/_/buckets/b/objects/o",
                    },
                },
                "data": {"bucket": "b"},
            }
        ).encode(),
        {"Content-Type": "application/json"},
        "data.name: required",
        id="missing-name",
    ),
    pytest.param(
        json.dumps(
            {
                "specversion": "1.0",
                "id": "1",
                "source": "//storage.googleapis.com/projects/_/buckets/b",
                "type": "google.cloud.storage.object.v1.finalized",
                "data": {"name": "o"},
            }
        ).encode(),
        {"Content-Type": "application/cloudevents+json"},
        "data.bucket: required",
        id="missing-bucket",
    ),
    pytest.param(
        json.dumps(
            {
                "specversion": "1.0",
                "id": "1",
                "source": "s",
                "type": "google.cloud.storage.object.v1.finalized",
                "data": {"bucket": "b", "name": "o", "size": "twelve"},
            }
        ).encode(),
        {"Content-Type": "application/cloudevents+json"},
        "data.size: expected a non-negative integer",
        id="bad-size",
    ),
    pytest.param(
        json.dumps(
            {
                "specversion": "1.0",
                "id": "1",
                "source": "s",
                "type": "google.cloud.storage.object.v1.finalized",
                "data": {"bucket": ["b"], "name": "o"},
            }
        ).encode(),
        {"Content-Type": "application/cloudevents+json"},
        "data.bucket: expected a string",
        id="bucket-list",
    ),
    pytest.param(
        json.dumps(
            {
                "specversion": "1.0",
                "id": "1",
                "source": "s",
                "type": "google.cloud.pubsub.topic.v1.messagePublished",
                "data": {"message": {"data": "e30="}},
            }
        ).encode(),
        {"Content-Type": "application/cloudevents+json"},
        "eventType",
        id="pubsub-not-storage",
    ),
    pytest.param(
        json.dumps(
            {
                "specversion": "1.0",
                "id": "1",
                "source": "s",
                "type": "com.example.unknown",
                "data": {"bucket": "b", "name": "o"},
            }
        ).encode(),
        {"Content-Type": "application/cloudevents+json"},
        "unsupported event type 'com.example.unknown'",
        id="unknown-type",
    ),
    pytest.param(
        b"{}",
        {
            "Content-Type": "application/json",
            "ce-specversion": "1.0",
            "ce-id": "1",
            "ce-source": "s",
            "ce-type": "google.cloud.storage.object.v1.finalized",
        },
        "data.bucket: required",
        id="binary-empty-data",
    ),
]


MALFORMED += [
    pytest.param(b'{"context": {}, "data": {}}', {"Content-Type": "text/plain"}, "'text/plain' is not JSON", id="text"),
    pytest.param(b"<xml/>", {}, "is not JSON", id="no-content-type"),
    pytest.param(b"--b\r\n", {"Content-Type": "multipart/form-data; boundary=b"}, "is not JSON", id="multipart"),
    pytest.param(
        json.dumps({"context": {"eventId": "x", "eventType": "google.storage.object.bogus",
                                "resource": {"service": "storage.googleapis.com", "name": "projects/_/buckets/b/objects/o"}},
                    "data": {"bucket": "b", "name": "o"}}).encode(),
        {"Content-Type": "application/json"}, "google.storage.object.bogus", id="unknown-gen1-type",
    ),
    pytest.param(
        json.dumps({"specversion": "1.0", "id": "1", "source": "s", "type": ["x"],
                    "data": {"bucket": "b", "name": "o"}}).encode(),
        {"Content-Type": "application/cloudevents+json"}, "type: expected a string", id="type-list",
    ),
    pytest.param(
        b'{"bucket": "b", "name": "o"}', {"Content-Type": "application/json", "ce-specversion": "1.0", "ce-id": "1",
                "ce-source": "s", "ce-type": "google.cloud.storage.object.v1.finalized", "ce-time": "2024-13-45T99%3A00"},
        "time: expected an RFC 3339 time", id="binary-bad-time",
    ),
    # A raw Pub/Sub push (the emulator's, or a push subscription's) of a notification made with
    # --payload-format=none: the framework cannot convert a message without data.
    pytest.param(
        json.dumps({"subscription": "projects/p/subscriptions/s", "message": {"messageId": "9",
                    "attributes": {"eventType": "OBJECT_FINALIZE", "payloadFormat": "NONE"}}}).encode(),
        {"Content-Type": "application/json"}, "recreate it with --payload-format=json", id="push-without-payload",
    ),
    pytest.param(
        json.dumps({"subscription": "s", "message": {"messageId": "9", "data": base64.b64encode(
            json.dumps({"bucket": "acme", "name": "mm.csv"}).encode()).decode(), "attributes": {
            "eventType": "OBJECT_FINALIZE", "bucketId": "acme", "objectId": "payroll.csv"}}}).encode(),
        {"Content-Type": "application/json"}, "does not match data.name", id="push-attributes-name-another-object",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("body", "headers", "reason"), MALFORMED)
def test_malformed_request_is_acknowledged_with_one_error_line_and_server_keeps_serving(server, body, headers, reason):
    before = server.emails()
    server.new_log_lines()

    status, _ = server.post(body, headers)

    assert 200 <= status < 300, "a non-2xx would make Eventarc redeliver an event that can never succeed"
    lines = server.new_log_lines()
    errors = [line for line in lines if line["severity"] == "ERROR"]
    assert len(errors) == 1, lines
    assert errors[0]["outcome"] == "invalid"
    assert reason in errors[0]["message"]
    assert not _raw_tracebacks(server), "a crash printed outside the structured log"
    assert server.emails() == before
    # still serving
    event = storage_cloud_event("finalize", name="after-bad-request.txt", event_id=f"after-{len(before)}")
    assert server.post(*reversed(to_binary(event)))[0] == 200
    assert len(server.emails()) == len(before) + 1


def test_get_is_not_an_event_and_is_not_logged_as_one(server):
    import urllib.error
    import urllib.request

    server.new_log_lines()
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(server.url, timeout=5)
    assert error.value.code == 405
    assert server.new_log_lines() == []


def test_invalid_configuration_stops_the_function_with_a_message_naming_the_variable(function_server_factory):
    with pytest.raises(OSError, match="exited") as caught:
        function_server_factory(NOTIFY_TO="not-an-address", NOTIFY_BACKEND="outbox")
    assert "NOTIFY_TO: 'not-an-address' is not a valid email address" in str(caught.value)
    assert '"severity": "CRITICAL"' in str(caught.value)


def test_sendgrid_backend_over_http_never_prints_the_key(function_server_factory, httpserver):
    httpserver.expect_request("/v3/mail/send", method="POST").respond_with_data(
        "", status=202, headers={"X-Message-Id": "msg-e2e-1"}
    )
    server = function_server_factory(
        SENDGRID_API_KEY=SECRET_KEY,
        SENDGRID_API_HOST=httpserver.url_for("").rstrip("/"),
        NOTIFY_MAX_ATTEMPTS="1",
    )
    event = storage_cloud_event("finalize", name="sendgrid.csv", event_id="sg-e2e")

    status, _ = server.post(*reversed(to_binary(event)))

    assert status == 200
    (request, _response), *_ = httpserver.log
    assert request.headers["Authorization"] == f"Bearer {SECRET_KEY}"
    payload = request.get_json()
    assert payload["custom_args"]["notification_id"]
    assert "finalize" in payload["categories"]
    (line,) = [line for line in server.new_log_lines() if "outcome" in line]
    assert (line["outcome"], line["backend"], line["message_id"]) == ("sent", "sendgrid", "msg-e2e-1")

    # A transient failure answers 500 so the platform redelivers; a permanent one is acknowledged.
    httpserver.clear()
    httpserver.expect_request("/v3/mail/send").respond_with_json({"errors": [{"message": "down"}]}, status=503)
    assert server.post(*reversed(to_binary(storage_cloud_event(event_id="sg-503"))))[0] == 500
    httpserver.clear()
    httpserver.expect_request("/v3/mail/send").respond_with_json(
        {"errors": [{"message": "The provided authorization grant is invalid", "field": None}]}, status=401
    )
    assert server.post(*reversed(to_binary(storage_cloud_event(event_id="sg-401"))))[0] == 200
    lines = [line for line in server.new_log_lines() if "outcome" in line]
    assert [line["outcome"] for line in lines] == ["retrying", "dead-lettered"]
    assert "invalid or revoked" in lines[1]["message"]
    assert "authorization grant is invalid" in lines[1]["message"]
    assert SECRET_KEY not in server.output()
    assert SECRET_KEY[3:20] not in server.output()


@pytest.mark.parametrize(
    "name",
    [
        "evil\r\nBcc: victim@example.com\r\n\r\n<script>alert(1)</script>",
        '"><img src=x onerror=alert(1)>.csv',
        "spaces and #hash ?query %25 ünï/数据/\u202egnp.exe",
        "é" * 512,  # 1,024 bytes
    ],
)
def test_hostile_object_names_arrive_escaped_and_single_line(server, name):
    before = server.emails()
    event = storage_cloud_event("finalize", bucket="acme", name=name, event_id=f"hostile-{len(before)}")

    status, _ = server.post(*reversed(to_structured(event)))

    assert status == 200
    email = _only_new_email(server, before)
    assert email["Bcc"] is None
    assert "\n" not in email["Subject"] and "\r" not in email["Subject"]
    html = email.get_body(("html",)).get_content()
    assert "<script>" not in html and "<img" not in html


def test_lone_surrogates_in_json_are_invalid_not_a_crash(server):
    before = server.emails()
    server.new_log_lines()
    body = (
        b'{"specversion": "1.0", "id": "sur\\ud800", "source": "s",'
        b' "type": "google.cloud.storage.object.v1.finalized", "data": {"bucket": "b", "name": "x\\udc00y"}}'
    )

    status, _ = server.post(body, {"Content-Type": "application/cloudevents+json"})

    assert status == 200
    (line,) = server.new_log_lines()
    assert line["outcome"] == "invalid"
    assert "lone surrogate" in line["message"]
    assert server.emails() == before
    assert not _raw_tracebacks(server), "a crash printed outside the structured log"


def test_deployed_function_without_a_key_refuses_to_start_instead_of_losing_email(function_server_factory):
    with pytest.raises(OSError, match="exited") as caught:
        function_server_factory(K_SERVICE="storage-notifier-finalize")
    assert "SENDGRID_API_KEY: not set, and this is a deployed function" in str(caught.value)


def test_binary_mode_attributes_are_percent_decoded_like_the_http_binding_says(server):
    server.new_log_lines()
    event = storage_cloud_event("finalize", name="pct.csv", event_id="id with space%")
    structured_headers, structured_body = to_structured(event)
    assert server.post(structured_body, structured_headers)[0] == 200
    headers, body = to_binary(event)
    headers = {**headers, "ce-id": "id%20with%20space%25", "ce-time": headers["ce-time"].replace(":", "%3A")}
    assert server.post(body, headers)[0] == 200

    structured_line, binary_line = [line for line in server.new_log_lines() if "outcome" in line]
    # The same event in either mode: the same notification, so the second is a duplicate.
    assert (structured_line["outcome"], binary_line["outcome"]) == ("sent", "duplicate")
    assert binary_line["event_id"] == structured_line["event_id"] == "id with space%"
    assert binary_line["notification_id"] == structured_line["notification_id"]


def test_emit_sends_non_ascii_names_in_binary_mode(server):
    from notifier.tools.cli import main

    before = server.emails()
    assert main(["emit", "finalize", 'gs://acme/数据/a b%"c".csv', "--url", server.url]) == 0
    email = _only_new_email(server, before)
    assert email["Subject"] == 'Uploaded: 数据/a b%"c".csv (acme)'
