"""The ledger and dead letters in the state bucket: shared by every instance and deployment.

A claim is the object ``ledger/<notification-id>``, created with ``ifGenerationMatch=0``: an
atomic create-if-absent in Cloud Storage, so of two deliveries racing for the same notification
exactly one wins. Every later change names the generation it read, so an instance only ever
changes its own claim. The bucket is reached through its JSON API (:mod:`.bucket`), so no
google.* module is imported on an event's path.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator, Mapping
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from notifier.ledger.base import (
    Claim,
    ClaimStatus,
    DeadLetter,
    DeadLetters,
    Ledger,
    LedgerError,
    UnreadableLetter,
    before_send,
    decode_letter,
    encode_record,
    held_status,
    new_token,
    now_utc,
    owed_in,
    owed_record,
    too_large,
)
from notifier.ledger.bucket import Listed, StateBucket, StateBucketError

if TYPE_CHECKING:
    from notifier.config import Settings

LEDGER_PREFIX = "ledger/"
DEAD_LETTER_PREFIX = "deadletter/"
MAX_RECORD_BYTES = 64 * 1024  # a record is about 150 bytes; a larger one was planted, and is not read
LOOKED_UP = ("state", "message_id", "lease_until", "owed")  # of a record, what lookup tells (never the token)
MAX_ABOUT_FIELDS = 8  # a claim's about: object_key and generation today
LEDGER_TTL = timedelta(days=30)  # the hint on every record; a bucket lifecycle rule acts on it
# A dropped connection or timeout (OSError), or an error status: Cloud Storage's own, the
# misconfigured ones (403, missing bucket) included, each said in words by _ledger_error.
_FAILURES = (StateBucketError, OSError)


def state_bucket(settings: Settings, name: str | None = None) -> StateBucket:
    """The state bucket (or ``name``) where the settings say Cloud Storage is, with their token:
    fake-gcs-server (STORAGE_EMULATOR_HOST) if set, else NOTIFY_STORAGE_ENDPOINT."""
    from notifier.ledger.credentials import token_source

    endpoint = settings.storage_emulator_host or settings.storage_endpoint
    return StateBucket(name or settings.state_bucket or "", endpoint, token_source(settings))


class GcsLedger(Ledger):
    name = "gcs"

    def __init__(self, bucket: StateBucket, clock=time.time) -> None:
        self._bucket = bucket
        self._clock = clock

    @property
    def bucket(self) -> StateBucket:
        """The state bucket, which the digest store shares (one client, one token)."""
        return self._bucket

    def claim(
        self, notification_id: str, *, lease_seconds: float, replay: bool = False,
        about: Mapping[str, str] | None = None,
    ) -> Claim:  # fmt: skip
        # A timeout is a LedgerError: the platform redelivers. A create that went through although
        # its answer did not is our claim, left to expire with its lease (the redelivery is BUSY).
        try:
            return self._claim(notification_id, lease_seconds, replay, about)
        except _FAILURES as error:
            raise _ledger_error(self._bucket.name, error) from error

    def _claim(
        self, notification_id: str, lease_seconds: float, replay: bool, about: Mapping[str, str] | None
    ) -> Claim:
        name = LEDGER_PREFIX + notification_id
        token = new_token()
        record = {"state": "claimed", "token": token, "lease_until": self._clock() + lease_seconds, **_about(about)}
        for _ in range(3):  # create; or read what is there and maybe take it over
            # The writes that claim share the time the send does not need; reading what is there
            # may use the grace, since an email already sent or dead-lettered needs no send.
            with before_send():
                generation = self._write(name, record, if_generation_match=0)
            if generation is not None:
                return Claim(notification_id, ClaimStatus.CLAIMED, token=token, version=generation, about=about)
            existing = self._read(name)
            if existing is None:
                continue  # released between our two calls: start again
            generation, held = existing
            if held.get("token") == token:  # our own create, retried after a lost answer
                return Claim(notification_id, ClaimStatus.CLAIMED, token=token, version=generation, about=about)
            if (status := held_status({**held, "notification_id": notification_id}, self._clock(),
                                      replay=replay)) is not None:  # fmt: skip
                return status
            owed = owed_in(held)  # a replay's claim keeps who is owed it
            kept = about if about is not None else about_in(held)  # and, unless it says, what the record said
            with before_send():
                taken = _with_owed({**record, **_about(kept)}, owed)
                generation = self._write(name, taken, if_generation_match=generation)
            if generation is not None:  # took over an expired lease (or a dead letter, to replay)
                return Claim(notification_id, ClaimStatus.CLAIMED, token=token, version=generation, owed=owed,
                             about=kept)  # fmt: skip
            return Claim(notification_id, ClaimStatus.BUSY)  # someone else took it over first
        return Claim(notification_id, ClaimStatus.BUSY)

    def mark_sent(self, claim: Claim, message_id: str) -> None:
        self._replace(claim, {"state": "sent", "token": claim.token, "message_id": message_id, **_about(claim.about)})

    def mark_dead(self, claim: Claim, owed: Iterable[str] | None = None) -> None:
        self._replace(claim, _with_owed({"state": "dead", "token": claim.token, **_about(claim.about)}, owed))

    def release(self, claim: Claim) -> None:
        if claim.owed is not None:  # a replay's claim on a partial send: its record as it was
            self.mark_dead(claim, claim.owed)
            return
        try:
            self._bucket.delete(LEDGER_PREFIX + claim.notification_id, if_generation_match=claim.version)
        except StateBucketError as error:
            if error.status not in (404, 412) or error.bucket_missing:  # else: already gone, or no longer ours
                raise _ledger_error(self._bucket.name, error) from error
        except OSError as error:
            raise _ledger_error(self._bucket.name, error) from error

    def lookup(self, notification_id: str) -> dict[str, Any] | None:
        name = LEDGER_PREFIX + notification_id
        try:
            existing = self._read(name)
        except _FAILURES as error:
            raise _ledger_error(self._bucket.name, error) from error
        return None if existing is None else {k: v for k, v in existing[1].items() if k in LOOKED_UP}

    def _replace(self, claim: Claim, record: dict[str, Any]) -> None:
        try:  # None: taken over; nothing to do
            self._write(LEDGER_PREFIX + claim.notification_id, record, if_generation_match=claim.version)
        except _FAILURES as error:
            raise _ledger_error(self._bucket.name, error) from error

    def _read(self, name: str) -> tuple[int, dict[str, Any]] | None:
        return read_record(self._bucket, name)

    def _write(self, name: str, record: dict[str, Any], *, if_generation_match: int) -> int | None:
        """Upload ``record`` if the object is at that generation; its new generation, or None."""
        expires = (now_utc() + LEDGER_TTL).isoformat(timespec="seconds")
        return self._bucket.upload(
            name, json.dumps(record).encode(), metadata={"expires": expires}, if_generation_match=if_generation_match
        )


class GcsDeadLetters(DeadLetters):
    def __init__(self, bucket: StateBucket) -> None:
        self._bucket = bucket
        self.location = f"gs://{bucket.name}/{DEAD_LETTER_PREFIX}"

    def put(self, notification_id: str, record: dict[str, Any]) -> str:
        """Store the letter within the delivery's deadline; a timeout is a LedgerError, on which the
        pipeline logs the letter's summary at ERROR and answers so that the platform redelivers.
        Retrying the upload is safe: the same letter under the same name."""
        name = f"{DEAD_LETTER_PREFIX}{notification_id}.json"
        try:
            self._bucket.upload(name, encode_record({"created": now_utc().isoformat(), **record}).encode())
        except _FAILURES as error:
            raise _ledger_error(self._bucket.name, error) from error
        return f"gs://{self._bucket.name}/{name}"

    def list(self) -> Iterator[DeadLetter | UnreadableLetter]:
        """Every letter; if there were more objects than one listing reads, last an UnreadableLetter
        for the rest, so that the replay says so (and exits 1) instead of stopping silently."""
        listing = self._bucket.list(DEAD_LETTER_PREFIX)
        try:
            listed = list(listing)
        except _FAILURES as error:
            raise _ledger_error(self._bucket.name, error) from error
        for item in listed:
            if item.name.endswith(".json"):  # like the local folder: other objects are not letters
                letter = self._read(item)
                if letter is not None:
                    yield letter
        if listing.truncated:
            yield UnreadableLetter("", self.location, _unlisted(listing.count, listing.pages))

    def _read(self, item: Listed) -> DeadLetter | UnreadableLetter | None:
        """One letter, no larger than the limit; None if it was removed since the listing."""
        notification_id = item.name.removeprefix(DEAD_LETTER_PREFIX).removesuffix(".json")
        source = f"gs://{self._bucket.name}/{item.name}"
        if item.size is not None and item.size > self.max_bytes:
            return UnreadableLetter(notification_id, source, too_large(item.size, self.max_bytes))
        if item.content_encoding:  # Cloud Storage would decompress it on download: a small bomb, a huge letter
            return UnreadableLetter(notification_id, source, _encoded(item.content_encoding))
        try:  # the generation listed, as stored (never decompressed), and never more than one byte over
            stored = self._bucket.read(item.name, self.max_bytes, generation=item.generation or None)
        except _FAILURES as error:
            return UnreadableLetter(notification_id, source, f"cannot be read: {type(error).__name__}: {error}")
        if stored is None:
            return None  # removed (replayed by someone else) or replaced: the next run sees the new one
        if stored.content_encoding:
            return UnreadableLetter(notification_id, source, _encoded(stored.content_encoding))
        return decode_letter(notification_id, source, stored.data, self.max_bytes)

    def remove(self, notification_id: str) -> None:
        try:
            self._bucket.delete(f"{DEAD_LETTER_PREFIX}{notification_id}.json")
        except StateBucketError as error:
            if error.status != 404 or error.bucket_missing:
                raise _ledger_error(self._bucket.name, error) from error
        except OSError as error:
            raise _ledger_error(self._bucket.name, error) from error


def read_record(bucket: StateBucket, name: str) -> tuple[int, dict[str, Any]] | None:
    """The record and its generation, from one download; None if it is gone."""
    stored = bucket.read(name, MAX_RECORD_BYTES)
    if stored is None:
        return None
    if stored.content_encoding:  # planted: ours are tiny, plain JSON
        return stored.generation, {}
    return stored.generation, _record(stored.data)


def _unlisted(count: int, pages: int) -> str:
    return (f"only the first {count} objects were listed (one run lists at most {pages} pages):"
            " replay these, then run the replay again for the rest")  # fmt: skip


def _encoded(encoding: str) -> str:
    return f"stored with Content-Encoding {encoding[:40]!r}, which the function never writes"


def _record(data: bytes) -> dict[str, Any]:
    """A ledger record; an unreadable one counts as an expired claim, so it gets taken over."""
    if len(data) > MAX_RECORD_BYTES:
        return {}
    try:
        record = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    return record if isinstance(record, dict) else {}


def _about(about: Mapping[str, str] | None) -> dict[str, dict[str, str]]:
    """The ``about`` field of a record (a claim's, kept through its later writes), or nothing."""
    return {} if about is None else {"about": dict(about)}


def about_in(record: dict[str, Any]) -> dict[str, str] | None:
    """A record's ``about`` if it is a few short texts, as the function writes (it can be planted:
    :mod:`.gcs_history` checks each field before it names an object); else None."""
    about = record.get("about")
    if not isinstance(about, dict) or len(about) > MAX_ABOUT_FIELDS:
        return None
    if not all(isinstance(k, str) and isinstance(v, str) and len(k) + len(v) <= 200 for k, v in about.items()):
        return None
    return about


def _with_owed(record: dict[str, Any], owed: Iterable[str] | None) -> dict[str, Any]:
    """``record`` with who is still owed the email, if that fits in a record we read back (a few
    thousand addresses); a longer list is left out: the dead letter's own list narrows the replay."""
    with_owed = {**record, **owed_record(owed)}
    return with_owed if len(json.dumps(with_owed)) <= MAX_RECORD_BYTES else record


def _ledger_error(bucket: str, error: BaseException) -> LedgerError:
    """One message shape for every state-bucket failure; a missing bucket or permission says what to do."""
    if isinstance(error, StateBucketError) and error.bucket_missing:
        return LedgerError(
            f"NOTIFY_STATE_BUCKET: bucket {bucket!r} does not exist: create it with"
            f" deploy/setup.sh --state-bucket {bucket}",
            misconfigured=True,
        )
    if isinstance(error, StateBucketError) and error.status in (401, 403):
        return LedgerError(
            f"NOTIFY_STATE_BUCKET: the function's service account may not use gs://{bucket}: grant it"
            f" roles/storage.objectAdmin on the bucket (deploy/setup.sh --state-bucket {bucket}): {error}",
            misconfigured=True,
        )
    return LedgerError(f"state bucket {bucket}: {type(error).__name__}: {error}")
