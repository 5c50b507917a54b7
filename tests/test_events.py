"""decode(): every delivery shape → StorageEvent; every malformed payload → InvalidEvent naming the field."""

from __future__ import annotations

import base64
import dataclasses
import json
import re
from datetime import UTC, datetime
from typing import Any

import pytest
from cloudevents.conversion import to_structured
from cloudevents.http import CloudEvent, from_http

from notifier.events import KINDS, InvalidEvent, decode
from notifier.payloads import background_event, cloud_event_attributes, object_resource, pubsub_message, pubsub_push
from tests.conftest import CE_TYPES, GEN1_TYPES

PUBSUB_KINDS = {
    "OBJECT_FINALIZE": "finalize",
    "OBJECT_DELETE": "delete",
    "OBJECT_ARCHIVE": "archive",
    "OBJECT_METADATA_UPDATE": "metadata",
}
PUBSUB = "google.cloud.pubsub.topic.v1.messagePublished"
FINALIZED = CE_TYPES["finalize"]


def make_event(data: Any, event_type: str = FINALIZED, **attributes: str) -> CloudEvent:
    base = {"specversion": "1.0", "id": "evt-1", "source": "//storage.googleapis.com/projects/_/buckets/acme"}
    return CloudEvent({**base, "type": event_type, **attributes}, data)


def obj(**fields: Any) -> dict[str, Any]:
    return {"bucket": "acme", "name": "reports/q3.csv", **fields}


def b64json(value: Any) -> str:
    return base64.b64encode(json.dumps(value).encode()).decode()


def pubsub(notification: Any = "OBJECT_FINALIZE", payload: str | None = None) -> dict[str, Any]:
    """A Cloud Storage Pub/Sub notification as Eventarc's messagePublished data carries it."""
    attributes = {"eventType": notification}
    if payload is None:  # the attributes repeat the object the payload names
        attributes |= {"bucketId": "acme", "objectId": "reports/q3.csv"}
    data = b64json(obj()) if payload is None else payload
    return {"message": {"attributes": attributes, "data": data, "messageId": "42"}, "subscription": "s"}


def ps(notification: Any = "OBJECT_FINALIZE", payload: str | None = None) -> CloudEvent:
    return make_event(pubsub(notification, payload), PUBSUB)


@pytest.mark.parametrize(("event_type", "kind"), [(t, k) for k, t in CE_TYPES.items()])
def test_each_storage_cloudevent_type_decodes_to_its_kind(event_type, kind):
    event = decode(make_event(obj(size="10"), event_type, id="abc-123"))

    assert (event.kind, event.bucket, event.name) == (kind, "acme", "reports/q3.csv")
    assert (event.event_type, event.event_id, event.size) == (event_type, "abc-123", 10)
    assert event.gs_uri == "gs://acme/reports/q3.csv"


@pytest.mark.parametrize(("notification", "kind"), PUBSUB_KINDS.items())
def test_pubsub_notification_decodes_to_its_kind(notification, kind):
    event = decode(ps(notification, b64json(obj(size="352", contentType="text/csv"))))

    assert (event.kind, event.bucket, event.name, event.size) == (kind, "acme", "reports/q3.csv", 352)
    assert (event.content_type, event.event_type) == ("text/csv", PUBSUB)


def test_pubsub_envelope_given_as_json_bytes_is_parsed():
    body = json.dumps(pubsub("OBJECT_DELETE")).encode()
    assert decode(make_event(body, PUBSUB)).kind == "delete"


@pytest.mark.parametrize(
    ("event_type", "state", "kind"),
    [
        (FINALIZED, "not_exists", "delete"),
        (FINALIZED, "exists", "finalize"),
        (FINALIZED, None, "finalize"),
        (CE_TYPES["metadata"], "exists", "metadata"),
    ],
)
def test_legacy_resource_state_says_what_really_happened(event_type, state, kind):
    data = obj() if state is None else obj(resourceState=state)
    assert decode(make_event(data, event_type)).kind == kind


@pytest.mark.parametrize(
    ("field", "attr", "raw", "expected"),
    [
        ("size", "size", "352", 352),
        ("size", "size", "0", 0),
        ("size", "size", 352, 352),
        ("size", "size", "18446744073709551615", 2**64 - 1),
        ("generation", "generation", "1587627537231057", 1587627537231057),
        ("metageneration", "metageneration", "3", 3),
        ("contentType", "content_type", "text/csv; charset=utf-8", "text/csv; charset=utf-8"),
        ("contentType", "content_type", "", None),
        ("storageClass", "storage_class", "NEARLINE", "NEARLINE"),
        ("md5Hash", "md5", "ZDQxZA==", "ZDQxZA=="),
        ("crc32c", "crc32c", "AAAAAA==", "AAAAAA=="),
    ],
)
def test_optional_fields_are_converted(field, attr, raw, expected):
    assert getattr(decode(make_event(obj(**{field: raw}))), attr) == expected


def test_absent_optional_fields_are_none_and_metadata_empty():
    event = decode(make_event(obj()))
    for attr in ("generation", "metageneration", "size", "content_type", "storage_class", "time_created"):
        assert getattr(event, attr) is None, attr
    assert (event.updated, event.time_deleted, event.md5, event.crc32c) == (None, None, None, None)
    assert dict(event.metadata) == {}


TIMES = [
    ("2020-04-23T07:38:57.230Z", datetime(2020, 4, 23, 7, 38, 57, 230000, tzinfo=UTC)),
    ("2020-04-23T07:38:57Z", datetime(2020, 4, 23, 7, 38, 57, tzinfo=UTC)),
    # Python 3.11's fromisoformat accepts nanoseconds and truncates them to microseconds.
    ("2020-04-23T07:38:57.230123456Z", datetime(2020, 4, 23, 7, 38, 57, 230123, tzinfo=UTC)),
    ("2020-04-23T09:38:57.230+02:00", datetime(2020, 4, 23, 7, 38, 57, 230000, tzinfo=UTC)),
    ("2020-04-23T07:38:57.230-00:30", datetime(2020, 4, 23, 8, 8, 57, 230000, tzinfo=UTC)),
]


@pytest.mark.parametrize("field", ["timeCreated", "updated", "timeDeleted"])
@pytest.mark.parametrize(("raw", "expected"), TIMES)
def test_object_times_become_aware_utc_datetimes(field, raw, expected):
    attr = {"timeCreated": "time_created", "updated": "updated", "timeDeleted": "time_deleted"}[field]
    value = getattr(decode(make_event(obj(**{field: raw}))), attr)
    assert value == expected
    assert value.tzinfo is UTC


@pytest.mark.parametrize(("raw", "expected"), TIMES)
def test_cloudevent_time_becomes_aware_utc_event_time(raw, expected):
    value = decode(make_event(obj(), time=raw)).event_time
    assert value == expected
    assert value.tzinfo is UTC


def test_metadata_is_a_read_only_copy():
    source = {"owner": "ana", "ticket": "OPS-1"}
    event = decode(make_event(obj(metadata=source)))
    source["owner"] = "mallory"
    assert dict(event.metadata) == {"owner": "ana", "ticket": "OPS-1"}
    with pytest.raises(TypeError):
        event.metadata["owner"] = "eve"  # type: ignore[index]


def test_storage_event_is_frozen():
    event = decode(make_event(obj()))
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.name = "other"  # type: ignore[misc]
    assert event.name == "reports/q3.csv"


@pytest.mark.parametrize("as_bytes", [False, True], ids=["str", "bytes"])
def test_data_given_as_json_text_is_parsed(as_bytes):
    text = json.dumps(obj(size="7", metadata={"k": "v"}))
    event = decode(make_event(text.encode() if as_bytes else text))
    assert (event.bucket, event.name, event.size) == ("acme", "reports/q3.csv", 7)
    assert dict(event.metadata) == {"k": "v"}


INVALID = [
    pytest.param(make_event({"name": "n"}), "data.bucket", id="missing-bucket"),
    pytest.param(make_event(obj(bucket="")), "data.bucket", id="empty-bucket"),
    pytest.param(make_event(obj(bucket=["acme"])), "data.bucket", id="bucket-list"),
    pytest.param(make_event({"bucket": "acme"}), "data.name", id="missing-name"),
    pytest.param(make_event(obj(name="")), "data.name", id="empty-name"),
    pytest.param(make_event(obj(name=7)), "data.name", id="name-int"),
    pytest.param(make_event(obj(size="abc")), "data.size", id="size-abc"),
    pytest.param(make_event(obj(size=-1)), "data.size", id="size-negative"),
    pytest.param(make_event(obj(size="-1")), "data.size", id="size-negative-text"),
    pytest.param(make_event(obj(size=True)), "data.size", id="size-bool"),
    pytest.param(make_event(obj(size=" 3")), "data.size", id="size-space"),
    pytest.param(make_event(obj(size="1e3")), "data.size", id="size-exponent"),
    pytest.param(make_event(obj(size="٣")), "data.size", id="size-arabic-digit"),
    pytest.param(make_event(obj(generation=1.5)), "data.generation", id="generation-float"),
    pytest.param(make_event(obj(metageneration=[1])), "data.metageneration", id="metageneration-list"),
    pytest.param(make_event(obj(contentType=5)), "data.contentType", id="content-type-int"),
    pytest.param(make_event(obj(metadata={"owner": 1})), "data.metadata['owner']", id="metadata-value-int"),
    pytest.param(make_event(obj(metadata={"o": None})), "data.metadata['o']", id="metadata-value-null"),
    pytest.param(make_event(obj(metadata=["a"])), "data.metadata", id="metadata-list"),
    pytest.param(make_event(obj(metadata="a=b")), "data.metadata", id="metadata-string"),
    pytest.param(make_event(obj(timeCreated="yesterday")), "data.timeCreated", id="time-created-text"),
    pytest.param(make_event(obj(updated=1587627537)), "data.updated", id="updated-number"),
    pytest.param(make_event(obj(timeDeleted="2020-13-01T00:00:00Z")), "data.timeDeleted", id="month-13"),
    pytest.param(make_event(obj(), time="not a time"), "time", id="ce-time"),
    pytest.param(make_event(obj(), "google.cloud.storage.object.v1.copied"), "type", id="unknown-type"),
    pytest.param(make_event(obj(), "google.storage.object.finalize"), "type", id="gen1-type-name"),
    pytest.param(make_event([obj()]), "data", id="data-list"),
    pytest.param(make_event("not json"), "data", id="data-not-json"),
    pytest.param(make_event(b"\xff\xfe"), "data", id="data-not-utf8"),
    pytest.param(make_event("[1, 2]"), "data", id="data-json-array-text"),
    pytest.param(make_event(None), "data", id="data-null"),
    pytest.param(make_event(obj(name="bad\ud800")), "data.name", id="name-lone-surrogate"),
    pytest.param(make_event(obj(), id="evt\udc00"), "id", id="id-lone-surrogate"),
    pytest.param(make_event(obj(contentType="text/\udfff")), "data.contentType", id="type-lone-surrogate"),
    pytest.param(make_event(obj(metadata={"k": "\ud800"})), "data.metadata['k']", id="meta-lone-surrogate"),
    pytest.param(make_event([1], PUBSUB), "data", id="pubsub-envelope-list"),
    pytest.param(make_event({}, PUBSUB), "data.message", id="pubsub-no-message"),
    pytest.param(ps("OBJECT_COPY"), "data.message.attributes.eventType", id="pubsub-unknown-type"),
    pytest.param(make_event({"message": {}}, PUBSUB), "data.message.attributes.eventType", id="ps-no-attributes"),
    pytest.param(ps(payload="!!not base64!!"), "data.message.data", id="pubsub-not-base64"),
    pytest.param(ps(payload=b64json([1])), "data.message.data", id="pubsub-payload-list"),
    pytest.param(ps(payload=""), "data.message.data", id="pubsub-empty-payload"),
    pytest.param(ps(payload=b64json({"name": "n"})), "data.bucket", id="pubsub-missing-bucket"),
]


@pytest.mark.parametrize(("cloud_event", "where"), INVALID)
def test_invalid_event_names_the_offending_field(cloud_event, where):
    with pytest.raises(InvalidEvent, match=rf"^{re.escape(where)}: "):
        decode(cloud_event)


@pytest.mark.parametrize("name", ["a\nb", "a\rb", "evil\r\nBcc: x@example.com"])
def test_a_name_cloud_storage_would_refuse_is_still_decoded_unchanged(name):
    # GCS never sends these, but refusing them would lose an email; rendering makes them harmless.
    assert decode(make_event(obj(name=name))).name == name


@pytest.mark.parametrize("state", [["not_exists"], {"v": 1}])
def test_unhashable_resource_state_is_an_invalid_event_not_a_crash(state):
    with pytest.raises(InvalidEvent):
        decode(make_event(obj(resourceState=state)))


def test_unhashable_pubsub_event_type_is_an_invalid_event_not_a_crash():
    with pytest.raises(InvalidEvent, match=r"^data\.message\.attributes\.eventType: "):
        decode(ps(["OBJECT_FINALIZE"]))


@pytest.mark.parametrize("name", ["a" * 1024, "é" * 512, "😀" * 256, "x" + "€" * 341])
def test_name_of_exactly_1024_utf8_bytes_is_accepted(name):
    assert len(name.encode()) == 1024
    assert decode(make_event(obj(name=name))).name == name


OVER_THE_LIMIT = [
    pytest.param(make_event(obj(name="a" * 1025)), "data.name", 1025, 1024, id="name-1025-bytes"),
    pytest.param(make_event(obj(name="é" * 512 + "a")), "data.name", 1025, 1024, id="name-1025-utf8-bytes"),
    pytest.param(make_event(obj(name="n" * 3_000_000)), "data.name", 3_000_000, 1024, id="name-3-mb"),
    pytest.param(make_event(obj(bucket="b" * 223)), "data.bucket", 223, 222, id="bucket"),
    pytest.param(make_event(obj(), id="i" * 5000), "id", 5000, 1024, id="event-id"),
    pytest.param(make_event(obj(), "t" * 5000), "type", 5000, 256, id="event-type"),
    pytest.param(make_event(obj(), time="2" * 5000), "time", 5000, 64, id="event-time"),
    pytest.param(make_event(obj(contentType="c" * 5000)), "data.contentType", 5000, 1024, id="content-type"),
    pytest.param(make_event(obj(storageClass="S" * 65)), "data.storageClass", 65, 64, id="storage-class"),
    pytest.param(make_event(obj(md5Hash="m" * 65)), "data.md5Hash", 65, 64, id="md5"),
    pytest.param(make_event(obj(crc32c="c" * 65)), "data.crc32c", 65, 64, id="crc32c"),
    pytest.param(make_event(obj(timeCreated="2" * 65)), "data.timeCreated", 65, 64, id="time-created"),
    pytest.param(make_event(obj(updated="2" * 5000)), "data.updated", 5000, 64, id="updated"),
    pytest.param(make_event(obj(resourceState="r" * 5000)), "data.resourceState", 5000, 64, id="resource-state"),
    pytest.param(make_event(obj(metadata={"k": "v" * 8192})), "data.metadata", 8193, 8192, id="metadata-value"),
    pytest.param(make_event(obj(metadata={"k" * 9000: ""})), "data.metadata", 9000, 8192, id="metadata-key"),
    pytest.param(
        make_event(obj(metadata={f"k{i}": "v" for i in range(3000)})),
        "data.metadata",
        sum(len(f"k{i}v") for i in range(3000)),
        8192,
        id="metadata-count",
    ),
    pytest.param(ps(payload=b64json(obj(name="p" * 2000))), "data.name", 2000, 1024, id="pubsub-name"),
]


@pytest.mark.parametrize(("cloud_event", "where", "actual", "limit"), OVER_THE_LIMIT)
def test_a_field_over_the_platform_limit_is_invalid_naming_field_limit_and_length(cloud_event, where, actual, limit):
    with pytest.raises(InvalidEvent) as caught:
        decode(cloud_event)
    message = str(caught.value)
    assert message.startswith(f"{where}: "), message
    assert f"{actual:,}" in message and f"limit {limit:,}" in message, message
    assert len(message) < 300, "the preview must stay short"


def test_a_long_binary_mode_attribute_is_measured_after_percent_decoding():
    event = make_event(obj(), id="%41" * 1000)  # 3,000 characters on the wire, 1,000 once decoded
    assert decode(event, percent_encoded=True).event_id == "A" * 1000
    with pytest.raises(InvalidEvent, match=r"^id: 1,025 characters"):
        decode(make_event(obj(), id="%41" * 1025), percent_encoded=True)


def test_metadata_of_exactly_8_kib_is_accepted():
    metadata = {"k": "v" * 8191}
    assert dict(decode(make_event(obj(metadata=metadata))).metadata) == metadata


HOSTILE_NAMES = [
    "报告/2024 Q3 – final ✓.csv",
    "with spaces  and\ttab.txt",
    "hash#fragment.txt",
    "what?query=1&x=2",
    "100%25 done %s %n.txt",
    "../../etc/passwd",
    "/leading/slash",
    "trailing/slash/",
    "invoice\u202egnp.exe",
    "<script>alert(1)</script>.html",
    "\"quoted\" & 'single'",
    "{{ config }} {% raw %}",
    " ",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_hostile_but_legal_names_decode_unchanged(name):
    event = decode(make_event(obj(name=name)))
    assert event.name == name
    assert event.gs_uri == f"gs://acme/{name}"


NOW = datetime(2024, 2, 29, 23, 59, 58, 123456, tzinfo=UTC)


@pytest.mark.parametrize("kind", KINDS)
def test_built_cloudevent_round_trips_through_decode(kind):
    name, meta = "in/ü report.csv", {"owner": "ana"}
    data = object_resource(kind, "acme-uploads", name, size=2048, content_type="text/csv", metadata=meta, now=NOW)
    attributes = cloud_event_attributes(kind, data, "evt-9")
    assert attributes["type"] == CE_TYPES[kind]

    event = decode(CloudEvent(attributes, data))

    assert (event.kind, event.bucket, event.name) == (kind, "acme-uploads", name)
    assert (event.size, event.content_type, dict(event.metadata)) == (2048, "text/csv", meta)
    assert event.event_id == "evt-9"
    assert event.event_time == event.updated == NOW.replace(microsecond=123000)
    assert event.generation == int(NOW.timestamp() * 1_000_000)
    assert event.metageneration == (2 if kind == "metadata" else 1)
    assert (event.time_deleted is not None) == (kind in ("delete", "archive"))


@pytest.mark.parametrize("kind", KINDS)
def test_built_cloudevent_survives_the_structured_wire_format(kind):
    data = object_resource(kind, "acme", "a/b.txt", size=5, content_type="text/plain", now=NOW)
    headers, body = to_structured(CloudEvent(cloud_event_attributes(kind, data, "wire-1"), data))

    event = decode(from_http(headers, body))

    assert (event.kind, event.name, event.size, event.content_type) == (kind, "a/b.txt", 5, "text/plain")


@pytest.mark.parametrize("kind", KINDS)
def test_background_event_carries_the_first_gen_event_type(kind):
    data = object_resource(kind, "acme", "dir/file.bin", now=NOW)

    event = background_event(kind, data, "bg-1")

    context = event["context"]
    assert context["eventType"] == GEN1_TYPES[kind]
    assert (context["eventId"], context["timestamp"]) == ("bg-1", data["updated"])
    assert context["resource"]["name"] == "projects/_/buckets/acme/objects/dir/file.bin"
    assert event["data"] is data


@pytest.mark.parametrize("kind", KINDS)
def test_built_pubsub_notification_round_trips_through_decode(kind):
    data = object_resource(kind, "acme", "in/ü q3.csv", size=7, content_type="text/csv", now=NOW)
    push = pubsub_push(pubsub_message(kind, data), "1234", "projects/p/subscriptions/s")

    event = decode(make_event(push, PUBSUB, id="1234"))

    assert (event.kind, event.bucket, event.name, event.size) == (kind, "acme", "in/ü q3.csv", 7)
    assert push["message"]["attributes"]["payloadFormat"] == "JSON_API_V1"
    assert {PUBSUB_KINDS[push["message"]["attributes"]["eventType"]]} == {kind}


def _notification(kind: str, message_id: str, **drop_or_set: Any) -> Any:
    data = {**object_resource(kind, "acme", "r.csv", now=NOW), **drop_or_set}
    data = {key: value for key, value in data.items() if value is not None}
    return decode(make_event(pubsub_push(pubsub_message(kind, data), message_id, "s"), PUBSUB, id=message_id))


def test_metadata_changes_without_a_metageneration_are_told_apart_by_their_message_ids():
    # fake-gcs-server's notifications carry no metageneration: two updates of one object must not
    # look like one change delivered twice, while a redelivery (same message id) still does.
    first, second = (_notification("metadata", i, metageneration=None) for i in ("1", "2"))
    assert first.change_key != second.change_key
    assert _notification("metadata", "1", metageneration=None).change_key == first.change_key


def test_an_upload_is_one_change_whatever_message_carried_it():
    first, again = (_notification("finalize", i, metageneration=None) for i in ("1", "2"))
    assert first.change_key == again.change_key
    assert _notification("metadata", "1").change_key == _notification("metadata", "2").change_key


@pytest.mark.parametrize(
    ("attribute", "value", "field"),
    [
        ("bucketId", "other-bucket", "bucket"),
        ("objectId", "payroll.csv", "name"),
        ("objectGeneration", "7", "generation"),
    ],
)
def test_a_notification_whose_attributes_name_another_object_is_invalid(attribute, value, field):
    # A publisher to the topic could pair one object's attributes with another's payload.
    envelope = pubsub()
    envelope["message"]["attributes"][attribute] = value
    envelope["message"]["data"] = b64json(obj(generation="5"))

    with pytest.raises(
        InvalidEvent, match=rf"^data\.message\.attributes\.{attribute}: .* does not match data\.{field} "
    ):
        decode(make_event(envelope, PUBSUB))


def test_a_notification_without_a_payload_says_how_to_make_one_with():
    envelope = pubsub()
    del envelope["message"]["data"]
    envelope["message"]["attributes"]["payloadFormat"] = "NONE"

    with pytest.raises(InvalidEvent, match=r"^data\.message\.data: .*--payload-format=json"):
        decode(make_event(envelope, PUBSUB))


def test_a_bad_generation_attribute_is_named_where_it_was():
    envelope = pubsub()
    envelope["message"]["attributes"]["overwroteGeneration"] = "-1"

    with pytest.raises(InvalidEvent, match=r"^data\.message\.attributes\.overwroteGeneration: "):
        decode(make_event(envelope, PUBSUB))


def test_a_generation_attribute_written_differently_is_the_same_number():
    envelope = pubsub()
    envelope["message"]["attributes"]["objectGeneration"] = "0005"
    envelope["message"]["data"] = b64json(obj(generation="5"))

    assert decode(make_event(envelope, PUBSUB)).generation == 5


def test_an_empty_payload_is_blamed_on_payload_format_none_only_when_the_notification_says_so():
    envelope = pubsub()
    envelope["message"]["data"] = ""
    envelope["message"]["attributes"]["payloadFormat"] = "JSON_API_V1"

    with pytest.raises(InvalidEvent, match=r"^data\.message\.data: required, but missing or empty$"):
        decode(make_event(envelope, PUBSUB))
