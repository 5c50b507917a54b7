"""A tiny run of the benchmarks, so their code cannot rot. No figure is asserted here."""

from __future__ import annotations

import json

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


def test_every_headline_target_has_its_explanation_ready_for_a_run_that_misses_it(tmp_path):
    from bench import report, run

    results = json.loads((run.ROOT / "bench/results.json").read_text())
    keys = [row[0] for row in report.headline(results)]
    assert set(keys) == set(report.WHY_NOT)
    assert all(report.WHY_NOT[key] for key in keys), "a missed target needs its why"
