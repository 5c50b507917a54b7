"""Requests functions-framework rejects while converting them: one ERROR line naming what was
wrong, without a traceback (tracebacks are for our own bugs), over real HTTP; and a bug of ours
still logged with its traceback."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from cloudevents.conversion import to_binary
from flask import Flask
from functions_framework import create_app
from werkzeug.exceptions import BadRequest

from notifier import http
from tests.conftest import settings_for, storage_cloud_event


@pytest.fixture(scope="module")
def server(function_server_factory):
    return function_server_factory(NOTIFY_BACKEND="outbox")


JSON, STRUCTURED = {"Content-Type": "application/json"}, {"Content-Type": "application/cloudevents+json"}
BINARY = {
    "Content-Type": "application/json",
    "ce-specversion": "1.0",
    "ce-id": "rejected-1",
    "ce-source": "//storage.googleapis.com/projects/_/buckets/acme",
    "ce-type": "google.cloud.storage.object.v1.finalized",
}
NOT_AN_OBJECT = "the body is not the JSON object a CloudEvent or 1st-gen event must be"
REJECTED = [
    pytest.param(b"[1, 2, 3]", JSON, (NOT_AN_OBJECT, "it is an array"), id="array"),
    pytest.param(b"[1, 2, 3]", STRUCTURED, (NOT_AN_OBJECT, "it is an array"), id="array-structured"),
    pytest.param(b'"just a string"', JSON, (NOT_AN_OBJECT, "it is a string"), id="string"),
    pytest.param(b'"just a string"', STRUCTURED, (NOT_AN_OBJECT, "it is a string"), id="string-structured"),
    pytest.param(b'{"name": "caf\xe9.csv"}', JSON, ("not valid UTF-8", "byte 0xe9 at position 13"), id="latin-1"),
    pytest.param(b"\xff\xfe\xfa", STRUCTURED, ("not valid UTF-8", "byte 0xff at position 0"), id="not-utf8"),
    pytest.param(b"[" * 100_000, JSON, (NOT_AN_OBJECT, "nested too deeply"), id="deep-array"),
    pytest.param(b'{"a":' * 50_000, STRUCTURED, (NOT_AN_OBJECT, "nested too deeply"), id="deep-object"),
    pytest.param(b"[" * 100_000, BINARY, ("binary-mode CloudEvent", "nested too deeply"), id="deep-binary"),
    # A 1st-gen shape whose context is not an object; and a Pub/Sub push whose message is a list.
    pytest.param(b'{"context": [1], "data": {}}', JSON, ("context: expected a JSON object, got an array",), id="gen1"),
    pytest.param(
        b'{"subscription": "s", "message": {"data": "e30=", "messageId": "1", "attributes": []}}',
        JSON, ("attributes",), id="pubsub-attributes-list",
    ),
]  # fmt: skip


def _errors(lines: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [line for line in lines if line["severity"] == "ERROR"]


def _raw_tracebacks(server) -> list[str]:
    return [line for line in server.output().splitlines() if "Traceback" in line and not line.startswith("{")]


@pytest.mark.parametrize(("body", "headers", "needles"), REJECTED)
def test_a_request_the_framework_cannot_convert_is_one_error_line_without_a_traceback(server, body, headers, needles):
    server.new_log_lines()

    status, answer = server.post(body, headers)

    # 2xx, as for every invalid event: Eventarc redelivers a 4xx for a day (README "Limits").
    assert status == 200, answer
    lines = server.new_log_lines()
    (error,) = _errors(lines)
    assert "traceback" not in error, error["message"]
    assert error["outcome"] == "invalid"
    for needle in needles:
        assert needle in error["message"], error["message"]
    assert not _raw_tracebacks(server), "a crash printed outside the structured log"
    assert len(json.dumps(error)) < 4096, "the line says what was wrong, it does not echo the body"
    # still serving
    assert server.post(*reversed(to_binary(storage_cloud_event(event_id="after-rejected"))))[0] == 200


class _BrokenPipeline:
    """A pipeline with a bug: what :func:`notifier.http.install` needs, and a handle that raises."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.settings = real.settings  # the project its lines' trace is named in

    def reject(self, reason: str, **fields: Any) -> None:
        self._real.reject(reason, **fields)

    def handle(self, cloud_event: Any, *, percent_encoded: bool = False) -> None:
        raise ZeroDivisionError("a bug of ours")


def test_a_bug_of_ours_is_still_logged_with_its_traceback(clean_notifier_env, capsys):
    from notifier.pipeline import Pipeline

    pipeline = _BrokenPipeline(Pipeline(settings_for(NOTIFY_BACKEND="console")))
    app = Flask(__name__)
    http.install(app, pipeline)  # type: ignore[arg-type]
    app.add_url_rule("/", "event", lambda: http.handle(pipeline, {"id": "1"}) or "OK", methods=["POST"])
    capsys.readouterr()

    answer = app.test_client().post("/", data=b"{}", headers=JSON)

    assert answer.status_code == 200
    (line,) = [json.loads(text) for text in capsys.readouterr().out.splitlines()]
    assert line["severity"] == "ERROR"
    assert "ZeroDivisionError: a bug of ours" in line["message"]
    assert "ZeroDivisionError" in line["traceback"]


def _raising(error: Exception) -> Any:
    def raise_it(*args: Any, **kwargs: Any) -> Any:
        raise error

    return raise_it


@pytest.mark.parametrize(
    "error",
    [KeyError("bug in our body reader"), BadRequest("an HTTP error raised by our body reader")],
    ids=["plain", "http-exception"],
)
def test_a_bug_in_our_body_reader_is_logged_with_its_traceback(clean_notifier_env, capsys, monkeypatch, error):
    # Our before-request hook runs before the framework converts the request: what it raises is
    # ours, not a request the framework rejected. In-process, so that the hook can be broken.
    monkeypatch.setenv("NOTIFY_FROM", "Alerts <alerts@example.com>")
    monkeypatch.setenv("NOTIFY_TO", "ops@example.com")
    monkeypatch.setattr(sys, "path", list(sys.path))  # create_app appends the source's folder
    monkeypatch.delitem(sys.modules, "main", raising=False)  # and registers the module as "main"
    app = create_app(target="handle_storage_event", source=str(Path(__file__).parent.parent / "main.py"))
    monkeypatch.setattr(http, "read_body", _raising(error))
    headers, body = to_binary(storage_cloud_event(event_id="hook-bug"))
    capsys.readouterr()

    answer = app.test_client().post("/", data=body, headers=dict(headers))

    assert answer.status_code == 200, answer.get_data(as_text=True)
    (line,) = _errors([json.loads(text) for text in capsys.readouterr().out.splitlines()])
    assert type(error).__name__ in line["message"], line["message"]
    assert "functions-framework" not in line["message"], "our bug blamed on the framework"
    assert type(error).__name__ in line.get("traceback", ""), line
    assert "_read_body" in line["traceback"], "the traceback shows where in our hook"
