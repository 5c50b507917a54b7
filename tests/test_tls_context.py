"""The one TLS context every outbound request uses: it trusts what OpenSSL's default would (the
bundle, SSL_CERT_FILE's or the built-in one, and the hashed folder, SSL_CERT_DIR's or the built-in
one) but skips parsing the bundle up front (about 20 ms of every cold start) when the folder
covers it: the bundle lives in that very folder, unchanged since the folder last changed, as
update-ca-certificates leaves /etc/ssl/certs. With no hashed folder, the whole default store."""

from __future__ import annotations

import os
import shutil
import ssl
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme

from notifier import httpclient, truststore

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


def _covered_layout(folder: Path, *authorities: trustme.CA) -> Path:
    """update-ca-certificates' layout: the bundle of ``authorities`` renamed into ``folder`` first,
    then their hash links; the folder's last change is not before the bundle's. Returns the bundle."""
    bundle = folder / "ca-certificates.crt"
    bundle.write_bytes(b"".join(authority.cert_pem.bytes() for authority in authorities))
    for number, authority in enumerate(authorities):
        (folder.parent / f"{number}.pem").write_bytes(authority.cert_pem.bytes())
        subject_hash = subprocess.run(["openssl", "x509", "-noout", "-subject_hash", "-in", str(folder.parent / f"{number}.pem")],
                                      capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
        (folder / f"{subject_hash}.0").write_bytes(authority.cert_pem.bytes())
    _set_mtime(bundle, 1_000_000)
    _set_mtime(folder, 1_000_010)  # explicit: file-system clocks may tick coarsely
    return bundle


def _set_mtime(path: Path, mtime: float) -> None:
    os.utime(path, (mtime, mtime))


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
    (tmp_path / "certs").mkdir()
    bundle = _covered_layout(tmp_path / "certs", trustme.CA(), authority)  # as on the platform's image
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "certs"))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))

    context = truststore.tls_context()

    assert context.cert_store_stats()["x509_ca"] == 0  # nothing loaded at start-up
    assert (context.verify_mode, context.check_hostname) == (ssl.CERT_REQUIRED, True)
    assert _get(url) == b"hello"  # ... and the CA found by its hash at the handshake


def test_a_covered_bundle_reached_through_symlinks_is_not_parsed_either(tmp_path, monkeypatch):
    (tmp_path / "certs").mkdir()
    bundle = _covered_layout(tmp_path / "certs", trustme.CA())
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "cert.pem").symlink_to(bundle)  # Debian's /usr/lib/ssl/cert.pem and certs/
    (tmp_path / "lib" / "certs").symlink_to(tmp_path / "certs")
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "lib" / "certs"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "lib" / "cert.pem"))

    assert truststore.tls_context().cert_store_stats()["x509_ca"] == 0


@pytest.fixture
def built_in_store(monkeypatch):
    """Makes ``(folder, bundle)`` the store OpenSSL was built to use, with no SSL_CERT_* set."""

    def use(folder: Path, bundle: Path) -> None:
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        paths = ssl.DefaultVerifyPaths(
            str(bundle), str(folder), "SSL_CERT_FILE", str(bundle), "SSL_CERT_DIR", str(folder)
        )
        monkeypatch.setattr(ssl, "get_default_verify_paths", lambda: paths)

    return use


def test_the_built_in_covered_store_is_not_parsed_up_front(https_server, tmp_path, built_in_store, no_proxy_settings):
    url, authority = https_server
    (tmp_path / "certs").mkdir()
    built_in_store(tmp_path / "certs", _covered_layout(tmp_path / "certs", authority))

    assert truststore.tls_context().cert_store_stats()["x509_ca"] == 0
    assert _get(url) == b"hello"


def test_a_ca_appended_to_the_bundle_by_hand_is_trusted(https_server, tmp_path, built_in_store, no_proxy_settings):
    # cat corp.pem >> /etc/ssl/certs/ca-certificates.crt, with no rehash: not in the folder by hash.
    url, authority = https_server
    (tmp_path / "certs").mkdir()
    bundle = _covered_layout(tmp_path / "certs", trustme.CA())
    with bundle.open("ab") as appending:
        appending.write(authority.cert_pem.bytes())
    _set_mtime(bundle, 1_000_020)  # changed after the folder last did
    built_in_store(tmp_path / "certs", bundle)

    assert truststore.tls_context().cert_store_stats()["x509_ca"] == 2
    assert _get(url) == b"hello"


def test_a_private_folder_does_not_hide_the_default_bundle(https_server, tmp_path, monkeypatch, no_proxy_settings):
    # SSL_CERT_DIR alone: OpenSSL's default loads the built-in bundle as well as that folder.
    url, authority = https_server
    system = ssl.get_default_verify_paths().openssl_cafile
    if not Path(system).is_file():
        pytest.skip("no built-in CA bundle on this machine")
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("SSL_CERT_DIR", str(_hashed_folder(tmp_path / "certs", authority)))

    context = truststore.tls_context()

    whole_bundle = ssl.create_default_context(cafile=system).cert_store_stats()["x509_ca"]
    assert whole_bundle > 0 and context.cert_store_stats()["x509_ca"] == whole_bundle
    assert _get(url) == b"hello"  # ... and the private folder's CA still found by hash


def test_a_bundle_named_by_ssl_cert_file_is_trusted_beside_the_folder(
    https_server, tmp_path, monkeypatch, no_proxy_settings
):
    url, authority = https_server
    monkeypatch.setenv("SSL_CERT_DIR", str(_hashed_folder(tmp_path / "certs", trustme.CA())))  # another CA
    authority.cert_pem.write_to_path(str(tmp_path / "bundle.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "bundle.pem"))

    assert truststore.tls_context().cert_store_stats()["x509_ca"] == 1
    assert _get(url) == b"hello"


def test_without_a_hashed_folder_the_whole_default_store_is_loaded(
    https_server, tmp_path, monkeypatch, no_proxy_settings
):
    url, authority = https_server
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "empty"))
    authority.cert_pem.write_to_path(str(tmp_path / "bundle.pem"))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "bundle.pem"))

    assert truststore.tls_context().cert_store_stats()["x509_ca"] == 1
    assert _get(url) == b"hello"


def test_a_server_whose_ca_is_in_neither_is_refused(https_server, tmp_path, monkeypatch, no_proxy_settings):
    url, _ = https_server
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setenv("SSL_CERT_DIR", str(_hashed_folder(tmp_path / "certs", trustme.CA())))

    with pytest.raises(ssl.SSLCertVerificationError):
        _get(url)
