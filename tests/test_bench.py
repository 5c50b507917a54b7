"""A tiny run of the benchmarks, so their code cannot rot. No figure is asserted here."""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from bench import routing


def test_routing_benchmark_runs_and_reports_every_size(tmp_path, capsys):
    out = tmp_path / "routing.json"
    assert routing.main(["--repeats", "1", "--loops", "2", "--json", str(out)]) == 0
    assert [r["rules"] for r in json.loads(out.read_text())["routing"]] == [10, 100, 1000]
    assert "1,000 rules:" in capsys.readouterr().out


def test_benchmark_rules_route_as_intended():
    rules = routing.build_rules(100)
    matched = [len(rules.route(e)) for e in routing.sample_events(100) if rules.ignore_reason(e) is None]
    assert matched == [1, 0, 1], "one hit by folder, one miss, one hit by extension; the .part is ignored"


def test_the_benchmark_suite_runs_end_to_end_in_its_quick_form(tmp_path, capsys):
    from bench import run

    assert run.main(["--quick", "--out", str(tmp_path)]) == 0
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["cold_start_ms"]) >= {"floor", "textbook", "storage-notifier", "ratio_to_floor"}
    assert {t["handler"] for t in results["throughput"]} == {"storage-notifier", "textbook", "floor"}
    assert all(t["cpu_ms_per_event"] > 0 and t["events_per_s"] > 0 for t in results["throughput"])
    assert results["warm_in_process_ms"]["rules"] == 100
    assert results["warm_in_process_ms"]["textbook"]["p50"] > 0
    assert {m["handler"] for m in results["memory"]} == {"storage-notifier", "textbook"}
    assert all(m["instance_peak_pss_mib"] > m["worker_peak_rss_mib"] / 2 > 0 for m in results["memory"])
    report = (tmp_path / "results.md").read_text()
    assert "| cold start" in report and "## Every throughput run" in report
    _assert_every_cold_start_did_its_work(results["cold_start_ms"], report)


def _assert_every_cold_start_did_its_work(cold: dict, report: str) -> None:
    """The deployed row is the headline; each launch sent its email, stored its ledger record as sent
    and fetched its token (the harness fails a launch that did not; the totals say it was checked)."""
    assert "K_SERVICE" in cold["configuration"] and "NOTIFY_STATE_BUCKET" in cold["configuration"]
    assert set(cold["secondary"]) == {"outbox", "sendgrid-no-bucket", "deployed-stale-bytecode"}
    launches = cold["launches"]
    # textbook, deployed, SendGrid without bucket, deployed with stale bytecode: an email each launch
    assert cold["checked"]["emails"] == 4 * launches
    assert cold["checked"]["sent_records"] == 2 * launches, "a ledger record per deployed launch"
    assert cold["checked"]["tokens"] >= 2 * launches, "each deployed launch fetched its token"
    assert cold["checked"]["eml_files"] == launches
    assert all(row["median"] > 0 for row in cold["secondary"].values())
    assert "## Cold start, every configuration" in report and "outbox backend" in report


def test_a_launch_that_did_not_do_its_work_is_named_with_what_is_missing():
    from bench.coldstart import Configuration, Tally, problems

    deployed = Configuration("storage-notifier", Path("main.py"), {}, Tally(emails=1, sent_records=1, tokens=1))
    assert problems(deployed, Tally(emails=1, sent_records=1, tokens=2)) == []
    assert problems(deployed, Tally(emails=1)) == [
        "storage-notifier: expected sent_records to grow by at least 1, it grew by 0",
        "storage-notifier: expected tokens to grow by at least 1, it grew by 0",
    ]


def test_the_metadata_stand_in_gives_a_token_only_to_a_request_with_the_metadata_flavor_header():
    import urllib.error
    import urllib.request

    from bench.metadata import TOKEN_PATH, MetadataStandIn

    with MetadataStandIn() as metadata:
        url = f"http://{metadata.host}{TOKEN_PATH}"
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(url, timeout=5)
        assert refused.value.code == 403
        request = urllib.request.Request(url, headers={"Metadata-Flavor": "Google"})
        with urllib.request.urlopen(request, timeout=5) as answer:
            token = json.loads(answer.read())
        assert token["token_type"] == "Bearer" and token["expires_in"] > 0 and token["access_token"]
        assert (metadata.tokens, metadata.refused) == (1, 1)


def _imports_verbosely(folder: Path, module: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "NOTIFY_"))}
    command = [sys.executable, "-v", "-c", f"import {module}"]
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True, check=True).stderr


def test_the_bytecode_the_build_writes_is_used_after_the_image_normalizes_mtimes(tmp_path):
    from bench import workspace

    built = workspace.build(workspace_source(), tmp_path / "hashed").parent
    stale = workspace.build(workspace_source(), tmp_path / "stale", stale=True).parent
    assert (built / "notifier/config.py").stat().st_mtime == workspace.EXPORTED_MTIME
    assert not (built / "notifier/tools").exists(), ".gcloudignore leaves the tooling out"
    pyc = f"notifier/__pycache__/config.{sys.implementation.cache_tag}.pyc"
    assert f"{built / pyc} matches {built / 'notifier/config.py'}" in _imports_verbosely(built, "notifier.config")
    assert f"{stale / pyc} matches" not in _imports_verbosely(stale, "notifier.config"), "timestamped: stale"


def workspace_source() -> Path:
    return Path(__file__).resolve().parent.parent / "main.py"


def test_fake_gcs_server_speaks_https_with_the_certificate_it_is_given():
    import ssl
    import urllib.error
    import urllib.request

    from bench.harness import throwaway_ca
    from notifier.tools.localcloud import running_fake_gcs

    with throwaway_ca() as authority:
        certificate = authority.issue("gcs", "localhost", "127.0.0.1")
        with running_fake_gcs(certificate=certificate) as gcs:
            assert gcs.url.startswith("https://127.0.0.1:")
            with urllib.request.urlopen(f"{gcs.url}/storage/v1/b", timeout=10, context=authority.context()) as answer:
                assert json.loads(answer.read())["kind"] == "storage#buckets"
            with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):  # it is that certificate
                urllib.request.urlopen(f"{gcs.url}/storage/v1/b", timeout=10, context=ssl.create_default_context())
            with urllib.request.urlopen(f"{gcs.plain_url}/storage/v1/b", timeout=10) as answer:
                assert answer.status == 200, "plain HTTP beside it, for the harness's own checks"


def test_every_headline_target_has_its_explanation_ready_for_a_run_that_misses_it(tmp_path):
    from bench import report, run

    results = json.loads((run.ROOT / "bench/results.json").read_text())
    keys = [row[0] for row in report.headline(results)]
    assert set(keys) == set(report.WHY_NOT)
    assert all(report.WHY_NOT[key] for key in keys), "a missed target needs its why"


# ---------------------------------------------------------------------------------------------
# The local stand-ins (balancer, state-bucket fault proxy, SendGrid stand-in) bound what they read


def _stand_ins():
    from bench.balancer import Balancer
    from bench.gcs_faults import GcsFaultProxy
    from bench.standin import StandIn

    nowhere = "http://127.0.0.1:9"  # never reached: a refused request is not forwarded
    return {"balancer": lambda: Balancer([nowhere]), "gcs proxy": lambda: GcsFaultProxy(nowhere), "sendgrid": StandIn}


@pytest.mark.parametrize("server", ["balancer", "gcs proxy", "sendgrid"])
@pytest.mark.parametrize(
    ("length", "status"), [("-1", 400), ("12abc", 400), ("+5", 400), ("1_0", 400), ("99999999999", 413)]
)
def test_a_bad_or_oversized_content_length_is_refused_at_once(server, length, status):
    # A negative length once read to the end of the stream, and a huge one read until the client gave up.
    with _stand_ins()[server]() as stand_in:
        port = int(stand_in.url.rstrip("/").rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.sendall(f"POST /v3/mail/send HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n{{}}".encode())
            answer = b"".join(iter(lambda: client.recv(4096), b"")).decode("latin-1")  # until it closes
    assert answer.startswith(f"HTTP/1.1 {status} "), answer
    assert "Content-Length" in answer.split("\r\n\r\n", 1)[1], "the answer says what was wrong"


# ---------------------------------------------------------------------------------------------
# make chaos's copier: the thread that publishes a share of the notifications a second time


class _Emulator:
    """The Pub/Sub emulator as the copier sees it: ``pulls`` answers in turn (an exception is raised),
    then nothing; ``publishes`` likewise, then a message id."""

    def __init__(self, pulls: list, publishes: list, stop) -> None:
        self.pulls, self.publishes, self.stop = pulls, publishes, stop
        self.pulled = self.published = 0

    def pull(self, subscription: str) -> list:
        self.pulled += 1
        if self.pulled > 100:  # the copier spins: end the test instead of hanging it
            self.stop.set()
        answer = self.pulls.pop(0) if self.pulls else []
        if isinstance(answer, BaseException):
            raise answer
        return answer

    def publish(self, topic: str, data: bytes, attributes: dict) -> str:
        self.published += 1
        answer = self.publishes.pop(0) if self.publishes else "id"
        if isinstance(answer, BaseException):
            raise answer
        return answer


class _Stop(threading.Event):
    """The copier's stop event; its waits are recorded, not slept, and it is set after ``after`` of them."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after, self.waits = after, []

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        if len(self.waits) >= self.after:
            self.set()
        return self.is_set()


def _copy(pulls: list, publishes: list, waits: int = 3):
    from bench import chaos

    stop = _Stop(waits)
    emulator = _Emulator(pulls, publishes, stop)
    tally = chaos.Tally()
    shard = chaos.Shard("uploads-0", "capture-0", None)
    chaos._copy_some(emulator, [shard], argparse.Namespace(seed=1, twice=1.0), tally, stop)
    return emulator, stop, tally


def _notification(name: str) -> dict:
    return {"data": base64.b64encode(b"{}").decode(), "attributes": {"objectId": name}}


def test_the_copier_pauses_after_each_failed_pull_instead_of_spinning():
    from notifier.tools.processes import LocalCloudError

    emulator, stop, _ = _copy([LocalCloudError("the emulator is gone")] * 200, [])
    assert emulator.pulled == 3, "one pull per pause, not a busy loop"
    assert stop.waits == [0.5, 0.5, 0.5]


def test_a_copy_the_emulator_refuses_once_is_published_on_the_next_try():
    from bench import chaos
    from notifier.tools.processes import LocalCloudError

    emulator, _, tally = _copy([[_notification("chaos/00001.csv")]], [LocalCloudError("busy")])
    assert emulator.published == 2
    assert tally.republished == {"chaos/00001.csv"} and tally.not_copied == []
    assert chaos.copier_problems(tally) == []


def test_a_copy_that_cannot_be_published_is_counted_and_fails_the_run():
    from bench import chaos
    from notifier.tools.processes import LocalCloudError

    emulator, _, tally = _copy([[_notification("chaos/00001.csv")]], [LocalCloudError("refused")] * 10)
    assert emulator.published == chaos.COPY_TRIES
    assert tally.republished == set() and tally.not_copied == ["chaos/00001.csv"]
    assert chaos.copier_problems(tally) == [
        "1 notification could not be published a second time (e.g. chaos/00001.csv): the run is not the one asked for"
    ]


def test_a_copier_that_dies_fails_the_run_saying_why():
    from bench import chaos

    stop = _Stop(3)
    tally = chaos.Tally()
    emulator = _Emulator([KeyError("attributes")], [], stop)
    chaos._copier(emulator, [chaos.Shard("uploads-0", "capture-0", None)], argparse.Namespace(seed=1, twice=1.0),
                  tally, stop)  # fmt: skip
    assert chaos.copier_problems(tally) == [
        "the copier thread died (KeyError: 'attributes'): notifications after it were neither counted nor copied"
    ]


@pytest.mark.parametrize("server", ["balancer", "gcs proxy", "sendgrid"])
def test_a_chunked_body_is_refused_with_411_and_the_connection_closed(server):
    # Read by Content-Length alone, a chunked body was taken for empty and its chunks for the next request.
    with _stand_ins()[server]() as stand_in:
        port = int(stand_in.url.rstrip("/").rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            client.sendall(
                b"POST /v3/mail/send HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n"
            )
            answer = b"".join(iter(lambda: client.recv(4096), b"")).decode("latin-1")  # until it closes
    assert answer.startswith("HTTP/1.1 411 "), answer
    assert "Transfer-Encoding" in answer.split("\r\n\r\n", 1)[1], "the answer says what was wrong"


@pytest.mark.parametrize("server", ["balancer", "gcs proxy", "sendgrid"])
def test_a_client_that_sends_nothing_is_disconnected_after_the_read_timeout(server, monkeypatch):
    from bench import httpd

    monkeypatch.setattr(httpd, "READ_TIMEOUT", 0.2)  # 30 s in a run
    with _stand_ins()[server]() as stand_in:
        port = int(stand_in.url.rstrip("/").rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            client.sendall(b"POST /v3/mail/send HTTP/1.1\r\n")  # and then nothing: a stalled client
            assert client.recv(4096) == b"", "the server closed the connection (not stuck until our 10 s)"


# ---------------------------------------------------------------------------------------------
# make chaos's report: which duplicate has a cause, in order


def _copies(*copies: tuple[float, bool]):
    """Accepted copies of one email, (time accepted, hung on) each."""
    from bench.standin import Acceptance

    return [Acceptance("id", "Uploaded: chaos/00001.csv (b)", hung, at) for at, hung in copies]


def test_a_duplicate_is_explained_by_a_cause_attached_to_the_copy_before_it():
    from bench.chaos_report import explain

    assert explain(_copies((100, False)), [], []) == (0, 0, 0)
    assert explain(_copies((100, False), (110, False)), [], []) == (1, 0, 0), "nothing explains the second copy"
    assert explain(_copies((100, True), (110, False)), [], []) == (1, 1, 0), "the stand-in hung on the first"
    assert explain(_copies((100, False), (110, False)), [101.0], []) == (1, 1, 0), "the function cut the first"
    assert explain(_copies((100, False), (110, False)), [99.7], []) == (1, 1, 0), "the log's clock, a bit early"
    assert explain(_copies((100, False), (110, False)), [], [100.4]) == (1, 0, 1), "the first's `sent` not recorded"
    assert explain(_copies((110, False), (100, True)), [], []) == (1, 1, 0), "copies are taken in time order"


def test_a_hang_and_the_give_up_it_caused_are_one_cause():
    from bench.chaos_report import explain

    three = _copies((100, True), (110, False), (120, False))
    assert explain(three, [101.2], []) == (2, 1, 0), "the second copy has no cause of its own"
    assert explain(three, [111.0], []) == (2, 2, 0), "a give-up after the second copy explains the third"
    assert explain(_copies((100, False), (110, False), (120, False)), [100.5], [111.0]) == (2, 1, 1)


def test_a_cause_after_the_last_copy_explains_no_duplicate():
    from bench.chaos_report import explain

    assert explain(_copies((100, False), (110, True)), [], []) == (1, 0, 0), "the hang was on the last copy"
    assert explain(_copies((100, False), (110, False)), [111.0], []) == (1, 0, 0), "the give-up was on the last"
    assert explain(_copies((100, False), (110, False)), [], [110.3]) == (1, 0, 0), "the lost mark was the last's"
    assert explain(_copies((100, False), (101, False)), [], [101.5]) == (1, 0, 0), "after the next copy: too late"
    assert explain(_copies((100, False), (110, False)), [50.0], [50.0]) == (1, 0, 0), "long before any copy"


def test_the_function_log_is_read_to_its_last_whole_line(tmp_path):
    from bench.chaos_report import FunctionLog

    lines = [
        {"time": "2026-01-01T00:00:01.000+00:00", "object": "chaos/1.csv", "outcome": "sent", "ledger_error": "503"},
        {"time": "2026-01-01T00:00:02.500+00:00", "object": "chaos/1.csv", "outcome": "sent"},
        {"time": "2026-01-01T00:00:03.000+00:00", "object": "chaos/2.csv", "outcome": "retrying",
         "error": "SendGrid unreachable: timed out"},
    ]  # fmt: skip
    text = "\n".join(json.dumps(line) for line in lines) + "\nnot json\n{broken\n"
    (tmp_path / "instance-0.log").write_text(text + '{"time": "2026-01-01T00:00:04', encoding="utf-8")  # SIGKILLed
    log = FunctionLog.read(tmp_path)
    assert log.ledger_failures == {"chaos/1.csv": [1767225601.0]}
    assert log.cut_sends == {"chaos/2.csv": [1767225603.0]}
