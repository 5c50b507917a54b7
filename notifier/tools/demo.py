"""``make demo``: serve the real function locally, send one event of each kind, show the emails.

Each event goes over HTTP in a different delivery format the platform uses, so the demo walks the
same path a deployed function does.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
import sys
import tempfile
import urllib.error
import urllib.request
from email import message_from_binary_file, policy
from pathlib import Path, PurePosixPath

from notifier.payloads import build_request
from notifier.tools.processes import free_port, start_server, stop_server, wait_until_serving

DEMO_EVENTS = (
    # kind, object, size, content type, delivery format
    ("finalize", "reports/2026/Q3 revenue.csv", 48_213, "text/csv", "binary"),
    ("metadata", "reports/2026/Q3 revenue.csv", 48_213, "text/csv", "structured"),
    ("archive", "images/logo.png", 912_044, "image/png", "gen1"),
    ("delete", "tmp/upload #7?.part", 0, "application/octet-stream", "binary"),
)
# The demo marks the outbox folder it makes. The marker is a manifest: the paths the last run created
# there (what appeared during it), and a later run removes only those, so a user's files stay even when
# named like the demo's, and --outbox . is refused (unmarked, not empty) before anything is touched.
MARKER = ".storage-notifier-demo"
MARKER_NOTE = "Made by `python -m notifier demo`: the next run removes the files listed here, and only those."
MAX_MARKER_BYTES = 1 << 20  # far above any run's list; a bigger marker is not ours and lists nothing


class OutboxRefused(Exception):
    """--outbox names something the demo may not write to or empty."""


def run_demo(outbox: Path, bucket: str = "acme-uploads") -> int:
    outbox = outbox.resolve()
    try:
        prepare_outbox(outbox)
    except OutboxRefused as error:
        print(f"demo: --outbox: {error}", file=sys.stderr)
        return 2
    before = paths_below(outbox)
    try:
        return serve_and_show(outbox, bucket, before)
    finally:  # even a failed or interrupted run records what it wrote, for the next run to remove
        record_created(outbox, paths_below(outbox) - before)


def serve_and_show(outbox: Path, bucket: str, before: set[str]) -> int:
    """Send the events, then show the mails this run wrote (not ones already in ``before``)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "NOTIFY_BACKEND": "outbox",
        "NOTIFY_OUTBOX_DIR": str(outbox),
        # Pinned inside the outbox, so a run writes nowhere else (and the next run can clear them).
        "NOTIFY_LEDGER_FILE": str(outbox / "ledger.sqlite3"),
        "NOTIFY_DEAD_LETTER_DIR": str(outbox / "deadletter"),
        "NOTIFY_FROM": os.environ.get("NOTIFY_FROM", "Storage Alerts <alerts@example.com>"),
        "NOTIFY_TO": os.environ.get("NOTIFY_TO", "Data Team <data-team@example.com>"),
    }
    print(f"Starting the function on {url} (outbox backend, {outbox})")
    with tempfile.TemporaryFile() as server_log:
        server = start_server(port, env, server_log)
        try:
            wait_until_serving(url, server)
            sent = []
            for kind, name, size, content_type, mode in DEMO_EVENTS:
                request = build_request(
                    kind, bucket, name, size=size, content_type=content_type, metadata={"team": "finance"}, mode=mode
                )
                status = _post(url, request)
                print(f"  sent {kind:<8} gs://{bucket}/{name}  as {mode:<10} → HTTP {status}")
                sent.append(request)
            # Cloud Storage delivers at least once: the ledger turns a redelivery into a log line.
            status = _post(url, sent[0])
            print(f"  sent the first event again, as the platform may → HTTP {status}")
        finally:
            stop_server(server)
        server_log.seek(0)
        outcomes = [line for line in server_log.read().decode().splitlines() if '"outcome"' in line]
    print("\nWhat the function logged (one JSON line per notification, as Cloud Logging shows them):")
    for line in outcomes:
        entry = json.loads(line)
        print(f"  {entry['severity']:<7} {entry['message']}  [{entry.get('duration_ms', '?')} ms]")
    emails = sorted(path for path in outbox.glob("*.eml") if path.name not in before)
    print(f"\n{len(emails)} email(s) in the outbox:")
    for path in emails:
        with path.open("rb") as handle:
            subject = message_from_binary_file(handle, policy=policy.default)["Subject"]
        shown = path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path
        print(f"  {shown}\n      Subject: {subject}")
    print("\nOpen one in a mail client, or: python -m notifier preview finalize gs://acme-uploads/report.csv")
    if len(emails) != len(DEMO_EVENTS):
        print(f"expected {len(DEMO_EVENTS)} emails; the function's log follows", file=sys.stderr)
        print("\n".join(outcomes), file=sys.stderr)
        return 1
    return 0


def prepare_outbox(outbox: Path) -> None:
    """A new or empty folder gets the marker; a marked folder loses what the last run created there;
    anything else is refused."""
    if outbox.exists() and not outbox.is_dir():
        raise OutboxRefused(f"{outbox} is not a folder")
    if (outbox / MARKER).is_file():
        remove_listed(outbox, read_manifest(outbox))
        return
    if outbox.is_dir() and any(outbox.iterdir()):
        raise OutboxRefused(
            f"{outbox} is not empty and was not made by the demo (it has no {MARKER} file); "
            "the demo only empties folders it made: pass a new or empty folder, or remove this one yourself"
            " (an outbox from a demo older than the marker is one to remove)"
        )
    try:
        outbox.mkdir(parents=True, exist_ok=True)
        write_manifest(outbox, set())
    except OSError as error:
        raise OutboxRefused(f"cannot create {outbox}: {error.strerror}") from None


def paths_below(outbox: Path) -> set[str]:
    """Every path inside ``outbox`` (relative, '/'-separated), links listed but not followed."""
    found = set()
    for folder, dirs, files in os.walk(outbox):  # os.walk does not descend into linked folders
        relative = Path(folder).relative_to(outbox)
        found.update((relative / name).as_posix() for name in (*dirs, *files))
    return found - {MARKER}


def read_manifest(outbox: Path) -> list[str]:
    """The paths the marker lists; a marker that is not ours (too big, not JSON, no list) lists none."""
    try:
        with (outbox / MARKER).open("rb") as handle:
            data = handle.read(MAX_MARKER_BYTES + 1)
        files = json.loads(data)["files"] if len(data) <= MAX_MARKER_BYTES else []
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [entry for entry in files if isinstance(entry, str)] if isinstance(files, list) else []


def write_manifest(outbox: Path, created: set[str]) -> None:
    """Replace the marker atomically, so an interrupted write leaves the old list, never half a new one."""
    text = json.dumps({"note": MARKER_NOTE, "files": sorted(created)}, indent=1) + "\n"
    fd, tmp = tempfile.mkstemp(dir=outbox, prefix=f"{MARKER}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, outbox / MARKER)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record_created(outbox: Path, created: set[str]) -> None:
    try:
        write_manifest(outbox, created)
    except OSError as error:
        print(
            f"demo: cannot record this run's files in {outbox / MARKER}: {error.strerror}; "
            "the next run will leave them",
            file=sys.stderr,
        )


def remove_listed(outbox: Path, entries: list[str]) -> None:
    """Remove the listed regular files, then the listed folders left empty, deepest first; an entry
    that leaves the outbox or passes through a link is skipped, and links are never followed."""
    targets = [target for target in (inside(outbox, entry) for entry in entries) if target is not None]
    for target in targets:
        with contextlib.suppress(OSError):
            if stat.S_ISREG(target.lstat().st_mode):
                target.unlink()
    for target in sorted(targets, key=lambda path: len(path.parts), reverse=True):
        with contextlib.suppress(OSError):  # not empty, gone, or not a folder: it stays
            if stat.S_ISDIR(target.lstat().st_mode):
                target.rmdir()


def inside(outbox: Path, entry: str) -> Path | None:
    """``outbox/entry`` if the entry is a plain relative path whose every parent below the outbox is
    a real folder (no '..', not absolute, no links on the way, no NUL); else None."""
    relative = PurePosixPath(entry)
    if "\0" in entry or relative.is_absolute() or ".." in relative.parts or relative.parts in ((), (MARKER,)):
        return None
    target = outbox.joinpath(*relative.parts)
    parent = outbox
    for part in relative.parts[:-1]:
        parent = parent / part
        try:
            if not stat.S_ISDIR(parent.lstat().st_mode):
                return None
        except OSError:
            return None
    return target if target.parent.resolve().is_relative_to(outbox) else None


def _post(url: str, request: tuple[dict[str, str], bytes]) -> int:
    headers, body = request
    http_request = urllib.request.Request(url, data=body, headers=headers, method="POST")  # noqa: S310
    with urllib.request.urlopen(http_request, timeout=30) as response:  # noqa: S310
        return response.status
