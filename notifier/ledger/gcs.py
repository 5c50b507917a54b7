"""The ledger and dead letters in the state bucket: shared by every instance and deployment.

A claim is the object ``ledger/<notification-id>``, created with ``if_generation_match=0``: an
atomic create-if-absent in Cloud Storage, so of two deliveries racing for the same notification
exactly one wins. Every later change names the generation it read, so an instance only ever
changes its own claim. Cloud Storage is imported only when a state bucket is configured.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterable, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from google.api_core import exceptions as gexc
from google.api_core.retry import Retry
from google.auth import exceptions as auth_exceptions
from google.cloud import storage
from google.cloud.storage import retry as storage_retry

from notifier.ledger.base import (
    Claim,
    ClaimStatus,
    DeadLetter,
    DeadLetters,
    Ledger,
    LedgerError,
    UnreadableLetter,
    before_send,
    current_deadline,
    decode_letter,
    encode_record,
    held_status,
    new_token,
    now_utc,
    owed_in,
    owed_record,
    too_large,
)

if TYPE_CHECKING:
    from notifier.config import Settings

LEDGER_PREFIX = "ledger/"
DEAD_LETTER_PREFIX = "deadletter/"
MAX_RECORD_BYTES = 64 * 1024  # a record is about 150 bytes; a larger one was planted, and is not read
LEDGER_TTL = timedelta(days=30)  # the hint on every record; a bucket lifecycle rule acts on it
_TRANSIENT = (gexc.GoogleAPICallError, gexc.RetryError, auth_exceptions.TransportError, OSError)


def storage_client(settings: Settings) -> storage.Client:
    if settings.storage_emulator_host:  # tests, the sandbox and chaos runs against fake-gcs-server
        from google.auth.credentials import AnonymousCredentials

        return storage.Client(project="local", credentials=AnonymousCredentials())
    return storage.Client()


# The client retries conditional requests by itself; bound it well inside a delivery's deadline.
DEFAULT_RETRY = storage_retry.DEFAULT_RETRY.with_timeout(8.0)
REQUEST_TIMEOUT = 5.0  # the longest one request waits for its answer (the client's default is 60 s)


def call_options(retry: Retry | None, timeout: float = REQUEST_TIMEOUT, *, share: float = 1.0) -> dict[str, Any]:
    """``timeout`` and ``retry`` for one Cloud Storage call made now: the fixed limits (``timeout``
    a request, the retry's own budget), cut so that the call ends by the delivery's state deadline
    (:func:`current_deadline`) if one is set, using at most ``share`` of the time left. A retry
    starts only while a whole request still fits; with no time left, the call is not made."""
    until = current_deadline()
    if until is None:
        return {"retry": retry, "timeout": timeout}
    remaining = until - time.monotonic()
    if remaining <= 0:
        raise TimeoutError(f"not made: the delivery's time for state-bucket calls ran out {-remaining:.1f} s ago")
    left = remaining * share
    timeout = min(timeout, left)
    if retry is not None:
        retrying = left - timeout  # 0: the first failure is final
        retry = retry.with_timeout(retrying if retry.timeout is None else min(retry.timeout, retrying))
    return {"retry": retry, "timeout": timeout}


class GcsLedger(Ledger):
    name = "gcs"

    def __init__(
        self, bucket: storage.Bucket, clock=time.time, retry: Retry | None = DEFAULT_RETRY,
        timeout: float = REQUEST_TIMEOUT,
    ) -> None:  # fmt: skip
        self._bucket = bucket
        self._clock = clock
        self._retry = retry
        self._timeout = timeout

    def claim(self, notification_id: str, *, lease_seconds: float, replay: bool = False) -> Claim:
        # A timeout is a LedgerError: the platform redelivers. A create that went through although
        # its answer did not is our claim, left to expire with its lease (the redelivery is BUSY).
        return self._claim(notification_id, lease_seconds, replay)

    def _claim(self, notification_id: str, lease_seconds: float, replay: bool) -> Claim:
        blob = self._bucket.blob(LEDGER_PREFIX + notification_id)
        token = new_token()
        record = {"state": "claimed", "token": token, "lease_until": self._clock() + lease_seconds}
        try:
            for _ in range(3):  # create; or read what is there and maybe take it over
                # The writes that claim share the time the send does not need; reading what is there
                # may use the grace, since an email already sent or dead-lettered needs no send.
                with before_send():
                    generation = self._write(blob, record, if_generation_match=0)
                if generation is not None:
                    return Claim(notification_id, ClaimStatus.CLAIMED, token=token, version=generation)
                existing = self._read(blob.name)
                if existing is None:
                    continue  # released, or changed, between our two calls: start again
                generation, held = existing
                if held.get("token") == token:  # our own create, retried after a lost answer
                    return Claim(notification_id, ClaimStatus.CLAIMED, token=token, version=generation)
                if (status := held_status({**held, "notification_id": notification_id}, self._clock(),
                                          replay=replay)) is not None:  # fmt: skip
                    return status
                owed = owed_in(held)  # a replay's claim keeps who is owed it
                with before_send():
                    generation = self._write(blob, _with_owed(record, owed), if_generation_match=generation)
                if generation is not None:  # took over an expired lease (or a dead letter, to replay)
                    return Claim(notification_id, ClaimStatus.CLAIMED, token=token, version=generation, owed=owed)
                return Claim(notification_id, ClaimStatus.BUSY)  # someone else took it over first
            return Claim(notification_id, ClaimStatus.BUSY)
        except _TRANSIENT as error:
            raise _ledger_error(self._bucket.name, error) from error

    def mark_sent(self, claim: Claim, message_id: str) -> None:
        self._replace(claim, {"state": "sent", "token": claim.token, "message_id": message_id})

    def mark_dead(self, claim: Claim, owed: Iterable[str] | None = None) -> None:
        self._replace(claim, _with_owed({"state": "dead", "token": claim.token}, owed))

    def release(self, claim: Claim) -> None:
        if claim.owed is not None:  # a replay's claim on a partial send: its record as it was
            self.mark_dead(claim, claim.owed)
            return
        try:
            blob = self._bucket.blob(LEDGER_PREFIX + claim.notification_id)
            blob.delete(if_generation_match=claim.version, **call_options(self._retry, self._timeout))
        except (gexc.NotFound, gexc.PreconditionFailed):
            pass  # already gone, or no longer ours
        except _TRANSIENT as error:
            raise _ledger_error(self._bucket.name, error) from error

    def _replace(self, claim: Claim, record: dict[str, Any]) -> None:
        blob = self._bucket.blob(LEDGER_PREFIX + claim.notification_id)
        try:
            self._write(blob, record, if_generation_match=claim.version)  # None: taken over; nothing to do
        except _TRANSIENT as error:
            raise _ledger_error(self._bucket.name, error) from error

    def _read(self, name: str) -> tuple[int, dict[str, Any]] | None:
        """The record and its generation, or None if it is gone or changed while we read it."""
        try:
            blob = self._bucket.get_blob(name, **call_options(self._retry, self._timeout))
            if blob is None:
                return None
            if (blob.size or 0) > MAX_RECORD_BYTES or blob.content_encoding:  # planted: ours are tiny, plain JSON
                return blob.generation, {}
            data = blob.download_as_bytes(
                if_generation_match=blob.generation, raw_download=True, start=0, end=MAX_RECORD_BYTES,
                **call_options(self._retry, self._timeout),
            )  # fmt: skip
            return blob.generation, _record(data)
        except (gexc.NotFound, gexc.PreconditionFailed):
            return None

    def _write(self, blob: storage.Blob, record: dict[str, Any], *, if_generation_match: int) -> int | None:
        """Upload ``record`` if the object is at that generation; its new generation, or None."""
        blob.metadata = {"expires": (now_utc() + LEDGER_TTL).isoformat(timespec="seconds")}
        try:
            blob.upload_from_string(
                json.dumps(record),
                content_type="application/json",
                if_generation_match=if_generation_match,
                **call_options(self._retry, self._timeout),
            )
        except gexc.PreconditionFailed:
            return None
        return blob.generation


class GcsDeadLetters(DeadLetters):
    def __init__(
        self, bucket: storage.Bucket, retry: Retry | None = DEFAULT_RETRY, timeout: float = REQUEST_TIMEOUT
    ) -> None:
        self._bucket = bucket
        self.location = f"gs://{bucket.name}/{DEAD_LETTER_PREFIX}"
        self._retry = retry
        self._timeout = timeout

    def put(self, notification_id: str, record: dict[str, Any]) -> str:
        """Store the letter within the delivery's deadline; a timeout is a LedgerError, on which the
        pipeline logs the letter's summary at ERROR and answers so that the platform redelivers.
        Retrying the upload is safe: the same letter under the same name."""
        blob = self._bucket.blob(f"{DEAD_LETTER_PREFIX}{notification_id}.json")
        try:
            blob.upload_from_string(
                encode_record({"created": now_utc().isoformat(), **record}), content_type="application/json",
                **call_options(self._retry, self._timeout),
            )  # fmt: skip
        except _TRANSIENT as error:
            raise _ledger_error(self._bucket.name, error) from error
        return f"gs://{self._bucket.name}/{blob.name}"

    def list(self) -> Iterator[DeadLetter | UnreadableLetter]:
        try:
            options = call_options(self._retry, self._timeout)
            blobs = list(self._bucket.client.list_blobs(self._bucket, prefix=DEAD_LETTER_PREFIX, **options))
        except _TRANSIENT as error:
            raise _ledger_error(self._bucket.name, error) from error
        for blob in blobs:
            if blob.name.endswith(".json"):  # like the local folder: other objects are not letters
                letter = self._read(blob)
                if letter is not None:
                    yield letter

    def _read(self, blob: storage.Blob) -> DeadLetter | UnreadableLetter | None:
        """One letter, no larger than the limit; None if it was removed since the listing."""
        notification_id = blob.name.removeprefix(DEAD_LETTER_PREFIX).removesuffix(".json")
        source = f"gs://{self._bucket.name}/{blob.name}"
        if blob.size is not None and blob.size > self.max_bytes:
            return UnreadableLetter(notification_id, source, too_large(blob.size, self.max_bytes))
        if blob.content_encoding:  # Cloud Storage would decompress it on download: a small bomb, a huge letter
            reason = f"stored with Content-Encoding {blob.content_encoding[:40]!r}, which the function never writes"
            return UnreadableLetter(notification_id, source, reason)
        try:  # the generation listed, as stored (never decompressed), and never more than one byte over
            data = blob.download_as_bytes(
                if_generation_match=blob.generation, raw_download=True, start=0, end=self.max_bytes,
                **call_options(self._retry, self._timeout),
            )  # fmt: skip
        except (gexc.NotFound, gexc.PreconditionFailed):
            return None  # removed (replayed by someone else) or replaced: the next run sees the new one
        except _TRANSIENT as error:
            return UnreadableLetter(notification_id, source, f"cannot be read: {type(error).__name__}: {error}")
        return decode_letter(notification_id, source, data, self.max_bytes)

    def remove(self, notification_id: str) -> None:
        with contextlib.suppress(gexc.NotFound):
            blob = self._bucket.blob(f"{DEAD_LETTER_PREFIX}{notification_id}.json")
            blob.delete(**call_options(self._retry, self._timeout))


def _record(data: bytes) -> dict[str, Any]:
    """A ledger record; an unreadable one counts as an expired claim, so it gets taken over."""
    if len(data) > MAX_RECORD_BYTES:
        return {}
    try:
        record = json.loads(data)
    except (ValueError, RecursionError):
        return {}
    return record if isinstance(record, dict) else {}


def _with_owed(record: dict[str, Any], owed: Iterable[str] | None) -> dict[str, Any]:
    """``record`` with who is still owed the email, if that fits in a record we read back (a few
    thousand addresses); a longer list is left out: the dead letter's own list narrows the replay."""
    with_owed = {**record, **owed_record(owed)}
    return with_owed if len(json.dumps(with_owed)) <= MAX_RECORD_BYTES else record


def _ledger_error(bucket: str, error: BaseException) -> LedgerError:
    """One message shape for every state-bucket failure; a missing bucket or permission says what to do."""
    if isinstance(error, gexc.NotFound) and "bucket" in str(error).lower():
        return LedgerError(
            f"NOTIFY_STATE_BUCKET: bucket {bucket!r} does not exist: create it with"
            f" deploy/setup.sh --state-bucket {bucket}",
            misconfigured=True,
        )
    if isinstance(error, gexc.Forbidden | gexc.Unauthorized):
        return LedgerError(
            f"NOTIFY_STATE_BUCKET: the function's service account may not use gs://{bucket}: grant it"
            f" roles/storage.objectAdmin on the bucket (deploy/setup.sh --state-bucket {bucket}): {error}",
            misconfigured=True,
        )
    return LedgerError(f"state bucket {bucket}: {type(error).__name__}: {error}")
