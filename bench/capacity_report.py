"""The capacity rows' side of results.md (bench/capacity.py measures them): the section, the
headline row, and the capacity model, which sizes a deployment for 10, 100 and 1,000 uploads/s, with
and without digests, from one instance's measured figures (``python -m bench.capacity --table``
prints it from a run's results.json)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

GCS_INITIAL_WRITES = 1000  # Cloud Storage's initial guidance: about 1,000 object writes/s per bucket
RATES = (10, 100, 1000)  # uploads/s the model sizes a deployment for
TARGET = 0.75  # of the Little's-law limit, at the default concurrency
# A row's caveats: its core busier than the function by this much; the harness's core this busy (then
# fake-gcs-server, most of it, queues requests: the rate may be the harness's, not the function's).
SHARED, HARNESS_FULL = 0.15, 0.85


# --- The capacity model ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizing:
    """A deployment sized for ``rate`` uploads/s, from one instance's measured figures."""

    rate: int  # uploads/s
    digests: bool  # every event held by a digest rule, or sent at once
    instances: int
    writes_per_s: float  # state-bucket object writes
    bucket: str  # against Cloud Storage's initial guidance
    sendgrid_per_s: float


def model(sent_per_instance: float, held_per_instance: float, sent_writes: float, held_writes: float, *,
          rates: Sequence[int] = RATES, window_s: float = 60, rules: int = 1) -> list[Sizing]:  # fmt: skip
    """For each rate, without digests (each upload an email: instances at the sent rate, one SendGrid
    request per upload) and with (each upload held: instances at the held rate, one SendGrid request
    per rule per window, whatever the rate)."""
    sizings = []
    for rate in rates:
        for digests, per_instance, per_event in ((False, sent_per_instance, sent_writes),
                                                 (True, held_per_instance, held_writes)):  # fmt: skip
            writes_per_s = rate * per_event
            sendgrid = rules / window_s if digests else float(rate)
            sizings.append(Sizing(rate, digests, math.ceil(rate / per_instance), writes_per_s,
                                  bucket_verdict(writes_per_s), sendgrid))  # fmt: skip
    return sizings


def bucket_verdict(writes_per_s: float) -> str:
    if writes_per_s <= GCS_INITIAL_WRITES:
        return "within"
    return f"{writes_per_s / GCS_INITIAL_WRITES:.1f}x the initial rate: GCS ramps up, ledger retries 429/503"


def sizings(capacity: dict[str, Any]) -> list[Sizing]:
    """The model from a run's figures: the default-concurrency row, the held row, and the writes per
    event (a held event's include its share of the flush that sends it)."""
    default = next(r for r in capacity["rows"] if r["default"])
    counts = capacity["writes"]
    held_writes = counts["held"]["writes"] + counts["flush"]["writes"]
    return model(default["events_per_s"], capacity["held"]["events_per_s"], counts["sent"]["writes"], held_writes,
                 window_s=_seconds(capacity["held"]["window"]))  # fmt: skip


def _seconds(window: str) -> float:
    return int(window[:-1]) * {"m": 60, "h": 3600, "d": 86400}[window[-1]]


def model_table(capacity: dict[str, Any]) -> list[str]:
    """The capacity model as a markdown table (for results.md, and for the README)."""
    default = next(r for r in capacity["rows"] if r["default"])
    held, most = capacity["held"], capacity.get("max_instances")
    lines = [
        f"| uploads/s | digests | instances (at {default['events_per_s']:.0f} events/s each; held: "
        f"{held['events_per_s']:.0f}) | state-bucket writes/s (vs ~{GCS_INITIAL_WRITES:,}/s per bucket) "
        "| SendGrid requests/s |", "|---|---|---|---|---|",
    ]  # fmt: skip
    for s in sizings(capacity):
        over = f" (over --max-instances={most})" if most and s.instances > most else ""
        sendgrid = (f"{s.sendgrid_per_s:.3f}: one per rule per {held['window']} window" if s.digests
                    else f"{s.sendgrid_per_s:,.0f}: one per upload")  # fmt: skip
        lines.append(f"| {s.rate:,} uploads/s | {'with' if s.digests else 'without'} | {s.instances}{over} "
                     f"| {s.writes_per_s:,.0f}: {s.bucket} | {sendgrid} |")  # fmt: skip
    return lines


# --- results.md ------------------------------------------------------------------------------------


def headline(capacity: dict[str, Any]) -> tuple[str, str, str, str, str, bool]:
    """bench/report.py's headline row: (key, figure, ours, references, target, met)."""
    r = next(r for r in capacity["rows"] if r["default"])
    met = r["ratio_to_limit"] >= TARGET and r["p99_ms"] < r["timeout_s"] * 1000 and not r["non_2xx"]
    refused = f", non-2xx {sum(r['non_2xx'].values())}" if r["non_2xx"] else ""
    refused += "".join(f" ({caveat})" for caveat in caveats(r))
    return ("capacity at the default concurrency",
            f"capacity as deployed ({r['deployment']}), SendGrid {capacity['latency_ms']:.0f} ms, events/s",
            f"{r['events_per_s']:.0f}, p99 {r['p99_ms']:.0f} ms{refused}",
            f"limit {r['concurrency']} / {capacity['unloaded_ms']:.0f} ms = {r['limit_per_s']:.0f}",
            f"{r['ratio_to_limit']:.2f} of the limit (target >= {TARGET}, p99 < {r['timeout_s']} s)", met)  # fmt: skip


def section(capacity: dict[str, Any]) -> list[str]:
    """results.md's capacity section (bench/report.py adds it when the run measured it)."""
    timed = (f"timed for {capacity['seconds_per_row']:.0f} s after a warm-up (each row: its 2xx answers, in the "
             "seconds it was measured)" if capacity["seconds_per_row"]
             else "a fixed few events after a warm-up")  # fmt: skip
    lines = [
        "", "## Capacity: one instance as deployed", "",
        f"`deploy/deploy.sh finalize` as the script deploys it (default: `{capacity['configuration']}`; each row "
        "its `--concurrency`), the function's environment its env file (THREADS, NOTIFY_MAX_IN_FLIGHT, ...) plus "
        "the platform's, one worker, pinned to one core. SendGrid stand-in over HTTPS answering after "
        f"{capacity['latency_ms']:.0f} ms; the state bucket on fake-gcs-server over HTTPS. Load: as many "
        f"keep-alive connections as the concurrency, {timed}.", "",
        f"Little's-law {capacity['limit_definition']}", "",
        "| concurrency | THREADS / cap | events in s | events/s | of the limit (limit/s) | SendGrid-only bound/s "
        "| p50 ms | p99 ms | CPU ms/event | peak PSS MiB (--memory) | non-2xx | busy: function, its core, harness |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for r in capacity["rows"]:
        name = f"**{r['concurrency']} (default)**" if r["default"] else str(r["concurrency"])
        refused = ", ".join(f"{a}: {n}" for a, n in sorted(r["non_2xx"].items())) or "0"
        lines.append(
            f"| {name} | {r['threads']} / {r['max_in_flight'] or 'none'} | {r['events']} in {r['seconds']:.1f} s "
            f"| {r['events_per_s']:.1f} "
            f"| {r['ratio_to_limit']:.2f} ({r['limit_per_s']:.0f}) | {r['sendgrid_bound_per_s']:.0f} "
            f"| {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {r['cpu_ms_per_event']:.2f} "
            f"| {r['peak_pss_mib']:.0f} ({r['memory_mib']:.0f}) | {refused} | {_busy(r)} |"
        )
    held, counts = capacity["held"], capacity["writes"]
    lines += [
        "", f"Held (a rule with `digest = \"{held['window']}\"`, concurrency {held['concurrency']}, no SendGrid "
        f"call): {held['events_per_s']:.1f} events/s over {held['seconds']:.1f} s, {held['cpu_ms_per_event']:.2f} ms "
        f"CPU per event, p99 "
        f"{held['p99_ms']:.0f} ms, non-2xx {sum(held['non_2xx'].values())}; busy: {_busy(held)}.",
        "Busy: the function's CPU over the row's time, then everything that ran on its core and on the harness's "
        "(the load, the stand-ins, fake-gcs-server). \"core shared\": other work took its core from the function; "
        "\"harness core near full\": the rate may be the harness's (mostly fake-gcs-server's), not the function's.",
        "",
        "State-bucket requests per event, measured through a counting proxy in short separate runs "
        f"({counts['sent']['events']} events each):", "",
        "| event | create | update | delete | writes | reads | objects written |", "|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    kinds = (("sent", "sent"), (f"held ({held['window']})", "held"), ("held: its share of the flush", "flush"))
    for name, key in kinds:
        c = counts[key]
        objects = ", ".join(f"{k} {n:.2f}" for k, n in c["by_object"].items())
        lines.append(f"| {name} | {c['create']:.2f} | {c['update']:.2f} | {c['delete']:.2f} | {c['writes']:.2f} "
                     f"| {c['read']:.2f} | {objects} |")  # fmt: skip
    lines += ["", "Capacity model from these figures (a held event's writes include its share of the flush):", ""]
    return lines + model_table(capacity)


def _busy(r: dict[str, Any]) -> str:
    return f"{r['function_busy']:.0%}, {r['core_busy']:.0%}, {r['harness_busy']:.0%}" + "".join(
        f" ({caveat})" for caveat in caveats(r)
    )


def caveats(r: dict[str, Any]) -> list[str]:
    """Why a row's rate may not be the function's own: another process on its core, or the harness's
    core full (the load, the SendGrid stand-in and fake-gcs-server could not go faster)."""
    found = []
    if r["core_busy"] - r["function_busy"] > SHARED:
        found.append("core shared")
    if r["harness_busy"] >= HARNESS_FULL:
        found.append("harness core near full")
    return found
