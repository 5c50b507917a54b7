"""Storage events built in the platform's wire formats, for ``emit``, the demo, the sandbox, the
benchmarks, start-up samples and tests: :mod:`notifier.events`' tables read the other way round.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from notifier.events import CE_TYPES, GEN1_TYPES, PUBSUB_EVENT_TYPES, Kind

_KIND_TO_CE_TYPE: dict[Kind, str] = {kind: t for t, kind in CE_TYPES.items()}
_KIND_TO_PUBSUB_EVENT: dict[Kind, str] = {kind: name for name, kind in PUBSUB_EVENT_TYPES.items()}
# What the CloudEvents HTTP binding leaves as it is in a ce-* header value: printable ASCII but
# space, '"' and '%'.
_HEADER_SAFE = "!#$&'()*+,/:;<=>?@[\\]^_`{|}~"


def object_resource(
    kind: Kind,
    bucket: str,
    name: str,
    *,
    size: int | None = 0,
    content_type: str = "application/octet-stream",
    metadata: Mapping[str, str] | None = None,
    now: datetime | None = None,
) -> dict[str, Any]:
    """A realistic GCS object resource, as the event ``data`` carries it."""
    now = now or datetime.now(UTC)
    stamp = now.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    generation = str(int(now.timestamp() * 1_000_000))
    resource: dict[str, Any] = {
        "kind": "storage#object",
        "id": f"{bucket}/{name}/{generation}",
        "bucket": bucket,
        "name": name,
        "generation": generation,
        "metageneration": "2" if kind == "metadata" else "1",
        "contentType": content_type,
        "size": str(size),
        "storageClass": "STANDARD",
        "timeCreated": stamp,
        "updated": stamp,
        "md5Hash": base64.b64encode(b"\0" * 16).decode(),
        "crc32c": "AAAAAA==",
    }
    if size is None:  # unknown, as `route` is asked without --size
        del resource["size"]
    if kind in ("delete", "archive"):
        resource["timeDeleted"] = stamp
    if metadata:
        resource["metadata"] = dict(metadata)
    return resource


def cloud_event_attributes(kind: Kind, data: dict[str, Any], event_id: str) -> dict[str, str]:
    """CloudEvent attributes as Eventarc sets them for a storage event about ``data``."""
    return {
        "specversion": "1.0",
        "type": _KIND_TO_CE_TYPE[kind],
        "source": f"//storage.googleapis.com/projects/_/buckets/{data['bucket']}",
        "subject": f"objects/{data['name']}",
        "id": event_id,
        "time": data["updated"],
        "datacontenttype": "application/json",
    }


def storage_cloud_event(kind: Kind, data: dict[str, Any], event_id: str) -> Any:
    """The CloudEvent Eventarc would deliver about ``data`` (a :func:`object_resource`)."""
    from cloudevents.http import CloudEvent  # loaded by functions-framework anyway; not at import

    return CloudEvent(cloud_event_attributes(kind, data, event_id), data)


def background_event(kind: Kind, data: dict[str, Any], event_id: str) -> dict[str, Any]:
    """The 1st-gen ``{"context": ..., "data": ...}`` form of the same event."""
    return {
        "context": {
            "eventId": event_id,
            "timestamp": data["updated"],
            "eventType": GEN1_TYPES[kind],
            "resource": {
                "service": "storage.googleapis.com",
                "name": f"projects/_/buckets/{data['bucket']}/objects/{data['name']}",
                "type": "storage#object",
            },
        },
        "data": data,
    }


def pubsub_message(kind: Kind, data: dict[str, Any], *, event_time: str | None = None) -> dict[str, Any]:
    """The Pub/Sub message a bucket notification (``--payload-format=json``) publishes about ``data``:
    ``data`` is the base64 JSON object resource, the attributes say what happened."""
    attributes = {
        "eventType": _KIND_TO_PUBSUB_EVENT[kind],
        "bucketId": data["bucket"],
        "objectId": data["name"],
        "objectGeneration": str(data.get("generation", "")),
        "eventTime": event_time or data.get("updated", ""),
        "payloadFormat": "JSON_API_V1",
        "notificationConfig": f"projects/_/buckets/{data['bucket']}/notificationConfigs/1",
    }
    return {"data": base64.b64encode(json.dumps(data).encode()).decode(), "attributes": attributes}


def pubsub_push(message: dict[str, Any], message_id: str, subscription: str) -> dict[str, Any]:
    """The body a push subscription POSTs for ``message`` (what functions-framework converts)."""
    published = {**message, "messageId": message_id, "publishTime": message["attributes"].get("eventTime", "")}
    return {"message": published, "subscription": subscription}


def build_request(
    kind: Kind,
    bucket: str,
    name: str,
    *,
    size: int = 0,
    content_type: str = "application/octet-stream",
    metadata: dict[str, str] | None = None,
    mode: str = "binary",
    event_id: str | None = None,
) -> tuple[dict[str, str], bytes]:
    """Headers and body of an HTTP request delivering one storage event as the platform does."""
    from cloudevents.conversion import to_binary, to_structured

    event_id = event_id or str(uuid.uuid4())
    data = object_resource(kind, bucket, name, size=size, content_type=content_type, metadata=metadata)
    if mode == "gen1":
        return {"Content-Type": "application/json"}, json.dumps(background_event(kind, data, event_id)).encode()
    if mode == "pubsub":  # a bucket notification, as a Pub/Sub push subscription delivers it
        push = pubsub_push(pubsub_message(kind, data), event_id, "projects/local/subscriptions/storage-notifier")
        return {"Content-Type": "application/json"}, json.dumps(push).encode()
    event = storage_cloud_event(kind, data, event_id)
    if mode == "structured":
        headers, body = to_structured(event)
        return dict(headers), body
    headers, body = to_binary(event)
    # The HTTP binding percent-encodes ce-* values (space, '"', '%' and anything not printable
    # ASCII); the SDK does not, and a non-ASCII object name would not even fit in a header.
    return {k: quote(v, safe=_HEADER_SAFE) if k.startswith("ce-") else v for k, v in headers.items()}, body
