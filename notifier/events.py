"""Storage event payloads → :class:`StorageEvent`: every delivery mode decoded and bounded.

With :mod:`notifier.payloads` (which builds them, reading the same tables the other way round) this
is the only place that knows what Cloud Storage events look like on the wire. The knowledge lives in
the tables at the top; the functions below read them. A new event type is a table row.

functions-framework has already turned binary, structured and 1st-gen background requests into a
CloudEvent by the time :func:`decode` runs, so only the CloudEvent shapes are decoded here.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any, Literal
from urllib.parse import unquote

Kind = Literal["finalize", "delete", "archive", "metadata"]
KINDS: tuple[Kind, ...] = ("finalize", "delete", "archive", "metadata")

# CloudEvent type → kind. The 1st-gen names are converted to these by functions-framework.
CE_TYPES: dict[str, Kind] = {
    "google.cloud.storage.object.v1.finalized": "finalize",
    "google.cloud.storage.object.v1.deleted": "delete",
    "google.cloud.storage.object.v1.archived": "archive",
    "google.cloud.storage.object.v1.metadataUpdated": "metadata",
}
GEN1_TYPES: dict[Kind, str] = {
    "finalize": "google.storage.object.finalize",
    "delete": "google.storage.object.delete",
    "archive": "google.storage.object.archive",
    "metadata": "google.storage.object.metadataUpdate",
}

# Cloud Storage Pub/Sub notifications delivered through Eventarc as messagePublished.
_PUBSUB_CE_TYPE = "google.cloud.pubsub.topic.v1.messagePublished"
PUBSUB_EVENT_TYPES: dict[str, Kind] = {
    "OBJECT_FINALIZE": "finalize",
    "OBJECT_DELETE": "delete",
    "OBJECT_ARCHIVE": "archive",
    "OBJECT_METADATA_UPDATE": "metadata",
}

# The legacy 1st-gen "object.change" event becomes "finalized"; its data says what really happened.
_LEGACY_RESOURCE_STATE_TO_KIND: dict[str, Kind] = {"not_exists": "delete"}

# data field → (StorageEvent attribute, parser name). Every field is optional except bucket/name.
_OPTIONAL_FIELDS: dict[str, tuple[str, str]] = {
    "generation": ("generation", "int"),
    "metageneration": ("metageneration", "int"),
    "size": ("size", "int"),
    "contentType": ("content_type", "str"),
    "storageClass": ("storage_class", "str"),
    "timeCreated": ("time_created", "time"),
    "updated": ("updated", "time"),
    "timeDeleted": ("time_deleted", "time"),
    "md5Hash": ("md5", "str"),
    "crc32c": ("crc32c", "str"),
    # Set when soft delete keeps a deleted object restorable until hardDeleteTime.
    "softDeleteTime": ("soft_delete_time", "time"),
    "hardDeleteTime": ("hard_delete_time", "time"),
    # Pub/Sub notifications only (copied from the message attributes): what an upload replaced.
    "overwroteGeneration": ("overwrote_generation", "int"),
    "overwrittenByGeneration": ("overwritten_by_generation", "int"),
}
# Pub/Sub notification attributes that say more than the object resource does.
_PUBSUB_ATTRIBUTES = ("overwroteGeneration", "overwrittenByGeneration")
# Attributes that repeat a field of the object resource: attribute → data field.
_PUBSUB_SAME_AS_DATA = {"bucketId": "bucket", "objectId": "name", "objectGeneration": "generation"}
# A notification made with --payload-format=none carries attributes only: nothing to email about.
NO_PAYLOAD = (
    "missing: the bucket notification has no payload (payloadFormat NONE); recreate it with"
    " --payload-format=json (deploy/deploy.sh --via pubsub does)"
)

# The platform's own bounds on every string decoded here. Cloud Storage and Eventarc never send
# more, so a longer value is a forged event: refused before it is copied into an email or a log line.
# where → (most, unit, whose limit); characters are code points.
_UTF8_BYTES = "bytes of UTF-8"
_LIMITS: dict[str, tuple[int, str, str]] = {
    "data.name": (1024, _UTF8_BYTES, "Cloud Storage object names"),
    "data.bucket": (222, "characters", "Cloud Storage bucket names"),
    "data.metadata": (8192, _UTF8_BYTES, "Cloud Storage custom metadata, keys and values together"),
    "id": (1024, "characters", "event ids (Pub/Sub message ids are about 20 digits)"),
    "event_id": (1024, "characters", "event ids"),
    "type": (256, "characters", "event types"),
    "event_type": (256, "characters", "event types"),
    "data.contentType": (1024, "characters", "content types"),
    "data.storageClass": (64, "characters", "storage class names"),
    "data.md5Hash": (64, "characters", "base64 MD5 digests (24 characters)"),
    "data.crc32c": (64, "characters", "base64 CRC32C checksums (8 characters)"),
    "data.resourceState": (64, "characters", "1st-gen resource states"),
}
_TIME_LIMIT = (64, "characters", "RFC 3339 times")  # every time field: the event's and the object's
_OTHER_LIMIT = (1024, "characters", "event attributes")  # a string field not named above

_TIME_KEYS = frozenset({key for key, (_, how) in _OPTIONAL_FIELDS.items() if how == "time"} | {"time"})
_DIGITS = re.compile(r"[0-9]{1,20}")


class InvalidEvent(ValueError):
    """The request was delivered but is not a storage event we can act on; retrying cannot help."""


@dataclass(frozen=True, slots=True)
class StorageEvent:
    """One change to one Cloud Storage object, independent of how it was delivered."""

    kind: Kind
    bucket: str
    name: str
    event_id: str
    event_type: str
    event_time: datetime | None = None
    generation: int | None = None
    metageneration: int | None = None
    size: int | None = None
    content_type: str | None = None
    storage_class: str | None = None
    time_created: datetime | None = None
    updated: datetime | None = None
    time_deleted: datetime | None = None
    md5: str | None = None
    crc32c: str | None = None
    soft_delete_time: datetime | None = None
    hard_delete_time: datetime | None = None
    overwrote_generation: int | None = None
    overwritten_by_generation: int | None = None
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def gs_uri(self) -> str:
        """The object as gsutil and gcloud storage name it (raw, not URL-encoded)."""
        return f"gs://{self.bucket}/{self.name}"

    @property
    def change_key(self) -> tuple[str, ...]:
        """What identifies the change itself, however and however often it was delivered: a 1st-gen
        and a 2nd-gen delivery of one upload have different event ids but the same key."""
        # Without a generation (or, for a metadata change, a metageneration: fake-gcs-server's
        # notifications carry none) the change cannot be named: fall back to the event id, which
        # a redelivery keeps.
        if self.generation is None or (self.kind == "metadata" and self.metageneration is None):
            return (self.kind, self.bucket, self.name, "event", self.event_id)
        return (self.kind, self.bucket, self.name, str(self.generation), str(self.metageneration))

    def to_dict(self) -> dict[str, Any]:
        """JSON values (times as ISO 8601), for dead letters; :func:`from_dict` reverses it."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values["metadata"] = dict(self.metadata)
        return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}


def from_dict(values: Any) -> StorageEvent:
    """The event :meth:`StorageEvent.to_dict` stored, checked as strictly as a delivered one (a dead
    letter is untrusted input: whoever can write to the state bucket can edit one); InvalidEvent."""
    if not isinstance(values, dict):
        raise InvalidEvent(f"expected an object, got {json_type_name(values)}")
    kind = values.get("kind")
    if kind not in KINDS:
        raise InvalidEvent(f"kind: expected one of {', '.join(KINDS)}, got {_preview(kind)}")
    data = {key: values.get(attr) for key, (attr, _) in _OPTIONAL_FIELDS.items()}
    data.update(bucket=values.get("bucket"), name=values.get("name"), metadata=values.get("metadata"))
    event_id, event_type = (_required_text(values, key, where=key) for key in ("event_id", "event_type"))
    return _storage_event(kind, data, event_id, event_type, _as_is(values.get("event_time"), "event_time"))


def decode(cloud_event: Any, *, percent_encoded: bool = False) -> StorageEvent:
    """Turn the framework's CloudEvent into a :class:`StorageEvent`; raise :class:`InvalidEvent`.

    ``percent_encoded``: the attributes came from binary-mode ``ce-*`` headers, whose values the
    CloudEvents HTTP binding percent-encodes (the SDK leaves them encoded).
    """
    attribute = _percent_decoded if percent_encoded else _as_is
    try:
        event_type = _bounded(attribute(cloud_event["type"], "type"), "type")
        event_id = _bounded(attribute(cloud_event["id"], "id"), "id")
        event_time = attribute(cloud_event.get("time"), "time")
    except KeyError as error:
        raise InvalidEvent(f"CloudEvent attribute {error.args[0]!r} is missing") from None
    if event_type == _PUBSUB_CE_TYPE:
        kind, data = _unwrap_pubsub(cloud_event.data)
    elif event_type in CE_TYPES:
        kind, data = CE_TYPES[event_type], _as_object(cloud_event.data, "data")
        state = _parse_str(data.get("resourceState"), "data.resourceState")
        kind = _LEGACY_RESOURCE_STATE_TO_KIND.get(state, kind)
    else:
        raise InvalidEvent(
            f"type: unsupported event type {event_type!r}; expected one of " + ", ".join(sorted(CE_TYPES))
        )
    return _storage_event(kind, data, _unicode(event_id, "id"), event_type, event_time)


def pubsub_push_problem(body: Any) -> str | None:
    """What a Pub/Sub push body functions-framework could not convert lacks, if it is one (a
    notification without a payload has no ``message.data``, which the framework requires)."""
    message = body.get("message") if isinstance(body, dict) else None
    if isinstance(message, dict) and not message.get("data"):
        attributes = message.get("attributes")
        said = attributes.get("payloadFormat") if isinstance(attributes, dict) else None
        return f"Pub/Sub push: message.data: {NO_PAYLOAD if said == 'NONE' else 'required, but missing or empty'}"
    return None


def _storage_event(kind: Kind, data: dict[str, Any], event_id: str, event_type: str, event_time: Any) -> StorageEvent:
    return StorageEvent(
        kind=kind,
        bucket=_required_text(data, "bucket"),
        name=_required_text(data, "name"),
        event_id=event_id,
        event_type=event_type,
        event_time=_parse_time(event_time, "time"),
        metadata=_metadata(data),
        **{attr: _PARSERS[how](data.get(key), f"data.{key}") for key, (attr, how) in _OPTIONAL_FIELDS.items()},
    )


# ---------------------------------------------------------------------------------------------
# Private helpers: each turns one piece of untrusted input into a checked value or InvalidEvent.


def _as_is(value: Any, where: str) -> Any:
    if value is not None and not isinstance(value, str):
        raise InvalidEvent(f"{where}: expected a string, got {json_type_name(value)}")
    return value


def _percent_decoded(value: Any, where: str) -> Any:
    value = _as_is(value, where)
    if not value or "%" not in value:
        return value
    try:
        return unquote(value, errors="strict")
    except UnicodeDecodeError:
        raise InvalidEvent(f"{where}: percent-encoding is not UTF-8") from None


def _as_object(data: Any, where: str) -> dict[str, Any]:
    if isinstance(data, bytes | str):
        try:
            data = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise InvalidEvent(f"{where}: expected a JSON object, got unparsable text") from None
    if not isinstance(data, dict):
        raise InvalidEvent(f"{where}: expected a JSON object, got {json_type_name(data)}")
    return data


def _unwrap_pubsub(envelope: Any) -> tuple[Kind, dict[str, Any]]:
    message = _as_object(_as_object(envelope, "data").get("message"), "data.message")
    attributes = message.get("attributes") or {}
    notification = attributes.get("eventType") if isinstance(attributes, dict) else None
    if not isinstance(notification, str) or notification not in PUBSUB_EVENT_TYPES:
        raise InvalidEvent(
            f"data.message.attributes.eventType: expected one of {', '.join(PUBSUB_EVENT_TYPES)},"
            f" got {_preview(notification)}"
        )
    if not message.get("data"):
        said = attributes.get("payloadFormat")
        raise InvalidEvent(f"data.message.data: {NO_PAYLOAD if said == 'NONE' else 'required, but missing or empty'}")
    try:
        payload = base64.b64decode(message["data"], validate=True)
    except (ValueError, TypeError):
        raise InvalidEvent("data.message.data: expected base64-encoded JSON") from None
    data = _as_object(payload, "data.message.data")
    # Whoever may publish to the topic could pair one object's attributes with another's data:
    # both must name the same object, or the email would be about something else than it says.
    for attribute, key in _PUBSUB_SAME_AS_DATA.items():
        said, held = attributes.get(attribute), data.get(key)
        if key == "generation" and said is not None and held is not None:  # "0005" and "5" are one number
            said, held = (
                _parse_int(v, w) for v, w in ((said, f"data.message.attributes.{attribute}"), (held, f"data.{key}"))
            )
        if said is not None and held is not None and str(said) != str(held):
            raise InvalidEvent(
                f"data.message.attributes.{attribute}: {_preview(said)} does not match data.{key} {_preview(held)}"
            )
    for key in _PUBSUB_ATTRIBUTES:
        if key in attributes:
            data[key] = _parse_int(attributes[key], f"data.message.attributes.{key}")
    return PUBSUB_EVENT_TYPES[notification], data


def _required_text(data: dict[str, Any], key: str, *, where: str | None = None) -> str:
    where = where or f"data.{key}"
    value = data.get(key)
    if value is None or value == "":
        raise InvalidEvent(f"{where}: required, but missing or empty")
    if not isinstance(value, str):
        raise InvalidEvent(f"{where}: expected a string, got {json_type_name(value)}")
    return _unicode(_bounded(value, where), where)


def _bounded(value: Any, where: str) -> Any:
    """``value`` unchanged if it is within the platform's limit for ``where``; else InvalidEvent."""
    if not isinstance(value, str):
        return value
    most, unit, whose = _limit_of(where)
    if len(value) <= most and (unit != _UTF8_BYTES or len(value) * 4 <= most):  # short: no need to encode
        return value
    length = len(value.encode("utf-8", "surrogatepass")) if unit == _UTF8_BYTES else len(value)
    if length > most:
        raise InvalidEvent(f"{where}: {length:,} {unit}, over the limit {most:,} ({whose}): {_preview(value)}")
    return value


def _limit_of(where: str) -> tuple[int, str, str]:
    if where in _LIMITS:
        return _LIMITS[where]
    return _TIME_LIMIT if where.rsplit(".", 1)[-1] in _TIME_KEYS else _OTHER_LIMIT


def _unicode(value: str, where: str) -> str:
    # JSON can carry lone surrogates ("\ud800"); they are not text and cannot be encoded in an email.
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidEvent(f"{where}: not valid Unicode (lone surrogate)") from None
    return value


def _parse_int(value: Any, where: str) -> int | None:
    # GCS sends int64 fields as decimal strings; accept real integers as well.
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        return int(value)
    raise InvalidEvent(f"{where}: expected a non-negative integer, got {_preview(value)}")


def _parse_str(value: Any, where: str) -> str | None:
    if value is None or isinstance(value, str):
        return _unicode(_bounded(value, where), where) if value else None
    raise InvalidEvent(f"{where}: expected a string, got {json_type_name(value)}")


def _parse_time(value: Any, where: str) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        value = _bounded(value, where)  # outside the try: InvalidEvent is a ValueError too
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise InvalidEvent(f"{where}: expected an RFC 3339 time, got {_preview(value)}") from None
    else:
        raise InvalidEvent(f"{where}: expected an RFC 3339 time, got {json_type_name(value)}")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


_PARSERS = {"int": _parse_int, "str": _parse_str, "time": _parse_time}


def _metadata(data: dict[str, Any]) -> Mapping[str, str]:
    raw = data.get("metadata")
    if raw is None:
        return MappingProxyType({})
    if not isinstance(raw, dict):
        raise InvalidEvent(f"data.metadata: expected an object of strings, got {json_type_name(raw)}")
    for key, value in raw.items():
        if not isinstance(value, str):
            raise InvalidEvent(f"data.metadata[{_preview(key)}]: expected a string, got {json_type_name(value)}")
    _bounded("".join(key + value for key, value in raw.items()), "data.metadata")
    for key, value in raw.items():
        _unicode(key + value, f"data.metadata[{_preview(key)}]")
    return MappingProxyType(dict(raw))


def json_type_name(value: Any) -> str:
    """A JSON value's type in words, as every error about an event's shape names it."""
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean", int: "an integer"}.get(
        type(value), "null" if value is None else f"a {type(value).__name__}"
    )


def _preview(value: Any) -> str:
    text = repr(value[:61] if isinstance(value, str) else value)  # never repr a huge string whole
    return text if len(text) <= 60 else text[:57] + "..."
