"""``main.py: sendgrid_events`` over real HTTP under functions-framework, as SendGrid posts to it:
batches signed with a real P-256 key pair; the history in the state bucket (fake-gcs-server) once
its store exists, else only what needs no shared store (a memory ledger is the process's own)."""

from __future__ import annotations

import base64
import http.client
import importlib.util
import json
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

from notifier import webhook
from tests.fake_gcs_server import STATE_BUCKET
from tests.test_webhook import OTHER, OURS, KeyPair, batch, key_pair, sending, sg_event, signed

needs_gcs_history = pytest.mark.skipif(
    importlib.util.find_spec("notifier.ledger.gcs_history") is None,
    reason="the state bucket's history store (notifier/ledger/gcs_history.py, helper J2) is not there yet",
)


def post(url: str, body: bytes, headers: dict[str, str], method: str = "POST") -> tuple[int, dict[str, Any], dict]:
    request = urllib.request.Request(url, data=body if method == "POST" else None, method=method,
                                     headers={"Content-Type": "application/json", **headers})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.loads(answer.read() or b"{}"), dict(answer.headers)
    except urllib.error.HTTPError as error:
        text = error.read()
        return error.code, json.loads(text) if text.startswith(b"{") else {}, dict(error.headers)


def now_signed(key: KeyPair, body: bytes, shift: int = 0) -> dict[str, str]:
    return signed(key, body, int(time.time()) + shift)


def webhook_lines(server) -> list[dict[str, Any]]:
    return [line for line in server.new_log_lines() if "webhook" in line or "outcome" in line]


@pytest.fixture(scope="module")
def key() -> KeyPair:
    return key_pair()


@pytest.fixture
def memory_server(function_server_factory, key):
    server = function_server_factory(target="sendgrid_events", SENDGRID_WEBHOOK_PUBLIC_KEY=key.public)
    server.new_log_lines(settle=0)
    return server


def test_unknown_ids_are_counted_and_ignored_over_http(memory_server, key):
    body = batch(sg_event("delivered", OTHER), sg_event("delivered", None), sg_event("group_unsubscribe", OTHER))
    status, counts, _ = post(memory_server.url, body, now_signed(key, body))
    assert (status, counts) == (
        200,
        {"received": 3, "recorded": 0, "duplicates": 0, "not_kept": 0, "unknown": 2, "ignored": 1},
    )
    (line,) = webhook_lines(memory_server)
    assert (line["severity"], line["webhook"], line["unknown"]) == ("INFO", "accepted", 2)


@pytest.mark.parametrize("tamper", ["body", "wrong key", "stale", "future", "no headers", "garbage signature"])
def test_an_unsigned_or_tampered_batch_is_403_with_one_warning(memory_server, key, tamper):
    body = batch(sg_event("delivered"))
    headers = {
        "body": lambda: now_signed(key, body.replace(b"delivered", b"bounce")),
        "wrong key": lambda: now_signed(key_pair(), body),
        "stale": lambda: now_signed(key, body, -601),
        "future": lambda: now_signed(key, body, 601),
        "no headers": dict,
        "garbage signature": lambda: {**now_signed(key, body), webhook.SIGNATURE_HEADER: "%%%"},
    }[tamper]()
    status, answer, _ = post(memory_server.url, body, headers)
    assert status == 403, answer
    assert [(line["severity"], line["webhook"]) for line in webhook_lines(memory_server)] == [("WARNING", "rejected")]


def test_over_a_mebibyte_is_413_and_only_post_is_accepted(memory_server, key):
    body = b"[" + b" " * webhook.MAX_BODY + b"]"
    status, _, _ = post(memory_server.url, body, now_signed(key, body))
    assert status == 413, memory_server.output()[-3000:]
    assert [line["severity"] for line in webhook_lines(memory_server)] == ["WARNING"]
    status, _, headers = post(memory_server.url, b"", {}, method="GET")
    assert (status, headers.get("Allow")) == (405, "POST")


def test_a_chunked_body_over_a_mebibyte_is_413_too(memory_server):
    address = urllib.parse.urlsplit(memory_server.url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    chunks = (b" " * 64 * 1024 for _ in range(webhook.MAX_BODY // (64 * 1024) + 2))
    headers = {"Content-Type": "application/json", **_plausible_headers()}  # as SendGrid's: the body is read
    connection.request("POST", "/", body=chunks, headers=headers, encode_chunked=True)
    try:
        assert connection.getresponse().status == 413
    finally:
        connection.close()
    assert [line["webhook"] for line in webhook_lines(memory_server)] == ["too large"]


def test_a_hostile_batch_is_answered_400_or_200_never_500(memory_server, key):
    huge = "z" * 100_000
    cases = {
        batch(*[{}] * 10_001): 400,
        batch(sg_event("bounce"), "junk", [1]): 400,
        batch(sg_event("bounce", OTHER, reason=huge, email={"a": [[[huge]]]}), {"x": {"y": [huge]}}): 200,
        b"[" * 200_000: 400,
    }
    for body, expected in cases.items():
        status, answer, _ = post(memory_server.url, body, now_signed(key, body))
        assert status == expected, answer
    assert all(line["severity"] in ("INFO", "WARNING") for line in webhook_lines(memory_server))


def test_without_a_key_the_webhook_refuses_to_start_naming_the_variable(function_server_factory):
    with pytest.raises(OSError, match="SENDGRID_WEBHOOK_PUBLIC_KEY") as refused:
        function_server_factory(target="sendgrid_events")
    (line,) = [json.loads(x) for x in str(refused.value).splitlines() if x.startswith("{") and "cannot start" in x]
    assert line["severity"] == "CRITICAL"
    assert line["message"].startswith("storage-notifier cannot start: SENDGRID_WEBHOOK_PUBLIC_KEY: required by")


def _plausible_headers() -> dict[str, str]:
    """Headers that pass the check made before the body is read (the signature is only checked after)."""
    return {
        webhook.SIGNATURE_HEADER: base64.b64encode(b"0" * 70).decode(),
        webhook.TIMESTAMP_HEADER: str(int(time.time())),
    }


def test_a_key_that_does_not_load_refuses_to_start_naming_the_variable(function_server_factory, key):
    der = bytearray(base64.b64decode(key.public))
    der[-1] ^= 1  # a mistyped character: P-256's form still, no longer a point of its curve
    with pytest.raises(OSError, match="SENDGRID_WEBHOOK_PUBLIC_KEY") as refused:
        function_server_factory(target="sendgrid_events", SENDGRID_WEBHOOK_PUBLIC_KEY=base64.b64encode(der).decode())
    (line,) = [json.loads(x) for x in str(refused.value).splitlines() if x.startswith("{") and "cannot start" in x]
    assert line["severity"] == "CRITICAL"
    assert line["message"].startswith("storage-notifier cannot start: SENDGRID_WEBHOOK_PUBLIC_KEY: the key does not")


def test_an_unsigned_body_over_a_mebibyte_is_403_read_and_dropped(memory_server):
    body = b"[" + b" " * (2 * webhook.MAX_BODY) + b"]"
    status, answer, headers = post(memory_server.url, body, {webhook.TIMESTAMP_HEADER: str(int(time.time()))})
    assert (status, headers.get("Connection")) == (403, "close"), memory_server.output()[-3000:]
    assert "the signature header is missing" in answer["error"]
    assert [(line["severity"], line["webhook"]) for line in webhook_lines(memory_server)] == [("WARNING", "rejected")]


def test_a_body_that_trickles_is_cut_off(memory_server):
    """A generous bound: not stuck holding a worker thread (the deadline is BODY_SECONDS)."""
    address = urllib.parse.urlsplit(memory_server.url)
    started = time.monotonic()
    with socket.create_connection((address.hostname, address.port), timeout=30) as sock:
        signature = "".join(f"{name}: {value}\r\n" for name, value in _plausible_headers().items()).encode()
        sock.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n"
                     + signature + b"\r\n[")  # fmt: skip
        while sock.recv(4096):  # whatever answer comes, then the close
            pass
    assert time.monotonic() - started < 25
    assert [line["webhook"] for line in webhook_lines(memory_server)] == ["incomplete"]


# --- the state bucket: recorded once, the history unchanged by what SendGrid did not sign --------


@pytest.fixture
def bucket_server(function_server_factory, fake_gcs, key):
    from notifier.ledger.bucket import StateBucket
    from tests.test_history_stores import ClaimedFirstGcsHistory  # the sending's claim says where it is

    history = ClaimedFirstGcsHistory(StateBucket(STATE_BUCKET, fake_gcs.url, retry_budget=0.0))
    history.record(sending())
    server = function_server_factory(target="sendgrid_events", SENDGRID_WEBHOOK_PUBLIC_KEY=key.public,
                                     NOTIFY_STATE_BUCKET=STATE_BUCKET, STORAGE_EMULATOR_HOST=fake_gcs.url)  # fmt: skip
    server.new_log_lines(settle=0)
    return server, history


@needs_gcs_history
def test_a_batch_posted_twice_is_recorded_once_in_the_state_bucket(bucket_server, key):
    server, history = bucket_server
    body = batch(sg_event("delivered"), sg_event("bounce", reason="550 5.1.1 no such user"), sg_event("open", OTHER))
    status, counts, _ = post(server.url, body, now_signed(key, body))
    assert (status, counts) == (
        200,
        {"received": 3, "recorded": 2, "duplicates": 0, "not_kept": 0, "unknown": 1, "ignored": 0},
    )
    first = webhook_lines(server)
    assert [(line["outcome"], line["recipient"], line["reason"]) for line in first if line["severity"] == "WARNING"] == [
        ("bounced", "ann@example.com", "550 5.1.1 no such user")]  # fmt: skip
    status, counts, _ = post(server.url, body, now_signed(key, body))
    assert (status, counts["recorded"], counts["duplicates"]) == (200, 0, 2)
    assert [line for line in webhook_lines(server) if line["severity"] == "WARNING"] == []
    assert sorted(e.event for e in history.events(OURS)) == ["bounce", "delivered"]


@needs_gcs_history
def test_a_tampered_batch_leaves_the_state_bucket_unchanged(bucket_server, key, fake_gcs):
    server, history = bucket_server
    before = fake_gcs.names(STATE_BUCKET, prefix="")
    body = batch(sg_event("delivered"))
    for headers in (now_signed(key, body + b" "), now_signed(key_pair(), body), now_signed(key, body, -700)):
        assert post(server.url, body, headers)[0] == 403
    assert fake_gcs.names(STATE_BUCKET, prefix="") == before
    assert history.events(OURS) == []


@needs_gcs_history
def test_hundreds_of_drops_for_one_id_are_each_recorded_and_warned_after_one_listing(bucket_server, key, fake_gcs):
    server, history = bucket_server
    drops = [sg_event("dropped", n=n, email=f"u{n}@example.com", reason="Bounced Address") for n in range(600)]
    body = batch(*drops)
    del fake_gcs.requests[:]
    status, counts, _ = post(server.url, body, now_signed(key, body))
    assert (status, counts) == (200, {"received": 600, "recorded": 600, "duplicates": 0, "not_kept": 0, "unknown": 0,
                                      "ignored": 0})  # fmt: skip
    warned = [line for line in webhook_lines(server) if line["severity"] == "WARNING"]
    assert sorted(line["recipient"] for line in warned) == sorted(f"u{n}@example.com" for n in range(600))
    listings = [
        r for r in fake_gcs.requests if r.method == "GET" and r.query.get("prefix") == f"history/events/{OURS}/"
    ]
    assert len(listings) == 1
    assert len(history.events(OURS)) == 600


@needs_gcs_history
def test_ids_found_unknown_are_not_read_again_by_the_instance(bucket_server, key, fake_gcs):
    server, _ = bucket_server
    strangers = [f"{n:032x}" for n in range(1, 21)]
    for n in (1, 2):
        body = batch(*[sg_event("delivered", i, n=n) for i in strangers])
        del fake_gcs.requests[:]
        status, counts, _ = post(server.url, body, now_signed(key, body))
        assert (status, counts["unknown"]) == (200, 20)
        reads = len(fake_gcs.requests)
        assert reads == (40 if n == 1 else 0), "two reads per id, once"


@needs_gcs_history
def test_alarm_lines_carry_the_request_s_trace(function_server_factory, fake_gcs, key):
    from notifier.ledger.bucket import StateBucket
    from tests.test_history_stores import ClaimedFirstGcsHistory  # the sending's claim says where it is

    history = ClaimedFirstGcsHistory(StateBucket(STATE_BUCKET, fake_gcs.url, retry_budget=0.0))
    history.record(sending(OURS))
    history.record(sending(OTHER))
    server = function_server_factory(target="sendgrid_events", SENDGRID_WEBHOOK_PUBLIC_KEY=key.public,
                                     NOTIFY_STATE_BUCKET=STATE_BUCKET, STORAGE_EMULATOR_HOST=fake_gcs.url,
                                     GOOGLE_CLOUD_PROJECT="my-project-1")  # fmt: skip
    server.new_log_lines(settle=0)
    trace_id = "0af7651916cd43dd8448eb211c80319c"
    body = batch(sg_event("bounce", OURS), sg_event("spamreport", OTHER))
    headers = {**now_signed(key, body), "traceparent": f"00-{trace_id}-b7ad6b7169203331-01"}
    assert post(server.url, body, headers)[0] == 200
    warned = [line for line in webhook_lines(server) if line["severity"] == "WARNING"]
    assert sorted(line["outcome"] for line in warned) == ["bounced", "spam"]
    assert {line.get("logging.googleapis.com/trace") for line in warned} == {f"projects/my-project-1/traces/{trace_id}"}
