"""Signed download links and attachments, with the real google-cloud-storage client.

Links: signed locally with a service-account key made in the test, or through the IAM signBlob API
(answered by a local server holding that key); either way the V4 signature is verified here with
the public key. Attachments: objects uploaded to fake-gcs-server and read back through it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.request
from datetime import UTC, datetime
from urllib.parse import parse_qsl, quote, urlsplit

import google.auth
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from google.auth.credentials import AnonymousCredentials
from google.oauth2 import service_account
from werkzeug import Response

from notifier.addresses import Address
from notifier.events import decode
from notifier.objects import ObjectAccess, safe_filename
from notifier.rules import Conditions, Delivery, Recipients, Rule
from tests.conftest import settings_for, storage_cloud_event

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
SIGNER_EMAIL = "notifier@acme-prod.iam.gserviceaccount.com"
RULE = Rule("r", Conditions(), Delivery(Recipients(Address("a@example.com"), to=(Address("b@example.com"),))))


def _key_info():
    pem = KEY.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return {
        "type": "service_account", "client_email": SIGNER_EMAIL, "private_key": pem.decode(),
        "private_key_id": "test", "token_uri": "https://oauth2.googleapis.com/token", "project_id": "acme-prod",
    }  # fmt: skip


def _verify_v4(url: str, ttl: int, name: str, generation: int) -> None:
    """Check a V4 signed URL the way Cloud Storage does: rebuild the string-to-sign, verify."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    assert parts.netloc == "storage.googleapis.com"
    assert parts.path == f"/acme/{quote(name, safe='/~')}"
    assert query["X-Goog-Algorithm"] == "GOOG4-RSA-SHA256"
    assert query["X-Goog-Credential"].startswith(SIGNER_EMAIL + "/")
    assert int(query["X-Goog-Expires"]) == ttl
    assert query["generation"] == str(generation), "the link is pinned to the generation the email is about"
    signed_at = datetime.strptime(query["X-Goog-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs((datetime.now(UTC) - signed_at).total_seconds()) < 120
    signature = bytes.fromhex(query.pop("X-Goog-Signature"))
    canonical_query = "&".join(f"{quote(k, safe='~')}={quote(v, safe='~')}" for k, v in sorted(query.items()))
    canonical_request = "\n".join(
        [
            "GET",
            parts.path,
            canonical_query,
            f"host:{parts.netloc}",
            "",
            query["X-Goog-SignedHeaders"],
            "UNSIGNED-PAYLOAD",
        ]
    )
    scope = query["X-Goog-Credential"].split("/", 1)[1]
    string_to_sign = "\n".join(
        ["GOOG4-RSA-SHA256", query["X-Goog-Date"], scope, hashlib.sha256(canonical_request.encode()).hexdigest()]
    )
    KEY.public_key().verify(signature, string_to_sign.encode(), padding.PKCS1v15(), hashes.SHA256())


NAMES = ["reports/q3.csv", "a b/#1?.csv", "ünï/数据.csv"]


@pytest.mark.parametrize("name", NAMES)
def test_a_signed_link_made_with_a_key_verifies_and_expires_when_asked(monkeypatch, name):
    credentials = service_account.Credentials.from_service_account_info(_key_info())
    monkeypatch.setattr(google.auth, "default", lambda *a, **k: (credentials, "acme-prod"))
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    event = decode(storage_cloud_event(bucket="acme", name=name, generation="1700000000000001"))

    url = ObjectAccess(settings_for()).signed_url(event, 3600)

    _verify_v4(url, 3600, name, 1700000000000001)


class MetadataServerCredentials(google.auth.credentials.Credentials):
    """What Cloud Run functions have: a token and an email, no private key."""

    service_account_email = SIGNER_EMAIL

    def __init__(self):
        super().__init__()
        self.refreshed = 0

    def refresh(self, request):
        self.refreshed += 1
        self.token = "metadata-token"
        self.expiry = None


def test_without_a_key_the_link_is_signed_through_iam_sign_blob(monkeypatch, httpserver):
    credentials = MetadataServerCredentials()
    monkeypatch.setattr(google.auth, "default", lambda *a, **k: (credentials, "acme-prod"))
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    calls = []

    def sign_blob(request):
        calls.append((request.path, request.headers.get("Authorization")))
        payload = base64.b64decode(request.get_json()["payload"])
        signature = KEY.sign(payload, padding.PKCS1v15(), hashes.SHA256())
        return Response(json.dumps({"keyId": "k", "signedBlob": base64.b64encode(signature).decode()}),
                        content_type="application/json")  # fmt: skip

    httpserver.expect_request(f"/v1/projects/-/serviceAccounts/{SIGNER_EMAIL}:signBlob").respond_with_handler(sign_blob)
    # The client posts to iamcredentials.googleapis.com; send that host to the local server instead.
    import google.auth.transport.requests as transport

    original = transport.Request.__call__

    def local(self, url, *args, **kwargs):
        return original(
            self,
            url.replace("https://iamcredentials.googleapis.com", httpserver.url_for("").rstrip("/")),
            *args,
            **kwargs,
        )

    monkeypatch.setattr(transport.Request, "__call__", local)
    event = decode(storage_cloud_event(bucket="acme", name="reports/q3.csv", generation="1700000000000002"))

    url = ObjectAccess(settings_for()).signed_url(event, 600)

    _verify_v4(url, 600, "reports/q3.csv", 1700000000000002)
    assert calls == [(f"/v1/projects/-/serviceAccounts/{SIGNER_EMAIL}:signBlob", "Bearer metadata-token")]
    assert credentials.refreshed == 1


def test_a_link_that_cannot_be_signed_becomes_a_note_not_a_lost_email(monkeypatch, capsys):
    monkeypatch.setattr(google.auth, "default", lambda *a, **k: (AnonymousCredentials(), "p"))
    delivery = Delivery(RULE.delivery.recipients, signed_link_ttl=600)
    extras = ObjectAccess(settings_for()).extras(decode(storage_cloud_event()), delivery)
    assert extras.download_url is None
    assert extras.notes[0].startswith("No download link: ")
    # The recipient reads what to do; the program's own words go to the log, once.
    assert "Error" not in extras.notes[0] and "serviceAccountTokenCreator" in extras.notes[0]
    (line,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert (line["severity"], line["error"]) == ("WARNING", "AttributeError")
    assert line["message"].startswith("no download link: gs://")


def test_no_link_for_a_deleted_object():
    delivery = Delivery(RULE.delivery.recipients, signed_link_ttl=600)
    extras = ObjectAccess(settings_for()).extras(decode(storage_cloud_event("delete")), delivery)
    assert (extras.download_url, extras.notes) == (None, ())


@pytest.fixture
def uploads_bucket(fake_gcs):
    return fake_gcs.bucket("acme-uploads")


def _uploaded(bucket, name, data, content_type="text/csv"):
    blob = bucket.blob(name)
    blob.upload_from_string(data, content_type=content_type)
    blob.reload()
    return decode(storage_cloud_event(bucket=bucket.name, name=name, generation=str(blob.generation),
                                      size=str(len(data)), contentType=content_type))  # fmt: skip


def test_an_object_under_the_limit_is_attached_with_its_type(uploads_bucket, fake_gcs):
    event = _uploaded(uploads_bucket, "exports/q3 final.csv", b"a,b\n1,2\n")
    access = ObjectAccess(settings_for(STORAGE_EMULATOR_HOST=fake_gcs.url))
    extras = access.extras(event, Delivery(RULE.delivery.recipients, attach_max_size=1024))
    (attachment,) = extras.attachments
    assert (attachment.filename, attachment.content_type, attachment.data) == (
        "q3 final.csv",
        "text/csv",
        b"a,b\n1,2\n",
    )
    assert extras.notes == ()
    (download,) = [r for r in fake_gcs.requests if r.query.get("alt") == "media"]
    assert (download.object_name, download.query["generation"]) == ("exports/q3 final.csv", str(event.generation))


def test_an_object_over_the_limit_is_not_attached_and_the_email_says_so(uploads_bucket, fake_gcs):
    event = _uploaded(uploads_bucket, "exports/big.bin", b"x" * 2048, "application/octet-stream")
    access = ObjectAccess(settings_for(STORAGE_EMULATOR_HOST=fake_gcs.url))
    extras = access.extras(event, Delivery(RULE.delivery.recipients, attach_max_size=1024))
    assert extras.attachments == ()
    assert extras.notes == ("Not attached: 2,048 bytes is over the 1,024-byte limit; use the link.",)


def test_a_vanished_object_is_a_note(uploads_bucket, fake_gcs):
    event = decode(storage_cloud_event(bucket=uploads_bucket.name, name="gone.csv", size="10"))
    access = ObjectAccess(settings_for(STORAGE_EMULATOR_HOST=fake_gcs.url))
    extras = access.extras(event, Delivery(RULE.delivery.recipients, attach_max_size=1024))
    assert extras.attachments == ()
    assert extras.notes == ("Not attached: the object is no longer there.",)


@pytest.mark.parametrize(
    ("name", "filename"),
    [("a/b/report.csv", "report.csv"), ('x/"quoted"\r\n.csv', "_quoted_.csv"), ("folder/", "folder"), ("..", "object"),
     ("a\\b.txt", "a_b.txt")],
)  # fmt: skip
def test_attachment_filenames_are_safe(name, filename):
    assert safe_filename(name) == filename


def test_on_a_local_emulator_the_link_is_its_plain_download_url_for_that_generation(uploads_bucket, fake_gcs):
    # fake-gcs-server (make sandbox) checks no signature, and anonymous credentials cannot sign.
    name = "in/Q3 #1 résumé?.csv"
    event = _uploaded(uploads_bucket, name, b"first")
    access = ObjectAccess(settings_for(STORAGE_EMULATOR_HOST=fake_gcs.url))

    extras = access.extras(event, Delivery(RULE.delivery.recipients, signed_link_ttl=600))

    assert extras.notes == ()
    assert extras.download_url.startswith(fake_gcs.url + "/download/storage/v1/b/acme-uploads/o/in%2FQ3%20%231%20")
    assert dict(parse_qsl(urlsplit(extras.download_url).query))["generation"] == str(event.generation)
    with urllib.request.urlopen(extras.download_url, timeout=10) as response:
        assert response.read() == b"first"
