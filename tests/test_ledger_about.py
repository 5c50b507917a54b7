"""A claim's ``about``: what the state bucket's history needs to find a notification's Sending from
its ledger record (notifier/ledger/gcs_history.py). The state-bucket ledger keeps it in the record
through every later write of it (sent, dead, a replay's release, a takeover); a record without one
(older records, digest window claims) still works; memory and SQLite accept it and ignore it. And
the pipeline's claim passes it, so that a sent notification costs one history upload."""

from __future__ import annotations

import os
import time

import pytest

from notifier.ledger import ClaimStatus
from notifier.ledger.gcs import GcsDeadLetters, GcsLedger
from notifier.ledger.history import object_key, sending_about
from notifier.ledger.memory import MemoryLedger
from notifier.ledger.sqlite import SqliteLedger
from notifier.mail.base import Receipt
from tests.fake_gcs_server import STATE_BUCKET
from tests.test_history_recording import _event, _pipeline
from tests.test_ledger import LEASE, Clock, _bucket

ID = "0" * 31 + "1"
ABOUT = {"object_key": "ab" * 16, "generation": "42"}


@pytest.fixture
def gcs(fake_gcs):
    clock = Clock()
    return GcsLedger(_bucket(), clock=clock), clock, fake_gcs


def _stored(fake_gcs, notification_id: str = ID) -> dict:
    return fake_gcs.read_json(STATE_BUCKET, f"ledger/{notification_id}")


def test_the_claim_record_keeps_about_and_the_claim_carries_it(gcs):
    ledger, _, fake_gcs = gcs
    claim = ledger.claim(ID, lease_seconds=LEASE, about=ABOUT)
    assert claim.status is ClaimStatus.CLAIMED and claim.about == ABOUT
    assert _stored(fake_gcs)["about"] == ABOUT


@pytest.mark.parametrize("finish", ["sent", "dead", "dead with owed", "replay released"])
def test_about_is_kept_through_every_later_write_of_the_record(gcs, finish):
    ledger, _, fake_gcs = gcs
    claim = ledger.claim(ID, lease_seconds=LEASE, about=ABOUT)
    if finish == "sent":
        ledger.mark_sent(claim, "sg-1")
    elif finish == "dead":
        ledger.mark_dead(claim)
    else:
        ledger.mark_dead(claim, ["bob@example.com"])
        if finish == "replay released":  # a replay's claim on a partial send, released: dead again
            replay = ledger.claim(ID, lease_seconds=LEASE, replay=True, about=ABOUT)
            assert replay.status is ClaimStatus.CLAIMED and replay.owed == {"bob@example.com"}
            ledger.release(replay)
    stored = _stored(fake_gcs)
    assert stored["state"] == ("sent" if finish == "sent" else "dead") and stored["about"] == ABOUT


def test_a_takeover_of_an_expired_lease_keeps_about(gcs):
    ledger, clock, fake_gcs = gcs
    ledger.claim(ID, lease_seconds=LEASE, about=ABOUT)
    clock.now += 2 * LEASE
    taken = ledger.claim(ID, lease_seconds=LEASE)  # a claimer that did not say: the record's is kept
    assert taken.status is ClaimStatus.CLAIMED and taken.about == ABOUT and _stored(fake_gcs)["about"] == ABOUT
    ledger.mark_sent(taken, "sg-2")
    assert _stored(fake_gcs)["about"] == ABOUT


def test_a_takeover_by_a_claimer_that_says_about_writes_its_own(gcs):
    ledger, clock, fake_gcs = gcs
    ledger.claim(ID, lease_seconds=LEASE)  # an older record: no about
    clock.now += 2 * LEASE
    newer = {"object_key": "cd" * 16, "generation": "43"}
    taken = ledger.claim(ID, lease_seconds=LEASE, about=newer)
    assert taken.about == newer and _stored(fake_gcs)["about"] == newer


def test_a_record_without_about_works_as_before(gcs):
    ledger, _, fake_gcs = gcs
    claim = ledger.claim(ID, lease_seconds=LEASE)
    assert claim.about is None and "about" not in _stored(fake_gcs)
    ledger.mark_dead(claim, ["bob@example.com"])
    replay = ledger.claim(ID, lease_seconds=LEASE, replay=True)
    ledger.mark_sent(replay, "sg-3")
    assert _stored(fake_gcs) == {"state": "sent", "token": replay.token, "message_id": "sg-3"}
    assert ledger.lookup(ID) == {"state": "sent", "message_id": "sg-3"}, "lookup tells what it told before"


def test_a_planted_about_is_not_kept_by_a_takeover(gcs):
    ledger, _, fake_gcs = gcs
    fake_gcs.put(STATE_BUCKET, f"ledger/{ID}", b'{"state": "claimed", "lease_until": 0, "about": ["x"]}')
    taken = ledger.claim(ID, lease_seconds=LEASE)
    assert taken.about is None and "about" not in _stored(fake_gcs)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_memory_and_sqlite_accept_about_and_ignore_it(kind, tmp_path):
    ledger = MemoryLedger() if kind == "memory" else SqliteLedger(tmp_path / "ledger.sqlite3")
    claim = ledger.claim(ID, lease_seconds=LEASE, about=ABOUT)
    assert claim.status is ClaimStatus.CLAIMED
    ledger.mark_sent(claim, "sg-1")
    assert ledger.claim(ID, lease_seconds=LEASE, about=ABOUT).status is ClaimStatus.SENT
    assert "about" not in ledger.lookup(ID)


def test_sending_about_names_the_objects_key_and_generation():
    assert sending_about("acme", "reports/q3.csv", 42) == {"object_key": object_key("acme", "reports/q3.csv"),
                                                            "generation": "42"}  # fmt: skip
    assert sending_about("acme", "x", None)["generation"] == "0"


def test_the_pipelines_sent_notification_is_one_history_upload_found_by_id(fake_gcs):
    """The deployed path: the claim record says where the marker is; the marker is the Sending."""
    from notifier.ledger.bucket import StateBucket

    bucket = StateBucket(STATE_BUCKET, os.environ["STORAGE_EMULATOR_HOST"], retry_budget=0.0)
    state = {"ledger": GcsLedger(bucket), "dead_letters": GcsDeadLetters(bucket)}
    pipeline, _ = _pipeline(Receipt("scripted", "sg-1"), clock=time.monotonic, **state)
    pipeline.history  # made before the event: its requests are not the event's  # noqa: B018
    del fake_gcs.requests[:]
    (outcome,) = pipeline.handle(_event())
    history_writes = [r for r in fake_gcs.requests if r.method == "POST" and r.object_name.startswith("history/")]
    assert len(history_writes) == 1, [r.object_name for r in history_writes]
    assert fake_gcs.names(STATE_BUCKET, "history/ids/") == []
    about = _stored(fake_gcs, outcome.notification_id)["about"]
    assert about == {"object_key": object_key("acme", "reports/q3.csv"), "generation": "42"}
    found = pipeline.history.by_id(outcome.notification_id)
    assert found is not None and (found.outcome, found.message_id) == ("sent", "sg-1")


def test_finding_an_id_reads_its_ledger_record_once(gcs):
    """The webhook's question (is this id ours, and whose?): one read of the ledger record, which
    also says where the marker is; a claim whose sending is not written yet is ours too."""
    from notifier.ledger.gcs_history import GcsHistory

    ledger, _, fake_gcs = gcs
    history = GcsHistory(_bucket())
    other = "0" * 31 + "2"
    ledger.claim(ID, lease_seconds=LEASE, about=ABOUT)

    def reads() -> list[str]:
        done = [r.object_name for r in fake_gcs.requests if r.method == "GET"]
        del fake_gcs.requests[:]
        return done

    del fake_gcs.requests[:]
    assert history.find(ID, ledger) == (None, True)  # a claim before its sending is recorded
    assert [name for name in reads() if name.startswith("ledger/")] == [f"ledger/{ID}"]
    assert history.find(other, ledger) == (None, False)
    assert reads() == [f"ledger/{other}", f"history/ids/{other}"], "an unknown id: two reads"


def test_a_dead_letter_stays_found_by_id_after_a_replay_whose_release_deleted_its_record(fake_gcs):
    """A replay that takes over the dead record and fails before any attempt releases it (the record
    is deleted): the dead letter's Sending is kept by id too, so `status --id` still finds it."""
    from notifier.ledger.bucket import StateBucket
    from notifier.ledger.gcs_history import GcsHistory
    from notifier.mail.base import DeliveryError

    bucket = StateBucket(STATE_BUCKET, os.environ["STORAGE_EMULATOR_HOST"], retry_budget=0.0)
    dead_letters = GcsDeadLetters(bucket)
    pipeline, _ = _pipeline(
        DeliveryError("from.email: invalid", transient=False, status=400, attempts=1),
        DeliveryError("no time left before the deadline to send", transient=True, attempts=0),
        clock=time.monotonic, ledger=GcsLedger(bucket), dead_letters=dead_letters,
    )  # fmt: skip
    (outcome,) = pipeline.handle(_event())
    assert outcome.outcome == "dead-lettered"
    (letter,) = dead_letters.list()
    assert [o.outcome for o in pipeline.replay(letter)] == ["retrying"]
    assert fake_gcs.names(STATE_BUCKET, "ledger/") == []  # released: the record is gone
    found = GcsHistory(bucket).by_id(outcome.notification_id)
    assert found is not None and found.outcome == "dead-lettered"
