"""The state bucket's JSON API client (notifier.ledger.bucket) against fake-gcs-server, behind the
recording, fault-injecting proxy (tests/fake_gcs_server.py); and the promise that handling an event
loads no google.* module (google-cloud-storage cost 150-280 ms of every cold start)."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from cloudevents.conversion import to_binary

from notifier.config import ConfigError
from notifier.ledger import ClaimStatus, LedgerError, create_state
from notifier.ledger import bucket as bucket_module
from notifier.ledger.base import state_deadline
from notifier.ledger.bucket import StateBucket, StateBucketError
from notifier.ledger.gcs import GcsLedger
from tests.conftest import settings_for, storage_cloud_event
from tests.fake_gcs_server import STATE_BUCKET

ROOT = Path(__file__).resolve().parent.parent
ODD_NAME = "ledger/a b?c#d%2F/é"  # every character a URL path could misread


class Sleeps(list):
    """A bucket's ``sleep``: records each backoff instead of waiting it out."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def _bucket(fake_gcs, *, retries: bool = True, **options) -> tuple[StateBucket, Sleeps]:
    bucket = StateBucket(STATE_BUCKET, fake_gcs.url, retry_budget=8.0 if retries else 0.0, **options)
    bucket.sleep = sleeps = Sleeps()
    return bucket, sleeps


def test_an_object_name_is_one_path_segment_whatever_it_holds(fake_gcs):
    bucket, _ = _bucket(fake_gcs)
    generation = bucket.upload(ODD_NAME, b'{"x": 1}', metadata={"expires": "2099-01-01"})
    assert fake_gcs.read_json(STATE_BUCKET, ODD_NAME) == {"x": 1}
    assert fake_gcs.blob(STATE_BUCKET, ODD_NAME).metadata == {"expires": "2099-01-01"}
    stored = bucket.read(ODD_NAME, 100)
    assert (stored.generation, stored.data, stored.content_encoding) == (generation, b'{"x": 1}', None)
    bucket.delete(ODD_NAME, if_generation_match=generation)
    assert fake_gcs.names(STATE_BUCKET) == []


def test_a_read_is_one_request_bounded_and_never_decompressed(fake_gcs):
    bucket, _ = _bucket(fake_gcs)
    fake_gcs.put(STATE_BUCKET, "big", b"x" * 5000)
    bomb = gzip.compress(b"y" * 1_000_000)
    fake_gcs.put(STATE_BUCKET, "bomb", bomb, content_encoding="gzip")
    fake_gcs.requests.clear()

    big, planted = bucket.read("big", 100), bucket.read("bomb", 2 * len(bomb))

    assert len(big.data) == 101, "the limit plus one byte: enough to know it is too large"
    assert (planted.data, planted.content_encoding) == (bomb, "gzip")  # as stored
    assert [(r.method, r.query.get("alt")) for r in fake_gcs.requests] == [("GET", "media")] * 2
    assert bucket.read("missing", 100) is None


def test_a_conditional_read_of_a_replaced_generation_is_none(fake_gcs):
    bucket, _ = _bucket(fake_gcs)
    old = bucket.upload("letter.json", b"{}")
    bucket.upload("letter.json", b"{}")
    assert bucket.read("letter.json", 100, generation=old) is None


def test_create_if_absent_and_conditional_update_answer_none_when_beaten(fake_gcs):
    bucket, _ = _bucket(fake_gcs)
    first = bucket.upload("ledger/n1", b'{"v": 1}', if_generation_match=0)
    assert first is not None
    assert bucket.upload("ledger/n1", b'{"v": 2}', if_generation_match=0) is None
    assert bucket.upload("ledger/n1", b'{"v": 3}', if_generation_match=first + 1) is None
    second = bucket.upload("ledger/n1", b'{"v": 4}', if_generation_match=first)
    assert second not in (None, first)
    assert fake_gcs.read_json(STATE_BUCKET, "ledger/n1") == {"v": 4}
    with pytest.raises(StateBucketError) as stale:
        bucket.delete("ledger/n1", if_generation_match=first)
    assert stale.value.status == 412
    assert fake_gcs.read_json(STATE_BUCKET, "ledger/n1") == {"v": 4}


def test_a_list_pages_through_the_prefix_and_is_bounded(fake_gcs, monkeypatch):
    bucket, _ = _bucket(fake_gcs)
    for i in range(5):
        fake_gcs.put(STATE_BUCKET, f"deadletter/{i}.json", b"{}")
    fake_gcs.put(STATE_BUCKET, "ledger/other", b"{}")
    monkeypatch.setattr(bucket_module, "PAGE_SIZE", 2)
    fake_gcs.requests.clear()

    assert [item.name for item in bucket.list("deadletter/")] == [f"deadletter/{i}.json" for i in range(5)]
    assert [r.query.get("pageToken") is not None for r in fake_gcs.requests] == [False, True, True]
    monkeypatch.setattr(bucket_module, "MAX_PAGES", 2)
    assert len(list(bucket.list("deadletter/"))) == 4


@pytest.mark.parametrize("failure", [503, 500, 429, 408, "reset"])
def test_a_transient_failure_is_retried_after_a_jittered_wait(fake_gcs, failure):
    bucket, sleeps = _bucket(fake_gcs)
    fake_gcs.fail_next.extend([failure, failure])
    assert bucket.upload("ledger/n1", b"{}", if_generation_match=0) is not None
    assert len(sleeps) == 2 and all(0 <= seconds <= 2.0 for seconds in sleeps), sleeps
    assert len(fake_gcs.requests) == 3


@pytest.mark.parametrize("status", [400, 401, 403, 404])
def test_a_permanent_failure_is_not_retried(fake_gcs, status):
    bucket, sleeps = _bucket(fake_gcs)
    fake_gcs.fail_next.append(status)
    with pytest.raises(StateBucketError) as caught:
        bucket.upload("ledger/n1", b"{}")
    assert (caught.value.status, sleeps, len(fake_gcs.requests)) == (status, [], 1)


def test_retries_stop_when_a_whole_request_no_longer_fits_the_deadline(fake_gcs):
    bucket, sleeps = _bucket(fake_gcs, timeout=5.0)
    fake_gcs.fail_next.extend([503] * 20)
    with state_deadline(time.monotonic() + 1.0, send_needs=0.0, grace=0.0), pytest.raises(StateBucketError):
        bucket.upload("ledger/n1", b"{}")  # 1 s left: one request of at most 1 s, and no time to retry
    assert (len(fake_gcs.requests), sleeps) == (1, [])


def test_retries_go_on_only_while_a_whole_request_fits_the_budget(fake_gcs):
    bucket, sleeps = _bucket(fake_gcs, timeout=0.2)
    bucket.retry_budget = 0.5
    fake_gcs.fail_next.extend([503] * 1000)
    with pytest.raises(StateBucketError) as caught:
        bucket.upload("ledger/n1", b"{}")
    assert caught.value.status == 503  # the last failure, as it was
    assert len(fake_gcs.requests) == len(sleeps) + 1 >= 2
    assert all(seconds <= 0.5 for seconds in sleeps), sleeps  # each wait left room for a whole request


def test_no_call_is_made_once_the_deadline_has_passed(fake_gcs):
    bucket, _ = _bucket(fake_gcs)
    with (
        state_deadline(time.monotonic() - 1.0, send_needs=0.0, grace=0.0),
        pytest.raises(TimeoutError, match="not made"),
    ):
        bucket.read("ledger/n1", 100)
    assert fake_gcs.requests == []


def test_a_missing_bucket_is_told_apart_from_a_missing_object(fake_gcs):
    bucket, _ = _bucket(fake_gcs)
    fake_gcs.proxy.fail_message = "The specified bucket does not exist."  # Cloud Storage's words
    fake_gcs.fail_next.append(404)
    with pytest.raises(StateBucketError) as caught:
        bucket.read("ledger/n1", 100)
    assert caught.value.bucket_missing
    fake_gcs.proxy.fail_message = "No such object: notifier-state/ledger/n1"
    fake_gcs.fail_next.append(404)
    assert bucket.read("ledger/n1", 100) is None


def test_a_gzip_encoded_record_counts_as_planted_and_is_not_inflated(fake_gcs):
    sent = json.dumps({"state": "sent", "message_id": "m", "pad": "x" * 1_000_000}).encode()
    fake_gcs.put(STATE_BUCKET, "ledger/n1", gzip.compress(sent), content_encoding="gzip")
    bucket, _ = _bucket(fake_gcs)
    assert GcsLedger(bucket).claim("n1", lease_seconds=60).status is ClaimStatus.CLAIMED


def test_a_claim_costs_one_request_and_a_duplicate_two(fake_gcs):
    bucket, _ = _bucket(fake_gcs)
    ledger = GcsLedger(bucket)
    fake_gcs.requests.clear()
    claim = ledger.claim("n1", lease_seconds=60)
    ledger.mark_sent(claim, "m-1")
    assert [r.method for r in fake_gcs.requests] == ["POST", "POST"]  # the create, the mark
    fake_gcs.requests.clear()
    assert ledger.claim("n1", lease_seconds=60).status is ClaimStatus.SENT
    assert [(r.method, r.query.get("alt")) for r in fake_gcs.requests] == [("POST", None), ("GET", "media")]


def test_create_state_uses_the_emulator_else_the_endpoint(fake_gcs, monkeypatch):
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    settings = settings_for(NOTIFY_STATE_BUCKET=STATE_BUCKET, NOTIFY_STORAGE_ENDPOINT=fake_gcs.url)
    assert settings.storage_endpoint == fake_gcs.url
    ledger, dead_letters = create_state(settings_for(NOTIFY_STATE_BUCKET=STATE_BUCKET,
                                                     STORAGE_EMULATOR_HOST=fake_gcs.url,
                                                     NOTIFY_STORAGE_ENDPOINT="http://127.0.0.1:9"))  # fmt: skip
    assert ledger.claim("n1", lease_seconds=60).status is ClaimStatus.CLAIMED  # the emulator wins
    assert dead_letters.put("n1", {"error": "x"}) == f"gs://{STATE_BUCKET}/deadletter/n1.json"
    assert fake_gcs.names(STATE_BUCKET) == ["deadletter/n1.json", "ledger/n1"]


def test_a_failure_of_the_bucket_is_a_ledger_error_naming_it(fake_gcs):
    bucket, _ = _bucket(fake_gcs, retries=False)
    fake_gcs.fail_next.append("reset")
    with pytest.raises(LedgerError, match="state bucket notifier-state"):
        GcsLedger(bucket).claim("n1", lease_seconds=60)


# --- NOTIFY_STORAGE_ENDPOINT ------------------------------------------------------------------


def test_the_storage_endpoint_defaults_to_cloud_storage():
    assert settings_for().storage_endpoint == "https://storage.googleapis.com"
    endpoint = "https://storage-psc.p.googleapis.com/"
    assert settings_for(NOTIFY_STORAGE_ENDPOINT=endpoint).storage_endpoint == endpoint.rstrip("/")


@pytest.mark.parametrize("value", ["storage.googleapis.com", "ftp://x", "https://x/path", "https://a b"])
def test_a_malformed_storage_endpoint_is_named(value):
    with pytest.raises(ConfigError) as caught:
        settings_for(NOTIFY_STORAGE_ENDPOINT=value)
    (problem,) = caught.value.problems
    assert problem.startswith("NOTIFY_STORAGE_ENDPOINT: expected http(s)://HOST[:PORT]"), problem


def test_a_deployed_function_sends_its_token_only_over_https():
    deployed = {"K_SERVICE": "notifier", "NOTIFY_BACKEND": "console"}
    assert settings_for(**deployed, NOTIFY_STORAGE_ENDPOINT="https://127.0.0.1:8443").storage_endpoint
    with pytest.raises(ConfigError) as caught:
        settings_for(**deployed, NOTIFY_STORAGE_ENDPOINT="http://127.0.0.1:8080")
    (problem,) = caught.value.problems
    assert "NOTIFY_STORAGE_ENDPOINT: expected https://HOST[:PORT]" in problem
    assert "access token" in problem


# --- the event's path imports no google.* module -----------------------------------------------

_HANDLE_ONE_EVENT = """
import json, sys
import functions_framework
before = set(sys.modules)
app = functions_framework.create_app("handle_storage_event", "main.py", "cloudevent")
event = json.loads(sys.stdin.read())
answer = app.test_client().post("/", data=event["body"].encode(), headers=event["headers"])
loaded = sorted(name for name in set(sys.modules) - before if name.split(".")[0] == "google")
digests = sorted(name for name in sys.modules if name.startswith(("notifier.digest", "notifier.holding",
                 "notifier.flush", "notifier.ledger.digests", "notifier.ledger.gcs_digests")))
print(json.dumps({"status": answer.status_code, "google": loaded, "digests": digests}))
"""


def _handle_one_event(env: dict[str, str], headers: dict[str, str], body: bytes) -> dict:
    """One event through the function in a fresh process: its answer's status (checked to be 200)
    and the google.* modules it loaded beyond functions-framework's own."""
    event = json.dumps({"headers": dict(headers), "body": body.decode()})
    done = subprocess.run([sys.executable, "-c", _HANDLE_ONE_EVENT], input=event, capture_output=True, text=True,
                          cwd=ROOT, env=env, timeout=60, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["status"] == 200, done.stdout[-2000:]
    return result


def test_handling_an_event_without_links_or_attachments_does_not_import_google_cloud_storage(fake_gcs, tmp_path):
    headers, body = to_binary(storage_cloud_event(event_id="lean-1"))
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "SENDGRID_", "GOOGLE_"))},
        "NOTIFY_BACKEND": "outbox", "NOTIFY_OUTBOX_DIR": str(tmp_path / "outbox"),
        "NOTIFY_FROM": "Alerts <alerts@example.com>", "NOTIFY_TO": "ops@example.com",
        "NOTIFY_STATE_BUCKET": STATE_BUCKET, "STORAGE_EMULATOR_HOST": fake_gcs.url,
    }  # fmt: skip
    result = _handle_one_event(env, headers, body)
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1
    (name,) = fake_gcs.names(STATE_BUCKET, prefix="ledger/")
    assert fake_gcs.read_json(STATE_BUCKET, name)["state"] == "sent"  # the ledger was used, over HTTP
    assert "google.cloud.storage" not in result["google"]
    assert result["google"] == [], "no google.* module beyond what functions-framework loads itself"
    assert result["digests"] == [], "without a digest rule, none of the digest machinery is loaded"


def test_an_upload_answer_without_a_generation_is_an_error_not_generation_zero(httpserver):
    httpserver.expect_request("/upload/storage/v1/b/state/o").respond_with_json({"kind": "storage#object"})
    bucket = StateBucket("state", httpserver.url_for("").rstrip("/"), retry_budget=0.0)
    with pytest.raises(StateBucketError, match="names no generation"):
        bucket.upload("ledger/n1", b"{}", if_generation_match=0)


def test_a_deployed_function_handles_an_event_with_no_google_module_either(tmp_path, httpserver):
    """As deployed (K_SERVICE): SendGrid, the state bucket over HTTPS at NOTIFY_STORAGE_ENDPOINT and the
    token from the metadata server (GCE_METADATA_HOST), all local; still no google.* module."""
    import trustme

    from bench.metadata import MetadataStandIn
    from notifier.tools.localcloud import ServerCertificate, running_fake_gcs

    authority = trustme.CA()
    authority.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    issued = authority.issue_cert("127.0.0.1", "localhost")
    issued.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
    issued.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
    httpserver.expect_request("/v3/mail/send", method="POST").respond_with_data(
        "", status=202, headers={"X-Message-Id": "sg-lean"}
    )
    headers, body = to_binary(storage_cloud_event(event_id="lean-deployed"))
    certificate = ServerCertificate(tmp_path / "cert.pem", tmp_path / "key.pem")
    with running_fake_gcs(certificate=certificate) as gcs, MetadataStandIn() as metadata:
        create = {"name": STATE_BUCKET}
        request = urllib.request.Request(f"{gcs.plain_url}/storage/v1/b?project=local", json.dumps(create).encode(),
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        urllib.request.urlopen(request, timeout=10).close()
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "SENDGRID_", "GOOGLE_", "K_"))},
            "K_SERVICE": "storage-notifier-finalize", "SENDGRID_API_KEY": "SG.test-not-a-real-key",
            "SENDGRID_API_HOST": httpserver.url_for("").rstrip("/"),
            "NOTIFY_FROM": "Alerts <alerts@example.com>", "NOTIFY_TO": "ops@example.com",
            "NOTIFY_STATE_BUCKET": STATE_BUCKET, "NOTIFY_STORAGE_ENDPOINT": gcs.url,
            "GCE_METADATA_HOST": metadata.host, "SSL_CERT_FILE": str(tmp_path / "ca.pem"),
        }  # fmt: skip
        env.pop("STORAGE_EMULATOR_HOST", None)
        result = _handle_one_event(env, headers, body)
        assert metadata.tokens == 1
        listing = f"{gcs.plain_url}/storage/v1/b/{STATE_BUCKET}/o?prefix=ledger/"
        with urllib.request.urlopen(listing, timeout=10) as answer:
            (item,) = json.loads(answer.read())["items"]
        record = f"{gcs.plain_url}/storage/v1/b/{STATE_BUCKET}/o/{urllib.parse.quote(item['name'], safe='')}?alt=media"
        with urllib.request.urlopen(record, timeout=10) as answer:
            assert json.loads(answer.read())["state"] == "sent"
    assert len(httpserver.log) == 1
    assert result["google"] == [], "no google.* module beyond what functions-framework loads itself"


# --- review R2: requests that cannot be made, Cloud Storage's own error words, listing, Retry-After ---

ACME = "acme-state-bucket"  # a bucket whose very name says "bucket"


def _gcs_error(status: int, message: str, reason: str = "notFound") -> dict:
    """An error answer as Cloud Storage's JSON API words it."""
    return {"error": {"code": status, "message": message,
                      "errors": [{"message": message, "domain": "global", "reason": reason}]}}  # fmt: skip


def _stand_in_bucket(httpserver, name: str = ACME) -> tuple[StateBucket, Sleeps]:
    bucket = StateBucket(name, httpserver.url_for("").rstrip("/"))
    bucket.sleep = sleeps = Sleeps()
    return bucket, sleeps


@pytest.mark.parametrize("endpoint", ["https://127.0.0.1:99999", "https://[zz]"])
def test_a_request_that_cannot_be_made_is_a_transient_ledger_error_never_our_bug(endpoint):
    """Past the configuration's check (its own tests), a ValueError from building the request must not
    escape as "our bug" (acknowledged, the email lost): the platform is to redeliver."""
    bucket = StateBucket(ACME, endpoint, retry_budget=0.0)
    with pytest.raises(LedgerError) as caught:
        GcsLedger(bucket).claim("n1", lease_seconds=60)
    assert not caught.value.misconfigured
    assert f"state bucket {ACME}" in str(caught.value) and "could not be made" in str(caught.value)


def test_an_object_404_in_a_bucket_named_bucket_is_an_object_gone(httpserver):
    from notifier.ledger import Claim
    from notifier.ledger.gcs import GcsDeadLetters

    gone = _gcs_error(404, f"No such object: {ACME}/ledger/n1")
    # (the stand-in matches the path decoded: %2F as /)
    httpserver.expect_request(f"/storage/v1/b/{ACME}/o/ledger/n1").respond_with_json(gone, status=404)
    httpserver.expect_request(f"/storage/v1/b/{ACME}/o/deadletter/n1.json").respond_with_json(gone, status=404)
    bucket, _ = _stand_in_bucket(httpserver)

    assert bucket.read("ledger/n1", 64 * 1024) is None
    assert bucket.read("ledger/n1", 100) is None, "a small read limit still reads Cloud Storage's error whole"
    GcsLedger(bucket).release(Claim("n1", ClaimStatus.CLAIMED, token="t", version=5))  # already gone: fine
    GcsDeadLetters(bucket).remove("n1")
    assert len(httpserver.log) == 4


def test_a_missing_bucket_is_known_by_cloud_storages_words_or_an_upload_404(httpserver):
    httpserver.expect_request(f"/storage/v1/b/{ACME}/o/ledger/n1").respond_with_json(
        _gcs_error(404, "The specified bucket does not exist."), status=404
    )
    httpserver.expect_request(f"/upload/storage/v1/b/{ACME}/o").respond_with_data("Not Found", status=404)
    bucket, _ = _stand_in_bucket(httpserver)
    with pytest.raises(StateBucketError) as caught:
        bucket.read("ledger/n1", 100)
    assert caught.value.bucket_missing
    with pytest.raises(LedgerError) as claimed:  # an upload: only a missing bucket answers 404
        GcsLedger(bucket).claim("n1", lease_seconds=60)
    assert claimed.value.misconfigured and f"bucket {ACME!r} does not exist" in str(claimed.value)


def test_a_list_asks_only_for_the_fields_it_reads(fake_gcs):
    bucket, _ = _bucket(fake_gcs)
    fake_gcs.put(STATE_BUCKET, "deadletter/a.json", b"{}")
    fake_gcs.requests.clear()
    assert [item.name for item in bucket.list("deadletter/")] == ["deadletter/a.json"]
    (request,) = fake_gcs.requests
    assert request.query.get("fields") == "nextPageToken,items(name,generation,size,contentEncoding)"


def test_a_list_page_over_the_bound_says_so(fake_gcs, monkeypatch):
    bucket, _ = _bucket(fake_gcs)
    for i in range(5):
        fake_gcs.put(STATE_BUCKET, f"deadletter/{i}.json", b"{}")
    monkeypatch.setattr(bucket_module, "MAX_PAGE_BYTES", 200)
    with pytest.raises(StateBucketError, match="list page over 200 bytes"):
        list(bucket.list("deadletter/"))


def test_a_listing_stopped_at_max_pages_is_said_to_the_replay(fake_gcs, monkeypatch):
    from notifier.ledger import UnreadableLetter
    from notifier.ledger.gcs import GcsDeadLetters

    bucket, _ = _bucket(fake_gcs)
    for i in range(3):
        fake_gcs.put(STATE_BUCKET, f"deadletter/{i}.json", json.dumps({"created": "2026-01-01", "error": "x"}).encode())
    monkeypatch.setattr(bucket_module, "PAGE_SIZE", 2)
    monkeypatch.setattr(bucket_module, "MAX_PAGES", 1)
    *letters, last = GcsDeadLetters(bucket).list()
    assert [letter.notification_id for letter in letters] == ["0", "1"]
    assert isinstance(last, UnreadableLetter) and last.source == f"gs://{STATE_BUCKET}/deadletter/"
    assert "only the first 2 objects" in last.reason and "again" in last.reason, last.reason


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_is_honoured_within_the_budget(httpserver, status):
    path = f"/upload/storage/v1/b/{ACME}/o"
    busy = _gcs_error(status, "slow down", "rateLimitExceeded")
    httpserver.expect_ordered_request(path).respond_with_json(busy, status=status, headers={"Retry-After": "3"})
    httpserver.expect_ordered_request(path).respond_with_json(busy, status=status, headers={"Retry-After": "3600"})
    httpserver.expect_ordered_request(path).respond_with_json({"generation": "9"})
    bucket, sleeps = _stand_in_bucket(httpserver)
    bucket.retry_budget = 20.0
    assert bucket.upload("ledger/n1", b"{}", if_generation_match=0) == 9
    assert sleeps[0] == 3.0, sleeps  # as asked
    assert 3.0 < sleeps[1] <= bucket_module.MAX_RETRY_AFTER < 3600, sleeps  # capped


def test_a_retry_after_past_the_budget_ends_the_retries(httpserver):
    busy = _gcs_error(429, "slow down", "rateLimitExceeded")
    httpserver.expect_request(f"/upload/storage/v1/b/{ACME}/o").respond_with_json(
        busy, status=429, headers={"Retry-After": "3600"}
    )
    bucket, sleeps = _stand_in_bucket(httpserver)
    bucket.retry_budget = 1.0
    with pytest.raises(StateBucketError) as caught:
        bucket.upload("ledger/n1", b"{}")
    assert (caught.value.status, sleeps, len(httpserver.log)) == (429, [], 1)


def test_attachments_are_downloaded_from_the_storage_endpoint_too(httpserver, tmp_path, monkeypatch):
    """NOTIFY_STORAGE_ENDPOINT (a Private Service Connect endpoint) is where every Cloud Storage request
    goes, not the state bucket's alone: google-cloud-storage's downloads included."""
    from notifier.objects import storage_client
    from tests.test_credentials import _service_account_key

    httpserver.expect_request("/token", method="POST").respond_with_json(
        {"access_token": "ya29.local", "expires_in": 3600, "token_type": "Bearer"}
    )
    httpserver.expect_request("/download/storage/v1/b/uploads/o/report.csv").respond_with_data(
        "a,b\n", headers={"x-goog-generation": "1"}
    )
    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(_service_account_key(httpserver.url_for("/token"))), encoding="utf-8")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    settings = settings_for(NOTIFY_STORAGE_ENDPOINT=httpserver.url_for("").rstrip("/"))
    client = storage_client(settings)
    assert client.bucket("uploads").blob("report.csv").download_as_bytes(timeout=5, retry=None) == b"a,b\n"
    assert "/download/storage/v1/b/uploads/o/report.csv" in [request.path for request, _ in httpserver.log]


def test_a_signed_link_points_at_cloud_storage_even_through_a_private_endpoint(tmp_path, monkeypatch):
    """Recipients open the link from anywhere: not from inside the function's network, where a
    Private Service Connect endpoint is."""
    from notifier.events import decode
    from notifier.objects import ObjectAccess
    from tests.test_credentials import _service_account_key

    key_file = tmp_path / "key.json"
    key_file.write_text(json.dumps(_service_account_key("http://127.0.0.1:9/token")), encoding="utf-8")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key_file))
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    settings = settings_for(NOTIFY_STORAGE_ENDPOINT="https://storage-psc.p.googleapis.com")
    event = decode(storage_cloud_event(bucket="acme", name="q3.csv", generation="17"))
    url = ObjectAccess(settings).signed_url(event, 600)
    assert url.startswith("https://storage.googleapis.com/acme/q3.csv?"), url
