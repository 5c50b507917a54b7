"""The one TLS context every outbound request uses: CA certificates found by hash in the system's
folder as a handshake needs them, not the whole bundle parsed at start-up (about 20 ms of every
cold start); a bundle SSL_CERT_FILE names is still trusted, and with no hashed folder the whole
default store is loaded as before."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme

from notifier import httpclient

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command for hash names")


class _Hello(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "5")
        self.end_headers()
        self.wfile.write(b"hello")


@pytest.fixture
def https_server():
    """An HTTPS server on localhost whose certificate comes from a CA of its own (returned)."""
    authority = trustme.CA()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("localhost").configure_cert(context)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hello)
    server.daemon_threads = True
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"https://localhost:{server.server_address[1]}/", authority
    server.shutdown()
    server.server_close()


@pytest.fixture
def no_proxy_settings(monkeypatch):
    for name in ("http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)


def _hashed_folder(folder: Path, authority: trustme.CA) -> Path:
    """``folder`` holding ``authority``'s certificate under its OpenSSL hash name, as
    update-ca-certificates lays out /etc/ssl/certs."""
    folder.mkdir()
    pem = folder.parent / f"{folder.name}.pem"
    authority.cert_pem.write_to_path(str(pem))
    subject_hash = subprocess.run(["openssl", "x509", "-noout", "-subject_hash", "-in", str(pem)],
                                  capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    shutil.copy(pem, folder / f"{subject_hash}.0")
    return folder


def _get(url: str) -> bytes:
    opener = httpclient._Managers().opener_for  # a new context, built from the environment now
    original, httpclient._opener_for = httpclient._opener_for, opener
    try:
        return httpclient.request("GET", url, timeout=5, deadline=time.monotonic() + 5).body
    finally:
        httpclient._opener_for = original


def test_certificates_in_a_hashed_folder_are_found_when_needed_not_parsed_up_front(
    https_server, tmp_path, monkeypatch, no_proxy_settings
):
    url, authority = https_server
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)  # as on the platform: the image's defaults
    monkeypatch.setenv("SSL_CERT_DIR", str(_hashed_folder(tmp_path / "certs", authority)))

    context = httpclient._tls_context()

    assert context.cert_store_stats()["x509_ca"] == 0  # nothing loaded at start-up
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert _get(url) == b"hello"  # ... and the CA found by its hash at the handshake


def test_a_bundle_named_by_ssl_cert_file_is_trusted_beside_the_folder(
    https_server, tmp_path, monkeypatch, no_proxy_settings
):
    url, authority = https_server
    monkeypatch.setenv("SSL_CERT_DIR", str(_hashed_folder(tmp_path / "certs", trustme.CA())))  # another CA
    authority.cert_pem.write_to_path(str(tmp_path / "bundle.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "bundle.pem"))

    assert httpclient._tls_context().cert_store_stats()["x509_ca"] == 1
    assert _get(url) == b"hello"


def test_without_a_hashed_folder_the_whole_default_store_is_loaded(
    https_server, tmp_path, monkeypatch, no_proxy_settings
):
    url, authority = https_server
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "empty"))
    authority.cert_pem.write_to_path(str(tmp_path / "bundle.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "bundle.pem"))

    assert httpclient._tls_context().cert_store_stats()["x509_ca"] == 1
    assert _get(url) == b"hello"


def test_a_server_whose_ca_is_in_neither_is_refused(https_server, tmp_path, monkeypatch, no_proxy_settings):
    url, _ = https_server
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("SSL_CERT_DIR", str(_hashed_folder(tmp_path / "certs", trustme.CA())))

    with pytest.raises(ssl.SSLCertVerificationError):
        _get(url)
