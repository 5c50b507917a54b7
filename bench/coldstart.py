"""Cold start: process launch to the first 2xx answer to a real finalize event, configurations
taking turns launch after launch, each checked to have really done its work.

The headline configuration is storage-notifier as deployed: SendGrid (the stand-in) over HTTPS,
the state bucket on fake-gcs-server over HTTPS (``NOTIFY_STORAGE_ENDPOINT``), ``K_SERVICE`` and
its siblings set, and the access token from a metadata-server stand-in (``GCE_METADATA_HOST``).
Both servers' certificates come from one throwaway CA the functions trust (SSL_CERT_DIR: bench/harness.py).
Every function runs from a workspace built as the platform builds it (bench/workspace.py).

After each launch the harness checks what the configuration must have done (the email reached the
stand-in, the ledger record is in the bucket and says sent, a token was fetched, the .eml was
written): a cold start that failed quietly is an error, not a figure.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from bench import workspace
from bench.harness import (
    SOURCES,
    Authority,
    Function,
    StandInAddress,
    function_env,
    requests,
    stand_in,
    throwaway_ca,
)
from bench.metadata import MetadataStandIn
from notifier.tools.localcloud import FakeGcsServer, running_fake_gcs
from notifier.tools.processes import stop_on_signals

STATE_BUCKET = "bench-state"
LEDGER_PREFIX = "ledger/"
TARGET, STRETCH = 1.5, 1.25  # the deployed configuration's median, times the floor's
# What the platform sets beside K_SERVICE (Cloud Run's container contract).
PLATFORM = {"K_SERVICE": "storage-notifier-finalize", "K_REVISION": "storage-notifier-finalize-00001-bench",
            "K_CONFIGURATION": "storage-notifier-finalize"}  # fmt: skip
HEADLINE = ("floor", "textbook", "storage-notifier")
SECONDARY = {  # name in results -> what the row is
    "outbox": "storage-notifier, outbox backend (local runs; no deployment uses it)",
    "sendgrid-no-bucket": "storage-notifier, SendGrid, no state bucket (K_SERVICE set)",
    "deployed-stale-bytecode": "storage-notifier as deployed, built without SOURCE_DATE_EPOCH "
    "(timestamped bytecode, stale once the image's mtimes are normalized)",
}


@dataclass(frozen=True)
class Tally:
    """What the servers around the functions have seen so far."""

    emails: int = 0  # messages the SendGrid stand-in accepted
    sent_records: int = 0  # ledger records in the state bucket that say "sent"
    tokens: int = 0  # token requests the metadata stand-in answered
    eml_files: int = 0  # .eml files in the outbox

    def minus(self, other: Tally) -> Tally:
        return Tally(**{f.name: getattr(self, f.name) - getattr(other, f.name) for f in fields(self)})


@dataclass(frozen=True)
class Configuration:
    name: str
    source: Path  # main.py in its workspace
    env: dict[str, str]
    expects: Tally  # the least each launch must add to the tally


def problems(configuration: Configuration, done: Tally) -> list[str]:
    """What a launch should have done and did not (``done``: the tally's growth over the launch)."""
    return [
        f"{configuration.name}: expected {field.name} to grow by at least {wanted}, it grew by {got}"
        for field in fields(Tally)
        if (got := getattr(done, field.name)) < (wanted := getattr(configuration.expects, field.name))
    ]


@dataclass
class Surroundings:
    """The servers every launch talks to, and how to read what they have seen."""

    authority: Authority
    sendgrid: StandInAddress
    gcs: FakeGcsServer
    metadata: MetadataStandIn
    outbox: Path

    def tally(self) -> Tally:
        return Tally(self._emails(), self._sent_records(), self.metadata.tokens, len(list(self.outbox.rglob("*.eml"))))

    def _emails(self) -> int:
        url = f"{self.sendgrid.url}/accepted"
        with urllib.request.urlopen(url, timeout=10, context=self.authority.context()) as answer:  # noqa: S310
            return json.loads(answer.read())["accepted"]

    def _sent_records(self) -> int:
        names = [item["name"] for item in self._storage(f"o?prefix={LEDGER_PREFIX}").get("items", [])]
        records = [json.loads(self._object(name)) for name in names]
        return sum(record.get("state") == "sent" for record in records)

    def _storage(self, tail: str, data: bytes | None = None) -> dict[str, Any]:
        url = f"{self.gcs.plain_url}/storage/v1/b/{STATE_BUCKET}/{tail}"
        return json.loads(self._get(url, data))

    def _object(self, name: str) -> bytes:
        return self._get(f"{self.gcs.plain_url}/storage/v1/b/{STATE_BUCKET}/o/{urllib.parse.quote(name, '')}?alt=media")

    @staticmethod
    def _get(url: str, data: bytes | None = None) -> bytes:
        # Our own loopback fake-gcs-server, over its plain-HTTP port.
        request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})  # noqa: S310
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            return answer.read()

    def create_bucket(self) -> None:
        body = json.dumps({"name": STATE_BUCKET}).encode()
        self._get(f"{self.gcs.plain_url}/storage/v1/b?project=bench", body)


@contextmanager
def surroundings(latency: float = 0.0, *, objects_in_files: bool = False) -> Iterator[Surroundings]:
    """The CA, the SendGrid stand-in (answering after ``latency`` seconds), fake-gcs-server over
    HTTPS with the state bucket (its objects in files if ``objects_in_files``: as fast with thousands
    of objects as with a few), the metadata stand-in and an outbox folder; all stopped on the way
    out, Ctrl-C included."""
    with ExitStack() as stack:
        stack.enter_context(stop_on_signals())
        authority = stack.enter_context(throwaway_ca())
        sendgrid = stack.enter_context(stand_in(latency, authority=authority))
        root = Path(stack.enter_context(_object_folder())) if objects_in_files else None
        certificate = authority.issue("gcs", "localhost", "127.0.0.1")
        gcs = stack.enter_context(running_fake_gcs(certificate=certificate, root=root))
        metadata = stack.enter_context(MetadataStandIn())
        outbox = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-outbox-")))
        around = Surroundings(authority, sendgrid, gcs, metadata, outbox)
        around.create_bucket()
        yield around


def _object_folder() -> tempfile.TemporaryDirectory:
    """fake-gcs-server's files in memory (tmpfs) where there is one: on this machine's disk it took
    about 500 writes/s on a core, in tmpfs about 3,700, and the harness's core is the one it shares."""
    shm = Path("/dev/shm")  # noqa: S108 - a parent for mkdtemp: a folder of our own, mode 0700
    return tempfile.TemporaryDirectory(prefix="bench-gcs-", dir=shm if shm.is_dir() else None)


def configurations(around: Surroundings, folder: Path) -> list[Configuration]:
    """Headline rows first, then the secondary ones, each with its workspace and environment."""
    built = {name: workspace.build(SOURCES[name], folder / name) for name in HEADLINE}
    stale = workspace.build(SOURCES["storage-notifier"], folder / "stale", stale=True)
    base = function_env(around.sendgrid)
    deployed = {**base, **PLATFORM, "NOTIFY_STATE_BUCKET": STATE_BUCKET,
                "NOTIFY_STORAGE_ENDPOINT": around.gcs.url, "GCE_METADATA_HOST": around.metadata.host}  # fmt: skip
    outbox = {k: v for k, v in base.items() if not k.startswith("SENDGRID_")}
    email, stored = Tally(emails=1), Tally(emails=1, sent_records=1, tokens=1)
    return [
        Configuration("floor", built["floor"], base, Tally()),
        Configuration("textbook", built["textbook"], base, email),
        Configuration("storage-notifier", built["storage-notifier"], deployed, stored),
        Configuration(
            "outbox", built["storage-notifier"], {**outbox, "NOTIFY_OUTBOX_DIR": str(around.outbox)}, Tally(eml_files=1)
        ),
        Configuration("sendgrid-no-bucket", built["storage-notifier"], {**base, **PLATFORM}, email),
        Configuration("deployed-stale-bytecode", stale, deployed, stored),
    ]


def measure(launches: int) -> dict[str, Any]:
    """``launches`` cold starts of each configuration, in turns; medians, ranges, ratios, checks."""
    with surroundings() as around, tempfile.TemporaryDirectory(prefix="bench-workspace-") as folder:
        chosen = configurations(around, Path(folder))
        times: dict[str, list[float]] = {c.name: [] for c in chosen}
        before = around.tally()
        for launch in range(launches):
            for configuration in chosen:
                times[configuration.name].append(_launch(configuration, launch, around.tally))
        checked = around.tally().minus(before)
    return _summary(times, checked, launches)


def _launch(configuration: Configuration, launch: int, tally: Callable[[], Tally]) -> float:
    """One cold start in ms, after checking the launch did what its configuration must."""
    before = tally()
    started = time.perf_counter()
    function = Function.launch(configuration.source, configuration.env)
    try:
        function.wait_until_serving(requests(1, start=launch)[0])
        elapsed = (time.perf_counter() - started) * 1000
    finally:
        function.stop()
    if missing := problems(configuration, tally().minus(before)):
        raise RuntimeError("a cold start did not do its work: " + "; ".join(missing))
    return elapsed


def _summary(times: dict[str, list[float]], checked: Tally, launches: int) -> dict[str, Any]:
    floor = statistics.median(times["floor"])
    results: dict[str, Any] = {name: _stats(times[name]) for name in HEADLINE}
    results["ratio_to_floor"] = results["storage-notifier"]["median"] / floor
    results["target"] = f"<= {TARGET}x floor (stretch {STRETCH}x)"
    results["configuration"] = (
        "as deployed: SendGrid over HTTPS, NOTIFY_STATE_BUCKET on fake-gcs-server over HTTPS, K_SERVICE set, "
        "token from a metadata-server stand-in; bytecode as the buildpack writes it with SOURCE_DATE_EPOCH"
    )
    results["secondary"] = {
        name: {**_stats(times[name]), "ratio_to_floor": statistics.median(times[name]) / floor, "what": what}
        for name, what in SECONDARY.items()
    }
    results["launches"] = launches
    results["checked"] = {f.name: getattr(checked, f.name) for f in fields(Tally)}
    return results


def _stats(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


if __name__ == "__main__":  # the cold-start part alone: python -m bench.coldstart [LAUNCHES]
    import sys

    from bench.harness import harness_pinned

    with harness_pinned():
        print(json.dumps(measure(int(sys.argv[1]) if len(sys.argv) > 1 else 5), indent=2))
