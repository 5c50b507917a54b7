"""Digests in-process: which runs are due (notifier/digest.py), and the flush that claims, sends,
records and removes them (notifier/flush.py), with the memory store and ledger and a recording backend."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from notifier.batching import Batching
from notifier.digest import FLUSH_GRACE_SECONDS, Group, HeldEntry, claim_id, due_runs
from notifier.flush import BUSY, PARKED, Flusher
from notifier.ledger import ClaimStatus, LedgerError
from notifier.ledger.digests import MemoryDigestStore
from notifier.ledger.history import MemoryHistory
from notifier.ledger.local import LocalDeadLetters
from notifier.ledger.memory import MemoryLedger
from notifier.mail.base import Backend, DeliveryError, Message, Receipt
from notifier.outcomes import BATCHED, DEAD_LETTERED, DUPLICATE, REFUSED, RETRYING, SENT
from notifier.pipeline import Pipeline
from notifier.render import Renderer
from tests.conftest import settings_for, storage_cloud_event

T0 = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)  # a window start for "1m" and "1h" alike
W0 = int(T0.timestamp())
MINUTE = 60

RULES = """
[[rules]]
name = "burst"
buckets = ["burst"]
to = ["ops@example.com"]
digest = "1m"
digest_max_wait = "3m"

[[rules]]
name = "capped"
buckets = ["capped"]
to = ["ops@example.com"]
max_emails = "2/h"
"""


# --- planning: due_runs and its chains ---------------------------------------------------------

GROUP = Group("0" * 24, "burst")
DIGEST = Batching.digest(MINUTE, 3 * MINUTE)


def _entries(*windows: int, group: Group = GROUP) -> list[HeldEntry]:
    return [HeldEntry(group, w, f"id-{w}-{i}", "finalize", "burst", f"f/{w}-{i}") for i, w in enumerate(windows)]


def _runs(windows: list[int], now: float, batching: Batching = DIGEST, **options: bool) -> list[tuple[int, ...]]:
    return [run.windows for run in due_runs(_entries(*windows), {"burst": batching}, now, **options)]


def test_consecutive_busy_windows_are_one_run_and_a_gap_starts_another():
    windows = [W0, W0 + MINUTE, W0 + MINUTE, W0 + 3 * MINUTE]
    now = W0 + 4 * MINUTE + FLUSH_GRACE_SECONDS
    assert _runs(windows, now) == [(W0, W0 + MINUTE), (W0 + 3 * MINUTE,)]
    (run, _) = due_runs(_entries(*windows), {"burst": DIGEST}, now)
    assert len(run.entries) == 3 and run.end == T0 + timedelta(minutes=2)


def test_a_run_waits_for_the_grace_after_the_window_after_it_begins():
    assert _runs([W0], W0 + MINUTE + FLUSH_GRACE_SECONDS - 1) == []
    assert _runs([W0], W0 + MINUTE + FLUSH_GRACE_SECONDS) == [(W0,)]


def test_inflow_that_goes_on_is_cut_at_max_wait_without_the_open_window():
    busy = [W0, W0 + MINUTE, W0 + 2 * MINUTE]  # the third is still open at each `now` below
    assert _runs(busy, W0 + 2 * MINUTE + FLUSH_GRACE_SECONDS) == [], "before max_wait each window pushes it back"
    assert _runs(busy, W0 + 3 * MINUTE) == [(W0, W0 + MINUTE)]


def test_everything_takes_open_windows_too_and_other_rules_are_left_alone():
    assert _runs([W0, W0 + MINUTE], W0 + 1, everything=True) == [(W0, W0 + MINUTE)]
    assert due_runs(_entries(W0), {"other": DIGEST}, W0 + 3600, everything=True) == []


def test_an_event_dated_days_ahead_is_sent_at_the_next_flush_not_held_until_then():
    """A forged or broken clock's time must not park an event for years ("no silent drop, ever");
    a few minutes of skew still waits as usual."""
    assert _runs([W0 + 2 * MINUTE], W0) == []
    assert _runs([W0 + 30 * 86400], W0) == [(W0 + 30 * 86400,)]


def test_a_capped_rules_windows_are_never_merged():
    capped = Batching.capped(5, 3600)
    hours = [W0, W0 + 3600]
    assert _runs(hours, W0 + 7200 + FLUSH_GRACE_SECONDS, capped) == [(W0,), (W0 + 3600,)]


# --- the flush ----------------------------------------------------------------------------------


class RecordingBackend(Backend):
    """Records each message; answers with the next scripted exception, else a receipt."""

    name = "recording"

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.failures: list[Exception] = []
        self.during_send = lambda: None

    def send(self, message: Message, *, deadline: float = 0.0) -> Receipt:
        self.during_send()
        if self.failures:
            raise self.failures.pop(0)
        self.sent.append(message)
        return Receipt(self.name, f"msg-{len(self.sent)}")


class CountingRenderer(Renderer):
    """The real renderer for single emails; a digest that lists its entries' ids (what it says
    in words is templates/digest/'s business, tested with the renderer)."""

    def render_digest(self, rule, run, entries, notification_id):
        recipients = rule.delivery.recipients
        ids = sorted(e.notification_id for e in entries)
        return Message(
            sender=recipients.sender, envelopes=recipients.envelopes(), subject=f"{len(entries)} new objects",
            text="\n".join(ids) + "\n", html="", notification_id=notification_id, categories=("digest",),
        )  # fmt: skip


class World:
    """One pipeline with memory state (its history too: a ledger in memory keeps none by itself) and a
    flusher whose clock the test sets."""

    def __init__(self, tmp_path: Path, rules: str = RULES) -> None:
        config = tmp_path / "notify.toml"
        config.write_text(rules, encoding="utf-8")
        settings = settings_for(NOTIFY_CONFIG=str(config))
        self.backend, self.store, self.ledger = RecordingBackend(), MemoryDigestStore(), MemoryLedger()
        self.dead_letters = LocalDeadLetters(tmp_path / "deadletters")
        self.pipeline = Pipeline(
            settings, backend=self.backend, renderer=CountingRenderer.for_settings(settings), ledger=self.ledger,
            dead_letters=self.dead_letters, digests=self.store, history=MemoryHistory(),
        )  # fmt: skip
        self.pipeline.sleep = lambda _seconds: None
        self.now = float(W0)

    def event(self, number: int, *, bucket: str = "burst", at: datetime = T0) -> list[str]:
        """Deliver object ``number``'s upload (the same generation on every delivery); the outcomes."""
        stamp = at.isoformat().replace("+00:00", "Z")
        cloud_event = storage_cloud_event(
            bucket=bucket, name=f"in/{number}.csv", event_id=f"evt-{number}-{len(self.backend.sent)}",
            generation=str(1000 + number), updated=stamp,
        )  # fmt: skip
        return [o.outcome for o in self.pipeline.handle(cloud_event)]

    def flush(self, *, at: float | None = None, everything: bool = False, replay: bool = False):
        clock = self.now if at is None else at
        return Flusher(self.pipeline, self.store, clock=lambda: clock).flush(everything=everything, replay=replay)

    def held(self) -> list[HeldEntry]:
        return list(self.store.pending().entries)

    def group(self) -> Group:
        (group,) = {e.group for e in self.held()}
        return group


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def _outcomes(results) -> list[tuple[str, int]]:
    return [(r.outcome, r.events) for r in results]


def test_two_windows_in_a_row_go_out_as_one_digest_and_the_store_is_emptied(world):
    assert [world.event(i, at=T0 + timedelta(seconds=20 * i)) for i in range(5)] == [[BATCHED]] * 5  # 0-80 s
    assert world.flush(at=W0 + 2 * MINUTE + FLUSH_GRACE_SECONDS - 1) == [], "in the grace after the run"
    (result,) = world.flush(at=W0 + 2 * MINUTE + FLUSH_GRACE_SECONDS)
    assert (result.outcome, result.events, result.windows) == (SENT, 5, (W0, W0 + MINUTE))
    (message,) = world.backend.sent
    assert message.subject == "5 new objects" and result.message_id == "msg-1"
    assert world.held() == []
    assert world.flush(everything=True) == [] and len(world.backend.sent) == 1


def test_redeliveries_before_and_after_the_flush_add_nothing(world):
    for i in range(3):
        world.event(i)
    assert world.event(1) == [DUPLICATE], "a redelivery while it is held"
    world.flush(everything=True)
    assert world.event(0) == [BATCHED] and world.event(2) == [BATCHED], "held again: its entry was removed"
    (result,) = world.flush(everything=True)
    assert (result.outcome, result.events) == (DUPLICATE, 0)
    assert len(world.backend.sent) == 1 and world.held() == [], "dropped as the duplicates they are"


def test_events_after_a_windows_digest_went_out_are_its_next_part(world):
    for i in range(3):
        world.event(i)
    world.flush(everything=True)
    for i in (0, 3, 4):  # one redelivery, two late events of the same window
        world.event(i, at=T0 + timedelta(seconds=50))
    group, ids = world.group(), {e.name: e.notification_id for e in world.held()}
    (result,) = world.flush(everything=True)
    assert (result.outcome, result.events) == (SENT, 2)
    first, second = world.backend.sent
    assert second.text.split() == sorted([ids["in/3.csv"], ids["in/4.csv"]]), "not the redelivery of in/0.csv"
    assert first.notification_id != second.notification_id
    assert world.ledger.claim(claim_id(group, W0, 2), lease_seconds=60).status is ClaimStatus.SENT
    assert world.held() == []


def test_one_held_event_is_the_ordinary_email_under_its_own_id(world):
    world.event(7)
    (entry,) = world.held()
    (result,) = world.flush(everything=True)
    (message,) = world.backend.sent
    assert (result.outcome, result.events) == (SENT, 1)
    assert message.notification_id == entry.notification_id
    assert "in/7.csv" in message.subject and message.subject != "1 new objects"


def test_a_claim_another_flush_holds_leaves_the_run_alone(world):
    for i in range(2):
        world.event(i)
    world.ledger.claim(claim_id(world.group(), W0, 1), lease_seconds=60)
    (result,) = world.flush(everything=True)
    assert result.outcome == BUSY and world.backend.sent == [] and len(world.held()) == 2


def test_a_transient_failure_releases_the_claims_and_the_next_flush_sends_it(world):
    for i in range(2):
        world.event(i, at=T0 + timedelta(minutes=i))  # two windows, two claims
    world.backend.failures.append(DeliveryError("try later", transient=True, status=503))
    (result,) = world.flush(everything=True)
    assert (result.outcome, result.events) == (RETRYING, 2) and len(world.held()) == 2
    for window in (W0, W0 + MINUTE):  # both claims were released
        claim = world.ledger.claim(claim_id(world.group(), window, 1), lease_seconds=60)
        assert claim.status is ClaimStatus.CLAIMED
        world.ledger.release(claim)
    (retried,) = world.flush(everything=True)
    assert (retried.outcome, retried.events) == (SENT, 2) and len(world.backend.sent) == 1


def test_a_permanent_failure_is_dead_lettered_and_its_entries_stay_held_until_replay(world):
    for i in range(2):
        world.event(i)
    world.backend.failures.append(DeliveryError("mailbox unknown", transient=False, status=400))
    (result,) = world.flush(everything=True)
    assert (result.outcome, result.events) == (DEAD_LETTERED, 2)
    (letter,) = list(world.dead_letters.list())
    assert letter.record["digest"]["events"] == 2 and letter.record["digest"]["group"] == world.group().key
    assert len(world.held()) == 2
    assert world.ledger.claim(claim_id(world.group(), W0, 1), lease_seconds=60).status is ClaimStatus.DEAD
    (parked,) = world.flush(everything=True)
    assert parked.outcome == PARKED and world.backend.sent == []
    (replayed,) = world.flush(everything=True, replay=True)
    assert (replayed.outcome, replayed.events) == (SENT, 2) and world.held() == []


def test_entries_of_a_rule_that_lost_its_digest_are_kept_and_reported(world, tmp_path):
    for i in range(3):
        world.event(i)
    rules_without_digest = RULES.replace('digest = "1m"\ndigest_max_wait = "3m"\n', "")
    (tmp_path / "later").mkdir()
    later = World(tmp_path / "later", rules_without_digest)
    later.store = world.store  # the same held entries, read by a deployment with the new rules
    (result,) = later.flush(everything=True)
    assert (result.outcome, result.events) == (REFUSED, 3) and "burst" in result.detail
    assert len(world.held()) == 3 and later.backend.sent == []


def test_two_flushes_at_once_send_one_email(world):
    for i in range(4):
        world.event(i)
    second: list = []
    world.backend.during_send = lambda: second.append(world.flush(everything=True))  # while the first sends
    (first,) = world.flush(everything=True)
    ((other,),) = second
    assert first.outcome == SENT and other.outcome == BUSY
    assert len(world.backend.sent) == 1 and world.held() == []


def test_two_flush_threads_started_together_send_one_email(world):
    for i in range(4):
        world.event(i)
    start = threading.Barrier(2)
    results: list = []

    def flush() -> None:
        start.wait(timeout=10)
        results.extend(world.flush(everything=True))

    threads = [threading.Thread(target=flush) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(world.backend.sent) == 1 and world.held() == []
    # The second flush finds the window claimed (busy), or already sent and recorded (duplicate: it
    # listed the entries before the first removed them), or nothing left to send.
    assert sorted(r.outcome for r in results) in ([BUSY, SENT], [DUPLICATE, SENT], [SENT]), results


def test_a_cap_sends_the_first_events_alone_and_holds_the_rest_for_the_hours_digest(world):
    outcomes = [world.event(i, bucket="capped", at=T0 + timedelta(minutes=i)) for i in range(5)]
    assert outcomes == [[SENT], [SENT], [BATCHED], [BATCHED], [BATCHED]]
    assert world.event(0, bucket="capped") == [DUPLICATE], "a redelivery of a single email keeps its slot"
    assert world.flush(at=W0 + 3600 + FLUSH_GRACE_SECONDS - 1) == []
    (result,) = world.flush(at=W0 + 3600 + FLUSH_GRACE_SECONDS)
    assert (result.outcome, result.events) == (SENT, 3)
    assert [m.subject for m in world.backend.sent][-1] == "3 new objects" and len(world.backend.sent) == 3


def test_a_busy_later_window_releases_the_earlier_claim_of_the_run(world):
    for i in range(2):
        world.event(i, at=T0 + timedelta(minutes=i))  # windows W0 and W0 + 1 min: one run
    group = world.group()
    world.ledger.claim(claim_id(group, W0 + MINUTE, 1), lease_seconds=60)
    (result,) = world.flush(everything=True)
    assert result.outcome == BUSY and world.backend.sent == []
    assert world.ledger.claim(claim_id(group, W0, 1), lease_seconds=60).status is ClaimStatus.CLAIMED


def test_entries_left_by_a_failed_removal_are_dropped_by_the_next_flush_not_sent_again(world, monkeypatch):
    for i in range(3):
        world.event(i)
    remove = world.store.remove

    def fail_once(entries) -> None:
        monkeypatch.setattr(world.store, "remove", remove)
        raise LedgerError("state bucket unavailable")

    monkeypatch.setattr(world.store, "remove", fail_once)
    (result,) = world.flush(everything=True)
    assert (result.outcome, result.events) == (SENT, 3) and len(world.held()) == 3
    (again,) = world.flush(everything=True)
    assert (again.outcome, again.events) == (DUPLICATE, 0)
    assert len(world.backend.sent) == 1 and world.held() == []


def test_a_ledger_that_fails_mid_run_leaves_the_run_to_the_next_flush(world, monkeypatch):
    for i in range(2):
        world.event(i, at=T0 + timedelta(minutes=i))
    claim = world.ledger.claim
    calls: list[str] = []

    def second_claim_fails(notification_id: str, **options):
        calls.append(notification_id)
        if len(calls) == 2:
            raise LedgerError("state bucket unavailable")
        return claim(notification_id, **options)

    monkeypatch.setattr(world.ledger, "claim", second_claim_fails)
    (result,) = world.flush(everything=True)
    assert result.outcome == RETRYING and world.backend.sent == [] and len(world.held()) == 2
    monkeypatch.setattr(world.ledger, "claim", claim)
    (retried,) = world.flush(everything=True)
    assert (retried.outcome, retried.events) == (SENT, 2)


def test_the_scheduled_flush_still_reports_what_is_held_once_no_rule_has_a_digest(tmp_path):
    """Pipeline.flush is what flush_digests runs: with every digest removed from the rules, what the
    ledger's store still holds is reported, not left silently."""
    from notifier.ledger.sqlite import SqliteLedger

    ledger = SqliteLedger(tmp_path / "ledger.sqlite3")
    (tmp_path / "before").mkdir()
    before = World(tmp_path / "before")
    before.pipeline = Pipeline(
        before.pipeline.settings, backend=before.backend, ledger=ledger, dead_letters=before.dead_letters
    )
    assert before.event(1) == [BATCHED]
    config = tmp_path / "after.toml"
    without = RULES.replace('digest = "1m"\ndigest_max_wait = "3m"\n', "").replace('max_emails = "2/h"\n', "")
    config.write_text(without, encoding="utf-8")
    after = Pipeline(
        settings_for(NOTIFY_CONFIG=str(config)), backend=RecordingBackend(), ledger=ledger,
        dead_letters=LocalDeadLetters(tmp_path / "deadletters"),
    )  # fmt: skip
    assert after.holding is None
    (result,) = after.flush(everything=True)
    assert (result.outcome, result.events) == (REFUSED, 1) and "burst" in result.detail
