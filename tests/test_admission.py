"""Admission control (NOTIFY_MAX_IN_FLIGHT): a saturated instance answers 429 at once, without
reading the body, and says so in at most one WARNING line per 10 s; the slot is freed whatever
happened to the request. notifier.admission with a fake clock and timers; main.py under
functions-framework over real HTTP with a SendGrid stand-in that holds its answers; every target
main.py serves."""

from __future__ import annotations

import io
import json
import queue
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cloudevents.conversion import to_binary
from flask import Flask
from functions_framework import create_app
from pytest_httpserver import HTTPServer
from werkzeug import Request, Response

from notifier import http, httpclient, tracing
from notifier.admission import Admission, daemon_timer
from notifier.config import ConfigError
from tests.conftest import SECRET_KEY, settings_for, storage_cloud_event
from tests.test_webhook import key_pair

CAP_LINE = "2 requests at once is this instance's cap (NOTIFY_MAX_IN_FLIGHT)"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeTimers:
    """Admission's timer factory: records each call armed, fired only when the test says so."""

    def __init__(self) -> None:
        self.armed: list[tuple[float, Callable[[], None]]] = []

    def __call__(self, delay: float, call: Callable[[], None]) -> None:
        self.armed.append((delay, call))

    def fire(self) -> None:
        """Run the calls armed so far (a call may arm another: it waits for the next fire)."""
        due, self.armed = self.armed, []
        for _, call in due:
            call()


def _admission(limit: int, clock: FakeClock) -> Admission:
    """An Admission on a fake clock whose timers never fire unless a test fires them: a real one
    would log, 10 s later, into whatever test runs then."""
    return Admission(limit, clock=clock, timer=FakeTimers())


def _warnings(text: str) -> list[dict[str, Any]]:
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    return [line for line in lines if line["severity"] == "WARNING"]


# ---------------------------------------------------------------------------------------------
# notifier.admission


def test_the_request_over_the_cap_is_refused_and_a_leave_frees_its_slot(capsys):
    admission = _admission(2, FakeClock())

    assert [admission.enter(), admission.enter(), admission.enter()] == [True, True, False]
    assert admission.in_flight == 2
    admission.leave()
    assert admission.enter() is True
    assert admission.enter() is False
    assert admission.in_flight == 2


def test_refusals_within_10_s_make_one_line_and_the_next_line_counts_them(capsys):
    clock = FakeClock()
    admission = _admission(2, clock)
    admission.enter(), admission.enter()
    capsys.readouterr()

    assert admission.enter() is False  # the first refusal is said at once
    (first,) = _warnings(capsys.readouterr().out)
    for _ in range(4):  # within 10 s: counted, not logged
        clock.now += 2
        assert admission.enter() is False
    assert _warnings(capsys.readouterr().out) == []
    clock.now += 2.5  # 10.5 s after the first line
    assert admission.enter() is False
    (second,) = _warnings(capsys.readouterr().out)

    assert (first["refused"], first["max_in_flight"]) == (1, 2)
    assert first["message"] == f"1 request(s) refused with 429: {CAP_LINE}"
    assert (second["refused"], second["max_in_flight"]) == (5, 2)
    assert second["message"] == f"5 request(s) refused with 429 in the last 10s: {CAP_LINE}"


def test_refusals_still_unreported_when_the_burst_ends_are_reported_by_a_later_leave(capsys):
    clock = FakeClock()
    admission = _admission(2, clock)
    admission.enter(), admission.enter()
    admission.enter()  # the first refusal: logged at once
    clock.now += 1
    admission.enter(), admission.enter()  # counted
    capsys.readouterr()

    admission.leave()  # 1 s after the line: too soon
    assert _warnings(capsys.readouterr().out) == []
    clock.now += 11
    admission.leave()
    (line,) = _warnings(capsys.readouterr().out)
    clock.now += 30
    admission.enter(), admission.leave(), admission.leave()  # nothing refused since: nothing to say

    assert line["refused"] == 2
    assert line["message"] == f"2 request(s) refused with 429 in the last 12s: {CAP_LINE}"
    assert _warnings(capsys.readouterr().out) == []


def test_refusals_counted_after_a_line_are_logged_when_it_is_due_though_nothing_more_arrives(capsys):
    clock, timers = FakeClock(), FakeTimers()
    admission = Admission(2, clock=clock, timer=timers)
    admission.enter(), admission.enter()
    admission.enter()  # the first refusal: logged at once, nothing to wait for
    assert timers.armed == []
    capsys.readouterr()
    clock.now += 1
    for _ in range(3):  # counted: one timer, for when the next line is due
        admission.enter()
    admission.leave(), admission.leave()  # the burst ends 1 s after the line: too soon to say
    assert [delay for delay, _ in timers.armed] == [9.0]
    assert _warnings(capsys.readouterr().out) == []

    clock.now += 9
    timers.fire()  # nothing more arrives: the timer says what was counted

    (line,) = _warnings(capsys.readouterr().out)
    assert (line["refused"], line["max_in_flight"]) == (3, 2)
    assert line["message"] == f"3 request(s) refused with 429 in the last 10s: {CAP_LINE}"
    assert timers.armed == []


def test_the_timer_says_nothing_when_a_later_leave_said_it_and_rearms_when_it_fires_early(capsys):
    clock, timers = FakeClock(), FakeTimers()
    admission = Admission(1, clock=clock, timer=timers)
    admission.enter(), admission.enter()  # the line of the first refusal
    clock.now += 2
    admission.enter()
    capsys.readouterr()
    clock.now += 9
    admission.leave()  # due: said now
    (said,) = _warnings(capsys.readouterr().out)
    timers.fire()
    assert _warnings(capsys.readouterr().out) == [], "said twice"
    assert said["refused"] == 1

    admission.enter()
    clock.now += 1
    admission.enter()  # 1 s after the leave's line: a new timer, 9 s away
    clock.now += 8.5
    timers.fire()  # half a second early (another clock): not yet, and armed again for the rest
    assert _warnings(capsys.readouterr().out) == []
    assert [delay for delay, _ in timers.armed] == [0.5]
    clock.now += 0.5
    timers.fire()
    (line,) = _warnings(capsys.readouterr().out)
    assert line["refused"] == 1


def test_a_timer_that_cannot_start_refuses_nothing_more_and_a_later_refusal_arms_another(capsys):
    clock, timers = FakeClock(), FakeTimers()

    def no_thread(delay: float, call: Callable[[], None]) -> None:
        raise RuntimeError("can't start new thread")

    admission = Admission(1, clock=clock, timer=no_thread)
    admission.enter(), admission.enter()  # the first refusal's line
    clock.now += 1
    assert admission.enter() is False  # its timer could not start: still a 429, not an exception
    admission._timer = timers
    clock.now += 1
    admission.enter()
    clock.now += 8
    timers.fire()

    assert _warnings(capsys.readouterr().out)[-1]["refused"] == 2


def test_the_default_timer_is_a_daemon_thread_that_calls_once():
    called: queue.Queue[bool] = queue.Queue()

    daemon_timer(0.0, lambda: called.put(threading.current_thread().daemon))

    assert called.get(timeout=10) is True
    assert called.empty()


def test_many_threads_never_have_more_than_the_cap_inside_and_leave_it_empty(capsys):
    admission = _admission(3, FakeClock())
    inside, most, admitted, refused = [0], [0], [0], [0]
    guard = threading.Lock()
    start = threading.Barrier(16)

    def work() -> None:
        start.wait(10)
        for _ in range(2000):
            if not admission.enter():
                with guard:
                    refused[0] += 1
                continue
            with guard:
                inside[0] += 1
                most[0] = max(most[0], inside[0])
                admitted[0] += 1
            with guard:
                inside[0] -= 1
            admission.leave()

    threads = [threading.Thread(target=work) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)

    assert admitted[0] + refused[0] == 16 * 2000
    assert 1 <= most[0] <= 3
    assert admission.in_flight == 0
    assert len(_warnings(capsys.readouterr().out)) <= 1  # the clock never moved: one line at most


# ---------------------------------------------------------------------------------------------
# NOTIFY_MAX_IN_FLIGHT


def test_max_in_flight_is_unset_by_default_and_a_whole_number_when_set():
    assert settings_for().max_in_flight is None
    assert settings_for(NOTIFY_MAX_IN_FLIGHT=" 32 ").max_in_flight == 32


@pytest.mark.parametrize("value", ["0", "-1", "x", "1.5", "1001"])
def test_a_bad_max_in_flight_stops_the_start_naming_the_variable(value):
    with pytest.raises(ConfigError) as caught:
        settings_for(NOTIFY_MAX_IN_FLIGHT=value)
    (problem,) = caught.value.problems
    assert problem.startswith("NOTIFY_MAX_IN_FLIGHT: expected a whole number")
    assert repr(value) in problem


def test_a_bad_max_in_flight_stops_the_function_server(function_server_factory):
    with pytest.raises(OSError, match="NOTIFY_MAX_IN_FLIGHT: expected a whole number"):
        function_server_factory(NOTIFY_BACKEND="outbox", NOTIFY_MAX_IN_FLIGHT="0")


# ---------------------------------------------------------------------------------------------
# Every target main.py serves, in process: the cap filled by hand, the next request refused unread.


class _Unreadable(io.BytesIO):
    """A request body that fails the test if anything reads it."""

    def read(self, *args: Any) -> bytes:
        raise AssertionError("the body of a refused request was read")

    readline = readinto = read1 = read


def _main_app(target: str, monkeypatch: pytest.MonkeyPatch, **env: str) -> Flask:
    """main.py's app for ``target`` as functions-framework builds it, with a cap of 1."""
    for var, value in {"NOTIFY_BACKEND": "console", "NOTIFY_FROM": "Alerts <alerts@example.com>",
                       "NOTIFY_TO": "ops@example.com", "NOTIFY_MAX_IN_FLIGHT": "1",
                       "SENDGRID_WEBHOOK_PUBLIC_KEY": key_pair().public, **env}.items():  # fmt: skip
        monkeypatch.setenv(var, value)
    monkeypatch.setattr(sys, "path", list(sys.path))  # create_app appends the source's folder
    monkeypatch.delitem(sys.modules, "main", raising=False)  # and registers the module as "main"
    return create_app(target=target, source=str(Path(__file__).parent.parent / "main.py"))


@pytest.mark.parametrize("target", ["handle_storage_event", "flush_digests", "sendgrid_events"])
def test_every_target_refuses_over_the_cap_before_reading_the_body(target, monkeypatch, capsys):
    app = _main_app(target, monkeypatch)
    admission: Admission = app.extensions[http.ADMISSION]
    assert admission.enter() is True  # the one slot is taken
    capsys.readouterr()

    answer = app.test_client().post(
        "/", input_stream=_Unreadable(b"{" * 100), headers={"Content-Type": "application/json", "Content-Length": "100"}
    )

    assert answer.status_code == 429
    assert answer.headers["Retry-After"] == "1"
    assert answer.get_data(as_text=True) == "too many requests at once: retry later\n"
    (line,) = _warnings(capsys.readouterr().out)
    assert (line["refused"], line["max_in_flight"]) == (1, 1)
    admission.leave()
    assert app.test_client().get("/").status_code != 429  # the slot is free again
    assert admission.in_flight == 0


def test_a_line_said_at_the_end_of_another_request_carries_no_trace_of_that_request(monkeypatch, capsys):
    app = _main_app("handle_storage_event", monkeypatch, GOOGLE_CLOUD_PROJECT="my-project-123")
    admission: Admission = app.extensions[http.ADMISSION]
    clock, timers = FakeClock(), FakeTimers()
    monkeypatch.setattr(admission, "_clock", clock)
    monkeypatch.setattr(admission, "_timer", timers)
    refused_trace, admitted_trace = "a" * 32, "b" * 32
    client = app.test_client()

    def post(trace_id: str) -> Any:
        headers = {"Content-Type": "application/json", "traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}
        return client.post("/", data=b"[1]", headers=headers)

    admission.enter()  # the one slot is taken
    capsys.readouterr()

    refusals = [post(refused_trace), post(refused_trace)]
    admission.leave()
    clock.now += 11  # the second refusal's line is due: the next request to end says it
    admitted = post(admitted_trace)
    first, combined = _warnings(capsys.readouterr().out)

    assert [answer.status_code for answer in refusals] == [429, 429]
    assert admitted.status_code == 200  # acknowledged: not an event
    assert first["refused"] == 1
    assert first[tracing.TRACE_FIELD] == f"projects/my-project-123/traces/{refused_trace}"
    assert combined["refused"] == 1
    assert tracing.TRACE_FIELD not in combined, "filed under a request it is not about"
    assert tracing.SPAN_FIELD not in combined


# ---------------------------------------------------------------------------------------------
# Over real HTTP: two events held at the SendGrid stand-in, the next ones refused at once.


class HeldSendGrid:
    """SendGrid's stand-in: answers 202, each answer held until ``release`` is set."""

    def __init__(self) -> None:
        self.server = HTTPServer(host="127.0.0.1", threaded=True)
        self.release = threading.Event()
        self.arrived: queue.Queue[bytes] = queue.Queue()
        self.status = 202
        self.server.expect_request("/v3/mail/send").respond_with_handler(self._answer)

    def _answer(self, request: Request) -> Response:
        self.arrived.put(request.get_data())
        self.release.wait(30)
        return Response("", status=self.status, headers={"X-Message-Id": f"m-{self.arrived.qsize()}"})

    @property
    def host(self) -> str:
        return self.server.url_for("").rstrip("/")


@pytest.fixture
def sendgrid() -> Iterator[HeldSendGrid]:
    stand_in = HeldSendGrid()
    stand_in.server.start()
    try:
        yield stand_in
    finally:
        stand_in.release.set()
        stand_in.server.clear()
        stand_in.server.stop()


@pytest.fixture
def capped(function_server_factory, sendgrid):
    server = function_server_factory(
        NOTIFY_BACKEND="sendgrid", SENDGRID_API_KEY=SECRET_KEY, SENDGRID_API_HOST=sendgrid.host,
        NOTIFY_MAX_IN_FLIGHT="2", THREADS="6", NOTIFY_MAX_ATTEMPTS="1", GOOGLE_CLOUD_PROJECT="my-project-123",
    )  # fmt: skip
    server.new_log_lines(settle=0)
    return server


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], str]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, dict(answer.headers), answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read().decode()


def _event(event_id: str) -> tuple[bytes, dict[str, str]]:
    headers, body = to_binary(storage_cloud_event(name=f"in/{event_id}.csv", event_id=event_id))
    return body, dict(headers)


def _in_background(url: str, event_id: str, answers: queue.Queue) -> threading.Thread:
    body, headers = _event(event_id)
    thread = threading.Thread(target=lambda: answers.put((event_id, _post(url, body, headers)[0])))
    thread.start()
    return thread


def test_a_saturated_instance_answers_429_at_once_unread_and_recovers(capped, sendgrid):
    answers: queue.Queue[tuple[str, int]] = queue.Queue()
    held = [_in_background(capped.url, f"held-{n}", answers) for n in range(2)]
    for _ in held:  # both are at SendGrid: every slot is busy
        sendgrid.arrived.get(timeout=20)

    refused = []
    for _ in range(3):  # a body that would be an invalid event, were it read
        started = time.monotonic()
        answer = _post(capped.url, b"{not json", {"Content-Type": "application/json", "traceparent": TRACEPARENT})
        refused.append((answer, time.monotonic() - started))
    assert answers.empty(), "the held events were answered before their release"
    sendgrid.release.set()
    for thread in held:
        thread.join(30)
    lines = capped.new_log_lines(settle=0.2)
    after = _post(capped.url, *_event("after"))

    for (status, headers, text), seconds in refused:
        assert (status, headers.get("Retry-After"), text) == (429, "1", "too many requests at once: retry later\n")
        assert seconds < 5, "not answered at once"
    assert sorted(answers.get_nowait() for _ in held) == [("held-0", 200), ("held-1", 200)]
    assert sorted(line["event_id"] for line in lines if line.get("outcome") == "sent") == ["held-0", "held-1"]
    assert not [line for line in lines if line.get("outcome") == "invalid"], "a refused body was read"
    (warning,) = _warnings("\n".join(json.dumps(line) for line in lines))
    assert (warning["refused"], warning["max_in_flight"]) == (1, 2)
    assert warning["message"] == f"1 request(s) refused with 429: {CAP_LINE}"
    assert warning["logging.googleapis.com/trace"] == "projects/my-project-123/traces/4bf92f3577b34da6a3ce929d0e0e4736"
    assert after[0] == 200
    assert sendgrid.arrived.qsize() == 1  # the event after the burst was sent


def test_slots_are_freed_after_a_failing_function_and_after_rejected_bodies(capped, sendgrid):
    sendgrid.release.set()
    sendgrid.status = 500  # NOTIFY_MAX_ATTEMPTS=1: the function raises RetryLater, answered 500
    failing = [_post(capped.url, *_event(f"fails-{n}"))[0] for n in range(3)]
    sendgrid.status = 202
    invalid = _post(capped.url, b"[1, 2, 3]", {"Content-Type": "application/json"})[0]  # read, then rejected
    too_big = _post(capped.url, b"{" + b" " * 600_000 + b"}", {"Content-Type": "application/json"})[0]
    lines = capped.new_log_lines(settle=0.2)

    answers = [_post(capped.url, *_event(f"then-{n}"))[0] for n in range(3)]

    assert failing == [500, 500, 500]
    assert [line.get("outcome") for line in lines if line.get("event_id", "").startswith("fails-")] == ["retrying"] * 3
    assert (invalid, too_big) == (200, 200)
    assert answers == [200, 200, 200]
    assert not _warnings("\n".join(json.dumps(line) for line in capped.new_log_lines(settle=0.2)))


# ---------------------------------------------------------------------------------------------
# The connection pool keeps a connection for each request that may send at once.


class _Counting(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    connections = 0
    lock = threading.Lock()
    barrier: threading.Barrier

    def setup(self) -> None:
        super().setup()
        with _Counting.lock:
            _Counting.connections += 1

    def do_GET(self) -> None:
        _Counting.barrier.wait(20)  # every request in flight at once: each on its own connection
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: Any) -> None:
        pass


def test_the_pool_keeps_a_connection_for_each_request_in_flight_under_the_cap(monkeypatch):
    senders = 70  # over the default pool size of 64
    managers = httpclient._Managers()
    monkeypatch.setattr(httpclient, "_MANAGERS", managers)
    monkeypatch.setattr(httpclient, "_opener_for", managers.opener_for)
    httpclient.keep_connections_for(senders)
    _Counting.connections, _Counting.barrier = 0, threading.Barrier(senders)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Counting)
    serving = threading.Thread(target=server.serve_forever)
    serving.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/"

    def one_round() -> list[int]:
        statuses: list[int] = []
        threads = [threading.Thread(target=lambda: statuses.append(
            httpclient.request("GET", url, timeout=20, deadline=time.monotonic() + 25).status)) for _ in range(senders)]  # fmt: skip
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        return statuses

    try:
        first, second = one_round(), one_round()
    finally:
        for manager in managers._by_proxy.values():
            manager.clear()  # our kept-alive connections: the server's threads for them end
        server.shutdown()
        server.server_close()
        serving.join(10)

    assert first == second == [200] * senders
    assert _Counting.connections == senders, "connections were thrown away and opened again"
