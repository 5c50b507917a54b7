"""The template context of a digest email (templates/digest/): counts, the common folder, the period,
the first objects and the busiest folders, every value bounded whatever the run holds.

A digest may stand for thousands of events: the email lists the first MAX_OBJECTS (oldest first)
and says how to list the rest with ``gcloud storage ls``, and counts the MAX_FOLDERS busiest
folders. Values are raw here; the templates escape them (HTML autoescaping, ``line`` in text)
and the renderer keeps the subject to one line.
"""

from __future__ import annotations

import os.path
import shlex
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any

from notifier.digest import MAX_NAME_IN_ENTRY, Group, HeldEntry, Run, folder_of, window_label
from notifier.events import KINDS
from notifier.filters import console_url

MAX_OBJECTS = 100  # rows of the object list; the rest is "and N more" with a command listing them
MAX_FOLDERS = 20  # rows of the per-folder counts; the rest is "and N more folders"
# The HTML body shows names and folders cut to this with "…" (its links keep them whole): 100 rows
# of 1,024-character names full of "&" (each "&amp;" there, "%26" in the link) near the render budget.
SHOWN_TEXT = 200
MAX_LISTED_BUCKETS = 20  # locations the `gcloud storage ls` command names
# What the digest calls its events, by kind (one, several); a digest of several kinds says "changes".
KIND_WORDS: dict[str, tuple[str, str]] = {
    "finalize": ("new object", "new objects"),
    "delete": ("deleted object", "deleted objects"),
    "archive": ("archived object", "archived objects"),
    "metadata": ("metadata change", "metadata changes"),
}
MIXED_WORDS = ("change", "changes")
CHANGE_OF = {"finalize": "new", "delete": "deleted", "archive": "archived", "metadata": "metadata changed"}
# How `gcloud storage ls` lists the objects of each kind as the digest counts them, in the order the
# commands are shown: live objects; noncurrent versions (archived); soft-deleted objects (deleted,
# which a plain listing no longer shows). Flags as `gcloud storage ls --help` documents them.
LISTINGS: tuple[tuple[frozenset[str], tuple[str, ...], str], ...] = (
    (frozenset({"finalize", "metadata"}), (), ""),
    (frozenset({"archive"}), ("--all-versions",), "archived objects (noncurrent versions, with the live ones)"),
    (frozenset({"delete"}), ("--soft-deleted",),
     "deleted objects, if soft delete is on (it keeps them 7 days by default)"),
)  # fmt: skip

# Every variable templates/digest/ can use, with what it holds (README "Digests" lists them).
DIGEST_VARIABLES: dict[str, str] = {
    "count": "How many events the digest stands for.",
    "what": "`new objects`, `deleted objects`, ... or `changes` when the kinds are mixed (singular for one).",
    "location": "The longest common folder of the objects, `gs://acme-uploads/reports/` (or `3 buckets`).",
    "buckets": "How many buckets the objects are in.",
    "period": "The windows the digest covers, `10:00–10:10 UTC` (with dates when it spans days).",
    "period_local": "The same period in NOTIFY_TIMEZONE, `11:00–11:10 CET`; empty without it.",
    "start": "The period's start, a datetime in UTC.",
    "end": "The period's end, a datetime in UTC.",
    "kinds": "Counts per kind, most common first: a list of `{kind, count, words}` (`words`: `new objects`).",
    "total_size": "The objects' sizes added up (bytes; none when no event carried a size).",
    "unknown_sizes": "How many events carried no size.",
    "objects": "The first 100 objects, oldest first: `{kind, change, bucket, name, size, time, gs_uri,"
    " console_url, short_name, short_gs_uri}` (`change`: `new`, `deleted`...; `short_`: cut to 200"
    " characters with `…`, as the HTML body shows them).",
    "more": "How many objects the list leaves out (0 normally).",
    "list_command": "`gcloud storage ls --recursive gs://...`: lists the common folder, shell-quoted (the first"
    " of `list_commands`).",
    "list_commands": "The commands that list the objects left out, by their kinds: a list of `{command, note}`"
    " (`--all-versions` for archived, `--soft-deleted` for deleted objects; `note` says what such a"
    " command lists, empty for the plain one).",
    "folders": "The 20 busiest folders: a list of `{location, count, short_location}`, busiest first.",
    "more_folders": "How many folders that list leaves out.",
    "rule": "The rule's name.",
    "grouped_by": "The `group_by` values, `bucket acme-uploads, folder reports/`; empty without `group_by`.",
    "redirected_from": "With NOTIFY_REDIRECT_TO: the recipients this message was meant for.",
}


@dataclass(frozen=True, slots=True)
class DigestObject:
    """One row of the object list."""

    kind: str
    change: str  # "new", "deleted", "archived", "metadata changed"
    bucket: str
    name: str
    size: int | None
    time: datetime | None
    gs_uri: str
    console_url: str
    short_name: str  # name and gs_uri cut to SHOWN_TEXT characters with "…" (the HTML body's)
    short_gs_uri: str


@dataclass(frozen=True, slots=True)
class ListCommand:
    """A shell command listing some of the objects "and N more" leaves out."""

    command: str
    note: str  # what it lists and when it can, e.g. "deleted objects, if soft delete is on (...)"; or ""


@dataclass(frozen=True, slots=True)
class KindCount:
    kind: str
    count: int
    words: str  # "new objects"


@dataclass(frozen=True, slots=True)
class FolderCount:
    location: str  # gs://bucket/folder/
    count: int
    short_location: str = ""  # cut to SHOWN_TEXT characters with "…" (the HTML body's)


def digest_context(
    rule_name: str,
    run: Run,
    entries: Sequence[HeldEntry],
    *,
    timezone: tzinfo | None = None,
    redirected_from: list[str] | None = None,
) -> dict[str, Any]:
    """Every variable templates/digest/ can use (documented in DIGEST_VARIABLES)."""
    kinds = Counter(e.kind for e in entries)
    ordered = sorted(entries, key=_oldest_first)
    rows = [_row(e) for e in ordered[:MAX_OBJECTS]]
    folders = Counter(f"gs://{e.bucket}/{_cut(folder_of(e.name))}" for e in entries)
    busiest = sorted(folders.items(), key=lambda item: (-item[1], item[0]))
    locations = common_locations(entries)
    commands = list_commands(locations, {e.kind for e in ordered[MAX_OBJECTS:] or ordered})
    sizes = [e.size for e in entries if e.size is not None]
    return {
        "count": len(entries),
        "what": _words(kinds, len(entries)),
        "location": locations[0] if len(locations) == 1 else f"{len(locations)} buckets",
        "buckets": len(locations),
        "period": window_label(run.start, run.end),
        "period_local": local_window_label(run.start, run.end, timezone),
        "start": run.start,
        "end": run.end,
        "kinds": [KindCount(k, n, _plural(KIND_WORDS[k], n)) for k, n in _by_kind(kinds)],
        "total_size": sum(sizes) if sizes else None,
        "unknown_sizes": len(entries) - len(sizes),
        "objects": rows,
        "more": len(entries) - len(rows),
        "list_command": commands[0].command,
        "list_commands": commands,
        "folders": [FolderCount(location, n, _shown(location)) for location, n in busiest[:MAX_FOLDERS]],
        "more_folders": max(len(busiest) - MAX_FOLDERS, 0),
        "rule": rule_name,
        "grouped_by": ", ".join(f"{name} {value or '(top level)'}" for name, value in run.group.values),
        "redirected_from": redirected_from or [],
    }


def common_locations(entries: Sequence[HeldEntry]) -> list[str]:
    """Per bucket (sorted), the longest folder every object of it is in: ``gs://b/reports/``."""
    folders: dict[str, str] = {}
    for entry in entries:
        folder = _cut(folder_of(entry.name))
        known = folders.get(entry.bucket)
        folders[entry.bucket] = folder if known is None else _common_folder(known, folder)
    return [f"gs://{bucket}/{folder}" for bucket, folder in sorted(folders.items())]


def _common_folder(one: str, other: str) -> str:
    """The folders both are in, segment by segment: ``logs/2026-11/`` and ``logs/2026-12/`` → ``logs/``."""
    common = []
    for mine, theirs in zip(one.split("/")[:-1], other.split("/")[:-1], strict=False):  # "" after the last /
        if mine != theirs:
            break
        common.append(mine + "/")
    return "".join(common)


def list_commands(locations: Sequence[str], kinds: set[str]) -> list[ListCommand]:
    """The commands that list objects of ``kinds`` in ``locations`` (LISTINGS); the plain one when
    no kind we know is among them (a planted summary)."""
    found = [ListCommand(list_command(locations, flags), note) for shown, flags, note in LISTINGS if kinds & shown]
    return found or [ListCommand(list_command(locations), "")]


def list_command(locations: Sequence[str], flags: Sequence[str] = ()) -> str:
    """``gcloud storage ls --recursive [FLAGS] gs://...``, each location shell-quoted (a folder may
    hold quotes, ``$(...)``, spaces): pasted into a shell it lists exactly those folders."""
    quoted = " ".join(shlex.quote(location) for location in locations[:MAX_LISTED_BUCKETS])
    return " ".join(("gcloud storage ls --recursive", *flags, quoted))


def local_window_label(start: datetime, end: datetime, timezone: tzinfo | None) -> str:
    """window_label in NOTIFY_TIMEZONE: ``11:00–11:10 CET``; empty without one."""
    if timezone is None:
        return ""
    first, last = start.astimezone(timezone), end.astimezone(timezone)
    same_day = first.date() == (last - timedelta(microseconds=1)).date()
    shape = "%H:%M" if same_day else "%b %d %H:%M"
    zones = (first.strftime("%Z"), last.strftime("%Z"))
    if zones[0] == zones[1]:  # a change of zone name (summer time ending) is shown at each end
        return f"{first.strftime(shape)}–{last.strftime(shape)} {zones[1]}"
    return f"{first.strftime(shape)} {zones[0]}–{last.strftime(shape)} {zones[1]}"


def _row(entry: HeldEntry) -> DigestObject:
    name = _cut(entry.name)
    return DigestObject(
        entry.kind, CHANGE_OF.get(entry.kind, entry.kind), entry.bucket, name, entry.size, entry.time,
        f"gs://{entry.bucket}/{name}", console_url(entry.bucket, name), _shown(name), _shown(f"gs://{entry.bucket}/{name}"),
    )  # fmt: skip


def _oldest_first(entry: HeldEntry) -> tuple[bool, datetime, str, str]:
    return (entry.time is None, entry.time or datetime.min.replace(tzinfo=UTC), entry.bucket, entry.name)


def _by_kind(kinds: Counter[str]) -> list[tuple[str, int]]:
    """Most common first; kinds we do not know (a planted summary) are left out."""
    known = [(k, kinds[k]) for k in KINDS if kinds[k]]
    return sorted(known, key=lambda item: -item[1])


def _words(kinds: Counter[str], count: int) -> str:
    only = next(iter(kinds)) if len(kinds) == 1 else ""
    return _plural(KIND_WORDS.get(only, MIXED_WORDS), count)


def _plural(words: tuple[str, str], count: int) -> str:
    return words[0] if count == 1 else words[1]


def _shown(text: str) -> str:
    return text if len(text) <= SHOWN_TEXT else text[:SHOWN_TEXT] + "…"


def _cut(name: str) -> str:
    """As a held entry keeps it: an object name is at most 1,024 bytes, a forged one is cut."""
    return name[:MAX_NAME_IN_ENTRY]


# -- samples: the start-up trial of templates/digest/, and `preview --digest` ------------------

SAMPLE_START = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)


def sample_run(
    count: int,
    *,
    rule: str = "sample",
    bucket: str = "sample-bucket",
    name: str = "sample/object.csv",
    kinds: Sequence[str] = ("finalize",),
    size: int = 1024,
    folders: int = 4,
    start: datetime = SAMPLE_START,
    window: float = 600.0,
    group: Group | None = None,
) -> Run:
    """A run of ``count`` objects named like ``name`` (``sample/object-001.csv``), in ``folders``
    subfolders of its folder, sized and timed apart within the window ``start`` is in."""
    folder, base = folder_of(name), name.rpartition("/")[2]
    stem, ext = os.path.splitext(base) if not base.startswith(".") else (base, "")
    subfolders = [""] + [f"part-{i:02d}/" for i in range(1, folders)]
    group = group or Group("0" * 24, rule)
    opens = int(start.timestamp()) // int(window) * int(window)
    entries = tuple(
        HeldEntry(
            group, opens, f"sample-{i:05d}", kinds[i % len(kinds)], bucket,
            f"{folder}{subfolders[i % len(subfolders)]}{stem}-{i + 1:03d}{ext}", size * (1 + i % 7),
            datetime.fromtimestamp(opens + window * i / max(count, 1), UTC),
        )
        for i in range(count)
    )  # fmt: skip
    return Run(group, (opens,), entries, window)


def sample_context(timezone: tzinfo | None) -> dict[str, Any]:
    """The context a digest template is tried with at start-up: enough objects, folders and kinds
    that every branch of ours runs ("and N more", "N more folders", mixed kinds)."""
    run = sample_run(MAX_OBJECTS + 5, kinds=("finalize", "delete"), folders=MAX_FOLDERS + 2)
    return digest_context("sample", run, run.entries, timezone=timezone)
