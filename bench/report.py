"""bench/results.md from the figures `bench.run` measured: the headline against each target,
then every throughput run, then what changed and, for a target missed, why and what it would take."""

from __future__ import annotations

from typing import Any

# What the suite showed each change to be worth (before -> after, same machine, same harness; the
# machine is a shared VM, so a figure moves by 10-20% between runs).
CHANGES = (
    "SendGrid requests go over a kept-alive connection per thread: no urllib opener (0.5 ms of CPU) and no "
    "new connection per email, and one watchdog thread enforces the deadline instead of a thread hop per "
    "request. Measured over plain HTTP, before the stand-in spoke HTTPS: function CPU per event 5.2 -> "
    "3.2 ms; 0 ms / 8 threads 187 -> 308 events/s; 50 ms / 32 threads 198 -> 315 events/s (0.31 -> 0.49 "
    "of the limit).",
    "Our templates carry their styles inline (css-inline now runs only for a template with a <style> "
    "block), the Jinja sandbox remembers its decision per (type, attribute), and log lines skip a "
    "translate() that is slow on non-ASCII text. Warm p50 1.0 -> 0.75 ms; the pipeline's CPU in the "
    "served function, with a null backend, 1.55 -> 1.04 ms per event.",
    "Our own templates compile on first use instead of all at start-up (user templates are still compiled "
    "and tried at start-up, and check-config compiles everything); zoneinfo, tomllib and css-inline are "
    "imported only when used. Cold start 1.87x -> about 1.6x the floor.",
    "The memory ledger keeps two generations of compact entries (16-byte keys, the message id only) "
    "instead of an OrderedDict of objects: growth between events 1,000 and 10,000 3.7 -> 1.7 MiB.",
    "Routing indexes rules by folder, extension, bucket, content type and metadata: 580 -> 15 µs per "
    "event at 1,000 rules.",
    "Tried and not kept: gc.freeze() after start-up. Instance memory 67 -> 60 MiB, but CPU per event "
    "3.15 -> 3.33 ms; memory already meets its target and throughput does not.",
    "The harness itself: each function now runs on a core of its own, the stand-in in its own process and "
    "the load over keep-alive connections. The floor went from 482 to about 1,050 events/s, so the figures "
    "show the function's cost rather than the load generator's.",
    "The cold start is measured as deployed: SendGrid and the state bucket (fake-gcs-server) over HTTPS, "
    "K_SERVICE set, the token from a metadata-server stand-in, each launch checked to have sent its email "
    "and stored its ledger record, every function run from a workspace built as the Python buildpack "
    "builds it. (Before, it ran the outbox backend from the checkout, whose __pycache__, written by the "
    "tests, it read although it wrote none.)",
    "Our bytecode: the buildpack's compileall writes timestamped .pyc files, which the image's "
    "normalized mtimes make stale, so every cold start compiled our modules; deploy.sh sets "
    "SOURCE_DATE_EPOCH for the build, which makes them checked-hash. Deployed cold start 338 -> 282 ms "
    "(the stale-bytecode row against the headline, one run of 5 launches each).",
    "Our templates ship precompiled (templates/_compiled, loaded only while each matches its source "
    "and the Jinja that compiled it; a user's template is compiled from the user's file): the first "
    "event's rendering 23 -> 2 ms, deployed cold start 324 -> 289 ms (7 alternated launches each).",
    "SendGrid and the state bucket share one HTTP stack (urllib3, notifier/httpclient.py) and the v3 "
    "JSON is built by us: the sendgrid package (and the cryptography it pulls in) is no longer imported, "
    "and the ledger speaks Cloud Storage's JSON API with a metadata-server token instead of loading "
    "google-cloud-storage and google-auth. Import after functions-framework: notifier.mail.sendgrid "
    "48.7 -> 36.2 ms (13 ms of it urllib3, shared with the ledger), notifier.ledger.gcs 149-154 -> 37-39 "
    "ms; a claim 2 -> 1 request (a duplicate 3 -> 2). Alternated against the code before, with "
    "SendGrid and a state bucket: CPU per event 3.2-3.6 -> 2.0-2.6 ms, instance memory 87 -> 60 MiB; "
    "SendGrid alone: CPU per event 1.39 -> 1.41 ms (urllib3 costs more per request than http.client; "
    "building the JSON ourselves costs less than the SDK's helpers), memory 65 -> 59 MiB.",
    "TLS: one context per process that looks CA certificates up by hash in the system's folder, where "
    "that folder holds the bundle (update-ca-certificates' layout), instead of parsing the whole bundle "
    "(144 certificates, about 20 ms): deployed cold start 292 -> 273 ms (7 alternated launches each, "
    "the whole-bundle configuration against the headline).",
    "The first request on a new connection sends its head and body apart: in one send, a server that "
    "leaves Nagle on (Python's http.server) holds its answer behind its TLS 1.3 session tickets until "
    "our delayed ACK, 44 ms instead of 3. The stand-ins now set TCP_NODELAY, as the front ends they "
    "stand in for do. main.py builds the pipeline with garbage collection paused (1-3 ms).",
    "All of it, in one run against the code before (its config's refusal of STORAGE_EMULATOR_HOST when "
    "deployed patched out for the measurement, so it used anonymous credentials and skipped importing "
    "google-auth's Compute Engine credentials, which it would also pay when deployed): deployed cold start "
    "496 ms (2.68x the floor) -> 273 ms (1.47x), 7 alternated launches each.",
    "The harness: the stand-in speaks HTTPS, as api.sendgrid.com does, and clients trust it through the "
    "system's CA store (plus the stand-in's CA), as on the platform. The textbook builds a client, an SSL "
    "context (loading the whole CA store) and a TLS connection for every email: 2.9 ms of CPU per event "
    "over plain HTTP, 52 ms over HTTPS. Ours loads the store once and keeps connections alive: 3.0 and "
    "3.1 ms. The plain-HTTP rows stay in the table, so the comparison without TLS is in view too.",
)
# Shown under the table for a target the run missed: why, and what it would take. The {fields} come
# from the run (see _facts).
WHY_NOT = {
    "cold start": (
        "as deployed, our start-up adds {cold_extra:.0f} ms to the floor's; the textbook adds {book_extra:.0f} ms. "
        "Where it goes (measured with -X importtime and a timed first event in a function launched as "
        "the benchmark launches it): importing our package and what it needs beyond the framework "
        "(executing our modules, mostly dataclass and enum creation; urllib3; tenacity; email.policy) and "
        "building the pipeline; then the first event, which pays what a warm one does not: the "
        "metadata-server token and the first TLS connections and requests to SendGrid and to the bucket "
        "(CA certificates are looked up by hash, not parsed; our templates ship precompiled). The state "
        "bucket costs {bucket_extra:.0f} ms over SendGrid alone. Our "
        "bytecode is written by the build's compileall, and deploy/deploy.sh's SOURCE_DATE_EPOCH makes it "
        "checked-hash, so it survives the image's normalized mtimes; built without it, every cold start "
        "compiles our modules again ({stale_extra:.0f} ms more in this run). What it would take: fewer and "
        "lighter modules on the path of a plain finalize event (creating our frozen dataclasses is about "
        "15 ms of the import; urllib3 about 10), or a runtime whose dataclasses are cheaper to create."
    ),
    "warm": (
        "the in-process p50 moves by 20% between runs on this shared machine and was 0.71-0.79 ms in "
        "the runs before this one. Rendering is most of it: three Jinja templates in the sandbox."
    ),
    "throughput vs textbook": (
        "on a one-core instance the rate is set by the function's CPU per event: ours {ours_cpu:.2f} ms, "
        "the textbook's {book_cpu:.2f} ms, the floor's {floor_cpu:.2f} ms (table below). 1.5x the "
        "textbook needs about {needed_cpu:.2f} ms. On top of the framework, our pipeline costs about "
        "1.0 ms (rendering the subject, text and HTML bodies, the ledger, routing, ids, the log line) and "
        "the SendGrid request about 1.0 ms (payload helpers and JSON 0.1 ms; http.client and the socket "
        "calls; TLS on a kept-alive connection). The textbook does less per email but builds a new SSL "
        "context (loading the CA store) and TLS connection for each one. What it would take: cutting our "
        "CPU per event "
        "to the figure above, which means dropping what makes the email (the HTML body, the ledger, the "
        "outcome line) or a faster HTTP client than http.client."
    ),
    "littles law": (
        "at 50 ms and 32 threads the function is CPU-bound: {slow_cpu:.2f} ms of CPU per event at "
        "{slow_rate:.0f}/s fills one core. 0.8 of the 640/s limit needs {slow_needed:.2f} ms per event "
        "on one core, about twice the floor's own {floor_cpu:.2f} ms. The textbook reaches "
        "{book_slow_ratio:.2f} of the limit. What it would take: a second vCPU per instance with "
        "WORKERS=2, or a CPU per event near that figure. Two vCPUs are not measured here, because the "
        "machine has two cores and the harness needs one."
    ),
    "memory": (
        "the growth is the memory ledger filling with up to 50,000 recent notifications (about 150 bytes "
        "each); a deployment with a state bucket keeps none in memory."
    ),
    "capacity at the default concurrency": (
        "at the default concurrency the instance carried {cap_rate:.0f} events/s at {cap_cpu:.2f} ms of CPU per "
        "event: the function kept {cap_busy:.0%} of its core busy (everything on that core {cap_core:.0%}, on the "
        "harness's core {cap_harness:.0%}), p99 {cap_p99:.0f} ms, {cap_refused:.0f} non-2xx answers (a 429 means "
        "the in-flight cap refused what the platform may send). A function well short of its core is waiting, "
        "not working: on the SendGrid stand-in or the state bucket (fake-gcs-server shares the harness's core "
        "with the load and the stand-in), or for a core other work took (this machine is shared). What it would "
        "take: a rerun on a quiet machine to tell which; if the function's own core is full, less CPU per event "
        "or a smaller default --concurrency (the capacity table shows which concurrency meets the target)."
    ),
    "routing": (
        "a regression: the rule index should keep routing near 15 µs per event at 1,000 rules; "
        "`python -m bench.routing` measures it alone."
    ),
}


COLD_TARGET, COLD_STRETCH = 1.5, 1.25  # the deployed cold start, times the floor's (issue 15)


def _cold_starts(cold: dict[str, Any]) -> list[str]:
    """Every configuration launched in the cold-start run, and what the harness checked they did."""
    floor = cold["floor"]["median"]
    rows = [("floor: a bare functions-framework function", cold["floor"]),
            ("textbook: a SendGrid client and Mail per event", cold["textbook"]),
            (f"**storage-notifier {cold.get('configuration', '')}**", cold["storage-notifier"])]  # fmt: skip
    rows += [(row["what"], row) for row in cold.get("secondary", {}).values()]
    lines = ["", "## Cold start, every configuration", "",
             f"Launch to the first 2xx answer to a finalize event; {cold.get('launches', '?')} launches each, "
             "the configurations taking turns. Each function runs from a workspace built as the platform "
             "builds it (bench/workspace.py).", "",
             "| configuration | ms, median (min-max) | x floor |", "|---|---|---|"]  # fmt: skip
    lines += [f"| {what} | {_range(stats)} | {stats['median'] / floor:.2f} |" for what, stats in rows]
    if checked := cold.get("checked"):
        lines += ["", f"Checked after every launch, in all: {checked['emails']} emails reached the SendGrid stand-in, "
                  f"{checked['sent_records']} ledger records in the bucket say sent, {checked['tokens']} tokens were "
                  f"fetched from the metadata stand-in, {checked['eml_files']} .eml files were written."]  # fmt: skip
    return lines


def _facts(results: dict[str, Any]) -> dict[str, float]:
    """The numbers WHY_NOT quotes, from this run (NaN where a row was not measured)."""
    nan = float("nan")
    ours, book, floor = (_find(results, h, 0, 8) or {} for h in ("storage-notifier", "textbook", "floor"))
    slow, book_slow = (_find(results, h, 50, 32) or {} for h in ("storage-notifier", "textbook"))
    cold = results["cold_start_ms"]
    secondary = cold.get("secondary", {})
    deployed = cold["storage-notifier"]["median"]
    return {
        "cold_extra": deployed - cold["floor"]["median"],
        "book_extra": cold["textbook"]["median"] - cold["floor"]["median"],
        "bucket_extra": deployed - secondary.get("sendgrid-no-bucket", {}).get("median", nan),
        "stale_extra": secondary.get("deployed-stale-bytecode", {}).get("median", nan) - deployed,
        "ours_cpu": ours.get("cpu_ms_per_event", nan),
        "book_cpu": book.get("cpu_ms_per_event", nan),
        "floor_cpu": floor.get("cpu_ms_per_event", nan),
        "needed_cpu": 1000 / (1.5 * book["events_per_s"]) if book else nan,
        "slow_cpu": slow.get("cpu_ms_per_event", nan),
        "slow_rate": slow.get("events_per_s", nan),
        "slow_needed": 1000 / (0.8 * slow["littles_law_limit"]) if slow else nan,
        "book_slow_ratio": book_slow.get("ratio_to_limit") or nan,
        **_capacity_facts(results.get("capacity")),
    }


def _capacity_facts(capacity: dict[str, Any] | None) -> dict[str, float]:
    default = next((r for r in capacity["rows"] if r["default"]), None) if capacity else None
    if default is None:
        names = ("cap_rate", "cap_cpu", "cap_busy", "cap_core", "cap_harness", "cap_p99", "cap_refused")
        return dict.fromkeys(names, float("nan"))
    return {"cap_rate": default["events_per_s"], "cap_cpu": default["cpu_ms_per_event"],
            "cap_busy": default["function_busy"], "cap_core": default["core_busy"],
            "cap_harness": default["harness_busy"], "cap_p99": default["p99_ms"],
            "cap_refused": sum(default["non_2xx"].values())}  # fmt: skip


def _range(stats: dict[str, float], digits: int = 0) -> str:
    return f"{stats['median']:.{digits}f} ({stats['min']:.{digits}f}-{stats['max']:.{digits}f})"


def _find(
    results: dict[str, Any], handler: str, latency: float, threads: int, tls: bool = True
) -> dict[str, Any] | None:
    return next(
        (t for t in results["throughput"]
         if t["handler"] == handler and t["latency_ms"] == latency and t["concurrency"] == threads
         and t.get("tls", True) == tls),
        None,
    )  # fmt: skip


def headline(results: dict[str, Any]) -> list[tuple[str, str, str, str, str, bool]]:
    """(key, figure, storage-notifier, references, ratio/target, met) rows."""
    cold, warm = results["cold_start_ms"], results["warm_in_process_ms"]
    ours_warm, book_warm = warm["storage-notifier"], warm["textbook"]
    rows = [
        ("cold start", "cold start as deployed (SendGrid and state bucket over HTTPS, K_SERVICE): launch to "
         "first 2xx, ms, median (min-max) of launches", _range(cold["storage-notifier"]),
         f"floor {_range(cold['floor'])}, textbook {_range(cold['textbook'])}",
         f"{cold['ratio_to_floor']:.2f}x floor (target <= {COLD_TARGET}x, stretch {COLD_STRETCH}x)",
         cold["ratio_to_floor"] <= COLD_TARGET),
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
        ours_plain, book_plain = (
            _find(results, "storage-notifier", 0, 8, tls=False),
            _find(results, "textbook", 0, 8, tls=False),
        )
        if ours_plain and book_plain:
            references += (f"; over plain HTTP ours {ours_plain['events_per_s']:.0f}, "
                           f"textbook {book_plain['events_per_s']:.0f}")  # fmt: skip
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
    reference = "-"
    if book_mem:
        peak, worker = book_mem["instance_peak_pss_mib"], book_mem["worker_peak_rss_mib"]
        reference = f"textbook {peak:.1f} (worker {worker:.1f}), growth {book_mem['growth_mib']:.1f}, "
        reference += f"over {book_mem['events']} events"
    rows.append(("memory", f"memory over {ours_mem['events']} events, MiB: instance peak (worker peak RSS), growth",
                 f"{ours_mem['instance_peak_pss_mib']:.1f} ({ours_mem['worker_peak_rss_mib']:.1f}), "
                 f"growth {ours_mem['growth_mib']:.1f}", reference, "target peak <= 90, growth <= 2",
                 ours_mem["instance_peak_pss_mib"] <= 90 and ours_mem["growth_mib"] <= 2))  # fmt: skip
    if "capacity" in results:  # bench/capacity.py (runs before it lack the row)
        from bench.capacity_report import headline as capacity_headline

        rows.append(capacity_headline(results["capacity"]))
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
        "stand-in share the other. The stand-in speaks HTTPS, as api.sendgrid.com does, with a certificate",
        "from a throwaway CA; functions trust the system's CA store plus that CA (SSL_CERT_DIR), as on the",
        "platform. Ratios to the references measured in this run are the headline.",
        "Rerun with `make bench` (about 6 minutes); bench/harness.py says how the functions are driven.", "",
        "| figure | storage-notifier | references | ratio / target | met |", "|---|---|---|---|---|",
    ]  # fmt: skip
    rows = headline(results)
    lines += [f"| {figure} | {ours} | {refs} | {target} | {'yes' if met else '**no**'} |"
              for _, figure, ours, refs, target, met in rows]  # fmt: skip
    lines += [
        "", "## Every throughput run", "",
        "Events/s is the whole run; min-max are its five equal parts. CPU is the function's own (server and",
        "worker), per event. The plain-HTTP rows are context only: no real SendGrid client gets plain HTTP.", "",
        "| handler | SendGrid | threads | events | events/s (parts min-max) | p50 ms | p99 ms | CPU ms/event "
        "| of Little's-law limit |", "|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for t in results["throughput"]:
        parts = t["segments_per_s"]
        limit = f"{t['ratio_to_limit']:.2f} of {t['littles_law_limit']:.0f}/s" if t["ratio_to_limit"] else "-"
        lines.append(
            f"| {t['handler']} | {'HTTPS' if t.get('tls', True) else 'plain HTTP'}, {t['latency_ms']:.0f} ms "
            f"| {t['concurrency']} | {t['events']} "
            f"| {t['events_per_s']:.0f} ({parts['min']:.0f}-{parts['max']:.0f}) | {t['p50_ms']:.1f} "
            f"| {t['p99_ms']:.1f} | {t['cpu_ms_per_event']:.2f} | {limit} |"
        )
    lines += _cold_starts(results["cold_start_ms"])
    if "digest" in results:  # bench/digest.py: a held event and a flush (runs before it lack the rows)
        from bench.digest import section

        lines += section(results["digest"])
    if "capacity" in results:  # bench/capacity.py: one instance as deployed, and the capacity model
        from bench.capacity_report import section as capacity_section

        lines += capacity_section(results["capacity"])
    lines += ["", "## What changed", ""] + [f"- {change}" for change in CHANGES]
    missed = [(figure, WHY_NOT.get(key, "")) for key, figure, *_, met in rows if not met]
    if missed:
        lines += ["", "## Targets missed: why, and what it would take", ""]
        facts = _facts(results)
        lines += [f"- **{figure}**: {why.format(**facts)}" for figure, why in missed]
    return "\n".join(lines) + "\n"
