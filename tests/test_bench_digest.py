"""The digest rows of `make bench` (bench/digest.py) and the digest phase of `make chaos`
(bench/chaos_digest.py): a tiny run of the bench part, so its code cannot rot, and the chaos
phase's accounting on made-up acceptances and records. No figure is asserted here."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from bench import chaos_digest
from bench.chaos_digest import FlushLog, Records, Scheduler, counted, digests, events_in, summary
from bench.gcs_faults import ProxiedRequest
from bench.standin import Acceptance

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quick_digest_bench():
    from bench import digest
    from bench.harness import harness_pinned

    with harness_pinned():
        return digest.measure(quick=True)


def test_the_digest_bench_holds_events_and_flushes_them_into_one_email_as_deployed(quick_digest_bench):
    held = quick_digest_bench["held"]
    assert [row["row"] for row in held] == ["single send", "held (10m)"]
    assert all(row["events"] == 40 and row["cpu_ms_per_event"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0
               for row in held)  # fmt: skip
    flush = quick_digest_bench["flush"]
    (run,) = flush["runs"]
    assert run["outcomes"] == ["sent"] and run["events"] == 40 and run["emails"] == 1
    # each held entry is deleted once it went out; the listing, claim, record and mark come on top
    assert run["by_method"].get("DELETE", 0) >= 40
    assert run["state_bucket_requests"] > 40 and run["cpu_s"] > 0 and run["wall_s"] > 0
    assert "K_SERVICE" in quick_digest_bench["configuration"]


def test_results_md_gets_the_digest_section_when_the_run_measured_it(quick_digest_bench):
    from bench.report import markdown

    results = json.loads((ROOT / "bench/results.json").read_text())
    results.pop("digest", None)
    assert "## Digests" not in markdown(results), "an older run's results still render"
    text = markdown({**results, "digest": quick_digest_bench})
    assert "## Digests: a held event, and a flush" in text
    assert "| single send | 40 |" in text and "| held (10m) | 40 |" in text
    assert "A flush of 40 held events into one email" in text


def test_the_suite_measures_the_digest_rows_beside_the_others():
    source = (ROOT / "bench/run.py").read_text()
    assert 'results["digest"] = digest.measure(' in source


def test_an_email_counts_the_bulk_uploads_its_subject_says():
    assert events_in("37 new objects in gs://chaos-uploads/bulk/ (10:00–10:01 UTC)") == 37
    assert events_in("Uploaded: bulk/00012.csv (chaos-uploads)") == 1, "a one-event digest is the ordinary email"
    assert events_in("Uploaded: chaos/00012.csv (chaos-uploads)") is None
    assert events_in("37 new objects in gs://chaos-uploads/other/ (10:00–10:01 UTC)") is None


def _copy(notification_id: str, count: int, at: float, ambiguous: bool = False) -> Acceptance:
    subject = f"{count} new objects in gs://chaos-uploads/bulk/ (10:00–10:01 UTC)"
    return Acceptance(notification_id, subject, ambiguous, at)


def test_each_digest_counts_once_whatever_copies_sendgrid_got():
    found = digests([_copy("a", 600, 1.0, ambiguous=True), _copy("a", 600, 5.0), _copy("b", 400, 2.0),
                     Acceptance("x", "Uploaded: chaos/00001.csv (chaos-uploads)", False, 1.0)])  # fmt: skip
    assert sorted(found) == ["a", "b"] and len(found["a"]) == 2
    assert counted(found) == 1000


def test_the_records_say_what_is_wrong_with_the_digests():
    good = Records({("g", 60, 1): ["1", "2"], ("g", 120, 1): ["3"]}, held=0)
    assert good.problems(3) == []
    bad = Records({("g", 60, 1): ["1", "2"], ("g", 60, 2): ["2"]}, held=4)
    assert bad.problems(3) == [
        "the digests' records name 2 held events, not the 3 bulk uploads",
        "1 held event(s) included in two digests (e.g. 2)",
        "1 window(s) sent in more than one digest (e.g. ('g', 60))",
        "4 event(s) still held after the last flush",
    ]


def test_a_second_copy_of_a_digest_fails_the_run_unless_a_cause_explains_it():
    records = Records({("g", 60, 1): [str(i) for i in range(10)]}, held=0)
    copies = [_copy("a", 10, 100.0), _copy("a", 10, 160.0)]
    lines, problems = summary(10, copies, records, FlushLog(), Counter({"200": 3}))
    assert problems == ["1 digest copy(ies) with no cause (accepted-then-timed-out or a lost mark)"]
    assert any("digest duplicates:" in line and "1, unexplained 1" in line for line in lines)
    explained = FlushLog(cut_sends=[100.5])  # the flush gave up on SendGrid just after it accepted
    assert summary(10, copies, records, explained, Counter())[1] == []
    short = summary(11, copies[:1], Records({("g", 60, 1): [str(i) for i in range(11)]}, 0), FlushLog(), Counter())
    assert short[1] == ["the digests count 10 events, not the 11 bulk uploads"]


def test_the_flush_log_keeps_the_bulk_rule_s_causes(tmp_path):
    lines = [
        {"time": "2026-11-29T10:00:01+00:00", "outcome": "sent", "rule": "bulk", "group": "g", "ledger_error": "x"},
        {"time": "2026-11-29T10:00:02+00:00", "outcome": "retrying", "rule": "bulk", "group": "g",
         "reason": "SendGrid unreachable: timed out after 1.0s"},
        {"time": "2026-11-29T10:00:03+00:00", "outcome": "sent", "rule": "bulk", "group": "g"},
        {"time": "2026-11-29T10:00:04+00:00", "outcome": "sent", "rule": "chaos", "object": "chaos/1.csv"},
    ]  # fmt: skip
    (tmp_path / "flush.log").write_text("\n".join(json.dumps(line) for line in lines) + "\nnot json\n")
    log = FlushLog.read(tmp_path / "flush.log")
    assert log.sent == 2 and len(log.ledger_failures) == 1 and len(log.cut_sends) == 1
    assert FlushLog.read(tmp_path / "missing.log") == FlushLog()


def test_the_state_bucket_faults_reach_the_digest_objects_but_not_dead_letters():
    def request(name: str) -> ProxiedRequest:
        return ProxiedRequest("POST", "/upload/storage/v1/b/chaos-state/o", {}, name)

    for name in ("ledger/abc", "digest/g/60/id", "digested/g/60.1.json", "cap/g/60/00000"):
        assert chaos_digest.state_calls(request(name)), name
    assert not chaos_digest.state_calls(request("deadletter/abc.json"))


def test_a_failed_scheduled_flush_is_counted_and_the_schedule_goes_on():
    answers = iter(["200"])

    def flush() -> str:
        if (answer := next(answers, None)) is None:
            raise ConnectionResetError("the flush instance dropped the connection")
        return answer

    scheduler = Scheduler(flush)
    scheduler.flush_now()
    scheduler.flush_now()
    assert scheduler.answers == Counter({"200": 1, "failed: ConnectionResetError": 1})


def test_make_chaos_runs_the_digest_phase():
    assert "--bulk 1000" in (ROOT / "Makefile").read_text()
