"""notifier.httpclient against real local HTTP/1.1 servers: reuse, deadlines, threads, TLS, proxies."""

from __future__ import annotations

import http.client
import logging
import os
import select
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trustme
import urllib3

from notifier import httpclient, watchdog


@pytest.fixture(autouse=True)
def fresh_pools(monkeypatch):
    """Pools and TLS context made anew for each test: each test's CA is trusted, no connection shared."""
    monkeypatch.setattr(httpclient, "_opener_for", httpclient._Managers().opener_for)


class _HTTPServer(ThreadingHTTPServer):
    request_queue_size = 64  # sixteen clients connect at once; the default backlog is 5


class _Local:
    """A ThreadingHTTPServer on a free local port, serving from a thread until closed."""

    def _serve(self, handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None) -> None:
        self.http = _HTTPServer(("127.0.0.1", 0), handler)
        self.http.daemon_threads = True
        self.origin = f"http://127.0.0.1:{self.http.server_address[1]}"
        if tls is not None:
            self.http.socket = tls.wrap_socket(self.http.socket, server_side=True)
            self.origin = f"https://localhost:{self.http.server_address[1]}"
        threading.Thread(target=self.http.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()


class _Server(_Local):
    """Answers each POST with its own body; remembers the client port of every request."""

    def __init__(
        self, *, close_after_answer: bool = False, tls: ssl.SSLContext | None = None, length: bool = True
    ) -> None:
        self.ports: list[int] = []
        self.trickle = False
        self.hold: threading.Barrier | None = None
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                server.ports.append(self.client_address[1])
                if server.hold is not None:  # every request waits for the others: all at once
                    server.hold.wait(10)
                self.send_response(202)
                if length:
                    self.send_header("Content-Length", str(len(body)))
                else:  # the body ends when the connection closes
                    self.close_connection = True
                self.end_headers()
                if server.trickle:  # every read is quick; the whole answer never comes in time
                    for byte in body:
                        time.sleep(0.2)
                        self.wfile.write(bytes([byte]))
                        self.wfile.flush()
                else:
                    self.wfile.write(body)
                if close_after_answer:  # as a server does when an idle connection times out
                    self.close_connection = True

        self._serve(Handler, tls)
        self.url = f"{self.origin}/v3/mail/send"


@pytest.fixture
def server_factory():
    servers = []

    def make(**options) -> _Server:
        servers.append(_Server(**options))
        return servers[-1]

    yield make
    for server in servers:
        server.close()


def _post(url: str, body: bytes, timeout: float = 5.0, within: float = 5.0, **options) -> httpclient.Answer:
    return httpclient.request(
        "POST", url, body=body, headers={"Content-Type": "application/json"}, timeout=timeout,
        deadline=time.monotonic() + within, **options,
    )  # fmt: skip


def test_successive_requests_from_one_thread_share_one_connection(server_factory):
    server = server_factory()

    answers = [_post(server.url, f'{{"n": {i}}}'.encode()) for i in range(3)]

    assert [a.body for a in answers] == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
    assert {a.status for a in answers} == {202}
    assert {a.cut for a in answers} == {False}
    assert len(server.ports) == 3 and len(set(server.ports)) == 1, "one TCP connection for three requests"


def test_a_connection_the_server_closed_while_idle_is_replaced_before_it_is_used(server_factory):
    server = server_factory(close_after_answer=True)
    assert _post(server.url, b"first").body == b"first"
    time.sleep(0.05)  # the server's close reaches us

    assert _post(server.url, b"second").body == b"second", "no request was spent on the dead connection"
    assert len(set(server.ports)) == 2


def test_an_answer_larger_than_the_bound_is_cut_and_its_connection_not_reused(server_factory):
    server = server_factory()

    huge = _post(server.url, b"x" * 50_000, max_answer=1000)  # the stand-in echoes: a 50 kB answer
    after = _post(server.url, b"small")

    assert (huge.status, huge.body, huge.cut) == (202, b"x" * 1000, True)
    assert (after.body, after.cut) == (b"small", False), "the next request is not read from the rest of the cut answer"
    assert len(set(server.ports)) == 2


def test_an_answer_that_trickles_past_the_deadline_is_cut_off_there(server_factory):
    server = server_factory()
    server.trickle = True

    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"no complete answer within 0\.5s"):
        _post(server.url, b"0123456789", timeout=1.0, within=0.5)
    assert time.monotonic() - started < 1.5, "each read was quick, so only the deadline can stop it"

    server.trickle = False
    assert _post(server.url, b"after").body == b"after", "the cut-off connection was dropped, not reused"


def test_an_answer_that_trickles_until_the_server_closes_is_cut_off_at_the_deadline_too(server_factory):
    # No Content-Length: http.client lets go of a connection whose answer ends at close.
    server = server_factory(length=False)
    server.trickle = True

    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"no complete answer within 0\.5s"):
        _post(server.url, b"0123456789", timeout=1.0, within=0.5)
    assert time.monotonic() - started < 1.5, "each read was quick, so only the deadline can stop it"


@pytest.fixture
def slow_after_reading(monkeypatch):
    """Reading the body completes, then 0.3 s pass before the request is over."""
    original = http.client.HTTPResponse.read

    def read(self, *args):
        data = original(self, *args)
        time.sleep(0.3)
        return data

    monkeypatch.setattr(http.client.HTTPResponse, "read", read)


def test_an_answer_read_in_full_before_the_deadline_stands_even_if_the_deadline_passes_after(
    server_factory, slow_after_reading
):
    server = server_factory()  # Content-Length: a cut-off read would have raised

    assert _post(server.url, b"accepted", within=0.15).body == b"accepted"


def test_an_answer_that_ends_at_close_is_not_trusted_once_the_deadline_cut_the_socket(
    server_factory, slow_after_reading
):
    server = server_factory(length=False)

    with pytest.raises(TimeoutError, match="no complete answer"):
        _post(server.url, b"maybe cut short", within=0.15)


def test_the_deadline_watchdog_starts_afresh_in_a_forked_child(server_factory):
    server = server_factory()
    _post(server.url, b"starts the watchdog here")
    assert watchdog._WATCHDOG._thread is not None

    pid = os.fork()
    if pid == 0:  # the child: no watchdog thread survived the fork; the first request starts one
        ok = watchdog._WATCHDOG._thread is None and _post(server.url, b"child").body == b"child"
        os._exit(0 if ok and watchdog._WATCHDOG._thread is not None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_threads_get_their_own_answers_over_kept_alive_connections(server_factory):
    server = server_factory()

    def send_five(thread: int) -> list[bytes]:
        return [_post(server.url, f"{thread}-{i}".encode()).body for i in range(5)]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send_five, range(8)))

    assert answers == [[f"{t}-{i}".encode() for i in range(5)] for t in range(8)]
    assert len(set(server.ports)) <= 8, "at most one connection per thread, kept for its requests"


def test_sixteen_threads_at_once_fit_in_the_pool(server_factory, caplog):
    server = server_factory()
    server.hold = threading.Barrier(16)
    caplog.set_level(logging.WARNING, logger="urllib3")

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda n: _post(server.url, str(n).encode(), within=15).body, range(16)))

    assert answers == [str(n).encode() for n in range(16)]
    assert len(set(server.ports)) == 16, "all sixteen were in flight together"
    assert "Connection pool is full" not in caplog.text


def test_only_http_urls_are_accepted():
    with pytest.raises(ValueError, match=r"expected an http\(s\):// URL, got 'ftp://example.com'"):
        httpclient.request("GET", "ftp://example.com", timeout=1, deadline=time.monotonic() + 1)


class _Proxy(_Local):
    """A forward proxy: CONNECT tunnels for https, absolute-URL requests for http (answered here).
    ``refuse``: the status CONNECT is answered with instead of a tunnel; ``slow``: seconds it
    takes to open one."""

    def __init__(self, refuse: int | None = None, slow: float = 0.0, tls: ssl.SSLContext | None = None) -> None:
        self.seen: list[tuple[str, str, str | None]] = []  # method, target, Proxy-Authorization
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_CONNECT(self) -> None:
                proxy.seen.append(("CONNECT", self.path, self.headers.get("Proxy-Authorization")))
                if refuse is not None:
                    self.send_response(refuse)
                    self.send_header("Proxy-Authenticate", 'Basic realm="proxy"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                time.sleep(slow)
                port = int(self.path.rsplit(":", 1)[1])  # every test origin listens on this machine
                upstream = socket.create_connection(("127.0.0.1", port))
                self.send_response(200, "Connection established")
                self.end_headers()
                sockets = [self.connection, upstream]
                while True:
                    readable, _, _ = select.select(sockets, [], [], 5)
                    chunks = [(s, s.recv(65536)) for s in readable]
                    if not readable or any(not data for _, data in chunks):
                        break
                    for source, data in chunks:
                        (upstream if source is self.connection else self.connection).sendall(data)
                upstream.close()
                self.close_connection = True

            def do_POST(self) -> None:
                proxy.seen.append(("POST", self.path, self.headers.get("Proxy-Authorization")))
                body = self.rfile.read(int(self.headers["Content-Length"]))
                self.send_response(202)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self._serve(Handler, tls)  # with ``tls``, an https:// proxy: the origin's TLS runs inside its own
        self.url = self.origin


@pytest.fixture
def proxy_factory():
    proxies = []

    def make(**options) -> _Proxy:
        proxies.append(_Proxy(**options))
        return proxies[-1]

    yield make
    for proxy in proxies:
        proxy.close()


@pytest.fixture
def trusted_ca(tmp_path, monkeypatch) -> trustme.CA:
    """A throwaway CA that the client trusts."""
    authority = trustme.CA()
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    return authority


def _server_context(authority: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(context)
    return context


@pytest.fixture
def tls_server(server_factory, trusted_ca):
    """An HTTPS server with a certificate from a throwaway CA that the client trusts."""
    return server_factory(tls=_server_context(trusted_ca))


@pytest.fixture
def no_proxy_settings(monkeypatch):
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def test_https_keeps_one_verified_connection_alive(tls_server, no_proxy_settings):
    assert [_post(tls_server.url, b"a").body, _post(tls_server.url, b"b").body] == [b"a", b"b"]
    assert len(set(tls_server.ports)) == 1


def test_a_new_connection_sends_head_and_body_apart_a_kept_alive_one_in_one_send(
    tls_server, no_proxy_settings, monkeypatch
):
    # In one send on a new TLS 1.3 connection, the answer of a server that leaves Nagle on waits
    # for our delayed ACK of its session tickets: 44 ms against 3 (bench: the first SendGrid email).
    sends: list[bytes] = []
    original = http.client.HTTPConnection.send

    def recorded(connection, data):
        sends.append(bytes(data))
        return original(connection, data)

    monkeypatch.setattr(http.client.HTTPConnection, "send", recorded)
    body = b'{"personalizations": []}'
    assert _post(tls_server.url, body).body == body
    first, sends[:] = list(sends), []
    assert _post(tls_server.url, body).body == body
    assert [s.endswith(b"\r\n\r\n") for s in first] == [True, False] and first[1] == body
    assert len(sends) == 1 and sends[0].startswith(b"POST ") and sends[0].endswith(b"\r\n\r\n" + body)
    assert len(set(tls_server.ports)) == 1


def test_https_refuses_a_certificate_it_cannot_verify(server_factory, no_proxy_settings):
    server = server_factory(tls=_server_context(trustme.CA()))  # a CA nobody trusts

    with pytest.raises(ssl.SSLCertVerificationError):
        _post(server.url, b"a")


class _TricklingRelay:
    """Passes a TCP connection on to ``port``, the server's bytes one at a time every 50 ms: a TLS
    handshake through it trickles, each read quick, the whole slow."""

    def __init__(self, port: int) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port, self._upstream_port = self.listener.getsockname()[1], port
        self.stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:  # closed before anyone connected
            return
        upstream = socket.create_connection(("127.0.0.1", self._upstream_port))
        for source, target, delay in ((client, upstream, 0.0), (upstream, client, 0.05)):
            thread = threading.Thread(target=self._pump, args=(source, target, delay), daemon=True)
            thread.start()
            self._threads.append(thread)
        self.stop.wait(10)
        client.close()
        upstream.close()

    def _pump(self, source: socket.socket, target: socket.socket, delay: float) -> None:
        try:
            while not self.stop.is_set():
                data = source.recv(1 if delay else 65536)
                if not data:
                    return
                target.sendall(data)
                if delay:
                    time.sleep(delay)
        except OSError:
            return

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        for thread in self._threads:
            thread.join(5)


def _seconds_until_cut(tls_server, *, timeout: float, within: float) -> float:
    """How long a request to ``tls_server`` through a trickling relay took to fail at its deadline."""
    relay = _TricklingRelay(int(tls_server.origin.rsplit(":", 1)[1]))
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="no complete answer"):
            _post(f"https://localhost:{relay.port}/v3/mail/send", b"a", timeout=timeout, within=within)
        return time.monotonic() - started
    finally:
        relay.close()


def test_a_tls_handshake_that_trickles_is_cut_off_at_the_deadline(tls_server, no_proxy_settings):
    elapsed = _seconds_until_cut(tls_server, timeout=1.0, within=0.5)
    assert elapsed < 1.5, "each handshake read was quick, so only the deadline can stop it"


def test_the_handshake_after_a_slow_tunnel_is_cut_off_at_the_deadline_too(
    tls_server, proxy_factory, no_proxy_settings, monkeypatch
):
    # The tunnel takes most of the time; a socket timeout alone would give the handshake its own.
    monkeypatch.setenv("HTTPS_PROXY", proxy_factory(slow=0.8).url)
    elapsed = _seconds_until_cut(tls_server, timeout=2.0, within=1.0)
    assert elapsed < 1.5, "the handshake is watched like the rest: it ends at the deadline"


def test_https_goes_through_the_proxy_in_a_tunnel_with_its_credentials(
    tls_server, proxy_factory, no_proxy_settings, monkeypatch
):
    proxy = proxy_factory()
    monkeypatch.setenv("HTTPS_PROXY", proxy.url.replace("http://", "http://user:p%40ss@"))

    assert [_post(tls_server.url, b"a").body, _post(tls_server.url, b"b").body] == [b"a", b"b"]
    port = tls_server.url.split(":")[2].split("/")[0]
    assert proxy.seen == [("CONNECT", f"localhost:{port}", "Basic dXNlcjpwQHNz")], "one tunnel, reused"


@pytest.mark.parametrize("status", [407, 403])
def test_a_proxy_that_refuses_the_tunnel_is_a_clear_error_without_its_password(
    tls_server, proxy_factory, no_proxy_settings, monkeypatch, status
):
    proxy = proxy_factory(refuse=status)
    monkeypatch.setenv("HTTPS_PROXY", proxy.url.replace("http://", "http://user:hunter2-secret@"))

    with pytest.raises(OSError, match=rf"proxy.*{status}") as caught:
        _post(tls_server.url, b"a")

    assert "hunter2-secret" not in str(caught.value)
    assert "hunter2-secret" not in repr(caught.value)
    assert not isinstance(caught.value, TimeoutError)
    assert tls_server.ports == []


def test_http_goes_through_the_proxy_with_the_absolute_url_and_its_credentials(
    server_factory, proxy_factory, no_proxy_settings, monkeypatch
):
    proxy = proxy_factory()
    monkeypatch.setenv("HTTP_PROXY", proxy.url.replace("http://", "http://user:p%40ss@"))
    server = server_factory()

    assert _post(server.url, b"a").body == b"a"
    assert proxy.seen == [("POST", server.url, "Basic dXNlcjpwQHNz")]
    assert server.ports == [], "the proxy answered; the origin never saw a request"


def test_no_proxy_exempts_a_host(server_factory, proxy_factory, no_proxy_settings, monkeypatch):
    proxy = proxy_factory()
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server = server_factory()

    assert _post(server.url, b"a").body == b"a"
    assert proxy.seen == [] and len(server.ports) == 1


def test_through_a_tls_proxy_the_deadline_still_cuts_and_the_watchdog_lives_on(
    tls_server, proxy_factory, trusted_ca, no_proxy_settings, monkeypatch
):
    # TLS inside TLS: the connection's socket is urllib3's SSLTransport over the proxy's TLS socket.
    monkeypatch.setenv("HTTPS_PROXY", proxy_factory(tls=_server_context(trusted_ca)).url)
    tls_server.trickle = True

    for attempt in ("first", "second"):
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="no complete answer"):
            _post(tls_server.url, b"0123456789", timeout=1.0, within=0.5)
        assert time.monotonic() - started < 1.5, f"the {attempt} request was cut at its deadline"
        assert watchdog._WATCHDOG._thread is not None and watchdog._WATCHDOG._thread.is_alive()


@pytest.fixture
def slow_connect(monkeypatch):
    """Every TCP connect takes 0.8 s more: the handshake after it would get a whole socket timeout
    of its own (Python bounds a handshake by one), ending past the deadline, unless watched."""
    original = urllib3.util.connection.create_connection

    def create_connection(*args, **kwargs):
        sock = original(*args, **kwargs)
        time.sleep(0.8)
        return sock

    monkeypatch.setattr(urllib3.util.connection, "create_connection", create_connection)


def test_a_tls_proxy_whose_handshake_trickles_is_cut_off_at_the_deadline(
    proxy_factory, trusted_ca, no_proxy_settings, monkeypatch, slow_connect
):
    proxy = proxy_factory(tls=_server_context(trusted_ca))
    relay = _TricklingRelay(int(proxy.url.rsplit(":", 1)[1]))
    monkeypatch.setenv("HTTPS_PROXY", f"https://localhost:{relay.port}")
    try:
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="no complete answer"):
            _post("https://localhost:9/v3/mail/send", b"a", timeout=2.0, within=1.0)
        elapsed = time.monotonic() - started
    finally:
        relay.close()

    assert elapsed < 1.5, "the handshake with the proxy is watched like the origin's"


def test_the_watchdog_outlives_a_watch_that_fails_when_it_fires():
    def no_socket_after_all() -> socket.socket:
        raise RuntimeError("the connection is in a state nobody expected")

    with watchdog.watching(no_socket_after_all, time.monotonic()) as broken:
        time.sleep(0.05)  # the watchdog's turn
    with socket.socket() as sock, watchdog.watching(sock, time.monotonic() + 0.01) as later:
        time.sleep(0.1)

    assert broken.fired and later.fired, "the second watch fired: the thread lived on"
    assert watchdog._WATCHDOG._thread is not None and watchdog._WATCHDOG._thread.is_alive()


def test_an_answer_shorter_than_its_content_length_is_an_error_not_a_short_body():
    listener = socket.create_server(("127.0.0.1", 0))

    def answer_short() -> None:
        client, _ = listener.accept()
        with client:
            request = b""
            while not request.endswith(b"\r\n\r\na"):  # all of it: unread bytes would make the close a reset
                request += client.recv(65536)
            client.sendall(b"HTTP/1.1 202 Accepted\r\nContent-Length: 100\r\n\r\nonly ten b")

    thread = threading.Thread(target=answer_short, daemon=True)
    thread.start()
    try:
        with pytest.raises(ConnectionError, match="IncompleteRead"):
            _post(f"http://127.0.0.1:{listener.getsockname()[1]}/v3/mail/send", b"a")
    finally:
        thread.join(5)
        listener.close()
