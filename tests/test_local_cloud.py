"""End to end through the real local cloud: an object written with google-cloud-storage to
fake-gcs-server, which publishes the Cloud Storage notification to the Pub/Sub emulator, whose push
subscription POSTs it to the function (functions-framework), which writes the .eml. The state bucket
is on the same fake-gcs-server, behind a fault proxy, so the real GCS ledger decides duplicates.

Every server is started once for the module and stopped at its end, whatever happens.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from bench.chaos import ledger_calls
from bench.gcs_faults import GcsFaultProxy
from notifier.config import ROOT
from notifier.ledger.gcs import LEDGER_PREFIX
from notifier.payloads import object_resource, pubsub_message
from notifier.tools.localcloud import (
    EventSink,
    FakeGcsServer,
    PubSubEmulator,
    pubsub_emulator_problem,
    running_fake_gcs,
    running_pubsub_emulator,
)
from notifier.tools.processes import LocalCloudError
from tests.conftest import read_eml

if problem := pubsub_emulator_problem():
    pytest.skip(problem, allow_module_level=True)

PROJECT = "local-cloud-test"
TOPIC = "storage-events"
WATCHED, PREFIX, STATE, ELSEWHERE = "watched-uploads", "incoming/", "notifier-state", "other-bucket"
WAIT = 30.0  # generous: the emulator pushes within a second or two; this only says "not stuck"
T = TypeVar("T")


@dataclass(frozen=True)
class LocalCloud:
    emulator: PubSubEmulator
    gcs: FakeGcsServer
    proxy: GcsFaultProxy  # between the function and fake-gcs-server, failing ledger calls on demand
    server: Any  # tests.conftest.FunctionServer
    capture: str  # a pull subscription on the topic: what fake-gcs-server published

    def bucket(self, name: str = WATCHED) -> Any:
        return self.gcs.client().bucket(name)

    def emails_about(self, name: str) -> list[tuple[str, str]]:
        """(kind, subject) of every email written about the object ``name``, oldest first."""
        found = []
        for path in self.server.emails():
            email = read_eml(path)
            if f"{name} (" in email["Subject"]:
                found.append((email["X-Categories"].split(", ")[-1], email["Subject"]))
        return found

    def log_lines_about(self, name: str) -> list[dict[str, Any]]:
        lines = [json.loads(line) for line in self.server.output().splitlines() if line.startswith("{")]
        return [line for line in lines if line.get("object") == name]

    def published(self) -> list[dict[str, str]]:
        """Attributes of the notifications published since the last call."""
        return [message["attributes"] for message in self.emulator.pull(self.capture)]


def wait_for(what: str, probe: Callable[[], T], timeout: float = WAIT) -> T:
    """``probe()`` once it is truthy; fails naming ``what`` if it is not within ``timeout``."""
    give_up = time.monotonic() + timeout
    while not (result := probe()):
        if time.monotonic() > give_up:
            pytest.fail(f"not within {timeout:.0f}s: {what}")
        time.sleep(0.05)
    return result


def wait_for_lines(cloud: LocalCloud, name: str, count: int) -> list[dict[str, Any]]:
    """The function's outcome lines about ``name`` once there are ``count`` of them (an email is
    written a moment before its line)."""

    def enough() -> list[dict[str, Any]]:
        lines = cloud.log_lines_about(name)
        return lines if len(lines) >= count else []

    return wait_for(f"{count} outcome lines about {name}", enough)


@pytest.fixture(scope="module")
def cloud(function_server_factory: Callable[..., Any]) -> Iterator[LocalCloud]:
    with ExitStack() as stack:
        emulator = stack.enter_context(running_pubsub_emulator(PROJECT))
        emulator.create_topic(TOPIC)
        sink = EventSink(emulator.host, PROJECT, TOPIC, bucket=WATCHED, object_prefix=PREFIX)
        gcs = stack.enter_context(running_fake_gcs(events=sink))
        for name in (WATCHED, STATE, ELSEWHERE):
            gcs.bucket(name)
        proxy = stack.enter_context(GcsFaultProxy(gcs.url, target=ledger_calls, preconditions=True))
        server = function_server_factory(
            NOTIFY_BACKEND="outbox", NOTIFY_STATE_BUCKET=STATE, STORAGE_EMULATOR_HOST=proxy.url
        )  # stopped by the factory at module end
        emulator.create_pull_subscription("capture", TOPIC)
        emulator.create_push_subscription("push-to-function", TOPIC, server.url + "/", ack_deadline=10)
        yield LocalCloud(emulator, gcs, proxy, server, "capture")


def test_an_upload_a_metadata_change_and_a_delete_each_send_their_email(cloud):
    name = f"{PREFIX}Q3 résumé #1.csv"
    blob = cloud.bucket().blob(name)
    blob.upload_from_string(b"region,revenue\nnorth,1\n", content_type="text/csv")
    wait_for("the upload's email", lambda: cloud.emails_about(name))
    blob.metadata = {"team": "finance"}
    blob.patch()
    wait_for("the metadata change's email", lambda: len(cloud.emails_about(name)) == 2)
    blob.delete()
    emails = wait_for("the delete's email", lambda: len(cloud.emails_about(name)) == 3 and cloud.emails_about(name))
    assert emails == [
        ("finalize", f"Uploaded: {name} ({WATCHED})"),
        ("metadata", f"Metadata changed: {name} ({WATCHED})"),
        ("delete", f"Deleted: {name} ({WATCHED})"),
    ]
    lines = wait_for_lines(cloud, name, 3)
    outcomes = [(line["kind"], line["outcome"], line["ledger"]) for line in lines]
    assert outcomes == [("finalize", "sent", "gcs"), ("metadata", "sent", "gcs"), ("delete", "sent", "gcs")]


def test_two_metadata_updates_of_one_object_send_two_emails(cloud):
    # fake-gcs-server's notifications carry no metageneration: the second was once taken for a duplicate.
    name = f"{PREFIX}twice updated.csv"
    blob = cloud.bucket().blob(name)
    blob.upload_from_string(b"x\n")
    wait_for("the upload's email", lambda: cloud.emails_about(name))
    for owner in ("ana", "bo"):
        blob.metadata = {"owner": owner}
        blob.patch()
    wait_for("two metadata emails", lambda: len(cloud.emails_about(name)) >= 3)
    lines = wait_for_lines(cloud, name, 3)
    assert [kind for kind, _ in cloud.emails_about(name)] == ["finalize", "metadata", "metadata"]
    assert [line["outcome"] for line in lines] == ["sent", "sent", "sent"]


def test_an_archive_notification_published_to_the_topic_sends_its_email(cloud):
    # fake-gcs-server never emits OBJECT_ARCHIVE: publish one in the real notification format.
    name = f"{PREFIX}cold/2019 ledger.parquet"
    message = pubsub_message("archive", object_resource("archive", WATCHED, name, size=5_000_000))
    cloud.emulator.publish(TOPIC, base64.b64decode(message["data"]), message["attributes"])
    emails = wait_for("the archive email", lambda: cloud.emails_about(name))
    assert emails == [("archive", f"Archived: {name} ({WATCHED})")]


def test_a_failed_answer_is_redelivered_by_pubsub_and_sends_exactly_one_email(cloud):
    # The state bucket refuses the claim once (403, as while a new IAM grant propagates; the storage
    # client does not retry it): the function answers 500 and the emulator delivers the message again.
    name = f"{PREFIX}redelivered.csv"
    late = republish_earlier(cloud, f"{PREFIX}delivered before.csv")
    with failing_first_new_claim(cloud, 403):
        cloud.emulator.publish(TOPIC, *late)  # a late redelivery of an earlier test's message, racing ours
        wait_for_lines(cloud, f"{PREFIX}delivered before.csv", 2)
        cloud.bucket().blob(name).upload_from_string(b"x\n")
        wait_for("the email after the redelivery", lambda: cloud.emails_about(name))
        lines = wait_for_lines(cloud, name, 2)
    assert cloud.proxy.injected["status 403"] == 1
    assert [line["outcome"] for line in lines] == ["retrying", "sent"]
    assert lines[0]["event_id"] == lines[1]["event_id"], "the same Pub/Sub message, delivered twice"
    assert "ledger unavailable" in lines[0]["error"]
    assert len(cloud.emails_about(name)) == 1


@contextmanager
def failing_first_new_claim(cloud: LocalCloud, status: int) -> Iterator[None]:
    """The first ledger call about a record the state bucket does not hold yet is answered ``status``:
    this test's claim, not a late redelivery of an earlier test's message (its record exists)."""
    held = {blob.name for blob in cloud.gcs.client().list_blobs(STATE, prefix=LEDGER_PREFIX)}
    cloud.proxy.target = lambda request: ledger_calls(request) and request.object_name not in held
    cloud.proxy.fail_next.append(status)
    try:
        yield
    finally:
        cloud.proxy.fail_next.clear()
        cloud.proxy.target = ledger_calls


def republish_earlier(cloud: LocalCloud, name: str) -> tuple[bytes, dict[str, str]]:
    """(data, attributes) of the notification fake-gcs-server published for ``name``, uploaded and
    emailed here first: published again, it is a late redelivery of an earlier message (a duplicate
    to the function). Other notifications the capture subscription holds are dropped."""
    cloud.bucket().blob(name).upload_from_string(b"x\n")
    wait_for_lines(cloud, name, 1)
    found: list[dict[str, Any]] = []

    def published() -> list[dict[str, Any]]:
        found.extend(m for m in cloud.emulator.pull(cloud.capture) if m["attributes"]["objectId"] == name)
        return found

    message = wait_for(f"the notification about {name}", published)[0]
    return base64.b64decode(message["data"]), message["attributes"]


def drain(cloud: LocalCloud) -> list[dict[str, str]]:
    """Every notification published and not yet pulled: until two pulls in a row find none (a pull
    that returns at once may miss messages that are there)."""
    seen: list[dict[str, str]] = []
    empty = 0
    for _ in range(1000):  # bounded: nothing here publishes for ever
        pulled = cloud.published()
        seen.extend(pulled)
        empty = 0 if pulled else empty + 1
        if empty == 2:
            return seen
    pytest.fail(f"the capture subscription never ran dry ({len(seen)} notifications pulled)")


def test_objects_outside_the_watched_bucket_or_prefix_trigger_nothing(cloud):
    drain(cloud)  # forget what earlier tests published
    outside = [(ELSEWHERE, f"{PREFIX}other bucket.csv"), (WATCHED, "elsewhere/outside prefix.csv")]
    for bucket, name in outside:
        cloud.bucket(bucket).blob(name).upload_from_string(b"x\n")
    late = pubsub_message("finalize", object_resource("finalize", WATCHED, f"{PREFIX}another test's.csv"))
    cloud.emulator.publish(TOPIC, base64.b64decode(late["data"]), late["attributes"])  # pulled late
    marker = f"{PREFIX}after the outside ones.csv"
    cloud.bucket().blob(marker).upload_from_string(b"x\n")  # published after them, if they were
    seen: list[dict[str, str]] = []
    wait_for("the marker's notification", lambda: seen.extend(cloud.published()) or any(
        attributes["objectId"] == marker for attributes in seen))  # fmt: skip
    wait_for("the marker's email", lambda: cloud.emails_about(marker))
    seen.extend(drain(cloud))  # what was published before the marker may still be pulled after it
    ours = {marker, *(name for _, name in outside)}
    assert [a["objectId"] for a in seen if a["objectId"] in ours] == [marker], "only the watched object was published"
    for _, name in outside:
        assert cloud.emails_about(name) == [] and cloud.log_lines_about(name) == []


def test_emit_in_pubsub_mode_reaches_the_running_function(cloud):
    name = f"{PREFIX}emitted by the cli.csv"
    command = [sys.executable, "-m", "notifier", "emit", "finalize", f"gs://{WATCHED}/{name}", "--mode", "pubsub",
               "--url", cloud.server.url]  # fmt: skip
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 0, result.stderr
    assert "HTTP 200" in result.stdout
    assert wait_for("the emitted event's email", lambda: cloud.emails_about(name)) == [
        ("finalize", f"Uploaded: {name} ({WATCHED})")
    ]


def run_chaos(argv: list[str]) -> int:
    """bench.chaos run in this process; a signal that stopped it (exit status 128+N) stops the
    session too, as it would have without the run's own handler."""
    from bench import chaos

    code = chaos.main(argv)
    if code > 128:
        raise KeyboardInterrupt(f"the chaos run was stopped by signal {code - 128}")
    return code


def test_a_small_chaos_run_through_the_local_cloud_loses_nothing(capsys, monkeypatch, tmp_path):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # where the run makes its folder
    assert run_chaos(["--events", "40", "--shards", "2", "--outage", "3", "--seed", "7"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"notifications published: +(\d+) \(40 objects\)", out), out
    assert re.search(r"\n  lost: +0\n", out), out
    assert re.search(r"\n  unexplained duplicates: +0\n", out), out
    assert out.rstrip().endswith("PASS")
    assert list(tmp_path.glob("notifier-chaos-*")) == [], "a passing run removes its logs (unless --keep)"


def test_a_chaos_run_whose_copies_cannot_be_published_fails_saying_why_and_keeps_its_logs(
    capsys, monkeypatch, tmp_path
):
    from bench import chaos

    def refuse(self: PubSubEmulator, topic: str, data: bytes, attributes: Any) -> str:
        raise LocalCloudError("publishing refused (by the test)")

    monkeypatch.setattr(PubSubEmulator, "publish", refuse)
    monkeypatch.setattr(chaos, "ERROR_PAUSE", 0.01)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    code = run_chaos(["--events", "4", "--shards", "1", "--outage", "0", "--twice", "1", "--deadline", "30"])
    out = capsys.readouterr().out
    assert code == 1, out
    assert "\nFAIL: 4 notifications could not be published a second time (e.g. chaos/0000" in out
    assert re.search(r"\n  lost: +0\n", out), "nothing was lost: the run failed for its copies alone"
    kept = list(tmp_path.glob("notifier-chaos-*"))
    assert len(kept) == 1 and f"logs: {kept[0]}" in out
    assert list(kept[0].glob("instance-*.log"))


# ---------------------------------------------------------------------------------------------
# A SIGTERM (Ctrl-C's twin, as a CI timeout sends) leaves nothing running

TAG = "NOTIFIER_TEST_TAG"  # set for one subprocess; its children inherit it, so /proc finds them all


def tagged(tag: str) -> list[int]:
    """Live processes whose environment holds TAG=tag."""
    needle = f"\0{TAG}={tag}\0".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if needle in b"\0" + environ.read_bytes() + b"\0":
                found.append(int(environ.parent.name))
        except OSError:
            continue  # gone meanwhile
    return found


def kill_tagged(tag: str) -> None:
    """What a failed test leaked: killed, so the next tests run on a clean machine."""
    for pid in tagged(tag):
        with suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def start_tagged(command: list[str], tag: str, output: Path, **env: str) -> subprocess.Popen:
    with output.open("wb") as log:
        return subprocess.Popen(command, cwd=ROOT, env={**os.environ, TAG: tag, **env}, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip


def test_sigterm_stops_a_chaos_run_and_everything_it_started(tmp_path):
    tag, output = f"chaos-{os.getpid()}", tmp_path / "chaos.out"
    command = [sys.executable, "-m", "bench.chaos", "--events", "3000", "--shards", "1"]
    process = start_tagged(command, tag, output, TMPDIR=str(tmp_path))
    try:
        wait_for("the run's uploads", lambda: "uploading" in output.read_text() or process.poll() is not None, 90)
        assert process.poll() is None, output.read_text()
        os.kill(process.pid, signal.SIGTERM)
        code = process.wait(timeout=60)
        assert tagged(tag) == [], f"left running: {tagged(tag)}\n{output.read_text()}"
        assert code == 128 + signal.SIGTERM, output.read_text()
        assert "chaos: stopped by SIGTERM" in output.read_text()
        assert list(tmp_path.glob("notifier-chaos-*")) == []
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        kill_tagged(tag)


TINY_SUITE = """
import os, pathlib, time
import pytest
from notifier.tools.localcloud import running_fake_gcs

@pytest.fixture
def server():
    with running_fake_gcs() as server:
        pathlib.Path(os.environ["READY_FILE"]).write_text(server.url)
        yield server

def test_waits_for_a_sigterm(server):
    time.sleep(120)
"""


def test_sigterm_to_pytest_tears_the_fixtures_down_and_stops_their_servers(tmp_path):
    tag, output, ready = f"pytest-{os.getpid()}", tmp_path / "pytest.out", tmp_path / "ready"
    (tmp_path / "test_tiny.py").write_text(TINY_SUITE)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "tests.conftest",
               "--rootdir", str(tmp_path), "--basetemp", str(tmp_path / "base"), str(tmp_path / "test_tiny.py")]  # fmt: skip
    process = start_tagged(command, tag, output, READY_FILE=str(ready))
    try:
        wait_for("the fixture's fake-gcs-server", lambda: ready.exists() or process.poll() is not None, 60)
        assert process.poll() is None, output.read_text()
        assert len(tagged(tag)) == 2, "pytest and fake-gcs-server"
        os.kill(process.pid, signal.SIGTERM)
        code = process.wait(timeout=30)
        assert tagged(tag) == [], f"left running: {tagged(tag)}\n{output.read_text()}"
        assert code == pytest.ExitCode.INTERRUPTED, output.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        kill_tagged(tag)
