"""How the benchmarks drive a function: launch it on a core of its own, load it, read its costs.

The function under test gets CPU 0, as a 1-vCPU instance would; the load generator and the
SendGrid stand-in (its own process, so it never shares the generator's GIL) share the rest. The
generator sends requests built before the clock starts, over one keep-alive connection per
thread, as the platform's front end does, so that as little as possible of the machine goes to
playing the platform. All three handlers are driven the same way.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from notifier.payloads import build_request
from notifier.tools.localcloud import ServerCertificate
from notifier.tools.processes import free_port, stop_server

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {
    "floor": ROOT / "bench/reference/floor/main.py",
    "textbook": ROOT / "bench/reference/textbook/main.py",
    "storage-notifier": ROOT / "main.py",
}
_CPUS = sorted(os.sched_getaffinity(0))
FUNCTION_CPUS = set(_CPUS[:1])
HARNESS_CPUS = set(_CPUS[1:]) or FUNCTION_CPUS  # one core: everything shares it
_TICKS = os.sysconf("SC_CLK_TCK")

Request = tuple[dict[str, str], bytes]


@contextmanager
def harness_pinned() -> Iterator[None]:
    """Keep this process (and the stand-in it starts) off the function's core meanwhile."""
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, HARNESS_CPUS)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def requests(count: int, start: int = 0) -> list[Request]:
    """Finalize events for distinct objects, each with its own event id."""
    stamp = time.monotonic_ns()
    return [
        build_request("finalize", "bench", f"in/{i:06d}.csv", size=1024, content_type="text/csv",
                      event_id=f"bench-{i}-{stamp}")
        for i in range(start, start + count)
    ]  # fmt: skip


# Variables of ours, the platform's and Google's that must not leak from the caller into a launch:
# each configuration sets the ones it models.
_NOT_PASSED = ("NOTIFY_", "SENDGRID_", "K_", "GCE_METADATA_", "STORAGE_EMULATOR_HOST", "GOOGLE_", "SOURCE_DATE_EPOCH",
               "SSL_CERT_")  # fmt: skip


def function_env(sendgrid: StandInAddress, threads: int = 8, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_NOT_PASSED)}
    env.update(
        SENDGRID_API_KEY="SG.bench-not-a-real-key", SENDGRID_API_HOST=sendgrid.url, SSL_CERT_DIR=sendgrid.ca_dir,
        SSL_CERT_FILE=os.path.join(sendgrid.ca_dir, BUNDLE), NOTIFY_FROM="bench@example.com",
        NOTIFY_TO="ops@example.com", THREADS=str(threads),
        PYTHONDONTWRITEBYTECODE="1", **extra,
    )  # fmt: skip
    return env


@dataclass
class Function:
    """One functions-framework server running a handler, pinned to the function's core."""

    url: str
    process: subprocess.Popen

    @classmethod
    def launch(cls, source: Path, env: dict[str, str]) -> Function:
        """functions-framework serving ``source`` from its own folder (the workspace, as on the
        platform: its notifier/ is the one imported, not the checkout's)."""
        port = free_port()
        command = [sys.executable, "-m", "functions_framework", "--target", "handle_storage_event",
                   "--source", str(source), "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
        process = subprocess.Popen(
            command, cwd=source.parent, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
            preexec_fn=_pin_to_function_cpus,
        )  # fmt: skip
        return cls(f"http://127.0.0.1:{port}", process)

    def post(self, request: Request, connection: http.client.HTTPConnection | None = None) -> int:
        headers, body = request
        own = connection is None
        connection = connection or self.connect()
        try:
            connection.request("POST", "/", body=body, headers=headers)
            response = connection.getresponse()
            response.read()
            return response.status
        finally:
            if own:
                connection.close()

    def connect(self) -> http.client.HTTPConnection:
        parts = urlsplit(self.url)
        return http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)

    def wait_until_serving(self, request: Request, give_up_after: float = 30.0) -> float:
        """Seconds from now until the first 2xx answer to ``request``."""
        started = time.perf_counter()
        while time.perf_counter() - started < give_up_after:
            try:
                if self.post(request) < 300:
                    return time.perf_counter() - started
            except OSError:
                time.sleep(0.002)
            if self.process.poll() is not None:
                break
        raise RuntimeError(f"the function at {self.url} did not answer 2xx (exit code {self.process.poll()})")

    def cpu_seconds(self) -> float:
        """User + system CPU of the server and its gunicorn worker so far."""
        total = 0
        for pid in _tree(self.process.pid):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        return total / _TICKS

    def memory_kib(self) -> dict[str, int]:
        """Peak RSS (VmHWM) and RSS of the serving worker; PSS of the whole instance, which counts
        the pages the worker shares with its parent (forked after the import) once, as the
        container's memory limit does."""
        pids = _tree(self.process.pid)
        worker = pids[-1]
        return {
            "worker_hwm": _status(worker, "VmHWM:"),
            "worker_rss": _status(worker, "VmRSS:"),
            "instance_pss": sum(_rollup(pid, "Pss:") for pid in pids),
        }

    def stop(self) -> None:
        stop_server(self.process)


@contextmanager
def serving(source: Path, env: dict[str, str]) -> Iterator[Function]:
    function = Function.launch(source, env)
    try:
        function.wait_until_serving(requests(1, start=999_999)[0])
        yield function
    finally:
        function.stop()


def load(function: Function, batch: Sequence[Request], concurrency: int) -> tuple[float, list[float]]:
    """Send ``batch`` with ``concurrency`` keep-alive connections; seconds taken and each latency (ms)."""
    latencies: list[float] = []
    cursor = iter(range(len(batch)))
    lock = threading.Lock()

    def worker() -> None:
        connection = function.connect()
        try:
            while True:
                with lock:
                    index = next(cursor, None)
                if index is None:
                    return
                started = time.perf_counter()
                status = function.post(batch[index], connection)
                latencies.append((time.perf_counter() - started) * 1000)
                if status >= 300:
                    raise RuntimeError(f"the function answered {status}")
        finally:
            connection.close()

    started = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        for future in [pool.submit(worker) for _ in range(concurrency)]:
            future.result()
    return time.perf_counter() - started, latencies


@dataclass(frozen=True)
class StandInAddress:
    url: str
    ca_file: str  # the certificate authority that signed its certificate, with the system's: a bundle
    ca_dir: str  # the same as a hashed folder: SSL_CERT_DIR for the functions


@dataclass(frozen=True)
class Authority:
    """A throwaway certificate authority; clients trust the system's CA store, as on the platform,
    plus this CA: ``ca_dir`` (SSL_CERT_DIR) for the functions, ``ca_file`` for the harness's own
    checks. A client that builds an SSL context per connection pays for loading the system's bundle
    every time, as it would there."""

    folder: Path
    ca_file: str
    ca_dir: str  # the system's hashed certificate folder plus this CA: SSL_CERT_DIR for the functions
    ca: Any  # trustme.CA

    def issue(self, name: str, *hosts: str) -> ServerCertificate:
        """A certificate for ``hosts`` (names or IP addresses), its PEM files named after ``name``."""
        certificate = self.ca.issue_cert(*hosts)
        cert_file, key_file = self.folder / f"{name}-cert.pem", self.folder / f"{name}-key.pem"
        certificate.cert_chain_pems[0].write_to_path(str(cert_file))
        certificate.private_key_pem.write_to_path(str(key_file))
        return ServerCertificate(cert_file, key_file)

    def context(self) -> ssl.SSLContext:
        """An SSL context that trusts this CA, for the harness's own checks."""
        return ssl.create_default_context(cafile=self.ca_file)


@contextmanager
def throwaway_ca() -> Iterator[Authority]:
    import trustme

    folder = Path(tempfile.mkdtemp(prefix="bench-ca-"))
    try:
        ca = trustme.CA()
        system = ssl.get_default_verify_paths()
        system_cas = Path(system.cafile).read_bytes() if system.cafile and Path(system.cafile).is_file() else b""
        (folder / "ca.pem").write_bytes(system_cas + b"\n" + ca.cert_pem.bytes())
        store = _hashed_store(folder / "certs", system.capath, ca, (folder / "ca.pem").read_bytes())
        yield Authority(folder, str(folder / "ca.pem"), store, ca)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _hashed_store(folder: Path, system: str | None, ca: Any, bundle: bytes) -> str:
    """The platform's store, modelled: a folder holding ``bundle`` (the system's CAs and ``ca``) as
    ca-certificates.crt, then the system's hash links and ``ca``'s under its OpenSSL hash name, as
    update-ca-certificates lays out /etc/ssl/certs (the bundle renamed in first, so the folder's
    last change is not before it). The functions get SSL_CERT_DIR=folder and SSL_CERT_FILE=its
    bundle, the store OpenSSL finds by default there: a client that loads the whole bundle (the
    textbook) does, one that looks certificates up by hash (ours) need not."""
    folder.mkdir()
    (folder / BUNDLE).write_bytes(bundle)
    if system and Path(system).is_dir():
        for entry in Path(system).iterdir():
            if entry.name != BUNDLE:  # the system's own bundle: ours, with the CA, stands in for it
                (folder / entry.name).symlink_to(entry.resolve())
    pem = folder.parent / "throwaway-ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    openssl = shutil.which("openssl") or "openssl"  # Debian's openssl package: OpenSSL's own hash
    subject_hash = subprocess.run([openssl, "x509", "-noout", "-subject_hash", "-in", str(pem)],
                                  capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    index = 0
    while (folder / f"{subject_hash}.{index}").exists():
        index += 1
    (folder / f"{subject_hash}.{index}").symlink_to(pem)
    return str(folder)


BUNDLE = "ca-certificates.crt"  # Debian's and Ubuntu's name for the bundle in /etc/ssl/certs


@contextmanager
def stand_in(latency: float = 0.0, *, tls: bool = True, authority: Authority | None = None) -> Iterator[StandInAddress]:
    """The SendGrid stand-in in a process of its own, speaking HTTPS as SendGrid does (a TLS
    handshake per connection is part of what a client pays), with a certificate from ``authority``
    (else a throwaway CA of its own). ``tls=False``: plain HTTP, which no real SendGrid client gets,
    for comparison."""
    with contextlib.ExitStack() as stack:
        authority = authority or stack.enter_context(throwaway_ca())
        certificate = authority.issue("sendgrid", "localhost")
        command = [sys.executable, "-m", "bench.standin", "--latency", str(latency)]
        if tls:
            command += ["--tls", str(certificate.cert_file), str(certificate.key_file)]
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
        try:
            url = process.stdout.readline().strip()
            if not url.startswith("https://" if tls else "http://"):
                raise RuntimeError(f"the SendGrid stand-in did not start (exit code {process.poll()})")
            yield StandInAddress(url, authority.ca_file, authority.ca_dir)
        finally:
            process.terminate()
            process.wait(10)


def _pin_to_function_cpus() -> None:  # runs in the child, before the function starts
    os.sched_setaffinity(0, FUNCTION_CPUS)


def _tree(pid: int) -> list[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    kids = [int(p) for p in children.read_text().split()] if children.exists() else []
    return [pid] + [k for kid in kids for k in _tree(kid)]


def _status(pid: int, field: str) -> int:
    return next(
        int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith(field)
    )


def _rollup(pid: int, field: str) -> int:
    lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    return next(int(line.split()[1]) for line in lines if line.startswith(field))
