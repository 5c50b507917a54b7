"""The history's promises (notifier/ledger/history.py), for memory, the SQLite ledger's file and the
state bucket (fake-gcs-server behind the recording, fault-injecting proxy: tests/fake_gcs_server.py);
Ledger.lookup for each ledger; and what each real store does with records it did not write."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from contextvars import ContextVar
from dataclasses import replace
from pathlib import Path

import pytest

from notifier.ledger import LedgerError, create_history, gcs_history, history, sqlite_history
from notifier.ledger.bucket import StateBucket
from notifier.ledger.gcs import GcsLedger
from notifier.ledger.gcs_history import GcsHistory, event_name
from notifier.ledger.history import DeliveryEvent, History, MemoryHistory, NoHistory, Sending, sending_about
from notifier.ledger.memory import MemoryLedger
from notifier.ledger.sqlite import SqliteLedger
from notifier.ledger.sqlite_history import SqliteHistory
from tests.fake_gcs_server import STATE_BUCKET


def _id(number: int) -> str:
    return f"{number:032x}"


def _sending(number: int, *, name: str = "reports/q3.csv", generation: int | None = 17, **fields) -> Sending:
    values = {
        "bucket": "uploads", "object": name, "generation": generation, "event_id": f"event-{number}",
        "kind": "finalize", "rule": "reports", "recipients": ("ann@example.com", "bob@example.com"),
        "recipient_count": 2, "outcome": "sent", "at": f"2026-11-29T08:0{number % 10}:00+00:00",
        "event_time": "2026-11-29T07:59:00+00:00", "message_id": f"msg-{number}", "attempts": 1, **fields,
    }  # fmt: skip
    return Sending(_id(number), **values)


def _digest(number: int, windows: list[int], group: str = "a" * 24) -> Sending:
    return _sending(number, name="", generation=None, kind="digest",
                    digest={"group": group, "windows": windows, "events": 3})  # fmt: skip


def _event(sg_event_id: str, event: str = "delivered", timestamp: int = 1_795_000_000, **fields) -> DeliveryEvent:
    return DeliveryEvent(sg_event_id, event, timestamp, "ann@example.com", **fields)


def _state_bucket() -> StateBucket:
    bucket = StateBucket(STATE_BUCKET, os.environ["STORAGE_EMULATOR_HOST"], retry_budget=0.0)
    bucket.sleep = lambda seconds: None
    return bucket


@pytest.fixture(params=["memory", "sqlite", "gcs"])
def make_store(request, tmp_path):
    """A factory: each call another instance on the same state (memory: the same instance)."""
    if request.param == "memory":
        store = MemoryHistory()
        return lambda: store
    if request.param == "sqlite":
        return lambda: SqliteHistory(tmp_path / "ledger.sqlite3")
    request.getfixturevalue("fake_gcs")
    return lambda: ClaimedFirstGcsHistory(_state_bucket())


class ClaimedFirstGcsHistory(GcsHistory):
    """The state bucket's history as the pipeline leaves it: an ordinary notification's ledger
    record (its claim, saying ``about`` its sending) is there before its sending is recorded."""

    def record(self, sending: Sending) -> None:
        if sending.digest is None and GcsLedger(self._bucket).lookup(sending.notification_id) is None:
            _claimed(sending)
        super().record(sending)


@pytest.fixture
def small_event_cap(monkeypatch):
    """Opens and clicks: 3 per notification; every other kind: 4 (the stores read history's bounds)."""
    monkeypatch.setattr(history, "MAX_EVENTS_PER_NOTIFICATION", 3)
    monkeypatch.setattr(history, "MAX_ONCE_EVENTS_PER_NOTIFICATION", 4, raising=False)


def _ids(events) -> list[str]:
    return [e.sg_event_id for e in events]


# --- the contract, for every store ---------------------------------------------------------------


def test_a_sending_is_found_by_id_and_by_object_from_another_instance(make_store):
    sending = _sending(1)
    make_store().record(sending)
    store: History = make_store()
    assert store.by_id(_id(1)) == sending
    assert store.by_object("uploads", "reports/q3.csv") == [sending]
    assert store.by_object("uploads", "reports/other.csv") == []
    assert store.by_object("elsewhere", "reports/q3.csv") == [], "the bucket is part of the object"
    assert store.by_id(_id(2)) is None


def test_a_later_outcome_replaces_the_sending_and_is_filed_once(make_store):
    make_store().record(_sending(1, outcome="dead-lettered", error="SendGrid answered 500"))
    replayed = _sending(1, outcome="sent", attempts=2)
    make_store().record(replayed)
    store = make_store()
    assert store.by_id(_id(1)) == replayed
    assert store.by_object("uploads", "reports/q3.csv") == [replayed]


def test_an_object_lists_every_generation_oldest_first(make_store):
    for number, generation in ((1, 30), (2, 10), (3, 20)):
        make_store().record(_sending(number, generation=generation))
    make_store().record(_sending(4, name="reports/other.csv"))
    listed = make_store().by_object("uploads", "reports/q3.csv")
    assert [s.generation for s in listed] == [10, 20, 30]
    assert [s.notification_id for s in listed] == [_id(2), _id(3), _id(1)]


def test_names_of_any_text_are_filed_apart(make_store):
    odd = "reports/ü ../../x\n#?%2F" + "z" * 900
    make_store().record(_sending(1, name=odd))
    make_store().record(_sending(2, name=odd[:-1]))
    assert [s.notification_id for s in make_store().by_object("uploads", odd)] == [_id(1)]


def test_a_digest_is_filed_under_each_window_of_its_group_not_under_an_object(make_store):
    digest = _digest(5, [1_795_000_200, 1_795_003_800])
    make_store().record(digest)
    make_store().record(_digest(6, [1_795_003_800], group="b" * 24))
    store = make_store()
    assert store.digests("a" * 24, 1_795_000_200) == [digest]
    assert store.digests("a" * 24, 1_795_003_800) == [digest]
    assert store.digests("a" * 24, 1_795_007_400) == []
    assert [s.notification_id for s in store.digests("b" * 24, 1_795_003_800)] == [_id(6)]
    assert store.by_object("uploads", "") == []
    assert store.by_id(_id(5)) == digest


def test_a_held_sending_keeps_its_digest_fields(make_store):
    held = _sending(7, outcome="batched", digest={"group": "a" * 24, "window": 1_795_000_200, "held_id": _id(7)})
    make_store().record(held)
    (found,) = make_store().by_object("uploads", "reports/q3.csv")
    assert dict(found.digest) == {"group": "a" * 24, "window": 1_795_000_200, "held_id": _id(7)}


def test_events_are_recorded_once_by_sg_event_id_in_time_order(make_store):
    store = make_store()
    first = [_event("ev-2", "delivered", 1_795_000_060), _event("ev-1", "processed", 1_795_000_000)]
    assert store.add_events(_id(1), first) == history.Added(new=tuple(first))
    bounce = _event("ev-3", "bounce", 1_795_000_030, reason="550 5.1.1 no such user", detail={"type": "bounce"})
    again = make_store().add_events(_id(1), [*first, bounce, bounce])
    assert again == history.Added(new=(bounce,)), "a retried batch records only what is new"
    assert make_store().add_events(_id(1), first) == history.Added()
    events = make_store().events(_id(1))
    assert [e.sg_event_id for e in events] == ["ev-1", "ev-3", "ev-2"]
    assert events[1] == bounce
    assert make_store().events(_id(2)) == []


def test_an_unsafe_sg_event_id_is_kept_as_sent_and_still_recorded_once(make_store):
    odd = _event("a/b c?" + "x" * 150, "open")
    assert make_store().add_events(_id(1), [odd]).new == (odd,)
    assert make_store().add_events(_id(1), [odd]).new == ()
    assert make_store().events(_id(1)) == [odd]


def test_a_long_event_is_read_back_whole(make_store):
    long = _event("ev-long", "click", detail={f"k{i}": "u" * 1_000 for i in range(12)}, reason="r" * 1_000)
    make_store().add_events(_id(1), [long])
    assert make_store().events(_id(1)) == [long]


def test_opens_and_clicks_per_notification_are_capped(make_store, small_event_cap):
    store = make_store()
    opens = [_event(f"ev-{n}", "open" if n % 2 else "click", timestamp=1_795_000_000 + n) for n in range(5)]
    assert _ids(store.add_events(_id(1), opens[:2]).new) == ["ev-0", "ev-1"]
    added = make_store().add_events(_id(1), opens)
    assert (_ids(added.new), _ids(added.not_kept)) == (["ev-2"], ["ev-3", "ev-4"]), "a known one is neither"
    assert len(make_store().events(_id(1))) == 3
    assert _ids(make_store().add_events(_id(2), [_event("ev-0", "open")]).new) == ["ev-0"], (
        "the cap is per notification"
    )
    delivered = [_event(f"d-{n}") for n in range(4)]
    assert make_store().add_events(_id(1), delivered).new == tuple(delivered), "other kinds have their own bound"


def test_every_other_kind_has_its_own_larger_bound(make_store, small_event_cap):
    bounces = [_event(f"b-{n}", "bounce", timestamp=1_795_000_000 + n) for n in range(6)]
    added = make_store().add_events(_id(1), bounces)
    assert (_ids(added.new), _ids(added.not_kept)) == (["b-0", "b-1", "b-2", "b-3"], ["b-4", "b-5"])
    assert _ids(make_store().add_events(_id(1), [_event("o-1", "open")]).new) == ["o-1"], "opens have room still"
    assert make_store().add_events(_id(1), bounces[:2]) == history.Added(), "known, not 'not kept'"
    assert len(make_store().events(_id(1))) == 5


# --- create_history and lookup -------------------------------------------------------------------


def test_create_history_picks_the_store_beside_the_ledger(tmp_path, fake_gcs):
    assert isinstance(create_history(MemoryLedger()), NoHistory), "per-instance memory: nobody could read it"
    sqlite_store = create_history(SqliteLedger(tmp_path / "ledger.sqlite3"))
    assert isinstance(sqlite_store, SqliteHistory) and sqlite_store.path == tmp_path / "ledger.sqlite3"
    assert isinstance(create_history(GcsLedger(_state_bucket())), GcsHistory)


@pytest.fixture(params=["memory", "sqlite", "gcs"])
def ledger(request, tmp_path):
    if request.param == "memory":
        return MemoryLedger()
    if request.param == "sqlite":
        return SqliteLedger(tmp_path / "ledger.sqlite3")
    request.getfixturevalue("fake_gcs")
    return GcsLedger(_state_bucket())


def test_lookup_tells_the_record_without_its_token(ledger):
    assert ledger.lookup(_id(1)) is None
    claim = ledger.claim(_id(1), lease_seconds=60)
    claimed = ledger.lookup(_id(1))
    assert claimed["state"] == "claimed" and claimed["lease_until"] > 0 and "token" not in claimed
    ledger.mark_sent(claim, "sg-message-1")
    assert ledger.lookup(_id(1)) == {"state": "sent", "message_id": "sg-message-1"} | (
        {"lease_until": claimed["lease_until"]} if ledger.name == "sqlite" else {}
    )
    dead = ledger.claim(_id(2), lease_seconds=60)
    ledger.mark_dead(dead, ["bob@example.com"])
    looked_up = ledger.lookup(_id(2))
    assert looked_up["state"] == "dead" and looked_up["owed"] == ["bob@example.com"]


def test_gcs_lookup_failure_is_a_ledger_error(fake_gcs):
    fake_gcs.fail_next.append(503)
    with pytest.raises(LedgerError, match="state bucket"):
        GcsLedger(_state_bucket()).lookup(_id(1))


# --- the state bucket: names, planted objects, failures ------------------------------------------


def test_gcs_names_are_the_designs(fake_gcs):
    store = GcsHistory(_state_bucket())
    store.record(_sending(1))
    store.record(_digest(2, [1_795_000_200]))
    store.add_events(_id(1), [_event("ev-1"), _event("not safe/one"), _event("ev-2", "open")])
    names = fake_gcs.names(STATE_BUCKET, "history/")
    key = history.object_key("uploads", "reports/q3.csv")
    assert names == sorted([  # an ordinary sending's only record is its marker; a digest's is kept by id too
        f"history/ids/{_id(2)}", f"history/objects/{key}/{2**63 - 1 - 17:019d}-{_id(1)}",
        f"history/digests/{history.window_key('a' * 24, 1_795_000_200)}/{2**63 - 1 - 1_795_000_200:019d}-{_id(2)}",
        f"history/events/{_id(1)}/ev-1", f"history/events/{_id(1)}/{event_name('not safe/one')}",
        f"history/events/{_id(1)}/open.ev-2",  # opens and clicks: their kind first, so a listing counts them
    ])  # fmt: skip
    assert event_name("not safe/one") == __import__("hashlib").sha256(b"not safe/one").hexdigest()
    assert fake_gcs.read_json(STATE_BUCKET, f"history/objects/{key}/{2**63 - 1 - 17:019d}-{_id(1)}") == (
        _sending(1).to_json()
    )
    assert fake_gcs.read_json(STATE_BUCKET, f"history/ids/{_id(2)}") == _digest(2, [1_795_000_200]).to_json()


def test_gcs_events_are_read_with_one_listing(fake_gcs):
    store = GcsHistory(_state_bucket())
    store.add_events(_id(1), [_event(f"ev-{n}") for n in range(5)])
    del fake_gcs.requests[:]
    assert len(store.events(_id(1))) == 5
    assert [(r.method, "prefix" in r.query) for r in fake_gcs.requests] == [("GET", True)]


def test_gcs_an_event_created_by_a_racing_batch_is_not_new(fake_gcs):
    store = GcsHistory(_state_bucket())
    name = f"history/events/{_id(1)}/ev-1"

    def plant_first(request) -> None:  # the other batch's create lands between our listing and ours
        if request.method == "POST" and request.object_name == name and fake_gcs.blob(STATE_BUCKET, name) is None:
            fake_gcs.put(STATE_BUCKET, name, json.dumps(_event("ev-1").to_json()).encode())

    fake_gcs.before_forward(plant_first)
    assert _ids(store.add_events(_id(1), [_event("ev-1"), _event("ev-2")]).new) == ["ev-2"]
    fake_gcs.before_forward(None)
    assert [e.sg_event_id for e in store.events(_id(1))] == ["ev-1", "ev-2"]


def test_gcs_adds_with_one_listing_and_creates_a_few_at_once_in_the_caller_s_context(fake_gcs):
    store = GcsHistory(_state_bucket())
    store.add_events(_id(1), [_event("ev-0")])
    caller: ContextVar[str] = ContextVar("caller", default="not copied")
    seen: list[tuple[str, str]] = []
    upload = store._bucket.upload

    def watched(*args, **kwargs):
        seen.append((threading.current_thread().name, caller.get()))
        return upload(*args, **kwargs)

    store._bucket.upload = watched
    del fake_gcs.requests[:]
    caller.set("the batch's")
    events = [_event(f"ev-{n}", "bounce") for n in range(40)]
    assert _ids(store.add_events(_id(1), events).new) == [f"ev-{n}" for n in range(1, 40)]
    assert [r.method for r in fake_gcs.requests].count("GET") == 1, "one listing"
    assert {value for _, value in seen} == {"the batch's"} and len(seen) == 39
    assert 1 < len({thread for thread, _ in seen}) <= gcs_history.CREATES


def test_gcs_planted_objects_are_skipped_and_counted(fake_gcs):
    store = GcsHistory(_state_bucket())
    store.record(_sending(1))
    key = history.object_key("uploads", "reports/q3.csv")
    fake_gcs.put(STATE_BUCKET, f"history/objects/{key}/not-an-id", b"")
    fake_gcs.put(STATE_BUCKET, f"history/objects/{key}/{_id(2)}", b"")
    fake_gcs.put(STATE_BUCKET, f"history/ids/{_id(2)}", b"{not json")
    fake_gcs.put(STATE_BUCKET, f"history/objects/{key}/{_id(3)}", b"")
    fake_gcs.put(STATE_BUCKET, f"history/ids/{_id(3)}", json.dumps(_sending(4).to_json()).encode())  # another id's
    fake_gcs.put(STATE_BUCKET, f"history/objects/{key}/{_id(5)}", b"")
    fake_gcs.put(STATE_BUCKET, f"history/ids/{_id(5)}", b" " * (gcs_history.MAX_SENDING_BYTES + 10))
    fake_gcs.put(STATE_BUCKET, f"history/events/{_id(1)}/ev-9", json.dumps({"event": "bounce"}).encode())
    reader = GcsHistory(_state_bucket())
    assert reader.by_object("uploads", "reports/q3.csv") == [_sending(1)]
    assert reader.events(_id(1)) == []
    assert reader.unreadable == 5
    assert reader.by_id("../ids/" + _id(1)) is None


def test_gcs_failures_are_ledger_errors(fake_gcs):
    store = GcsHistory(_state_bucket())
    for call in (lambda: store.record(_sending(1)), lambda: store.by_id(_id(1)),
                 lambda: store.by_object("uploads", "x"), lambda: store.add_events(_id(1), [_event("e")]),
                 lambda: store.events(_id(1))):  # fmt: skip
        fake_gcs.fail_next.append(503)
        with pytest.raises(LedgerError, match=f"state bucket {STATE_BUCKET}"):
            call()
    with pytest.raises(LedgerError, match="not a notification id"):
        store.record(replace(_sending(1), notification_id="../../ledger/x"))


# --- the SQLite file -------------------------------------------------------------------------------


def test_sqlite_tables_live_in_the_ledgers_file(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    SqliteLedger(path)
    SqliteHistory(path).record(_sending(1))
    tables = {row[0] for row in sqlite3.connect(path).execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"ledger", "history_sendings", "history_filed", "history_events"} <= tables
    SqliteHistory(path)  # opened again: the tables are kept
    assert SqliteHistory(path).by_id(_id(1)) == _sending(1)


def test_sqlite_planted_rows_are_skipped_and_counted(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    store = SqliteHistory(path)
    store.record(_sending(1))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE history_sendings SET sending = ?", ("x" * (sqlite_history.MAX_SENDING_CHARS + 1),))
        db.execute("INSERT INTO history_events VALUES (?, 'ev-1', '[1]')", (_id(1),))
    reader = SqliteHistory(path)
    assert reader.by_id(_id(1)) is None and reader.by_object("uploads", "reports/q3.csv") == []
    assert reader.events(_id(1)) == []
    assert reader.unreadable == 3


def test_sqlite_failures_are_ledger_errors(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    store = SqliteHistory(path)
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE history_events")
    with pytest.raises(LedgerError, match=r"history .*ledger\.sqlite3"):
        store.add_events(_id(1), [_event("ev-1")])


def test_the_lifecycle_deletes_the_history_after_30_days():
    lifecycle = json.loads((Path(__file__).parent.parent / "deploy/state-lifecycle.json").read_text())
    history_rules = [r for r in lifecycle["rule"] if "history/" in r["condition"]["matchesPrefix"]]
    assert [(r["action"]["type"], r["condition"]["age"]) for r in history_rules] == [("Delete", 30)]


def test_a_memory_history_forgets_its_oldest_sendings_beyond_its_bound(monkeypatch):
    monkeypatch.setattr(history, "MAX_MEMORY_SENDINGS", 2)
    store = MemoryHistory()
    for number in (1, 2, 3):
        store.record(_sending(number, generation=number))
        store.add_events(_id(number), [_event(f"ev-{number}")])
    assert store.by_id(_id(1)) is None and store.events(_id(1)) == []
    assert [s.notification_id for s in store.by_object("uploads", "reports/q3.csv")] == [_id(2), _id(3)]
    store.record(_sending(2, generation=2, outcome="dead-lettered"))  # recorded again: the newest now
    store.record(_sending(4, generation=4))
    assert store.by_id(_id(3)) is None and store.by_id(_id(2)).outcome == "dead-lettered"


# --- past the bound of sendings per object: the newest, and said (review r2 #3) --------------------


@pytest.fixture
def bound_of_five(monkeypatch):
    """An object's (or window's) listing reads 5 sendings at most (the stores read history's bound)."""
    monkeypatch.setattr(history, "MAX_SENDINGS_PER_OBJECT", 5)


def test_past_the_bound_an_object_lists_its_newest_generations_and_says_there_are_more(make_store, bound_of_five):
    # Ids in another order than the generations: a store must not keep the first by id.
    for number, generation in zip((9, 2, 7, 4, 1, 8, 3), (1, 2, 3, 4, 5, 6, 7), strict=True):
        make_store().record(_sending(number, generation=generation))
    listed = make_store().by_object("uploads", "reports/q3.csv")
    assert [s.generation for s in listed] == [3, 4, 5, 6, 7]
    assert listed.truncated is True


def test_at_the_bound_nothing_is_said_truncated(make_store, bound_of_five):
    for number in range(1, 6):
        make_store().record(_sending(number, generation=number))
    listed = make_store().by_object("uploads", "reports/q3.csv")
    assert [s.generation for s in listed] == [1, 2, 3, 4, 5] and listed.truncated is False


def test_past_the_bound_a_digest_window_lists_its_newest(make_store, bound_of_five):
    for number in range(1, 8):
        make_store().record(_digest(number, [1_795_000_200]))
    listed = make_store().digests("a" * 24, 1_795_000_200)
    assert len(listed) == 5 and listed.truncated is True


def test_gcs_markers_file_the_newest_first_by_name(fake_gcs):
    store = GcsHistory(_state_bucket())
    store.record(_sending(1, generation=9))
    store.record(_sending(2, generation=10))
    store.record(_digest(3, [1_795_000_200]))
    key = history.object_key("uploads", "reports/q3.csv")
    assert fake_gcs.names(STATE_BUCKET, prefix="history/objects/") == [
        f"history/objects/{key}/{2**63 - 1 - 10:019d}-{_id(2)}",
        f"history/objects/{key}/{2**63 - 1 - 9:019d}-{_id(1)}",
    ]
    window = history.window_key("a" * 24, 1_795_000_200)
    assert fake_gcs.names(STATE_BUCKET, prefix="history/digests/") == [
        f"history/digests/{window}/{2**63 - 1 - 1_795_000_200:019d}-{_id(3)}"
    ]


def test_gcs_markers_without_their_record_are_counted_and_planted_newer_ones_say_truncated(fake_gcs, bound_of_five):
    store = GcsHistory(_state_bucket())
    store.record(_sending(1, generation=17))
    key = history.object_key("uploads", "reports/q3.csv")
    newest = f"{2**63 - 1 - 10**12:019d}"  # planted to sort before every genuine marker
    fake_gcs.put(STATE_BUCKET, f"history/objects/{key}/{newest}-{_id(2)}", b"")  # no record
    fake_gcs.put(STATE_BUCKET, f"history/objects/{key}/{newest}-{_id(1)}", b"")  # another generation's name
    reader = GcsHistory(_state_bucket())
    assert reader.by_object("uploads", "reports/q3.csv") == [_sending(1, generation=17)]
    assert reader.unreadable == 2
    for number in range(3, 8):
        fake_gcs.put(STATE_BUCKET, f"history/objects/{key}/{newest}-{_id(number)}", b"")
    crowded = GcsHistory(_state_bucket())
    listed = crowded.by_object("uploads", "reports/q3.csv")
    assert listed == [] and listed.truncated is True and crowded.unreadable == 5


def test_sqlite_filed_ids_without_their_sending_are_counted(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    SqliteHistory(path).record(_sending(1))
    with sqlite3.connect(path) as db:
        key = history.object_key("uploads", "reports/q3.csv")
        db.execute("INSERT INTO history_filed VALUES (?, ?)", (key, _id(2)))
    reader = SqliteHistory(path)
    assert reader.by_object("uploads", "reports/q3.csv") == [_sending(1)]
    assert reader.unreadable == 1


# --- the state bucket: one upload per ordinary sending, found by id through its ledger record ----


def _marker(sending: Sending) -> str:
    key = history.object_key(sending.bucket, sending.object)
    return f"history/objects/{key}/{2**63 - 1 - (sending.generation or 0):019d}-{sending.notification_id}"


def _claimed(sending: Sending, *, about: dict[str, str] | None = None) -> None:
    """The ledger record the pipeline's claim leaves (``about``: what it says of the sending)."""
    ledger = GcsLedger(_state_bucket())
    claim = ledger.claim(sending.notification_id, lease_seconds=60,
                         about=about or sending_about(sending.bucket, sending.object, sending.generation))  # fmt: skip
    ledger.mark_sent(claim, sending.message_id)


def test_gcs_an_ordinary_sending_is_one_upload_found_by_id_through_its_ledger_record(fake_gcs):
    sending = _sending(1)
    _claimed(sending)
    store = GcsHistory(_state_bucket())
    del fake_gcs.requests[:]
    store.record(sending)
    assert [(r.method, r.object_name) for r in fake_gcs.requests] == [("POST", _marker(sending))]
    assert fake_gcs.read_json(STATE_BUCKET, _marker(sending)) == sending.to_json(), "the marker is the record"
    reader = GcsHistory(_state_bucket())
    del fake_gcs.requests[:]
    assert reader.by_id(_id(1)) == sending
    assert [r.object_name for r in fake_gcs.requests] == [f"ledger/{_id(1)}", _marker(sending)]
    replayed = _sending(1, outcome="sent", attempts=3)
    store.record(replayed)  # a later outcome replaces the marker's sending
    assert reader.by_id(_id(1)) == replayed and reader.by_object("uploads", "reports/q3.csv") == [replayed]


def test_gcs_digests_are_kept_by_id_and_held_events_by_their_object_alone(fake_gcs):
    """A digest's id has no ledger record to say where its marker is: kept by id. An event held for
    a digest is one write, its marker: a bulk upload's thousands would each cost a second one."""
    held = _sending(1, outcome="batched", digest={"group": "a" * 24, "window": 1_795_000_200, "held_id": "h" * 8})
    digest = _digest(2, [1_795_000_200])
    store = GcsHistory(_state_bucket())
    del fake_gcs.requests[:]
    store.record(held)
    assert [r.method for r in fake_gcs.requests] == ["POST"]
    store.record(digest)
    assert fake_gcs.names(STATE_BUCKET, "history/ids/") == [f"history/ids/{_id(2)}"]
    reader = GcsHistory(_state_bucket())
    assert reader.by_id(_id(1)) is None and reader.by_id(_id(2)) == digest
    assert reader.by_object("uploads", "reports/q3.csv") == [held]
    assert reader.digests("a" * 24, 1_795_000_200) == [digest]


def test_gcs_a_retry_is_kept_by_id_too_since_its_claim_is_released(fake_gcs):
    retrying = _sending(1, outcome="retrying", attempts=2)
    GcsHistory(_state_bucket()).record(retrying)
    assert GcsHistory(_state_bucket()).by_id(_id(1)) == retrying


def test_gcs_a_ledger_record_without_about_falls_back_to_the_id(fake_gcs):
    ledger = GcsLedger(_state_bucket())
    ledger.mark_sent(ledger.claim(_id(1), lease_seconds=60), "sg-1")  # an older record, or a digest's
    fake_gcs.put(STATE_BUCKET, f"history/ids/{_id(1)}", json.dumps(_sending(1).to_json()).encode())
    reader = GcsHistory(_state_bucket())
    del fake_gcs.requests[:]
    assert reader.by_id(_id(1)) == _sending(1) and reader.unreadable == 0
    assert [r.object_name for r in fake_gcs.requests] == [f"ledger/{_id(1)}", f"history/ids/{_id(1)}"]


def test_gcs_an_unknown_id_costs_two_reads(fake_gcs):
    reader = GcsHistory(_state_bucket())
    del fake_gcs.requests[:]
    assert reader.by_id(_id(9)) is None and reader.unreadable == 0
    assert [r.object_name for r in fake_gcs.requests] == [f"ledger/{_id(9)}", f"history/ids/{_id(9)}"]


@pytest.mark.parametrize(
    "about",
    [
        ["not", "a", "mapping"],
        {"object_key": "../../ledger/x", "generation": "17"},
        {"object_key": "AB" * 16, "generation": "17"},
        {"object_key": "ab" * 16, "generation": "-1"},
        {"object_key": "ab" * 16, "generation": "1" * 30},
        {"object_key": "ab" * 16},
        {"object_key": 7, "generation": "17"},
        "ab" * 16,
    ],
)
def test_gcs_a_garbled_about_is_counted_and_never_followed(fake_gcs, about):
    fake_gcs.put(STATE_BUCKET, f"ledger/{_id(1)}", json.dumps({"state": "sent", "about": about}).encode())
    fake_gcs.put(STATE_BUCKET, f"history/ids/{_id(1)}", json.dumps(_sending(1).to_json()).encode())
    reader = GcsHistory(_state_bucket())
    del fake_gcs.requests[:]
    assert reader.by_id(_id(1)) == _sending(1), "the id's own record, as without about"
    assert reader.unreadable == 1
    assert [r.object_name for r in fake_gcs.requests] == [f"ledger/{_id(1)}", f"history/ids/{_id(1)}"]


def test_gcs_a_marker_not_of_the_id_or_object_is_counted_and_not_returned(fake_gcs):
    sending = _sending(1)
    _claimed(sending)
    other_object = _sending(1, name="reports/other.csv")  # under q3.csv's marker: planted
    fake_gcs.put(STATE_BUCKET, _marker(sending), json.dumps(other_object.to_json()).encode())
    reader = GcsHistory(_state_bucket())
    assert reader.by_id(_id(1)) is None and reader.unreadable == 1
    assert reader.by_object("uploads", "reports/q3.csv") == [] and reader.unreadable == 2
    fake_gcs.put(STATE_BUCKET, _marker(sending), json.dumps(_sending(2).to_json()).encode())  # another id's
    assert GcsHistory(_state_bucket()).by_id(_id(1)) is None


def test_gcs_markers_of_before_are_read_through_their_ids(fake_gcs):
    """History written before markers held the sending (30 days' worth): an empty marker, ids/."""
    sending = _sending(1)
    fake_gcs.put(STATE_BUCKET, _marker(sending), b"")
    fake_gcs.put(STATE_BUCKET, f"history/ids/{_id(1)}", json.dumps(sending.to_json()).encode())
    reader = GcsHistory(_state_bucket())
    assert reader.by_object("uploads", "reports/q3.csv") == [sending] and reader.by_id(_id(1)) == sending
    assert reader.unreadable == 0


def test_the_webhooks_look_up_of_an_unknown_id_costs_two_reads(fake_gcs):
    from notifier.feedback import IdCache, look_up

    bucket = _state_bucket()
    del fake_gcs.requests[:]
    found = look_up(_id(9), GcsHistory(bucket), GcsLedger(bucket), IdCache())
    assert found.known is False
    assert len([r for r in fake_gcs.requests if r.method == "GET"]) <= 2, [r.object_name for r in fake_gcs.requests]
