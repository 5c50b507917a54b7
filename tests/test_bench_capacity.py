"""The capacity rows of `make bench` (bench/capacity.py): a tiny run of one instance as deploy.sh
configures it, so the code cannot rot, and the capacity model's arithmetic on given numbers. No
measured figure is asserted beyond being sane (events went through, every answer 2xx, the state
bucket written)."""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import pytest

from bench import capacity, capacity_report
from bench.deployed import deployment

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def quick_capacity():
    from bench.harness import harness_pinned

    with harness_pinned():
        return capacity.measure(quick=True, latency=0.01)


def test_each_concurrency_gets_a_row_of_sane_figures(quick_capacity):
    rows = quick_capacity["rows"]
    measured = [row["concurrency"] for row in rows]
    assert measured[:2] == [1, 2], "the quick run measures concurrency 1 and 2 first"
    default = deployment().concurrency
    assert [row["concurrency"] for row in rows if row["default"]] == [default], "the deploy default is one row"
    for row in rows:
        assert row["events"] > 0 and row["events_per_s"] > 0 and row["cpu_ms_per_event"] > 0
        assert row["p99_ms"] >= row["p50_ms"] > 0
        assert row["non_2xx"] == {}, f"concurrency {row['concurrency']}: {row['non_2xx']}"
        assert row["peak_pss_mib"] > 10 and row["memory_mib"] >= 128
        assert row["limit_per_s"] == pytest.approx(row["concurrency"] / (quick_capacity["unloaded_ms"] / 1000))
        assert row["ratio_to_limit"] == pytest.approx(row["events_per_s"] / row["limit_per_s"])
        assert row["sendgrid_bound_per_s"] == pytest.approx(row["concurrency"] / 0.01)
        assert 0 < row["core_busy"] <= 1 and 0 <= row["harness_busy"] <= 1, "shares of a core's ticks"
    assert quick_capacity["unloaded_ms"] == rows[0]["p50_ms"], "the limit's latency is concurrency 1's p50"
    held = quick_capacity["held"]
    assert held["concurrency"] == default and held["events_per_s"] > 0 and held["non_2xx"] == {}


def test_the_function_s_environment_is_deploy_sh_s(quick_capacity):
    for row in quick_capacity["rows"]:
        deployed = deployment("--concurrency", str(row["concurrency"]))
        assert row["threads"] == deployed.threads
        assert row["function_env"]["THREADS"] == str(deployed.threads)
        assert row["deployment"] == deployed.describe()
        for name in ("NOTIFY_DEADLINE_SECONDS", "NOTIFY_MAX_IN_FLIGHT"):
            assert row["function_env"].get(name) == deployed.env.get(name), name
        assert row["function_env"]["NOTIFY_STATE_BUCKET"].startswith("bench-capacity")
        assert "WORKERS" not in row["function_env"], "functions-framework's default: one worker"


def test_the_state_bucket_writes_per_event_are_measured(quick_capacity):
    writes = quick_capacity["writes"]
    sent, held = writes["sent"], writes["held"]
    assert sent["events"] > 0 and held["events"] > 0
    assert sent["writes"] >= 2, "a claim and its sent mark"
    assert sent["create"] >= 1 and sent["update"] >= 1
    assert held["writes"] >= 1 and held["create"] >= 1
    assert sent["writes"] == pytest.approx(sent["create"] + sent["update"] + sent["delete"])
    assert writes["flush"]["events"] == held["events"] + 1, "the event that woke the function up was held too"
    assert writes["flush"]["delete"] >= 1, "each held entry is deleted once its digest went out"


def test_the_model_takes_its_instances_and_writes_from_the_figures_given():
    rows = capacity_report.model(sent_per_instance=40.0, held_per_instance=250.0, sent_writes=2.0, held_writes=2.5,
                          rates=(10, 100, 1000), window_s=60)  # fmt: skip
    by = {(row.rate, row.digests): row for row in rows}
    assert len(rows) == 6
    assert by[(10, False)].instances == 1 and by[(100, False)].instances == 3 and by[(1000, False)].instances == 25
    assert by[(1000, True)].instances == math.ceil(1000 / 250.0) == 4
    assert by[(100, False)].writes_per_s == 200 and by[(1000, True)].writes_per_s == 2500
    assert by[(100, False)].bucket == "within"
    assert by[(1000, False)].bucket == "2.0x the initial rate: GCS ramps up, ledger retries 429/503"
    assert by[(1000, False)].sendgrid_per_s == 1000, "one SendGrid request per upload without digests"
    assert by[(1000, True)].sendgrid_per_s == pytest.approx(1 / 60), "one per rule per window with digests"


def test_results_md_gets_the_capacity_section_and_headline(quick_capacity):
    from bench.report import headline, markdown

    results = json.loads((ROOT / "bench/results.json").read_text())
    results.pop("capacity", None)
    assert "## Capacity" not in markdown(results), "an older run's results still render"
    text = markdown({**results, "capacity": quick_capacity})
    assert "## Capacity: one instance as deployed" in text
    assert "Little's-law limit" in text and "concurrency / " in text
    assert deployment().describe() in text
    assert "| 1,000 uploads/s | without |" in text and "| 1,000 uploads/s | with |" in text
    keys = [row[0] for row in headline({**results, "capacity": quick_capacity})]
    assert "capacity at the default concurrency" in keys


def test_the_suite_measures_the_capacity_rows():
    assert 'results["capacity"] = capacity.measure(' in (ROOT / "bench/run.py").read_text()


def test_the_model_table_prints_from_a_run_s_results(quick_capacity, tmp_path, capsys):
    results = tmp_path / "results.json"
    results.write_text(json.dumps({"capacity": quick_capacity}))
    assert capacity.main(["--table", str(results)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed == capacity_report.model_table(quick_capacity)
    assert sum(line.startswith("| 1,000 uploads/s |") for line in printed) == 2, "with and without digests"


# --- Review findings: a row's batch lasts its seconds; only 2xx answers are events ------------------


def test_a_row_s_batch_lasts_its_seconds_even_with_no_sendgrid_call():
    for concurrency in (1, 8, 32, 80):
        events = capacity.events_for(20.0, concurrency)
        assert events >= 20.0 / capacity.CPU_FLOOR_S, f"concurrency {concurrency}: {events}"
    assert capacity.CPU_FLOOR_S <= 0.002, "faster than any event has been measured on one core"


def test_the_section_reports_the_seconds_each_row_was_measured(quick_capacity):
    shown = {**quick_capacity, "seconds_per_row": 20.0}
    text = "\n".join(capacity_report.section(shown))
    for row in quick_capacity["rows"]:
        assert f"| {row['events']} in {row['seconds']:.1f} s |" in text
    held = quick_capacity["held"]
    assert f"{held['events_per_s']:.1f} events/s over {held['seconds']:.1f} s" in text


def test_only_2xx_answers_count_as_events(httpserver):
    from werkzeug import Response

    from bench.harness import Function, requests

    answered = itertools.count()
    httpserver.expect_request("/").respond_with_handler(
        lambda request: Response("ok", status=200) if next(answered) % 2 else Response("busy", status=429)
    )
    function = Function(httpserver.url_for("/").rstrip("/"), None)
    figures = capacity.figures(capacity.drive(function, requests(10), 2))
    assert figures["events"] + sum(figures["non_2xx"].values()) == 10
    assert figures["non_2xx"] == {"429": 10 - figures["events"]} and 0 < figures["events"] < 10
    assert figures["events_per_s"] == pytest.approx(figures["events"] / figures["seconds"])
