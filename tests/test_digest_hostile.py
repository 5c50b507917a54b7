"""Digests against planted state and hostile configuration (the review of issue 16): forged
windows, entries under a key their rule's recipients do not give, unbounded summaries, absurd
max_emails counts, the largest legal digest, and the cap's cost once its slots are taken."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from notifier.config import ConfigError, load_settings
from notifier.digest import Group, HeldEntry, Run, key_for
from notifier.events import KINDS
from notifier.flush import Flusher
from notifier.jinja_sandbox import MAX_OUTPUT
from notifier.ledger.bucket import Listed, _metadata
from notifier.ledger.gcs_digests import GcsDigestStore, _held
from notifier.ledger.sqlite_digests import SqliteDigestStore
from notifier.outcomes import BATCHED, DUPLICATE, REFUSED, SENT
from notifier.render import Renderer
from tests import test_digest_cli
from tests.conftest import read_eml, settings_for
from tests.test_digest_cli import _post, _run, _window
from tests.test_digest_flush import RULES, T0, W0, World
from tests.test_digest_stores import _state_bucket

FORGED_WINDOW = 999_999_999_960  # a multiple of 60, in the year 33658: past datetime's range
LATER = W0 + 7200
deployment = test_digest_cli.deployment  # the fixture: a local deployment with digest rules


def _summary(**changes) -> dict:
    values = {"rule": "burst", "group": [], "kind": "finalize", "bucket": "burst", "name": "in/1.csv"}
    return {**values, **changes}


# --- 1. forged windows --------------------------------------------------------------------------


@pytest.mark.parametrize("window", [FORGED_WINDOW, W0 + 30, 100, W0 + 400 * 86400])
def test_a_window_that_is_not_a_minute_in_a_sane_range_is_unreadable_in_each_store(tmp_path, window):
    assert HeldEntry.from_summary("0" * 24, W0, "a" * 32, _summary()) is not None, "an honest window"
    assert HeldEntry.from_summary("0" * 24, window, "a" * 32, _summary()) is None
    item = Listed(f"digest/{'0' * 24}/{window}/{'a' * 32}", 1, 1, None, _metadata({"entry": json.dumps(_summary())}))
    assert _held(item) is None
    store = SqliteDigestStore(tmp_path / "ledger.sqlite3")
    store.hold(HeldEntry(Group("0" * 24, "burst"), window, "a" * 32, "finalize", "burst", "in/1.csv"), {})
    listing = store.pending()
    assert (listing.entries, listing.unreadable) == ((), 1)


def test_a_run_that_fails_is_refused_and_logged_and_every_other_run_still_goes(tmp_path, capfd):
    """The memory store keeps what it is given: a window past datetime's range reaches the flush."""
    world = World(tmp_path)
    planted = Group(key_for(_rule(world), ()), "burst")
    for i in range(2):
        world.store.hold(HeldEntry(planted, FORGED_WINDOW, f"{i:032x}", "finalize", "burst", f"x/{i}"), {})
    assert world.event(9, bucket="capped", at=T0 - timedelta(hours=2)) == [SENT]
    assert world.event(10, bucket="capped", at=T0 - timedelta(hours=2)) == [SENT]
    assert world.event(11, bucket="capped", at=T0 - timedelta(hours=2)) == [BATCHED], "over the cap: held"
    results = world.flush(at=LATER)
    assert sorted((r.outcome, r.events) for r in results) == [(REFUSED, 2), (SENT, 1)]
    assert all(e.group.key == planted.key for e in world.held())
    (logged,) = [json.loads(line) for line in capfd.readouterr().out.splitlines() if '"traceback"' in line]
    assert logged["group"] == planted.key and "ValueError" in logged["traceback"]
    assert [line for r in results if (line := r.line())], "every result has its line"


def _rule(world: World, name: str = "burst"):
    return next(r for r in world.pipeline.settings.rules.rules if r.name == name)


# --- 2. held for other recipients, or under a forged key ------------------------------------------


def test_a_change_of_recipients_sends_what_is_held_to_the_new_ones_and_keeps_redeliveries_out(tmp_path):
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old = World(tmp_path / "old")
    assert old.event(1) == [BATCHED] and old.event(2) == [BATCHED]
    changed = RULES.replace('to = ["ops@example.com"]\ndigest', 'to = ["new-owner@example.com"]\ndigest')
    new = World(tmp_path / "new", changed)
    new.store, new.ledger = old.store, old.ledger
    new.pipeline.holding.store, new.pipeline.ledger = old.store, old.ledger
    assert new.event(2) == [DUPLICATE], "a redelivery after the change is the event already held"
    results = Flusher(new.pipeline, old.store, clock=lambda: LATER).flush()
    assert [(r.outcome, r.events) for r in results] == [(SENT, 2)]
    (message,) = new.backend.sent
    assert [str(a) for e in message.envelopes for a in e.to] == ["new-owner@example.com"]
    assert old.held() == [], "nothing stranded under the old recipients"


def test_a_planted_entry_under_any_key_reaches_no_one(tmp_path):
    world = World(tmp_path)
    world.store.hold(HeldEntry(Group("b" * 24, "burst"), W0, "c" * 32, "finalize", "burst", "in/x.csv"), {})
    (result,) = world.flush(at=LATER)
    assert result.outcome == REFUSED and world.backend.sent == []


def test_the_key_a_flush_recomputes_is_the_one_the_event_was_held_under(tmp_path):
    world = World(tmp_path)
    world.event(1)
    (held,) = world.held()
    rule = _rule(world)
    assert key_for(rule, held.group.values) == held.group.key


# --- 3. and 7. max_emails and the periods --------------------------------------------------------


def _load(tmp_path: Path, line: str):
    config = tmp_path / "notify.toml"
    config.write_text(
        '[defaults]\nfrom = "alerts@example.com"\nto = "ops@example.com"\n[[rules]]\nname = "r"\n' + line + "\n",
        encoding="utf-8",
    )
    return load_settings({"NOTIFY_BACKEND": "console", "NOTIFY_CONFIG": str(config)})


@pytest.mark.parametrize(
    "line",
    [
        'max_emails = "²/h"', 'max_emails = "' + "1" * 5000 + '/h"', 'max_emails = "١٠/h"', 'max_emails = "000001/h"',
        'max_emails = "5/90.5s"', 'digest = "90.5s"', 'digest = "61s"', 'max_emails = "5/61s"',
        'digest = "10m"\ndigest_max_wait = "3600.5s"',
    ],
)  # fmt: skip
def test_bad_counts_and_periods_are_a_clear_error_naming_the_key(tmp_path, line):
    with pytest.raises(ConfigError) as caught:
        _load(tmp_path, line)
    (problem,) = caught.value.problems
    assert line.rpartition("\n")[2].split(" =")[0] + ":" in problem


def test_whole_minute_periods_and_a_five_digit_count_are_fine(tmp_path):
    batching = _load(tmp_path, 'max_emails = "10000/2m"').rules.rules[0].delivery.batching
    assert (batching.cap, batching.window) == (10_000, 120.0)


# --- 4. the largest legal digest ----------------------------------------------------------------


def test_ten_thousand_entries_of_the_longest_names_full_of_ampersands_render(tmp_path):
    world = World(tmp_path)
    settings = world.pipeline.settings
    rule = next(r for r in settings.rules.rules if r.name == "burst")
    group = Group("0" * 24, "burst", (("folder", "&" * 1000 + "/"),))
    entries = [
        HeldEntry(group, W0, f"{i:032x}", KINDS[i % 2], "b" * 63, f"{'&' * 1000}/{i:05d}{'&' * 18}", 2**62, T0)
        for i in range(10_000)
    ]  # fmt: skip
    assert all(len(e.name.encode()) == 1024 for e in entries)
    message = Renderer.for_settings(settings).render_digest(
        rule, Run(group, (W0,), tuple(entries), 60.0), entries, "f" * 32
    )
    assert len(message.html) < MAX_OUTPUT // 2 and len(message.text) < MAX_OUTPUT
    shown = re.findall(r'<a href="https://console[^"]*"[^>]*>([^<]*)</a>', message.html)
    assert len(shown) == 100 and all(n.endswith("&amp;" * 200 + "…") for n in shown), "a name the HTML shows is cut"
    assert "%26" * 1000 in message.html, "the link keeps the whole name"
    assert "&" * 1000 in message.text, "the text body shows it whole"


# --- 5. planted summaries -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "changes",
    [
        {"content_type": "x" * 8000}, {"bucket": "b" * 300}, {"rule": "r" * 64}, {"rule": "no spaces"},
        {"kind": "<script>"}, {"group": [["folder", "f" * 1025]]}, {"group": [["colour", "red"]]},
        {"group": [["bucket", "b"]] * 4}, {"name": "n" * 5000},
    ],
)  # fmt: skip
def test_a_planted_summary_with_an_oversized_or_unknown_field_is_unreadable(changes):
    assert HeldEntry.from_summary("0" * 24, W0, "a" * 32, _summary(**changes)) is None
    text = json.dumps(_summary(**changes))
    assert _held(Listed(f"digest/{'0' * 24}/{W0}/{'a' * 32}", 1, 1, None, _metadata({"entry": text}))) is None


def test_the_sqlite_store_skips_oversized_summaries_in_sql(tmp_path):
    store = SqliteDigestStore(tmp_path / "ledger.sqlite3")
    store.hold(HeldEntry(Group("0" * 24, "burst"), W0, "a" * 32, "finalize", "burst", "in/1.csv"), {})
    with sqlite3.connect(tmp_path / "ledger.sqlite3") as db:
        db.execute("INSERT INTO digest_entries VALUES (?, ?, ?, ?, '{}')", ("0" * 24, W0, "b" * 32, " " * 10**6 + "{}"))
    listing = store.pending()
    assert (len(listing.entries), listing.unreadable) == (1, 1)


def test_an_honest_summary_with_the_longest_names_stays_readable(tmp_path):
    """The bound on what a store reads is above what it writes, whatever the characters."""
    world = World(tmp_path)
    rule = next(r for r in world.pipeline.settings.rules.rules if r.name == "burst")
    for name in ["\x01" * 1023 + "/", "€" * 300 + "/" + "€" * 40, '"' * 1024]:
        entry = HeldEntry(Group("0" * 24, rule.name, (("folder", name[:1023]),)), W0, "a" * 32, "finalize", "b", name)
        store = SqliteDigestStore(tmp_path / f"{len(list(tmp_path.iterdir()))}.sqlite3")
        assert store.hold(entry, {})
        assert len(store.pending().entries) == 1


# --- 7. nits ------------------------------------------------------------------------------------


def test_the_text_body_prints_a_change_on_one_line(tmp_path):
    settings = settings_for(NOTIFY_CONFIG=str(_config(tmp_path)))
    rule = next(r for r in settings.rules.rules if r.name == "burst")
    group = Group("0" * 24, "burst")
    entries = [
        HeldEntry(group, W0, f"{i:032x}", kind, "burst", f"in/{i}.csv", 1, T0 + timedelta(seconds=i))
        for i, kind in enumerate(["finalize", "delete", "planted\nkind"])
    ]  # fmt: skip
    text = (
        Renderer.for_settings(settings)
        .render_digest(rule, Run(group, (W0,), tuple(entries), 60.0), entries, "f" * 32)
        .text
    )
    assert "planted" in text and "planted\nkind" not in text


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "notify.toml"
    config.write_text(RULES, encoding="utf-8")
    return config


def test_pending_and_flush_after_a_change_of_recipients_send_to_the_new_ones(deployment, capsys):
    assert _post(["reports/a.csv"], _window(120)) == [BATCHED]
    toml = deployment / "notify.toml"
    toml.write_text(toml.read_text(encoding="utf-8").replace('"lead@example.com"', '"new@example.com"'))
    code, out = _run(capsys, "pending")
    assert code == 0, out
    assert "never sent" not in out
    (group,) = json.loads(_run(capsys, "pending", "--json")[1])["groups"]
    assert "orphaned" not in group and group["events"] == 1 and group["runs"]
    code, out = _run(capsys, "flush", "--all")
    assert code == 0, out
    sent = [read_eml(p) for p in deployment.glob("out/*.eml")]
    assert sent and all("lead@example.com" not in str(m["To"]) for m in sent)
    assert any("new@example.com" in str(m["To"]) for m in sent)


def test_route_prints_the_object_for_a_terminal(deployment, capsys):
    code, out = _run(capsys, "route", "finalize", "gs://acme/reports/\x1b[2Jx.csv")
    assert code == 0, out
    assert "\x1b" not in out


# --- 6. the cap once its slots are taken --------------------------------------------------------


def test_once_a_windows_slots_are_taken_an_event_costs_one_read_not_a_listing(fake_gcs):
    store = GcsDigestStore(_state_bucket())
    group, limit = Group("d" * 24, "capped"), 3
    assert [store.take_single(group, W0, f"{n:032x}", limit) for n in range(4)] == [True, True, True, False]
    for number, won in [(9, False), (1, True), (2, True), (8, False)]:  # 1 and 2: redeliveries of winners
        fake_gcs.requests.clear()
        assert store.take_single(group, W0, f"{number:032x}", limit) is won
        assert [(r.method, r.query.get("prefix")) for r in fake_gcs.requests] == [("GET", None)], "one read"
    assert store.take_single(group, W0, f"{9:032x}", limit + 1) is True, "a raised cap: its own slots and marker"
