"""`make burst` (bench/burst.py): a bulk copy's notifications through the real Pub/Sub emulator to one
instance as deploy.sh deploys it, saturated on purpose. A small burst here (no figure asserted
beyond "nothing lost, nothing stuck"); the 10,000-event run is `make burst`."""

from __future__ import annotations

import base64
import json
import shutil
import signal
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bench import burst, burst_report
from bench.chaos_report import FunctionLog
from bench.deployed import Deployment
from bench.standin import Acceptance
from notifier.tools.localcloud import (
    EventSink,
    pubsub_emulator_problem,
    running_fake_gcs,
    running_pubsub_emulator,
)
from notifier.tools.processes import LocalCloudError, Stopped

needs_emulator = pytest.mark.skipif(pubsub_emulator_problem() is not None, reason=str(pubsub_emulator_problem()))
NOT_STUCK = 2.0  # seconds: a generous bound on a refusal's answer, which takes milliseconds


def _admission_control_landed() -> bool:
    from notifier.config import Settings

    return "max_in_flight" in Settings.__dataclass_fields__


# ---------------------------------------------------------------------------------------------
# The notifications are fake-gcs-server's own


@needs_emulator
def test_the_burst_publishes_what_fake_gcs_server_publishes_for_an_upload():
    with running_pubsub_emulator("burst-shape") as emulator:
        emulator.create_topic("uploads")
        emulator.create_pull_subscription("capture", "uploads")
        sink = EventSink(emulator.host, "burst-shape", "uploads", bucket=burst.UPLOADS, events=("finalize",))
        with running_fake_gcs(events=sink) as gcs:
            name = burst.object_name(1)
            gcs.bucket(burst.UPLOADS).blob(name).upload_from_string(burst.CONTENT, content_type="text/csv")
            real = _pulled(emulator, "capture")
    data, attributes = burst.notification(name, int(real["attributes"]["objectGeneration"]), datetime.now(UTC))
    ours, theirs = json.loads(data), json.loads(base64.b64decode(real["data"]))
    assert set(attributes) == set(real["attributes"])
    timeless = {key for key in attributes if key != "eventTime"}
    assert {k: attributes[k] for k in timeless} == {k: real["attributes"][k] for k in timeless}
    assert set(ours) == set(theirs)
    unchanging = set(ours) - {"timeCreated", "updated"}
    assert {k: ours[k] for k in unchanging} == {k: theirs[k] for k in unchanging}


def _pulled(emulator, subscription: str) -> dict:
    give_up = time.monotonic() + 30  # generous: fake-gcs-server publishes within a second
    while time.monotonic() < give_up:
        if messages := emulator.pull(subscription):
            return messages[0]
        time.sleep(0.1)
    raise AssertionError("fake-gcs-server published nothing")


def test_the_state_bucket_keeps_its_objects_as_files_and_still_refuses_a_second_create(tmp_path):
    from google.api_core.exceptions import PreconditionFailed

    with running_fake_gcs(root=tmp_path / "state") as gcs:
        blob = gcs.bucket(burst.STATE).blob("ledger/one")
        blob.upload_from_string(b"{}", if_generation_match=0)
        with pytest.raises(PreconditionFailed):
            blob.upload_from_string(b"{}", if_generation_match=0)
    assert [path.name for path in (tmp_path / "state").rglob("*") if path.is_file() and "one" in path.name]


# ---------------------------------------------------------------------------------------------
# A small burst, end to end


@needs_emulator
def test_a_small_burst_saturates_one_instance_and_loses_nothing(tmp_path, capsys):
    out = tmp_path / "burst.json"
    code = burst.main(["--events", "150", "--concurrency", "2", "--subscriptions", "4", "--latency", "0.02",
                       "--deadline", "120", "--out", str(out)])  # fmt: skip
    printed = capsys.readouterr().out
    results = json.loads(out.read_text())
    assert code == 0, printed
    assert results["instance"]["threads"] == 10 and results["instance"]["max_in_flight"] == "2", "as deploy.sh sets"
    assert results["lost"] == 0 and results["objects_emailed"] == 150
    assert results["unexplained_duplicates"] == 0
    assert results["pushes_by_status"]["200"] >= 150
    assert results["most_in_flight"] > 2, "more pushes at once than the instance takes: saturated"
    assert "quiet" in results["seconds"] and results["in_flight_at_end"] == 0 and results["dead_lettered"] == 0
    assert 0 < results["core_busy"] <= 1 and 0 < results["harness_busy"] <= 1, "shares of a core's ticks"
    if _admission_control_landed():
        assert results["pushes_by_status"].get("429", 0) > 0, printed
        assert results["answers"]["429"]["max_ms"] < NOT_STUCK * 1000, "refused at once, not queued"
        assert results["refusal_warnings"] >= 1 and results["refusals_logged"] >= 1
    assert "lost:                        0" in printed and printed.rstrip().endswith("PASS")


# ---------------------------------------------------------------------------------------------
# The verdict


def _results(names, accepted, *, answers=None, dead=None):
    pushes = burst_report.Pushes({200: len(names)}, answers or {200: [0.2] * len(names)}, 4)
    deployed = Deployment({"timeout": "60s", "concurrency": "2"}, {"THREADS": "10", "NOTIFY_MAX_IN_FLIGHT": "2"})
    return burst_report.summary(names, accepted, dead or {}, FunctionLog(), pushes, deployed, 2,
                                {"drain": 1.0, "quiet": 1.2}, 1.5, burst_report.InstanceLog([], []))  # fmt: skip


def _email(name: str, at: float) -> Acceptance:
    return Acceptance("id", f"Uploaded: {name} ({burst.UPLOADS})", ambiguous=False, at=at)


def test_a_run_with_every_object_emailed_once_passes(capsys):
    names = [burst.object_name(i) for i in range(3)]
    results = _results(names, [_email(name, 1.0) for name in names])
    assert (results["lost"], results["duplicates"], burst_report.problems(results)) == (0, 0, [])
    assert burst_report.report(results, None) == 0


def test_an_object_with_neither_email_nor_dead_letter_is_lost_and_fails_the_run(capsys):
    names = [burst.object_name(i) for i in range(3)]
    results = _results(names, [_email(names[0], 1.0)], dead={names[1]: "gs://burst-state/deadletter/x"})
    assert results["lost"] == 1 and results["lost_examples"] == [names[2]]
    assert burst_report.report(results, None) == 1
    assert f"FAIL: 1 objects lost (e.g. {names[2]})" in capsys.readouterr().out


def test_a_second_email_with_no_cause_is_an_unexplained_duplicate():
    names = [burst.object_name(0)]
    results = _results(names, [_email(names[0], 1.0), _email(names[0], 2.0)])
    assert (results["duplicates"], results["unexplained_duplicates"]) == (1, 1)
    assert burst_report.problems(results) == ["1 duplicate emails with no cause"]


def test_a_push_answered_after_the_function_timeout_fails_the_run():
    names = [burst.object_name(0)]
    results = _results(names, [_email(names[0], 1.0)], answers={200: [0.1], 429: [0.003, 61.0]})
    assert results["answers"]["429"]["max_ms"] == 61000.0 and results["answers"]["2xx"]["count"] == 1
    assert burst_report.problems(results) == ["a push was answered after 61.0s, longer than the function's 60s timeout"]


def test_answer_times_are_p50_p99_and_max_by_nearest_rank():
    assert burst_report.spread([i / 1000 for i in range(1, 101)]) == {"count": 100, "p50_ms": 50, "p99_ms": 99,
                                                                "max_ms": 100}  # fmt: skip
    assert burst_report.spread([]) == {"count": 0}


def test_the_refusals_and_send_times_are_read_from_the_function_log(tmp_path):
    log = tmp_path / "instance-0.log"
    lines = [
        {"severity": "WARNING", "message": "5 request(s) refused with 429: 2 requests at once is this instance's cap",
         "refused": 5, "time": "2026-01-01T00:00:00+00:00"},
        {"severity": "INFO", "message": "refused with 429 (not a warning)", "time": "2026-01-01T00:00:00+00:00"},
        {"severity": "WARNING", "message": "SendGrid slow", "time": "2026-01-01T00:00:00+00:00"},
        {"severity": "INFO", "outcome": "sent", "duration_ms": 173.5, "message": "sent", "time": "2026-01-01T00:00:00+00:00"},
    ]  # fmt: skip
    log.write_text("\n".join(json.dumps(line) for line in lines) + "\nTraceback (most recent call last):\n")
    read = burst_report.InstanceLog.read(log)
    assert [entry["refused"] for entry in read.refusals] == [5] and read.sent_seconds == [0.1735]


def test_the_balancer_times_each_answer_by_its_status(httpserver):
    from bench.balancer import Balancer

    httpserver.expect_request("/").respond_with_data("busy", status=429, headers={"Retry-After": "1"})
    with Balancer([httpserver.url_for("/").rstrip("/")]) as balancer:
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(urllib.request.Request(balancer.url, data=b"{}"), timeout=10)
        assert refused.value.code == 429 and refused.value.headers["Retry-After"] == "1"
    assert balancer.statuses == {429: 1}
    assert len(balancer.answer_seconds[429]) == 1 and 0 < balancer.answer_seconds[429][0] < NOT_STUCK


def test_the_user_env_file_is_one_deploy_sh_reads(tmp_path):
    path = burst._user_env_file(tmp_path, "https://localhost:1234")
    assert Path(path).read_text().splitlines() == [
        'NOTIFY_FROM: "burst@example.com"', 'NOTIFY_TO: "ops@example.com"', f'NOTIFY_STATE_BUCKET: "{burst.STATE}"',
        'SENDGRID_API_HOST: "https://localhost:1234"',
    ]  # fmt: skip


def test_a_signal_stops_the_run_with_128_plus_its_number_and_removes_its_folder(monkeypatch, capsys):
    folders = []

    def stopped(options, workdir):
        folders.append(workdir)
        raise Stopped(signal.SIGTERM)

    monkeypatch.setattr(burst, "_run", stopped)
    assert burst.run(burst.Options(events=1)) == 128 + signal.SIGTERM
    assert "stopped by SIGTERM; everything it started is stopped" in capsys.readouterr().err
    assert not folders[0].exists()


def test_a_part_that_cannot_start_fails_the_run_saying_why_and_keeps_its_logs(monkeypatch, capsys):
    folders = []

    def missing(options, workdir):
        folders.append(workdir)
        raise LocalCloudError("the Pub/Sub emulator needs Java 17+")

    monkeypatch.setattr(burst, "_run", missing)
    assert burst.run(burst.Options(events=1)) == 1
    captured = capsys.readouterr()
    assert "burst: the Pub/Sub emulator needs Java 17+" in captured.err
    assert f"logs: {folders[0]}" in captured.out and folders[0].is_dir()
    shutil.rmtree(folders[0])


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--events", "0"], "--events: expected a whole number from 1 to 99999, got '0'"),
        (["--subscriptions", "x"], "--subscriptions: expected a whole number from 1 to 500, got 'x'"),
        (["--latency", "-1"], "--latency: expected seconds from 0 to 3600, got '-1'"),
        (["--deadline", "nan"], "--deadline: expected seconds from 1 to 3600, got 'nan'"),
    ],
)
def test_a_bad_option_is_refused_naming_it_before_anything_starts(argv, said, capsys):
    with pytest.raises(SystemExit) as stopped:
        burst.main(argv)
    assert stopped.value.code == 2 and said in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Review findings: nothing is injected, so a dead letter fails; a run that never went quiet fails


def test_a_dead_letter_fails_the_run_naming_the_count_and_where_the_letters_are(capsys):
    names = [burst.object_name(i) for i in range(2)]
    letter = f"gs://{burst.STATE}/deadletter/x.json"
    results = _results(names, [_email(names[0], 1.0)], dead={names[1]: letter})
    assert results["lost"] == 0 and results["dead_lettered"] == 1
    assert burst_report.report(results, None) == 1
    printed = capsys.readouterr().out
    assert "dead-lettered:               1" in printed, "still printed"
    assert f"FAIL: 1 objects dead-lettered with nothing injected (e.g. {letter}" in printed


def _never_quiet(in_flight_at_end: int = 0):
    """The reviewer's run: every object emailed but one, pushes (429s) still coming at the deadline."""
    names = ["bulk/part-00000.csv", "bulk/part-00001.csv"]
    accepted = [Acceptance("n0", "Uploaded: bulk/part-00000.csv to bench-uploads", False, 1.0)]
    dead = {"bulk/part-00001.csv": "gs://burst-state/deadletter/x.json"}
    deployed = Deployment({"timeout": "60s", "concurrency": "32"}, {"THREADS": "40", "NOTIFY_MAX_IN_FLIGHT": "32"})
    pushes = burst_report.Pushes({200: 2, 429: 5000}, {200: [0.2, 0.3], 429: [0.001] * 5000}, 64, in_flight_at_end)
    return burst_report.summary(names, accepted, dead, FunctionLog(), pushes, deployed, 32,
                                {"publish": 1.0, "drain": 5.0, "waited": 120.0}, 3.0,
                                burst_report.InstanceLog([], []))  # fmt: skip


def test_a_run_whose_pushes_never_went_quiet_fails_and_prints_no_nan(capsys):
    assert burst_report.report(_never_quiet(), None) == 1
    printed = capsys.readouterr().out
    assert "nan" not in printed.lower(), printed
    assert "FAIL: the pushes never went quiet: still coming 120.0s after they began (the deadline)" in printed
    assert "pushes still coming at 120.0s" in printed


def test_pushes_still_in_flight_at_the_end_fail_the_run(capsys):
    results = _results([burst.object_name(0)], [_email(burst.object_name(0), 1.0)])
    results["in_flight_at_end"] = 3
    assert burst_report.problems(results) == ["3 pushes still in flight at the balancer when the run ended"]
    assert "3 pushes still in flight" in burst_report.problems(_never_quiet(in_flight_at_end=3))[-1]


def test_how_busy_each_core_was_while_pushed_to_is_printed_and_written(tmp_path, capsys):
    names = [burst.object_name(0)]
    pushes = burst_report.Pushes({200: 1}, {200: [0.2]}, 4)
    deployed = Deployment({"timeout": "60s", "concurrency": "2"}, {"THREADS": "10", "NOTIFY_MAX_IN_FLIGHT": "2"})
    cores = burst_report.Cores(seconds=10.0, function_cpu=4.0, function_core=0.45, harness_core=0.97)
    results = burst_report.summary(names, [_email(names[0], 1.0)], {}, FunctionLog(), pushes, deployed, 2,
                                   {"drain": 10.0, "quiet": 10.0, "waited": 15.0}, 5.0,
                                   burst_report.InstanceLog([], []), cores)  # fmt: skip
    assert (results["function_busy"], results["core_busy"], results["harness_busy"]) == (0.4, 0.45, 0.97)
    out = tmp_path / "burst.json"
    assert burst_report.report(results, out) == 0
    printed = capsys.readouterr().out
    busy = "busy while draining:         function 40%, its core 45%, harness core 97% over 10.0s"
    assert f"{busy} (harness core near full)" in printed
    assert json.loads(out.read_text())["harness_busy"] == 0.97


def test_the_function_env_is_deploy_sh_s_and_takes_no_workers_from_the_caller(monkeypatch):
    monkeypatch.setenv("WORKERS", "3")
    monkeypatch.setenv("THREADS", "99")
    deployed = Deployment({"timeout": "60s", "concurrency": "2"}, {"THREADS": "10", "NOTIFY_MAX_IN_FLIGHT": "2"})
    env = burst.deployed_env(deployed, ca_dir="/ca", storage_endpoint="https://localhost:1", metadata_host="h:1")
    assert "WORKERS" not in env and env["THREADS"] == "10" and env["NOTIFY_MAX_IN_FLIGHT"] == "2"
    assert env["SSL_CERT_DIR"] == "/ca" and env["NOTIFY_STORAGE_ENDPOINT"] == "https://localhost:1"
    assert env["K_SERVICE"] and env["GCE_METADATA_HOST"] == "h:1"
