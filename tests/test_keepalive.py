"""Kept-alive connections against a real local HTTP/1.1 server: reuse, expiry, deadlines, threads."""

from __future__ import annotations

import http.client
import os
import select
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.message import Message as Headers
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import trustme

from notifier import watchdog
from notifier.mail import keepalive
from notifier.mail.keepalive import IDLE_LIMIT, KeepAlive, _keep_alive_seconds


class _Local:
    """A ThreadingHTTPServer on a free local port, serving from a thread until closed."""

    def _serve(self, handler: type[BaseHTTPRequestHandler], tls: ssl.SSLContext | None = None) -> None:
        self.http = ThreadingHTTPServer(("127.0.0.1", 0), handler)
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
        self,
        *,
        keep_alive_header: str | None = None,
        close_after_answer: bool = False,
        tls: ssl.SSLContext | None = None,
        length: bool = True,
    ) -> None:
        self.ports: list[int] = []
        self.trickle = False
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                server.ports.append(self.client_address[1])
                self.send_response(202)
                if length:
                    self.send_header("Content-Length", str(len(body)))
                else:  # the body ends when the connection closes
                    self.close_connection = True
                if keep_alive_header:
                    self.send_header("Keep-Alive", keep_alive_header)
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


def _post(connections: KeepAlive, body: bytes, timeout: float = 5.0, within: float = 5.0):
    return connections.post(body, {"Content-Type": "application/json"}, timeout, time.monotonic() + within)


def test_successive_requests_from_one_thread_share_one_connection(server_factory):
    server = server_factory()
    connections = KeepAlive(server.url)

    answers = [_post(connections, f'{{"n": {i}}}'.encode()) for i in range(3)]

    assert [a.body for a in answers] == [b'{"n": 0}', b'{"n": 1}', b'{"n": 2}']
    assert {a.status for a in answers} == {202}
    assert len(server.ports) == 3 and len(set(server.ports)) == 1, "one TCP connection for three requests"


def test_a_short_keep_alive_timeout_from_the_server_means_a_new_connection(server_factory):
    server = server_factory(keep_alive_header="timeout=1")  # less than our margin: never reuse
    connections = KeepAlive(server.url)

    _post(connections, b"1")
    _post(connections, b"2")

    assert len(set(server.ports)) == 2


def test_a_connection_the_server_closed_while_idle_is_replaced_before_it_is_used(server_factory):
    server = server_factory(close_after_answer=True)
    connections = KeepAlive(server.url)
    assert _post(connections, b"first").body == b"first"
    time.sleep(0.05)  # the server's close reaches us

    assert _post(connections, b"second").body == b"second", "no request was spent on the dead connection"
    assert len(set(server.ports)) == 2


def test_an_answer_larger_than_the_bound_is_cut_and_its_connection_not_reused(server_factory, monkeypatch):
    monkeypatch.setattr(keepalive, "MAX_ANSWER", 1000)
    server = server_factory()
    connections = KeepAlive(server.url)

    huge = _post(connections, b"x" * 50_000)  # the stand-in echoes: a 50 kB answer
    after = _post(connections, b"small")

    assert huge.status == 202 and huge.body == b"x" * 1000
    assert after.body == b"small", "the next request is not read from the rest of the cut answer"
    assert len(set(server.ports)) == 2


def test_an_answer_that_trickles_past_the_deadline_is_cut_off_there(server_factory):
    server = server_factory()
    server.trickle = True
    connections = KeepAlive(server.url)

    started = time.monotonic()
    with pytest.raises(TimeoutError, match=r"no complete answer within 0\.5s"):
        _post(connections, b"0123456789", timeout=1.0, within=0.5)
    assert time.monotonic() - started < 1.5, "each read was quick, so only the deadline can stop it"

    server.trickle = False
    assert _post(connections, b"after").body == b"after", "the cut-off connection was dropped, not reused"


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

    assert _post(KeepAlive(server.url), b"accepted", within=0.15).body == b"accepted"


def test_an_answer_that_ends_at_close_is_not_trusted_once_the_deadline_cut_the_socket(
    server_factory, slow_after_reading
):
    server = server_factory(length=False)

    with pytest.raises(TimeoutError, match="no complete answer"):
        _post(KeepAlive(server.url), b"maybe cut short", within=0.15)


def test_the_deadline_watchdog_starts_afresh_in_a_forked_child(server_factory):
    server = server_factory()
    _post(KeepAlive(server.url), b"starts the watchdog here")
    assert watchdog._WATCHDOG._thread is not None

    pid = os.fork()
    if pid == 0:  # the child: no watchdog thread survived the fork; the first request starts one
        ok = watchdog._WATCHDOG._thread is None and _post(KeepAlive(server.url), b"child").body == b"child"
        os._exit(0 if ok and watchdog._WATCHDOG._thread is not None else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_threads_each_use_their_own_connection_and_get_their_own_answers(server_factory):
    server = server_factory()
    connections = KeepAlive(server.url)

    def send_five(thread: int) -> list[bytes]:
        return [_post(connections, f"{thread}-{i}".encode()).body for i in range(5)]

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(send_five, range(8)))

    assert answers == [[f"{t}-{i}".encode() for i in range(5)] for t in range(8)]
    assert len(set(server.ports)) == 8, "one connection per thread, kept for its five requests"


def test_the_keep_alive_header_caps_how_long_a_connection_idles():
    def seconds(value: str | None) -> float:
        headers = Headers()
        if value is not None:
            headers["Keep-Alive"] = value
        return _keep_alive_seconds(headers)

    assert seconds(None) == IDLE_LIMIT
    assert seconds("timeout=5, max=100") == 4.0  # a second of margin
    assert seconds("max=100, timeout=600") == IDLE_LIMIT
    assert seconds("timeout=soon") == IDLE_LIMIT


def test_only_http_urls_are_accepted():
    with pytest.raises(ValueError, match=r"expected an http\(s\):// URL, got 'ftp://example.com'"):
        KeepAlive("ftp://example.com")


class _Proxy(_Local):
    """A forward proxy: CONNECT tunnels for https, absolute-URL requests for http (answered here)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None]] = []  # method, target, Proxy-Authorization
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_CONNECT(self) -> None:
                proxy.seen.append(("CONNECT", self.path, self.headers.get("Proxy-Authorization")))
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

        self._serve(Handler)
        self.url = self.origin


@pytest.fixture
def proxy():
    server = _Proxy()
    yield server
    server.close()


@pytest.fixture
def tls_server(server_factory, tmp_path, monkeypatch):
    """An HTTPS server with a certificate from a throwaway CA that the client trusts."""
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(context)
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "ca.pem"))
    return server_factory(tls=context)


@pytest.fixture
def no_proxy_settings(monkeypatch):
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def test_https_keeps_one_verified_connection_alive(tls_server, no_proxy_settings):
    connections = KeepAlive(tls_server.url)

    assert [_post(connections, b"a").body, _post(connections, b"b").body] == [b"a", b"b"]
    assert len(set(tls_server.ports)) == 1


def test_https_refuses_a_certificate_it_cannot_verify(server_factory, no_proxy_settings):
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    trustme.CA().issue_cert("localhost").configure_cert(context)  # a CA nobody trusts
    server = server_factory(tls=context)

    with pytest.raises(ssl.SSLCertVerificationError):
        _post(KeepAlive(server.url), b"a")


def test_https_goes_through_the_proxy_in_a_tunnel_with_its_credentials(
    tls_server, proxy, no_proxy_settings, monkeypatch
):
    monkeypatch.setenv("HTTPS_PROXY", proxy.url.replace("http://", "http://user:p%40ss@"))
    connections = KeepAlive(tls_server.url)

    assert [_post(connections, b"a").body, _post(connections, b"b").body] == [b"a", b"b"]
    port = tls_server.url.split(":")[2].split("/")[0]
    assert proxy.seen == [("CONNECT", f"localhost:{port}", "Basic dXNlcjpwQHNz")], "one tunnel, reused"


def test_http_goes_through_the_proxy_with_the_absolute_url(server_factory, proxy, no_proxy_settings, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    server = server_factory()

    assert _post(KeepAlive(server.url), b"a").body == b"a"
    assert proxy.seen == [("POST", server.url, None)]
    assert server.ports == [], "the proxy answered; the origin never saw a request"


def test_no_proxy_exempts_a_host(server_factory, proxy, no_proxy_settings, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", proxy.url)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    server = server_factory()

    assert _post(KeepAlive(server.url), b"a").body == b"a"
    assert proxy.seen == [] and len(server.ports) == 1
