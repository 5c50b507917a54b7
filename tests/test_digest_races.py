"""The flush's claims and records under races and partial failures (notifier/flush.py): a lease
that runs out mid-send, a mark that fails, a passing store error, a dead window in a run, a
window with many late parts; and what Holding.hold does with an event that has no usable time."""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest

from notifier.digest import claim_id
from notifier.flush import BUSY, MAX_PARTS, PARKED
from notifier.ledger import LedgerError
from notifier.ledger.memory import MemoryLedger
from notifier.mail.base import DeliveryError
from notifier.outcomes import BATCHED, DEAD_LETTERED, DUPLICATE, RETRYING, SENT
from tests.conftest import storage_cloud_event
from tests.test_digest_flush import T0, W0, World
from tests.test_digest_stores import GROUP, WINDOW, _id, make_store  # noqa: F401 - make_store: a fixture


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def world(tmp_path: Path) -> World:
    """A World whose ledger leases run on a clock the test moves."""
    world = World(tmp_path)
    world.lease_clock = Clock()
    world.ledger = world.pipeline.ledger = MemoryLedger(clock=world.lease_clock)
    return world


# --- 1. a part's record is never overwritten, and a recorded part is never sent again -----------


def test_a_flush_whose_lease_ran_out_mid_send_does_not_shrink_the_record_of_the_flush_that_took_over(world):
    world.event(0), world.event(1)
    taken_over: list = []
    fired: list[bool] = []

    def lease_runs_out_while_sending() -> None:
        if fired:
            return
        fired.append(True)
        world.lease_clock.now += 10 * world.pipeline.settings.lease_seconds
        world.event(2, at=T0 + timedelta(seconds=40))  # a late event of the same window
        taken_over.extend(world.flush(everything=True))

    world.backend.during_send = lease_runs_out_while_sending
    world.flush(everything=True)
    assert [(r.outcome, r.events) for r in taken_over] == [(SENT, 3)]
    first, second = world.backend.sent
    assert first.notification_id != second.notification_id, "two different digests, two Message-IDs"
    assert world.event(2, at=T0 + timedelta(seconds=40)) == [BATCHED]
    (result,) = world.flush(everything=True)
    assert (result.outcome, len(world.backend.sent)) == (DUPLICATE, 2), "event 2 went out once"


def test_a_failed_mark_keeps_the_entries_and_the_next_flush_finds_the_part_recorded(world):
    world.event(0), world.event(1)
    mark_sent = world.ledger.mark_sent

    def unavailable(claim, message_id):
        raise LedgerError("state bucket unavailable")

    world.ledger.mark_sent = unavailable
    (result,) = world.flush(everything=True)
    assert result.outcome == SENT and len(world.held()) == 2, "kept: nothing says they were sent but the record"
    world.ledger.mark_sent = mark_sent
    world.lease_clock.now += 10 * world.pipeline.settings.lease_seconds
    world.event(2, at=T0 + timedelta(seconds=40))
    (result,) = world.flush(everything=True)
    assert (result.outcome, result.events) == (SENT, 1), "only the late event: the others were recorded"
    assert world.event(0) == [BATCHED]
    world.flush(everything=True)
    first, second = (m.subject for m in world.backend.sent)
    assert first == "2 new objects" and "in/2.csv" in second and world.held() == []


def test_a_recorded_part_is_marked_sent_and_its_ids_dropped_without_a_send(world):
    """A crash between record_included and mark_sent: the next claim finds the record."""
    world.event(0), world.event(1)
    (entry, *_) = world.held()
    world.store.record_included(entry.group, entry.window, 1, [e.notification_id for e in world.held()])
    (result,) = world.flush(everything=True)
    assert (result.outcome, world.backend.sent, world.held()) == (DUPLICATE, [], [])


def test_included_records_merge_and_never_shrink(make_store):  # noqa: F811 - the fixture
    store = make_store()
    store.record_included(GROUP, WINDOW, 1, [_id(1), _id(2)])
    store.record_included(GROUP, WINDOW, 1, [_id(2), _id(3)])
    store.record_included(GROUP, WINDOW, 1, [_id(1)])
    assert make_store().included(GROUP, WINDOW, 1) == {_id(1), _id(2), _id(3)}


def test_included_records_racing_from_many_instances_keep_every_id(make_store):  # noqa: F811 - the fixture
    def record(worker: int) -> None:
        make_store().record_included(GROUP, WINDOW, 2, [_id(100 + worker)])

    with ThreadPoolExecutor(max_workers=6) as pool:
        list(pool.map(record, range(6)))
    assert make_store().included(GROUP, WINDOW, 2) == {_id(100 + w) for w in range(6)}


# --- 2. a passing store error is retried, not dead-lettered ------------------------------------


def test_a_passing_error_reading_a_held_event_is_retried_not_dead_lettered(world):
    world.event(0)
    read = world.store.event

    def unavailable_once(entry):
        world.store.event = read
        raise LedgerError("state bucket: 503 Service Unavailable")

    world.store.event = unavailable_once
    (result,) = world.flush(everything=True)
    assert (result.outcome, list(world.dead_letters.list())) == (RETRYING, [])
    (result,) = world.flush(everything=True)
    assert (result.outcome, len(world.backend.sent), world.held()) == (SENT, 1, [])


# --- 3. a dead window parks itself only ---------------------------------------------------------


def test_a_dead_lettered_window_parks_only_itself_and_the_windows_after_it_go_out(world):
    world.event(0), world.event(1)
    world.backend.failures.append(DeliveryError("bad request", transient=False, status=400))
    (result,) = world.flush(at=W0 + 90)
    assert result.outcome == DEAD_LETTERED
    for minute in (1, 2):
        world.event(10 + minute, at=T0 + timedelta(minutes=minute, seconds=5))
    results = world.flush(at=W0 + 3 * 60 + 95)
    assert [(r.outcome, r.events) for r in results] == [(SENT, 2)]
    assert len(world.held()) == 2, "the dead window's entries stay held for replay"
    assert [(r.outcome, r.events) for r in world.flush(everything=True, replay=True)] == [(SENT, 2)]
    assert world.held() == []


# --- 4. a window is never refused for its parts; every line says how many are held --------------


def test_a_window_past_its_parts_limit_sends_the_rest_and_never_refuses(world):
    for number in range(MAX_PARTS + 3):
        world.event(number, at=T0 + timedelta(seconds=30))
        world.flush(at=W0 + 120 + number * 60)
    assert world.held() == [] and len(world.backend.sent) == MAX_PARTS + 3
    assert world.event(MAX_PARTS + 1, at=T0 + timedelta(seconds=30)) == [BATCHED]
    (result,) = world.flush(everything=True)
    assert (result.outcome, len(world.backend.sent)) == (DUPLICATE, MAX_PARTS + 3), "a redelivery past the limit"


def test_a_busy_runs_line_says_how_many_events_are_held(world, caplog):
    world.event(0), world.event(1)
    (entry, *_) = world.held()
    world.ledger.claim(claim_id(entry.group, entry.window, 1), lease_seconds=60)
    with caplog.at_level(logging.INFO):
        (result,) = world.flush(everything=True)
    assert (result.outcome, result.events) == (BUSY, 2)
    assert "2 event(s)" in result.line()


# --- 6, 7. an event without a usable time is not held ------------------------------------------


def _undated(world: World, **times: str) -> list[str]:
    event = storage_cloud_event(bucket="burst", name="in/x.csv", event_id="evt-x", generation="5")
    for key in ("updated", "timeCreated"):
        event.data.pop(key, None)
    event.data.update(times)
    del event["time"]
    return [o.outcome for o in world.pipeline.handle(event)]


@pytest.mark.parametrize("times", [{}, {"updated": "1969-07-20T20:17:40Z"}, {"timeCreated": "1999-12-31T23:59:59Z"}])
def test_an_event_without_a_usable_time_goes_out_at_once_and_once(world, times):
    assert _undated(world, **times) == [SENT]
    assert world.held() == []
    assert _undated(world, **times) == [DUPLICATE], "a redelivery, whenever it comes: the ledger dedups it"
    assert len(world.backend.sent) == 1


def test_the_parked_outcome_is_what_a_dead_window_alone_gives(world):
    world.event(0)
    world.backend.failures.append(DeliveryError("bad request", transient=False, status=400))
    world.flush(everything=True)
    (result,) = world.flush(everything=True)
    assert (result.outcome, result.events) == (PARKED, 1)
