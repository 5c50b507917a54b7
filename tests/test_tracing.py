"""Trace correlation (issue 17, part 4): every log line of a request names the request's trace, as
Cloud Logging groups them (``logging.googleapis.com/trace``, ``spanId``, ``trace_sampled``), from
``traceparent``, else ``X-Cloud-Trace-Context``, else the CloudEvent's ``traceparent`` extension.

The field names and formats are written out here, not imported from the code under test."""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from typing import Any

import pytest
from cloudevents.conversion import to_binary, to_structured

from notifier.log import LINE_LIMIT, LOGGER_NAME, JsonFormatter
from notifier.payloads import build_request
from notifier.tracing import TraceContext, from_headers, parse_cloud_trace_context, parse_traceparent, scope
from tests.conftest import SECRET_KEY, storage_cloud_event

PROJECT = "trace-test-project"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{SPAN}-01"
CLOUD_TRACE = f"{TRACE}/{int(SPAN, 16)};o=1"  # the span in decimal, as Google's own header has it
TRACE_KEY = "logging.googleapis.com/trace"
SPAN_KEY = "logging.googleapis.com/spanId"
SAMPLED_KEY = "logging.googleapis.com/trace_sampled"
TRACE_KEYS = (TRACE_KEY, SPAN_KEY, SAMPLED_KEY)
EXPECTED = {TRACE_KEY: f"projects/{PROJECT}/traces/{TRACE}", SPAN_KEY: SPAN, SAMPLED_KEY: True}
TWO_RULES = '[[rules]]\nname = "first"\n\n[[rules]]\nname = "second"\n'  # two outcome lines per event

HOSTILE_TRACEPARENTS = {
    "short trace id": f"00-{TRACE[:-1]}-{SPAN}-01",
    "long span id": f"00-{TRACE}-{SPAN}0-01",
    "not hex": f"00-{TRACE[:-1]}g-{SPAN}-01",
    "upper case": f"00-{TRACE.upper()}-{SPAN}-01",
    "all-zero trace id": f"00-{'0' * 32}-{SPAN}-01",
    "all-zero span id": f"00-{TRACE}-{'0' * 16}-01",
    "version ff": f"ff-{TRACE}-{SPAN}-01",
    "version 00 with more": f"{TRACEPARENT}-extra",
    "no flags": f"00-{TRACE}-{SPAN}",
    "two headers joined": f"{TRACEPARENT},{TRACEPARENT}",
    "10 KB": TRACEPARENT + "-" + "a" * 10_000,
    "CR LF": f"{TRACEPARENT}\r\nX-Injected: 1",
    "LF": f"{TRACEPARENT}\n",
    "empty": "",
}
HOSTILE_CLOUD_TRACES = {
    "all-zero trace id": f"{'0' * 32}/{int(SPAN, 16)};o=1",
    "zero span": f"{TRACE}/0;o=1",
    "span over 64 bits": f"{TRACE}/{2**64};o=1",
    "span not decimal": f"{TRACE}/{SPAN};o=1",
    "short trace id": f"{TRACE[:-2]}/{int(SPAN, 16)};o=1",
    "unknown option": f"{TRACE}/{int(SPAN, 16)};o=x",
    "10 KB": f"{TRACE}/{'1' * 10_000};o=1",
    "CR LF": f"{CLOUD_TRACE}\r\n",
}


# --- parsing: a bounded, validated (trace, span, sampled) or nothing ------------------------------


def test_a_traceparent_gives_its_trace_span_and_sampled_flag():
    assert parse_traceparent(TRACEPARENT) == TraceContext(TRACE, SPAN, sampled=True)
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-00") == TraceContext(TRACE, SPAN, sampled=False)
    assert parse_traceparent(f"00-{TRACE}-{SPAN}-02").sampled is False  # only bit 0 says sampled
    # A later version may add fields: its first four are read (W3C Trace Context, "versioning").
    assert parse_traceparent(f"01-{TRACE}-{SPAN}-03-more") == TraceContext(TRACE, SPAN, sampled=True)


def test_an_x_cloud_trace_context_gives_the_span_as_16_hex_digits():
    assert parse_cloud_trace_context(CLOUD_TRACE) == TraceContext(TRACE, SPAN, sampled=True)
    assert parse_cloud_trace_context(f"{TRACE}/1;o=0") == TraceContext(TRACE, "0000000000000001", sampled=False)
    assert parse_cloud_trace_context(f"{TRACE.upper()}/{2**64 - 1}") == TraceContext(TRACE, "f" * 16, sampled=False)


@pytest.mark.parametrize("value", HOSTILE_TRACEPARENTS.values(), ids=HOSTILE_TRACEPARENTS.keys())
def test_a_malformed_traceparent_is_ignored(value):
    assert parse_traceparent(value) is None
    assert from_headers({"traceparent": value}) is None


@pytest.mark.parametrize("value", HOSTILE_CLOUD_TRACES.values(), ids=HOSTILE_CLOUD_TRACES.keys())
def test_a_malformed_x_cloud_trace_context_is_ignored(value):
    assert parse_cloud_trace_context(value) is None
    assert from_headers({"X-Cloud-Trace-Context": value}) is None


@pytest.mark.parametrize("value", [None, 55, ["00"], {"a": 1}, b"00-" + TRACE.encode()])
def test_a_value_that_is_not_text_is_ignored(value):
    assert parse_traceparent(value) is None
    assert parse_cloud_trace_context(value) is None


def test_traceparent_wins_and_a_malformed_one_falls_back_to_x_cloud_trace_context():
    other = f"{'1' * 32}/7;o=0"
    assert from_headers({"traceparent": TRACEPARENT, "X-Cloud-Trace-Context": other}).trace_id == TRACE
    fallback = from_headers({"traceparent": HOSTILE_TRACEPARENTS["not hex"], "X-Cloud-Trace-Context": other})
    assert fallback == TraceContext("1" * 32, "0000000000000007", sampled=False)


# --- the log line: the three fields inside a scope, none outside it or without a project ---------


def _format(message: str = "hello", **fields: Any) -> dict[str, Any]:
    record = logging.LogRecord(LOGGER_NAME, logging.INFO, __file__, 1, message, None, None)
    record.fields = fields
    line = JsonFormatter().format(record)
    assert len(line.encode("utf-8")) <= LINE_LIMIT
    return json.loads(line)


def test_lines_inside_a_scope_carry_the_trace_and_lines_after_it_do_not():
    with scope(PROJECT, TraceContext(TRACE, SPAN, sampled=True)):
        inside = _format()
    assert {key: inside[key] for key in TRACE_KEYS} == EXPECTED
    assert not set(TRACE_KEYS) & set(_format())


def test_without_a_project_or_a_trace_no_line_carries_trace_fields():
    with scope(None, TraceContext(TRACE, SPAN, sampled=True)):
        assert not set(TRACE_KEYS) & set(_format())
    with scope(PROJECT, None):
        assert not set(TRACE_KEYS) & set(_format())
    with scope("Not A Project\n", TraceContext(TRACE, SPAN, sampled=True)):  # never from config; still checked
        assert not set(TRACE_KEYS) & set(_format())


def test_a_line_cut_to_its_limit_keeps_its_trace():
    with scope(PROJECT, TraceContext(TRACE, SPAN, sampled=False)):
        many = _format("m" * 50_000, **{f"field{i}": "\x01" * 5_000 for i in range(40)})
    assert {key: many[key] for key in TRACE_KEYS} == {**EXPECTED, SAMPLED_KEY: False}


def test_a_scope_in_one_thread_is_not_seen_by_another():
    seen: list[dict[str, Any]] = []
    with scope(PROJECT, TraceContext(TRACE, SPAN, sampled=True)):
        thread = threading.Thread(target=lambda: seen.append(_format()))
        thread.start()
        thread.join()
    assert not set(TRACE_KEYS) & set(seen[0])


# --- over real HTTP: the function served by functions-framework --------------------------------


@pytest.fixture(scope="module")
def server(function_server_factory, tmp_path_factory):
    rules = tmp_path_factory.mktemp("tracing") / "notify.toml"
    rules.write_text(TWO_RULES, encoding="utf-8")
    return function_server_factory(NOTIFY_BACKEND="outbox", NOTIFY_CONFIG=str(rules), GOOGLE_CLOUD_PROJECT=PROJECT)


def _event_request(mode: str, event_id: str, extension: Any = None) -> tuple[dict[str, str], bytes]:
    if mode in ("gen1", "pubsub"):
        return build_request("finalize", "acme", f"traced/{event_id}.csv", mode=mode, event_id=event_id)
    event = storage_cloud_event(name=f"traced/{event_id}.csv", event_id=event_id)
    if extension is not None:
        event["traceparent"] = extension
    headers, body = (to_binary if mode == "binary" else to_structured)(event)
    return dict(headers), body


def _post(server, headers: dict[str, str], body: bytes) -> list[dict[str, Any]]:
    server.new_log_lines()
    status, answer = server.post(body, headers)
    assert status == 200, answer
    lines = server.new_log_lines()
    assert lines, "the request logged nothing"
    return lines


def _traces(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{key: line[key] for key in TRACE_KEYS if key in line} for line in lines]


def _assert_untraced_request_follows(server, mode: str, event_id: str) -> None:
    lines = _post(server, *_event_request(mode, event_id))
    assert _traces(lines) == [{}] * len(lines), "the trace of the request before leaked into this one"


@pytest.mark.parametrize("header", ["traceparent", "X-Cloud-Trace-Context"])
@pytest.mark.parametrize("mode", ["binary", "structured", "pubsub"])
def test_every_line_of_a_traced_request_carries_its_trace_and_the_next_request_none(server, mode, header):
    headers, body = _event_request(mode, f"{mode}-{header}")
    headers[header] = TRACEPARENT if header == "traceparent" else CLOUD_TRACE

    lines = _post(server, headers, body)

    assert [line["outcome"] for line in lines] == ["sent", "sent"]  # one line per rule
    assert _traces(lines) == [EXPECTED, EXPECTED]
    _assert_untraced_request_follows(server, mode, f"{mode}-{header}-after")


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_a_trace_only_the_cloudevent_carries_is_used(server, mode):
    unsampled = f"00-{TRACE}-{SPAN}-00"
    headers, body = _event_request(mode, f"extension-{mode}", extension=unsampled)
    assert ("ce-traceparent" in headers) == (mode == "binary")

    lines = _post(server, headers, body)

    assert _traces(lines) == [{**EXPECTED, SAMPLED_KEY: False}] * 2
    _assert_untraced_request_follows(server, mode, f"extension-{mode}-after")


def test_the_request_header_wins_over_the_cloudevents_extension(server):
    other = f"00-{'2' * 32}-{'3' * 16}-01"
    headers, body = _event_request("structured", "both", extension=other)
    headers["traceparent"] = TRACEPARENT
    assert _traces(_post(server, headers, body)) == [EXPECTED] * 2


def test_an_invalid_event_s_line_carries_the_trace_too(server):
    lines = _post(server, {"Content-Type": "application/json", "traceparent": TRACEPARENT}, b"[1, 2]")
    (line,) = lines
    assert line["outcome"] == "invalid"
    assert _traces(lines) == [EXPECTED]


# Hostile headers that reach the function at all: gunicorn itself refuses a header line over
# 8190 bytes and CR/LF inside one, so a long value is sent cut to 8000 characters, and CR/LF in the
# CloudEvent (below), where JSON carries anything.
HOSTILE_OVER_HTTP = {
    f"{header} {name}": (header, value[:8000])
    for header, values in (("traceparent", HOSTILE_TRACEPARENTS), ("X-Cloud-Trace-Context", HOSTILE_CLOUD_TRACES))
    for name, value in values.items()
    if "\n" not in value
}


@pytest.mark.parametrize(("header", "value"), HOSTILE_OVER_HTTP.values(), ids=HOSTILE_OVER_HTTP.keys())
def test_a_hostile_trace_header_is_ignored_and_the_event_still_sent(server, header, value):
    headers, body = _event_request("binary", "hostile-header")
    headers[header] = value
    lines = _post(server, headers, body)
    assert [line["outcome"] for line in lines] in (["sent", "sent"], ["duplicate", "duplicate"])
    assert _traces(lines) == [{}, {}]


@pytest.mark.parametrize(
    "value",
    [HOSTILE_TRACEPARENTS["10 KB"], HOSTILE_TRACEPARENTS["CR LF"], HOSTILE_TRACEPARENTS["all-zero trace id"], 12345],
    ids=["10 KB", "CR LF", "all zeros", "a number"],
)
def test_a_hostile_cloudevent_extension_is_ignored(server, value):
    headers, body = _event_request("structured", "hostile-extension")
    body = json.dumps({**json.loads(body), "traceparent": value}).encode()
    lines = _post(server, headers, body)
    assert lines and _traces(lines) == [{}] * len(lines)


def test_concurrent_requests_each_carry_their_own_trace_and_none_leaks(server):
    def trace_of(index: int) -> str | None:
        return None if index % 3 == 0 else f"{index + 1:032x}"

    def post(index: int) -> None:
        headers, body = _event_request("binary", f"parallel-{index}")
        if (trace := trace_of(index)) is not None:
            headers["traceparent"] = f"00-{trace}-{index + 1:016x}-01"
        status, answer = server.post(body, headers)
        assert status == 200, answer

    server.new_log_lines()
    for _ in range(3):  # rounds: a worker thread that served a traced request serves an untraced one
        threads = [threading.Thread(target=post, args=(index,)) for index in range(12)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    lines = [line for line in server.new_log_lines() if "outcome" in line]
    assert len(lines) == 3 * 12 * 2
    for line in lines:
        index = int(line["event_id"].removeprefix("parallel-"))
        trace = trace_of(index)
        expected = {} if trace is None else {
            TRACE_KEY: f"projects/{PROJECT}/traces/{trace}", SPAN_KEY: f"{index + 1:016x}", SAMPLED_KEY: True,
        }  # fmt: skip
        assert _traces([line]) == [expected], line


def test_without_a_project_no_line_carries_trace_fields(function_server_factory):
    server = function_server_factory(NOTIFY_BACKEND="outbox", GOOGLE_CLOUD_PROJECT="")
    headers, body = _event_request("binary", "no-project", extension=TRACEPARENT)
    headers["traceparent"] = TRACEPARENT
    lines = _post(server, headers, body)
    assert [line["outcome"] for line in lines] == ["sent"]
    assert _traces(lines) == [{}]


def test_a_retrying_line_and_the_sent_line_before_it_carry_the_same_trace(function_server_factory, httpserver,
                                                                          tmp_path):  # fmt: skip
    httpserver.expect_oneshot_request("/v3/mail/send", method="POST").respond_with_data(
        "", status=202, headers={"X-Message-Id": "sg-traced"}
    )
    httpserver.expect_oneshot_request("/v3/mail/send", method="POST").respond_with_json(
        {"errors": [{"message": "down"}]}, status=503
    )
    rules = tmp_path / "notify.toml"
    rules.write_text(TWO_RULES, encoding="utf-8")
    server = function_server_factory(
        SENDGRID_API_KEY=SECRET_KEY, SENDGRID_API_HOST=httpserver.url_for("").rstrip("/"), NOTIFY_MAX_ATTEMPTS="1",
        NOTIFY_CONFIG=str(rules), GOOGLE_CLOUD_PROJECT=PROJECT,
    )  # fmt: skip
    headers, body = _event_request("binary", "traced-retry")
    headers["X-Cloud-Trace-Context"] = CLOUD_TRACE
    server.new_log_lines()

    status, _ = server.post(body, headers)

    assert status == 500  # the second rule's send is retried: the platform redelivers
    lines = server.new_log_lines()
    assert [line.get("outcome") for line in lines] == ["sent", "retrying"]
    assert _traces(lines) == [EXPECTED, EXPECTED]


def test_the_scheduled_flush_s_lines_carry_the_trace(function_server_factory, fake_gcs, tmp_path):
    rules = tmp_path / "notify.toml"
    rules.write_text('[[rules]]\nname = "bulk"\ninclude = ["bulk/**"]\ndigest = "1m"\n', encoding="utf-8")
    flush = function_server_factory(target="flush_digests", NOTIFY_CONFIG=str(rules),
                                    NOTIFY_STATE_BUCKET="no-such-state-bucket", GOOGLE_CLOUD_PROJECT=PROJECT)  # fmt: skip
    flush.new_log_lines()
    request = urllib.request.Request(flush.url, data=b"", method="POST", headers={"traceparent": TRACEPARENT})
    with pytest.raises(urllib.error.HTTPError) as answered:
        urllib.request.urlopen(request, timeout=60)
    assert answered.value.code == 503  # the held events could not be listed: one ERROR line
    lines = flush.new_log_lines()
    assert [line["severity"] for line in lines] == ["ERROR"]
    assert _traces(lines) == [EXPECTED]


# A P-256 public key as SendGrid shows one (the webhook refuses to start without a key).
_WEBHOOK_KEY = "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEXIrXeMQtGkBP7wjyyTt5mu/h6ZXI9urAnTilWC2GnLAKprzC0S+rerkcPvDv3psLnU5Wn4NQchXnosJ+ZpI+QQ=="


def test_the_sendgrid_webhook_s_lines_carry_the_trace(function_server_factory):
    webhook = function_server_factory(
        target="sendgrid_events", GOOGLE_CLOUD_PROJECT=PROJECT, SENDGRID_WEBHOOK_PUBLIC_KEY=_WEBHOOK_KEY
    )
    webhook.new_log_lines()
    status, _ = webhook.post(b"[]", {"Content-Type": "application/json", "X-Cloud-Trace-Context": CLOUD_TRACE})
    assert status == 403  # unsigned: one WARNING line saying so
    lines = webhook.new_log_lines()
    assert [(line["severity"], line["webhook"]) for line in lines] == [("WARNING", "rejected")]
    assert _traces(lines) == [EXPECTED]
