"""The digest store's promises (notifier/ledger/digests.py), for memory, the SQLite ledger's file and
the state bucket (fake-gcs-server behind the recording, fault-injecting proxy: tests/fake_gcs_server.py);
and what each real store does with records it did not write."""

from __future__ import annotations

import json
import multiprocessing
import os
import sqlite3
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path

import pytest

from notifier.digest import Group, HeldEntry
from notifier.events import InvalidEvent
from notifier.ledger import LedgerError
from notifier.ledger import bucket as bucket_module
from notifier.ledger.base import state_deadline
from notifier.ledger.bucket import StateBucket
from notifier.ledger.digests import DigestStore, MemoryDigestStore
from notifier.ledger.gcs_digests import GcsDigestStore
from notifier.ledger.sqlite_digests import SqliteDigestStore
from notifier.pipeline import Pipeline
from notifier.tools.processes import free_port
from tests.conftest import settings_for
from tests.fake_gcs_server import STATE_BUCKET

GROUP = Group("a" * 24, "burst", (("bucket", "uploads"), ("folder", "reports/")))
OTHER = Group("b" * 24, "capped")
WINDOW = 1_795_000_200
EVENT = {"kind": "finalize", "bucket": "uploads", "name": "reports/q3.csv", "metadata": {"team": "ü"}}


def _id(number: int) -> str:
    return f"{number:032x}"


def _entry(number: int, group: Group = GROUP, window: int = WINDOW, **fields) -> HeldEntry:
    values = {
        "kind": "finalize", "bucket": "uploads", "name": f"reports/{number}.csv", "size": 2048,
        "time": datetime(2026, 11, 28, 10, 3, tzinfo=UTC), "generation": 17, "content_type": "text/csv", **fields,
    }  # fmt: skip
    return HeldEntry(group, window, _id(number), **values)


def _state_bucket(name: str = STATE_BUCKET, endpoint: str | None = None) -> StateBucket:
    """The bucket behind the proxy, first failure final, never a real sleep."""
    bucket = StateBucket(name, endpoint or os.environ["STORAGE_EMULATOR_HOST"], retry_budget=0.0)
    bucket.sleep = lambda seconds: None
    return bucket


@pytest.fixture(params=["memory", "sqlite", "gcs"])
def make_store(request, tmp_path):
    """A factory: each call another instance on the same state (memory: the same instance)."""
    if request.param == "memory":
        store = MemoryDigestStore()
        return lambda: store
    if request.param == "sqlite":
        return lambda: SqliteDigestStore(tmp_path / "ledger.sqlite3")
    request.getfixturevalue("fake_gcs")
    return lambda: GcsDigestStore(_state_bucket())


# --- the contract, for every store ---------------------------------------------------------------


def test_an_entry_is_held_once_listed_with_its_summary_and_removed(make_store):
    store: DigestStore = make_store()
    entry = _entry(1)
    assert store.hold(entry, EVENT) is True
    assert make_store().hold(entry, {**EVENT, "name": "other"}) is False, "a redelivery finds it held"
    listing = make_store().pending()
    assert (listing.entries, listing.truncated, listing.unreadable) == ((entry,), False, 0)
    assert store.event(entry) == EVENT
    store.remove([entry])
    assert store.pending().entries == ()
    assert store.event(entry) is None
    store.remove([entry])  # already gone: no error


def test_remove_takes_many_entries_and_leaves_the_others(make_store):
    store = make_store()
    entries = [_entry(n) for n in range(30)] + [_entry(99, OTHER)]
    for entry in entries:
        store.hold(entry, EVENT)
    store.remove(entries[:30])
    assert store.pending().entries == (entries[30],)


def test_included_ids_are_recorded_per_window_and_part(make_store):
    store = make_store()
    assert store.included(GROUP, WINDOW, 1) is None
    store.record_included(GROUP, WINDOW, 1, [_id(1), _id(2)])
    store.record_included(GROUP, WINDOW, 1, [_id(1), _id(2)])  # a retry writes it again
    assert make_store().included(GROUP, WINDOW, 1) == {_id(1), _id(2)}
    assert store.included(GROUP, WINDOW, 2) is None and store.included(OTHER, WINDOW, 1) is None


def test_the_first_ids_of_a_window_take_its_single_slots_and_keep_them(make_store):
    store = make_store()
    assert [store.take_single(OTHER, WINDOW, _id(n), 2) for n in (1, 2, 3)] == [True, True, False]
    assert make_store().take_single(OTHER, WINDOW, _id(1), 2) is True, "a redelivery of a winner"
    assert store.take_single(OTHER, WINDOW, _id(3), 2) is False
    assert store.take_single(OTHER, WINDOW + 3600, _id(3), 2) is True, "the next window has its own slots"


def test_holds_racing_from_many_threads_create_each_entry_once(make_store):
    stores = [make_store(), make_store()]
    ids = list(range(40))

    def hold_all(worker: int) -> list[bool]:
        return [stores[worker % 2].hold(_entry(n), EVENT) for n in ids]

    with ThreadPoolExecutor(8) as pool:
        results = [created for worker in pool.map(hold_all, range(8)) for created in worker]
    assert results.count(True) == len(ids)
    assert Counter(e.notification_id for e in stores[0].pending().entries) == Counter(_id(n) for n in ids)


def test_exactly_limit_ids_win_single_slots_among_racing_instances(make_store):
    stores, limit, barrier = [make_store(), make_store()], 5, threading.Barrier(8)

    def take(worker: int) -> dict[str, bool]:
        barrier.wait()
        mine = [_id(n) for n in range(worker, 48, 8)] + [_id(0)]  # id 0: raced by every worker
        return {i: stores[worker % 2].take_single(OTHER, WINDOW, i, limit) for i in mine}

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(take, range(8)))
    winners = {i for answer in answers for i, won in answer.items() if won}
    assert len(winners) == limit, winners
    assert len({answer[_id(0)] for answer in answers}) == 1, "one id: the same answer for every delivery"
    assert all(stores[1].take_single(OTHER, WINDOW, i, limit) for i in winners)
    assert not any(stores[0].take_single(OTHER, WINDOW, _id(n), limit) for n in range(48) if _id(n) not in winners)


# --- the state bucket ----------------------------------------------------------------------------


def test_pending_is_one_listing_with_metadata_and_reads_no_entry(fake_gcs):
    store = GcsDigestStore(_state_bucket())
    for n in range(3):
        store.hold(_entry(n), EVENT)
    assert fake_gcs.names(STATE_BUCKET) == [f"digest/{GROUP.key}/{WINDOW}/{_id(n)}" for n in range(3)]
    fake_gcs.requests.clear()
    assert len(store.pending().entries) == 3
    (listing,) = fake_gcs.requests
    assert (listing.method, listing.query.get("prefix")) == ("GET", "digest/")
    assert "metadata" in listing.query.get("fields", "")


def test_a_long_name_and_folder_are_cut_to_fit_cloud_storages_metadata_limit(fake_gcs):
    store = GcsDigestStore(_state_bucket())
    folder = "\x01" * 1000 + "/"  # each escaped as \u0001: 6 bytes of JSON
    group = Group("c" * 24, "burst", (("folder", folder),))
    entry = _entry(1, group, name=folder + "\x02" * 20)
    assert store.hold(entry, EVENT)
    blob = fake_gcs.blob(STATE_BUCKET, f"digest/{group.key}/{WINDOW}/{_id(1)}")
    assert len(blob.metadata["entry"].encode()) <= 8 * 1024
    (listed,) = store.pending().entries
    assert listed.group.values == (("folder", folder[:200]),) and listed.name == entry.name[:200]


def _planted(fake_gcs, name: str, metadata: dict[str, str] | None, data: bytes = b"{}") -> None:
    fake_gcs.put(STATE_BUCKET, name, data, metadata=metadata)


def test_planted_entries_are_counted_unreadable_never_raised(fake_gcs):
    store = GcsDigestStore(_state_bucket())
    store.hold(_entry(1), EVENT)
    summary = json.dumps(_entry(2).summary())
    good = f"digest/{GROUP.key}/{WINDOW}"
    for name, metadata in [
        (f"digest/{'A' * 24}/{WINDOW}/{_id(2)}", {"entry": summary}),  # not a group key
        (f"digest/{GROUP.key}/0{WINDOW}/{_id(2)}", {"entry": summary}),  # a window not as we write it
        (f"{good}/not-an-id", {"entry": summary}),
        (f"{good}/{_id(2)}/more", {"entry": summary}),
        (f"{good}/{_id(3)}", {"entry": "{not json"}),
        (f"{good}/{_id(4)}", {"entry": json.dumps({"rule": 1})}),
        (f"{good}/{_id(5)}", {"entry": summary[:-1] + ', "pad": "' + "x" * 9000 + '"}'}),  # over 8 KiB
        (f"{good}/{_id(6)}", None),
    ]:
        _planted(fake_gcs, name, metadata)
    listing = store.pending()
    assert [e.notification_id for e in listing.entries] == [_id(1)]
    assert listing.unreadable == 8


def test_a_listing_is_bounded_and_says_it_was_cut(fake_gcs, monkeypatch):
    store = GcsDigestStore(_state_bucket())
    for n in range(5):
        store.hold(_entry(n), EVENT)
    monkeypatch.setattr(bucket_module, "PAGE_SIZE_WITH_METADATA", 2)
    monkeypatch.setattr(bucket_module, "MAX_PAGES", 2)
    listing = store.pending()
    assert (len(listing.entries), listing.truncated) == (4, True)


def test_a_planted_event_or_included_record_is_not_taken_for_ours(fake_gcs):
    store = GcsDigestStore(_state_bucket())
    entry = _entry(1)
    store.hold(entry, EVENT)
    name = f"digest/{GROUP.key}/{WINDOW}/{_id(1)}"
    _planted(fake_gcs, name, {"entry": "{}"}, b"x" * (200 * 1024))
    with pytest.raises(InvalidEvent, match="over 131072 bytes"):
        store.event(entry)
    _planted(fake_gcs, name, {"entry": "{}"}, b"{not json")
    with pytest.raises(InvalidEvent, match="not JSON"):
        store.event(entry)
    _planted(fake_gcs, f"digested/{GROUP.key}/{WINDOW}.1.json", None, b'{"ids": []}')
    _planted(fake_gcs, f"digested/{GROUP.key}/{WINDOW}.2.json", None, b"[1, 2]")
    assert store.included(GROUP, WINDOW, 1) is None and store.included(GROUP, WINDOW, 2) is None


def test_a_planted_slot_takes_its_place_and_a_lost_create_answer_is_still_ours(fake_gcs):
    store = GcsDigestStore(_state_bucket())
    _planted(fake_gcs, f"cap/{OTHER.key}/{WINDOW}/00000", None)  # whose: unknown
    _planted(fake_gcs, f"cap/{OTHER.key}/{WINDOW}/junk", {"notification_id": _id(9)})  # not a slot
    fake_gcs.proxy.target = lambda request: request.method == "POST"  # the create only
    fake_gcs.fail_next.append("reset_after")  # goes through, and its answer is lost
    retrying = GcsDigestStore(StateBucket(STATE_BUCKET, fake_gcs.url))
    retrying._bucket.sleep = lambda seconds: None
    assert retrying.take_single(OTHER, WINDOW, _id(1), 2) is True
    assert store.take_single(OTHER, WINDOW, _id(2), 2) is False, "slots 0 (planted) and 1 (ours) are taken"
    assert fake_gcs.proxy.injected["reset_after"] == 1
    assert fake_gcs.blob(STATE_BUCKET, f"cap/{OTHER.key}/{WINDOW}/00001").metadata == {"notification_id": _id(1)}


def test_remove_keeps_the_deliverys_state_deadline_in_every_worker(fake_gcs):
    store = GcsDigestStore(_state_bucket())
    entries = [_entry(n) for n in range(4)]
    for entry in entries:
        store.hold(entry, EVENT)
    fake_gcs.requests.clear()
    with state_deadline(time.monotonic() - 20, send_needs=0), pytest.raises(LedgerError, match="ran out"):
        store.remove(entries)
    assert fake_gcs.requests == [] and len(store.pending().entries) == 4


def test_a_failed_delete_is_a_ledger_error(fake_gcs):
    store = GcsDigestStore(_state_bucket())
    entries = [_entry(n) for n in range(3)]
    for entry in entries:
        store.hold(entry, EVENT)
    fake_gcs.fail_next.append(503)
    with pytest.raises(LedgerError, match=f"state bucket {STATE_BUCKET}: StateBucketError: HTTP 503"):
        store.remove(entries)


def test_a_missing_bucket_is_misconfigured(fake_gcs):
    missing = GcsDigestStore(_state_bucket("no-such-state-bucket"))
    with pytest.raises(LedgerError) as held:  # the server's own answer to an upload
        missing.hold(_entry(1), EVENT)
    assert held.value.misconfigured and "bucket 'no-such-state-bucket' does not exist" in str(held.value)
    fake_gcs.proxy.fail_message = "The specified bucket does not exist."  # Cloud Storage's words
    fake_gcs.fail_next.append(404)
    with pytest.raises(LedgerError) as listed:
        GcsDigestStore(_state_bucket()).pending()
    assert listed.value.misconfigured and str(listed.value).startswith("NOTIFY_STATE_BUCKET: ")


def test_every_call_to_a_server_that_is_down_is_a_ledger_error():
    store = GcsDigestStore(_state_bucket(endpoint=f"http://127.0.0.1:{free_port()}"))
    calls = [
        lambda: store.hold(_entry(1), EVENT), store.pending, lambda: store.event(_entry(1)),
        lambda: store.remove([_entry(1), _entry(2)]), lambda: store.included(GROUP, WINDOW, 1),
        lambda: store.record_included(GROUP, WINDOW, 1, [_id(1)]), lambda: store.take_single(OTHER, WINDOW, _id(1), 2),
    ]  # fmt: skip
    for call in calls:
        with pytest.raises(LedgerError) as caught:
            call()
        assert not caught.value.misconfigured and f"state bucket {STATE_BUCKET}:" in str(caught.value)


def test_a_pipeline_with_a_state_bucket_holds_in_it_through_the_ledgers_client(fake_gcs, tmp_path):
    config = tmp_path / "notify.toml"
    config.write_text('[[rules]]\nname = "burst"\nto = ["ops@example.com"]\ndigest = "10m"\n', encoding="utf-8")
    settings = settings_for(NOTIFY_CONFIG=str(config), NOTIFY_BACKEND="outbox", NOTIFY_OUTBOX_DIR=str(tmp_path),
                            NOTIFY_STATE_BUCKET=STATE_BUCKET, STORAGE_EMULATOR_HOST=fake_gcs.url)  # fmt: skip
    pipeline = Pipeline(settings)
    assert pipeline.holding is not None
    store = pipeline.holding.store
    assert isinstance(store, GcsDigestStore) and store._bucket is pipeline.ledger.bucket


# --- the SQLite file -----------------------------------------------------------------------------


def test_sqlite_rows_it_did_not_write_are_unreadable_and_the_ledger_shares_the_file(tmp_path):
    from notifier.ledger.sqlite import SqliteLedger

    path = tmp_path / "ledger.sqlite3"
    ledger, store = SqliteLedger(path), SqliteDigestStore(path)
    store.hold(_entry(1), EVENT)
    assert ledger.claim("n1", lease_seconds=60).status.name == "CLAIMED"
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO digest_entries VALUES (?, ?, ?, ?, ?)", (GROUP.key, WINDOW, "x", "{not json", "{}"))
        db.execute("INSERT INTO digest_entries VALUES (?, ?, ?, ?, ?)", (GROUP.key, WINDOW, "y", "[]", "nope"))
        db.execute("INSERT INTO digest_included VALUES (?, ?, ?, ?)", (GROUP.key, WINDOW, 1, '"ids"'))
    listing = store.pending()
    assert ([e.notification_id for e in listing.entries], listing.unreadable) == ([_id(1)], 2)
    assert store.included(GROUP, WINDOW, 1) is None
    with pytest.raises(InvalidEvent, match="not JSON"):
        store.event(HeldEntry(GROUP, WINDOW, "y", "finalize", "uploads", "a"))


def _take_in_a_process(path: str, worker: int, barrier) -> list[str]:
    store = SqliteDigestStore(Path(path))
    barrier.wait()
    return [_id(n) for n in range(worker, 40, 4) if store.take_single(OTHER, WINDOW, _id(n), 5)]


def test_sqlite_single_slots_are_exclusive_across_processes(tmp_path):
    context = multiprocessing.get_context("fork")
    with context.Manager() as manager, context.Pool(4) as pool:
        barrier = manager.Barrier(4)
        won = pool.starmap(_take_in_a_process, [(str(tmp_path / "ledger.sqlite3"), w, barrier) for w in range(4)])
    assert len([i for ids in won for i in ids]) == 5, won


def test_sqlite_failures_are_ledger_errors(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    store = SqliteDigestStore(path)
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE digest_entries")
    with pytest.raises(LedgerError, match=f"digest store {path}: no such table"):
        store.hold(_entry(1), EVENT)


def test_sqlite_stores_in_another_folder_make_it(tmp_path):
    store = SqliteDigestStore(Path(tmp_path / "new" / "ledger.sqlite3"))
    assert store.hold(_entry(1), EVENT) and store.pending().entries == (_entry(1),)


# --- the bucket's listing with metadata, and the lifecycle ---------------------------------------


def test_a_list_with_metadata_asks_for_it_and_keeps_only_what_cloud_storage_allows(fake_gcs):
    _planted(fake_gcs, "cap/a", {"notification_id": "x"})
    _planted(fake_gcs, "cap/b", {"pad": "y" * 9000})
    bucket = _state_bucket()
    fake_gcs.requests.clear()
    listed = {item.name: dict(item.metadata) for item in bucket.list("cap/", with_metadata=True)}
    assert listed == {"cap/a": {"notification_id": "x"}, "cap/b": {}}
    assert [item.metadata for item in bucket.list("cap/")] == [{}, {}], "not asked for: not kept"
    assert fake_gcs.requests[0].query["fields"].endswith(",metadata)")
    assert fake_gcs.requests[0].query["maxResults"] == str(bucket_module.PAGE_SIZE_WITH_METADATA)


def test_the_lifecycle_deletes_old_records_but_never_a_held_event():
    lifecycle = json.loads((Path(__file__).parent.parent / "deploy/state-lifecycle.json").read_text())
    deleted = [p for rule in lifecycle["rule"] for p in rule["condition"]["matchesPrefix"]]
    names = {"digest": f"digest/{GROUP.key}/{WINDOW}/{_id(1)}", "digested": f"digested/{GROUP.key}/{WINDOW}.1.json",
             "cap": f"cap/{OTHER.key}/{WINDOW}/00000"}  # fmt: skip
    assert {kind for kind, name in names.items() if any(name.startswith(p) for p in deleted)} == {"digested", "cap"}
