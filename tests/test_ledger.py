"""The ledger's promises, for every place it can live.

Memory and SQLite run as they are; the state-bucket ledger runs with its JSON API client
(notifier.ledger.bucket) against fake-gcs-server, which refuses a stale conditional write with 412 like Cloud Storage,
so every "someone else got there first" path is the server's own answer. The proxy in front of it
(tests/fake_gcs_server.py) records requests, injects failures, and refuses stale conditional reads
and deletes, which fake-gcs-server does not check.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import tenacity

from notifier.ledger import Claim, ClaimStatus, LedgerError
from notifier.ledger.bucket import RETRY_BUDGET, CallLimits, StateBucket, _retrying
from notifier.ledger.gcs import GcsDeadLetters, GcsLedger
from notifier.ledger.local import LocalDeadLetters
from notifier.ledger.memory import MemoryLedger
from notifier.ledger.sqlite import SqliteLedger

LEASE = 60.0


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _bucket(name="notifier-state", *, retries: bool = False, endpoint: str | None = None) -> StateBucket:
    """The state bucket behind the fake_gcs proxy (STORAGE_EMULATOR_HOST); ``retries``: the
    bucket's own retries, without real sleeps; else the first failure is final."""
    budget = RETRY_BUDGET if retries else 0.0
    bucket = StateBucket(name, endpoint or os.environ["STORAGE_EMULATOR_HOST"], retry_budget=budget)
    bucket.sleep = lambda seconds: None
    return bucket


@pytest.fixture(params=["memory", "sqlite", "gcs"])
def ledger_and_clock(request, tmp_path):
    clock = Clock()
    if request.param == "memory":
        return MemoryLedger(clock=clock), clock
    if request.param == "sqlite":
        return SqliteLedger(tmp_path / "ledger.sqlite3", clock=clock), clock
    request.getfixturevalue("fake_gcs")
    return GcsLedger(_bucket(), clock=clock), clock


def test_the_first_claim_wins_and_a_second_is_busy(ledger_and_clock):
    ledger, _ = ledger_and_clock
    first = ledger.claim("n1", lease_seconds=LEASE)
    assert first.status is ClaimStatus.CLAIMED
    assert ledger.claim("n1", lease_seconds=LEASE).status is ClaimStatus.BUSY
    assert ledger.claim("n2", lease_seconds=LEASE).status is ClaimStatus.CLAIMED


def test_a_sent_notification_is_a_duplicate_with_its_message_id(ledger_and_clock):
    ledger, clock = ledger_and_clock
    ledger.mark_sent(ledger.claim("n1", lease_seconds=LEASE), "sg-123")
    clock.now += 10 * LEASE  # however long after
    again = ledger.claim("n1", lease_seconds=LEASE)
    assert (again.status, again.message_id) == (ClaimStatus.SENT, "sg-123")


def test_a_released_claim_can_be_claimed_at_once(ledger_and_clock):
    ledger, _ = ledger_and_clock
    ledger.release(ledger.claim("n1", lease_seconds=LEASE))
    assert ledger.claim("n1", lease_seconds=LEASE).status is ClaimStatus.CLAIMED


def test_an_expired_lease_is_taken_over_and_the_old_holder_cannot_overwrite(ledger_and_clock):
    ledger, clock = ledger_and_clock
    crashed = ledger.claim("n1", lease_seconds=LEASE)
    clock.now += LEASE - 1
    assert ledger.claim("n1", lease_seconds=LEASE).status is ClaimStatus.BUSY
    clock.now += 2
    takeover = ledger.claim("n1", lease_seconds=LEASE)
    assert takeover.status is ClaimStatus.CLAIMED
    ledger.release(crashed)  # the crashed instance wakes up: its release must not free our claim
    assert ledger.claim("n1", lease_seconds=LEASE).status is ClaimStatus.BUSY
    ledger.mark_sent(takeover, "sg-2")
    assert ledger.claim("n1", lease_seconds=LEASE).message_id == "sg-2"


def test_a_dead_letter_is_claimed_again_only_by_replay(ledger_and_clock):
    ledger, _ = ledger_and_clock
    ledger.mark_dead(ledger.claim("n1", lease_seconds=LEASE))
    assert ledger.claim("n1", lease_seconds=LEASE).status is ClaimStatus.DEAD
    replay = ledger.claim("n1", lease_seconds=LEASE, replay=True)
    assert replay.status is ClaimStatus.CLAIMED
    ledger.mark_sent(replay, "sg-replayed")
    assert ledger.claim("n1", lease_seconds=LEASE, replay=True).status is ClaimStatus.SENT


def test_the_gcs_claim_is_a_conditional_create(fake_gcs):
    ledger = GcsLedger(_bucket())
    ledger.claim("abc", lease_seconds=LEASE)
    uploads = [request.query for request in fake_gcs.requests if request.path.startswith("/upload/")]
    assert uploads[0]["ifGenerationMatch"] == "0"
    record = fake_gcs.read_json("notifier-state", "ledger/abc")
    assert record["state"] == "claimed"
    assert fake_gcs.blob("notifier-state", "ledger/abc").metadata["expires"] > "2026"


def test_losing_a_takeover_race_is_busy_not_a_second_claim(fake_gcs, monkeypatch):
    clock = Clock()
    winner = GcsLedger(_bucket(), clock=clock)
    loser = GcsLedger(_bucket(), clock=clock)
    winner.claim("n1", lease_seconds=LEASE)
    clock.now += 2 * LEASE
    stale = loser._read("ledger/n1")  # the loser reads the expired claim ...
    assert winner.claim("n1", lease_seconds=LEASE).status is ClaimStatus.CLAIMED  # ... the winner takes it
    monkeypatch.setattr(loser, "_read", lambda name: stale)
    assert loser.claim("n1", lease_seconds=LEASE).status is ClaimStatus.BUSY  # its takeover answers 412
    assert ("POST", str(stale[0])) in [(r.method, r.query.get("ifGenerationMatch")) for r in fake_gcs.requests]
    assert fake_gcs.read_json("notifier-state", "ledger/n1")["state"] == "claimed"


def test_a_record_changing_while_read_is_read_again(fake_gcs):
    ledger = GcsLedger(_bucket())
    ledger.mark_sent(ledger.claim("n1", lease_seconds=LEASE), "sg-1")
    sent = json.dumps(fake_gcs.read_json("notifier-state", "ledger/n1")).encode()
    rewritten = []

    def another_instance_rewrites_it(request):  # just before our read reaches the server
        if request.query.get("alt") == "media" and not rewritten:
            rewritten.append(fake_gcs.put("notifier-state", "ledger/n1", sent))

    fake_gcs.before_forward(another_instance_rewrites_it)
    fake_gcs.requests.clear()
    assert ledger.claim("n1", lease_seconds=LEASE).status is ClaimStatus.SENT
    reads = [r for r in fake_gcs.requests if r.method == "GET" and r.object_name == "ledger/n1"]
    assert len(rewritten) == 1
    # Was two requests (metadata, then a download of that generation, refused if it had changed, and
    # the record read again); now the bytes and their generation come in one answer: no window.
    assert [r.query.get("alt") for r in reads] == ["media"], "one download, the record and its generation"


@pytest.mark.parametrize(
    "planted",
    [b"not json", b"[" * 200_000, b'{"state": "sent", "pad": "' + b"x" * 100_000 + b'"}'],
    ids=["not-json", "deeply-nested", "oversized"],
)
def test_a_corrupt_or_planted_record_counts_as_an_expired_claim(fake_gcs, planted):
    """Whoever can write to the state bucket could once crash claim() (RecursionError) or make it
    read a record of any size."""
    fake_gcs.put("notifier-state", "ledger/n1", planted)
    assert GcsLedger(_bucket()).claim("n1", lease_seconds=LEASE).status is ClaimStatus.CLAIMED


@pytest.mark.parametrize("status", [500, 503, 429])
def test_gcs_errors_become_ledger_errors(fake_gcs, status):
    fake_gcs.fail_next.append(status)
    with pytest.raises(LedgerError, match="state bucket notifier-state"):
        GcsLedger(_bucket()).claim("n1", lease_seconds=LEASE)


def test_the_clients_own_retries_are_bounded_well_inside_a_delivery():
    assert RETRY_BUDGET <= 10
    assert isinstance(_retrying(CallLimits(5.0, 13.0), lambda seconds: None), tenacity.Retrying)


def test_sqlite_claims_are_exclusive_across_threads(tmp_path):
    path = tmp_path / "ledger.sqlite3"
    ids = [f"n{i}" for i in range(40)]
    barrier = threading.Barrier(8)

    def worker(_):
        ledger = SqliteLedger(path)  # its own connection, as another process would have
        barrier.wait()
        return [(i, ledger.claim(i, lease_seconds=LEASE).status) for i in ids]

    with ThreadPoolExecutor(8) as pool:
        results = [r for batch in pool.map(worker, range(8)) for r in batch]
    for notification_id in ids:
        statuses = [s for i, s in results if i == notification_id]
        assert statuses.count(ClaimStatus.CLAIMED) == 1, notification_id
        assert statuses.count(ClaimStatus.BUSY) == 7


def test_memory_ledger_is_bounded_and_forgets_the_oldest_first():
    ledger = MemoryLedger(capacity=2)  # two generations of two
    ids = [f"{i:032x}" for i in range(5)]
    for i, notification_id in enumerate(ids):
        ledger.mark_sent(ledger.claim(notification_id, lease_seconds=LEASE), f"m{i}")
    statuses = [ledger.claim(i, lease_seconds=LEASE).status for i in reversed(ids)]  # a forgotten id is re-claimed
    assert statuses == [ClaimStatus.SENT] * 3 + [ClaimStatus.CLAIMED] * 2, "4-2 kept, 1 and 0 forgotten"
    assert ledger.claim(ids[4], lease_seconds=LEASE) == Claim(ids[4], ClaimStatus.SENT, message_id="m4")


def test_memory_ledger_always_remembers_the_last_capacity_claims():
    ledger = MemoryLedger(capacity=10)
    ids = [f"{i:032x}" for i in range(1, 200)]
    for position, notification_id in enumerate(ids):
        claim = ledger.claim(notification_id, lease_seconds=LEASE)
        recent = ids[max(0, position - 9) : position + 1]
        held = [ledger.claim(i, lease_seconds=LEASE).status for i in recent]
        assert ClaimStatus.CLAIMED not in held, position  # each still busy or sent: none forgotten
        ledger.mark_sent(claim, "m")


def test_memory_ledger_memory_stays_small_per_email():
    import tracemalloc

    ledger = MemoryLedger()
    ids = [f"{i:032x}" for i in range(10_000)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for notification_id in ids:
        ledger.mark_sent(ledger.claim(notification_id, lease_seconds=LEASE), f"msg-{notification_id[:14]}")
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert used < 2_000_000, f"{used / 10_000:.0f} bytes per email"
    assert ledger.claim(ids[0], lease_seconds=LEASE).status is ClaimStatus.SENT


def test_memory_ledger_accepts_ids_that_are_not_hex():
    ledger = MemoryLedger()
    claim = ledger.claim("event-42/x", lease_seconds=LEASE)
    ledger.mark_dead(claim)
    assert ledger.claim("event-42/x", lease_seconds=LEASE).status is ClaimStatus.DEAD
    assert ledger.claim("event-42/x", lease_seconds=LEASE, replay=True).status is ClaimStatus.CLAIMED


@pytest.mark.parametrize("store", ["local", "gcs"])
def test_dead_letters_round_trip(store, tmp_path, request):
    if store == "gcs":
        request.getfixturevalue("fake_gcs")
        dead_letters = GcsDeadLetters(_bucket())
    else:
        dead_letters = LocalDeadLetters(tmp_path / "deadletter")
    where = dead_letters.put("n1", {"error": "HTTP 401", "message": {"subject": "ü"}})
    assert "n1.json" in where
    (letter,) = dead_letters.list()
    assert (letter.notification_id, letter.record["error"], letter.record["message"]) == (
        "n1",
        "HTTP 401",
        {"subject": "ü"},
    )
    assert letter.created.startswith("20")
    dead_letters.remove("n1")
    assert list(dead_letters.list()) == []


def test_gcs_ledger_normal_flow_against_fake_gcs_server_alone(fake_gcs):
    """No proxy: the server's own answers, the 412 of a second claim included."""
    bucket = fake_gcs.client().bucket("notifier-state")
    state = _bucket(endpoint=fake_gcs.server.url)
    ledger = GcsLedger(state)
    claim = ledger.claim("emu-1", lease_seconds=LEASE)
    assert claim.status is ClaimStatus.CLAIMED
    assert json.loads(bucket.blob("ledger/emu-1").download_as_bytes())["state"] == "claimed"
    assert GcsLedger(state).claim("emu-1", lease_seconds=LEASE).status is ClaimStatus.BUSY
    ledger.mark_sent(claim, "sg-emu")
    assert json.loads(bucket.blob("ledger/emu-1").download_as_bytes())["message_id"] == "sg-emu"
    assert GcsLedger(state).claim("emu-1", lease_seconds=LEASE).message_id == "sg-emu"
    other = ledger.claim("emu-2", lease_seconds=LEASE)
    ledger.release(other)
    assert bucket.get_blob("ledger/emu-2") is None
    dead_letters = GcsDeadLetters(state)
    dead_letters.put("emu-3", {"error": "x"})
    assert [d.notification_id for d in dead_letters.list()] == ["emu-3"]
    assert fake_gcs.requests == [], "straight to the server"


@pytest.mark.parametrize(
    ("status", "message"),
    [
        (403, "the function's service account may not use gs://notifier-state: grant it roles/storage.objectAdmin"),
        (404, "bucket 'notifier-state' does not exist: create it with deploy/setup.sh --state-bucket notifier-state"),
    ],
)
def test_a_misconfigured_state_bucket_says_what_to_fix(fake_gcs, status, message):
    # Cloud Storage's own wording: fake-gcs-server answers a missing bucket with a bare "Not Found".
    fake_gcs.proxy.fail_message = "The specified bucket does not exist." if status == 404 else "Forbidden"
    fake_gcs.fail_next.append(status)
    with pytest.raises(LedgerError) as caught:
        GcsLedger(_bucket()).claim("n1", lease_seconds=LEASE)
    assert caught.value.misconfigured
    assert str(caught.value).startswith("NOTIFY_STATE_BUCKET: ")
    assert message in str(caught.value)


def test_our_own_claim_is_recognised_when_the_create_answer_was_lost(fake_gcs):
    # The create reaches the server, its answer is dropped; the client's own retry then meets a 412.
    ledger = GcsLedger(_bucket(retries=True))
    fake_gcs.fail_next.append("reset_after")
    assert ledger.claim("n1", lease_seconds=LEASE).status is ClaimStatus.CLAIMED
    creates = [r for r in fake_gcs.requests if r.method == "POST" and r.query.get("ifGenerationMatch") == "0"]
    assert (len(creates), fake_gcs.proxy.injected["reset_after"]) == (2, 1)
    assert fake_gcs.read_json("notifier-state", "ledger/n1")["state"] == "claimed"


def _open_ledger_at_once(path: str, barrier: Any) -> str:
    barrier.wait()
    try:
        SqliteLedger(Path(path))
    except Exception as error:  # noqa: BLE001 - reported to the test, which names it
        return repr(error)
    return "ok"


def test_processes_opening_a_new_ledger_file_at_once_all_succeed(tmp_path):
    """Instances started together (chaos run, sandbox) once failed 1 time in 10 with "database is
    locked" while one of them switched the new file to WAL."""
    context = multiprocessing.get_context("fork")
    outcomes = []
    with context.Manager() as manager:
        for trial in range(20):
            barrier = manager.Barrier(6)
            path = str(tmp_path / f"ledger-{trial}.sqlite3")
            with context.Pool(6) as pool:  # new processes each time, as instances starting together
                outcomes += pool.starmap(_open_ledger_at_once, [(path, barrier)] * 6)
    assert set(outcomes) == {"ok"}, [o for o in outcomes if o != "ok"][:3]


# Issue 14 (7a follow-up): after a partial send the ledger, not the untrusted dead letter, says who
# is still owed the email.


def test_a_partial_send_records_who_is_still_owed_and_a_replay_claim_returns_them(ledger_and_clock):
    ledger, _ = ledger_and_clock
    ledger.mark_dead(ledger.claim("n1", lease_seconds=LEASE), owed=["C@Example.com", "b@example.com"])
    assert ledger.claim("n1", lease_seconds=LEASE).status is ClaimStatus.DEAD  # a redelivery sends nobody
    replay = ledger.claim("n1", lease_seconds=LEASE, replay=True)
    assert replay.status is ClaimStatus.CLAIMED
    assert replay.owed == frozenset({"b@example.com", "c@example.com"})


def test_a_replays_partial_send_shrinks_the_owed_list_and_a_full_one_marks_it_sent(ledger_and_clock):
    ledger, _ = ledger_and_clock
    ledger.mark_dead(ledger.claim("n1", lease_seconds=LEASE), owed=["b@example.com", "c@example.com"])
    ledger.mark_dead(ledger.claim("n1", lease_seconds=LEASE, replay=True), owed=["c@example.com"])
    replay = ledger.claim("n1", lease_seconds=LEASE, replay=True)
    assert replay.owed == frozenset({"c@example.com"})
    ledger.mark_sent(replay, "sg-c")
    again = ledger.claim("n1", lease_seconds=LEASE, replay=True)
    assert (again.status, again.message_id, again.owed) == (ClaimStatus.SENT, "sg-c", None)


def test_a_whole_message_dead_letter_owes_everyone(ledger_and_clock):
    ledger, _ = ledger_and_clock
    ledger.mark_dead(ledger.claim("n1", lease_seconds=LEASE))
    replay = ledger.claim("n1", lease_seconds=LEASE, replay=True)
    assert (replay.status, replay.owed) == (ClaimStatus.CLAIMED, None)


def test_nobody_owed_any_more_is_sent(ledger_and_clock):
    ledger, _ = ledger_and_clock
    ledger.mark_dead(ledger.claim("n1", lease_seconds=LEASE), owed=[])
    assert ledger.claim("n1", lease_seconds=LEASE, replay=True).status is ClaimStatus.SENT


def test_a_replay_that_crashed_keeps_the_owed_list_and_stays_dead_for_redeliveries(ledger_and_clock):
    """Its lease expired: a redelivery must not take it over and mail everyone who has it."""
    ledger, clock = ledger_and_clock
    ledger.mark_dead(ledger.claim("n1", lease_seconds=LEASE), owed=["c@example.com"])
    ledger.claim("n1", lease_seconds=LEASE, replay=True)  # then the replay crashed
    clock.now += 2 * LEASE
    assert ledger.claim("n1", lease_seconds=LEASE).status is ClaimStatus.DEAD
    replay = ledger.claim("n1", lease_seconds=LEASE, replay=True)
    assert (replay.status, replay.owed) == (ClaimStatus.CLAIMED, frozenset({"c@example.com"}))


@pytest.mark.parametrize(
    "owed", ["c@example.com", [7], ["x" * 400], ["a@example.com"] * 10_001], ids=["string", "number", "long", "many"]
)
def test_a_planted_owed_list_is_not_trusted(fake_gcs, owed):
    """Not what the function writes: read as no list (the dead letter's own narrowing applies)."""
    fake_gcs.put("notifier-state", "ledger/n1", json.dumps({"state": "dead", "owed": owed}).encode())
    replay = GcsLedger(_bucket()).claim("n1", lease_seconds=LEASE, replay=True)
    assert (replay.status, replay.owed) == (ClaimStatus.CLAIMED, None)


def test_releasing_a_replays_claim_puts_the_owed_list_back(ledger_and_clock):
    """A replay that failed transiently: its record stays a dead letter with who is owed it, not
    deleted (a redelivery of the event would then mail everyone who has it)."""
    ledger, _ = ledger_and_clock
    ledger.mark_dead(ledger.claim("n1", lease_seconds=LEASE), owed=["c@example.com"])
    ledger.release(ledger.claim("n1", lease_seconds=LEASE, replay=True))
    assert ledger.claim("n1", lease_seconds=LEASE).status is ClaimStatus.DEAD
    replay = ledger.claim("n1", lease_seconds=LEASE, replay=True)
    assert (replay.status, replay.owed) == (ClaimStatus.CLAIMED, frozenset({"c@example.com"}))


def test_a_ledger_file_from_before_owed_lists_is_upgraded_and_its_records_read_as_before(tmp_path):
    import sqlite3

    path = tmp_path / "ledger.sqlite3"
    with sqlite3.connect(path) as db:  # the schema without the owed column, and a whole-message dead letter
        db.execute(
            "CREATE TABLE ledger (notification_id TEXT PRIMARY KEY, state TEXT NOT NULL, token TEXT NOT NULL,"
            " lease_until REAL NOT NULL, message_id TEXT NOT NULL DEFAULT '', updated REAL NOT NULL)"
        )
        db.execute("INSERT INTO ledger VALUES ('n1', 'dead', 't', 0, '', 0)")
    db.close()
    ledger = SqliteLedger(path)
    assert ledger.claim("n1", lease_seconds=LEASE).status is ClaimStatus.DEAD
    replay = ledger.claim("n1", lease_seconds=LEASE, replay=True)
    assert (replay.status, replay.owed) == (ClaimStatus.CLAIMED, None)
    ledger.mark_dead(replay, owed=["c@example.com"])
    assert ledger.claim("n1", lease_seconds=LEASE, replay=True).owed == frozenset({"c@example.com"})
