"""Issue 12, the HTTP edge: forged huge events, oversized and slow bodies, unclear framework errors.

Over real HTTP against functions-framework serving main.py. Memory is the worker's own peak
(``VmHWM`` of the gunicorn worker, the child of the process the fixture starts).
"""

from __future__ import annotations

import http.client
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from cloudevents.conversion import to_binary, to_structured

from notifier.payloads import background_event, object_resource
from tests.conftest import storage_cloud_event

MIB = 1024 * 1024
LINE_BOUND = 16 * 1024  # notifier.log.LINE_LIMIT, written out so a change to it fails here


@pytest.fixture(scope="module")
def server(function_server_factory):
    return function_server_factory(NOTIFY_BACKEND="outbox")


def _worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    assert len(children) == 1, f"expected one gunicorn worker under {master}, found {children}"
    return int(children[0])


def _peak_rss_mib(master: int) -> float:
    for line in Path(f"/proc/{_worker_pid(master)}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM in /proc status")


def _binary(name: str, event_id: str) -> tuple[bytes, dict[str, str]]:
    headers, body = to_binary(storage_cloud_event(name=name, event_id=event_id))
    if len(name) > 1024:  # gunicorn refuses a header over 8 KiB (431) before our code runs
        del headers["ce-subject"]
    return body, headers


def _structured(name: str, event_id: str) -> tuple[bytes, dict[str, str]]:
    headers, body = to_structured(storage_cloud_event(name=name, event_id=event_id))
    return body, headers


def _first_gen(name: str, event_id: str) -> tuple[bytes, dict[str, str]]:
    event = background_event("finalize", object_resource("finalize", "acme", name), event_id)
    return json.dumps(event).encode(), {"Content-Type": "application/json"}


MODES = {"binary": _binary, "structured": _structured, "first-gen": _first_gen}


def _raw_lines(server) -> list[str]:
    """Every JSON line written so far, as written (to check their length)."""
    return [line for line in server.output().splitlines() if line.startswith("{")]


def _assert_one_bounded_invalid_line(server, lines_before: int, *needles: str) -> dict[str, Any]:
    time.sleep(0.05)  # the worker flushes each line as it logs; give the pipe a moment
    new = _raw_lines(server)[lines_before:]
    assert len(new) == 1, [line[:300] for line in new]
    assert len(new[0].encode()) <= LINE_BOUND, len(new[0])
    record = json.loads(new[0])
    assert record["outcome"] == "invalid" and record["severity"] == "ERROR"
    for needle in needles:
        assert needle in record["message"], record["message"]
    return record


@pytest.mark.parametrize("mode", MODES)
def test_a_3_mb_name_is_acknowledged_once_sends_nothing_and_the_worker_stays_small(server, mode):
    emails, lines = server.emails(), len(_raw_lines(server))

    status, _ = server.post(*MODES[mode]("n" * 3 * MIB, f"huge-{mode}"))

    assert 200 <= status < 300, "a non-2xx would make Eventarc redeliver it for a day"
    _assert_one_bounded_invalid_line(server, lines, "body", "over the 524,288-byte limit")
    assert server.emails() == emails
    assert _peak_rss_mib(server.process.pid) < 100


@pytest.mark.parametrize("mode", MODES)
def test_a_name_over_1024_bytes_inside_the_body_limit_is_invalid_naming_the_field(server, mode):
    emails, lines = server.emails(), len(_raw_lines(server))

    # The name is in the body three times at most (name, id, subject): 450 KB, inside the 512 KiB.
    status, _ = server.post(*MODES[mode]("n" * 150_000, f"long-{mode}"))

    assert 200 <= status < 300
    _assert_one_bounded_invalid_line(server, lines, "data.name: 150,000 bytes of UTF-8, over the limit 1,024")
    assert server.emails() == emails


def test_eight_1_mb_names_at_once_leave_the_worker_small_and_send_nothing(server):
    emails, lines = server.emails(), len(_raw_lines(server))

    statuses = _eight_at_once(server, "m" * 1_000_000, "eight")

    assert all(200 <= s < 300 for s in statuses), statuses
    _wait_for_lines(server, lines, "over the 524,288-byte limit", 8)
    new = [json.loads(line) for line in _raw_lines(server)[lines:]]
    assert [r["outcome"] for r in new] == ["invalid"] * 8
    assert all("over the 524,288-byte limit" in r["message"] for r in new)
    assert server.emails() == emails
    assert _peak_rss_mib(server.process.pid) < 100


def test_eight_events_just_inside_the_body_limit_at_once_are_parsed_and_refused_by_name(server):
    emails, lines = server.emails(), len(_raw_lines(server))

    statuses = _eight_at_once(server, "p" * 150_000, "inside")

    assert all(200 <= s < 300 for s in statuses), statuses
    refused = _wait_for_lines(server, lines, "data.name: 150,000 bytes of UTF-8", 8)
    assert len(refused) == 8
    assert server.emails() == emails
    assert _peak_rss_mib(server.process.pid) < 100


def _eight_at_once(server, name: str, tag: str) -> list[int]:
    """Eight events about ``name``, in every delivery mode by turns, posted at the same time."""
    requests = [MODES[mode](name, f"{tag}-{i}") for i, mode in enumerate(list(MODES) * 3)][:8]
    with ThreadPoolExecutor(8) as pool:
        return [status for status, _ in pool.map(lambda r: server.post(*r), requests)]


def _post_chunked(url: str, chunks: list[bytes], headers: dict[str, str]) -> int:
    host, port = url.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.request("POST", "/", body=iter(chunks), headers=headers, encode_chunked=True)
        return connection.getresponse().status
    finally:
        connection.close()


def test_a_chunked_body_without_content_length_is_bounded_too(server):
    emails, lines = server.emails(), len(_raw_lines(server))
    body, headers = _structured("c" * 3 * MIB, "chunked")
    chunks = [body[i : i + 64 * 1024] for i in range(0, len(body), 64 * 1024)]

    status = _post_chunked(server.url, chunks, headers)

    assert 200 <= status < 300
    _assert_one_bounded_invalid_line(server, lines, "more than 524,288 bytes")
    assert server.emails() == emails
    # still serving, and a small chunked event still works
    body, headers = _binary("after-chunked.csv", "after-chunked")
    assert _post_chunked(server.url, [body[:10], body[10:]], headers) == 200
    assert len(server.emails()) == len(emails) + 1


CE_HEADERS = {
    "Content-Type": "application/json",
    "ce-specversion": "1.0",
    "ce-id": "1",
    "ce-source": "//storage.googleapis.com/projects/_/buckets/acme",
    "ce-type": "google.cloud.storage.object.v1.finalized",
}
STRUCTURED = {
    "specversion": "1.0",
    "id": "1",
    "source": "//storage.googleapis.com/projects/_/buckets/acme",
    "type": "google.cloud.storage.object.v1.finalized",
    "data": {"bucket": "acme", "name": "a.csv"},
}
DATA = json.dumps({"bucket": "acme", "name": "a.csv"}).encode()


def _without(mapping: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in mapping.items() if k != key}


UNCLEAR = [
    pytest.param(DATA, _without(CE_HEADERS, "ce-id"), "binary-mode CloudEvent: header ce-id is missing", id="no-ce-id"),
    pytest.param(DATA, _without(CE_HEADERS, "ce-source"), "header ce-source is missing", id="no-ce-source"),
    pytest.param(DATA, _without(CE_HEADERS, "ce-type"), "header ce-type is missing", id="no-ce-type"),
    pytest.param(
        DATA, {**CE_HEADERS, "ce-specversion": "9.9"}, "specversion 9.9 is not supported; expected 1.0", id="binary-9.9"
    ),
    pytest.param(
        json.dumps(_without(STRUCTURED, "id")).encode(),
        {"Content-Type": "application/cloudevents+json"},
        "structured CloudEvent: attribute id is missing",
        id="structured-no-id",
    ),
    pytest.param(
        json.dumps({**STRUCTURED, "specversion": "9.9"}).encode(),
        {"Content-Type": "application/cloudevents+json"},
        "specversion 9.9 is not supported; expected 1.0",
        id="structured-9.9",
    ),
]


@pytest.mark.parametrize(("body", "headers", "reason"), UNCLEAR)
def test_a_cloudevent_missing_an_attribute_says_which(server, body, headers, reason):
    lines = len(_raw_lines(server))
    status, answer = server.post(body, headers)
    assert 200 <= status < 300
    record = _assert_one_bounded_invalid_line(server, lines, reason)
    assert "Unable to find CloudEvent equivalent type" not in record["message"]
    assert reason in answer


# Slow clients: sockets that send their headers and a byte of body, then nothing more. The server
# must shed them and keep answering; the test never sleeps, it only waits on sockets.
def _stalled_body_client(url: str) -> socket.socket:
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=60)
    head = (
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nce-specversion: 1.0\r\nce-id: slow\r\n"
        "ce-source: s\r\nce-type: google.cloud.storage.object.v1.finalized\r\nContent-Length: 1000\r\n\r\n{"
    )
    sock.sendall(head.encode())
    return sock


def _wait_for_lines(server, lines_before: int, needle: str, count: int) -> list[dict[str, Any]]:
    # A shed client sees its socket close a moment before the worker logs why: poll, bounded.
    give_up = time.monotonic() + 10
    while True:
        found = [json.loads(line) for line in _raw_lines(server)[lines_before:] if needle in line]
        if len(found) >= count or time.monotonic() > give_up:
            return found
        time.sleep(0.05)


def test_stalled_bodies_are_shed_and_a_normal_event_is_still_answered(function_server_factory):
    server = function_server_factory(NOTIFY_BACKEND="outbox")
    lines = len(_raw_lines(server))
    stalled = [_stalled_body_client(server.url) for _ in range(20)]
    try:
        started = time.monotonic()
        status, _ = server.post(*_binary("during-stall.csv", "during-stall"))
        answered_in = time.monotonic() - started

        assert status == 200
        assert answered_in < 15, f"a normal event waited {answered_in:.1f}s behind stalled clients"
        # Every stalled client is disconnected (recv returns, never hangs to the socket timeout).
        for sock in stalled:
            sock.settimeout(30)
            try:
                while sock.recv(4096):
                    pass
            except ConnectionResetError:
                pass
    finally:
        for sock in stalled:
            sock.close()
    shed = _wait_for_lines(server, lines, "not received within", 20)
    assert len(shed) == 20
    assert all(r["outcome"] == "invalid" and r["body_bytes_expected"] == 1000 for r in shed)
