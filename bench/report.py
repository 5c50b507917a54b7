"""bench/results.md from the figures `bench.run` measured: the headline against each target,
then every throughput run, then what changed and, for a target missed, why and what it would take."""

from __future__ import annotations

from typing import Any

# What the suite showed each change to be worth (before -> after, same machine, same suite).
CHANGES = (
    "Routing index by folder, extension, bucket, content type and metadata: 580 -> 15 µs per event at 1,000 rules.",
    "SendGrid requests on a pooled thread instead of a new thread per request.",
)
# Shown under the table for a target the run missed: why, and what it would take.
WHY_NOT = {
    "cold start": "",
    "warm": "",
    "throughput vs textbook": "",
    "littles law": "",
    "memory": "",
}


def _range(stats: dict[str, float], digits: int = 0) -> str:
    return f"{stats['median']:.{digits}f} ({stats['min']:.{digits}f}-{stats['max']:.{digits}f})"


def _find(results: dict[str, Any], handler: str, latency: float, threads: int) -> dict[str, Any] | None:
    return next(
        (t for t in results["throughput"]
         if t["handler"] == handler and t["latency_ms"] == latency and t["concurrency"] == threads),
        None,
    )  # fmt: skip


def headline(results: dict[str, Any]) -> list[tuple[str, str, str, str, str, bool]]:
    """(key, figure, storage-notifier, references, ratio/target, met) rows."""
    cold, warm = results["cold_start_ms"], results["warm_in_process_ms"]
    ours_warm, book_warm = warm["storage-notifier"], warm["textbook"]
    rows = [
        ("cold start", "cold start: launch to first 2xx, ms, median (min-max) of launches",
         _range(cold["storage-notifier"]),
         f"floor {_range(cold['floor'])}, textbook {_range(cold['textbook'])}",
         f"{cold['ratio_to_floor']:.2f}x floor (target <= 1.25x)", cold["ratio_to_floor"] <= 1.25),
        ("warm", f"warm per event in-process, {warm['rules']} rules, ms",
         f"p50 {ours_warm['p50']:.2f}, p99 {ours_warm['p99']:.2f}",
         f"textbook p50 {book_warm['p50']:.2f}, p99 {book_warm['p99']:.2f}",
         f"{ours_warm['p50'] / book_warm['p50']:.2f}x textbook (target p50 <= 1, p99 <= 3)",
         ours_warm["p50"] <= 1 and ours_warm["p99"] <= 3),
    ]  # fmt: skip
    ours, book, floor = (_find(results, h, 0, 8) for h in ("storage-notifier", "textbook", "floor"))
    if ours and book and floor:
        ratio = ours["events_per_s"] / book["events_per_s"]
        references = f"textbook {book['events_per_s']:.0f}, floor {floor['events_per_s']:.0f}"
        rows.append(("throughput vs textbook", "throughput, 0 ms SendGrid, 8 threads, events/s",
                     f"{ours['events_per_s']:.0f}", references, f"{ratio:.2f}x textbook (target >= 1.5x)",
                     ratio >= 1.5))  # fmt: skip
    slow = _find(results, "storage-notifier", 50, 32)
    if slow:
        ratio = slow["ratio_to_limit"]
        rows.append(("littles law", "throughput, 50 ms SendGrid, 32 threads, events/s", f"{slow['events_per_s']:.0f}",
                     f"limit 32 / 50 ms = {slow['littles_law_limit']:.0f}", f"{ratio:.2f} of the limit (target >= 0.8)",
                     ratio >= 0.8))  # fmt: skip
    mem = {m["handler"]: m for m in results["memory"]}
    ours_mem, book_mem = mem["storage-notifier"], mem.get("textbook")
    reference = (f"textbook {book_mem['instance_peak_pss_mib']:.1f} (worker {book_mem['worker_peak_rss_mib']:.1f}), "
                 f"growth {book_mem['growth_mib']:.1f}") if book_mem else "-"  # fmt: skip
    rows.append(("memory", f"memory over {ours_mem['events']} events, MiB: instance peak (worker peak RSS), growth",
                 f"{ours_mem['instance_peak_pss_mib']:.1f} ({ours_mem['worker_peak_rss_mib']:.1f}), "
                 f"growth {ours_mem['growth_mib']:.1f}", reference, "target peak <= 90, growth <= 2",
                 ours_mem["instance_peak_pss_mib"] <= 90 and ours_mem["growth_mib"] <= 2))  # fmt: skip
    routing = ", ".join(f"{r['rules']}: {r['median_us']:.1f}" for r in results["routing_us"])
    rows.append(("routing", "routing per event, µs, by rules configured", routing, "-", "target < 1000 µs",
                 all(r["median_us"] < 1000 for r in results["routing_us"])))  # fmt: skip
    return rows


def markdown(results: dict[str, Any]) -> str:
    machine = results["machine"]
    lines = [
        "# Benchmark results", "",
        f"Machine: {machine['cpus']} CPUs, Python {machine['python']}, {machine['platform']}. Versions: "
        + ", ".join(f"{k} {v}" for k, v in results["versions"].items())
        + f". Suite took {results.get('seconds', 0):.0f} s.", "",
        "Each function runs on a CPU of its own (a 1-vCPU instance); the load generator and the SendGrid",
        "stand-in share the other. Ratios to the references measured in this run are the headline.", "",
        "| figure | storage-notifier | references | ratio / target | met |", "|---|---|---|---|---|",
    ]  # fmt: skip
    rows = headline(results)
    lines += [f"| {figure} | {ours} | {refs} | {target} | {'yes' if met else '**no**'} |"
              for _, figure, ours, refs, target, met in rows]  # fmt: skip
    lines += [
        "", "## Every throughput run", "",
        "Events/s is the whole run; min-max are its five equal parts. CPU is the function's own (server and",
        "worker), per event.", "",
        "| handler | SendGrid latency | threads | events | events/s (parts min-max) | p50 ms | p99 ms | CPU ms/event "
        "| of Little's-law limit |", "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for t in results["throughput"]:
        parts = t["segments_per_s"]
        limit = f"{t['ratio_to_limit']:.2f} of {t['littles_law_limit']:.0f}/s" if t["ratio_to_limit"] else "-"
        lines.append(
            f"| {t['handler']} | {t['latency_ms']:.0f} ms | {t['concurrency']} | {t['events']} "
            f"| {t['events_per_s']:.0f} ({parts['min']:.0f}-{parts['max']:.0f}) | {t['p50_ms']:.1f} "
            f"| {t['p99_ms']:.1f} | {t['cpu_ms_per_event']:.2f} | {limit} |"
        )
    lines += ["", "## What changed", ""] + [f"- {change}" for change in CHANGES]
    missed = [(figure, WHY_NOT.get(key, "")) for key, figure, *_, met in rows if not met]
    if missed:
        lines += ["", "## Targets missed: why, and what it would take", ""]
        lines += [f"- **{figure}**: {why or 'not yet explained.'}" for figure, why in missed]
    return "\n".join(lines) + "\n"
