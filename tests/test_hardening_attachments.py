"""Attachments never spoof and never sink an email (issue 12, items 4 and 5).

A hostile uploader controls the object's name, and whoever can forge an event controls its content
type. Neither may change what the recipient sees the file as (RTL overrides, zero-width and other
invisible characters, encoded words, endless names) nor stop the email (CR/LF in a content type).
End to end: objects in fake-gcs-server, the real function over HTTP, the .eml it writes.
"""

from __future__ import annotations

import re
import unicodedata
import urllib.error
import urllib.request
from email.message import EmailMessage

import pytest
from cloudevents.conversion import to_structured

from notifier.addresses import Address
from notifier.events import decode
from notifier.mail.base import Attachment, Envelope, Message, as_mime
from notifier.mail.sendgrid import build_payload
from notifier.objects import ObjectAccess, safe_filename
from notifier.payloads import object_resource, storage_cloud_event
from notifier.rules import Conditions, Delivery, Recipients, Rule
from notifier.tools.localcloud import running_fake_gcs
from tests.conftest import read_eml, settings_for
from tests.fake_gcs_server import FakeGcs

BUCKET = "acme-inbox"
HOSTILE_TYPE = "text/csv\r\nBcc: victim@example.com"
INVALID = "is not a valid media type"
CONTAINER = "would be read as part of this email rather than as a file"
HIDDEN = {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}  # invisible, or breaks a line, or has no glyph
RULE = Rule(
    "r",
    Conditions(),
    Delivery(Recipients(Address("alerts@example.com"), to=(Address("ops@example.com"),)), attach_max_size=4096),
)
NOTIFY_TOML = """
[[rules]]
name = "attach-everything"
attach = true
attach_max_size = "4 KiB"
"""


def _hidden(text: str) -> list[str]:
    return [f"U+{ord(ch):04X}" for ch in text if unicodedata.category(ch) in HIDDEN]


def _upload(gcs: FakeGcs, name: str, data: bytes, content_type: str) -> int:
    return gcs.put(BUCKET, name, data, content_type=content_type)


def _event_request(name: str, generation: int, size: int, content_type: str) -> tuple[bytes, dict[str, str]]:
    data = object_resource("finalize", BUCKET, name, size=size, content_type=content_type)
    data["generation"] = str(generation)
    headers, body = to_structured(storage_cloud_event("finalize", data, f"evt-{generation}"))
    return body, dict(headers)


def _attachment_part(email: EmailMessage) -> EmailMessage:
    (part,) = list(email.iter_attachments())
    return part


@pytest.fixture(scope="module")
def server(function_server_factory, gcs_server, tmp_path_factory):
    config = tmp_path_factory.mktemp("config") / "notify.toml"
    config.write_text(NOTIFY_TOML, encoding="utf-8")
    return function_server_factory(NOTIFY_BACKEND="outbox", NOTIFY_CONFIG=str(config),
                                   STORAGE_EMULATOR_HOST=gcs_server.url)  # fmt: skip


def _deliver(server, gcs: FakeGcs, name: str, data: bytes, uploaded_as: str, event_type: str) -> EmailMessage:
    """Upload, send the event to the function, and return the one email it wrote."""
    before = set(server.emails())
    generation = _upload(gcs, name, data, uploaded_as)
    server.new_log_lines()
    status, answer = server.post(*_event_request(name, generation, len(data), event_type))
    outcomes = [line for line in server.new_log_lines() if "outcome" in line]
    assert (status, [line["outcome"] for line in outcomes]) == (200, ["sent"]), (answer, outcomes)
    (path,) = set(server.emails()) - before
    return read_eml(path)


def test_a_name_with_an_rtl_override_is_attached_under_the_name_it_really_has(server, fake_gcs):
    email = _deliver(server, fake_gcs, "in/invoice\u202efdp.exe", b"MZ not a pdf", "application/pdf", "application/pdf")
    part = _attachment_part(email)
    assert part.get_filename() == "invoicefdp.exe"
    assert _hidden(part["Content-Disposition"]) == []
    assert part.get_content_type() == "application/pdf"
    assert part.get_content() == b"MZ not a pdf"


def test_a_content_type_with_a_line_break_is_attached_as_octet_stream_and_the_email_says_why(server, fake_gcs):
    # Cloud Storage would not store such a type; whoever forges the event can still send one.
    email = _deliver(server, fake_gcs, "in/q3.csv", b"a,b\n1,2\n", "text/csv", HOSTILE_TYPE)
    part = _attachment_part(email)
    assert (part.get_content_type(), part.get_filename(), part.get_content()) == (
        "application/octet-stream",
        "q3.csv",
        b"a,b\n1,2\n",
    )
    assert email["Bcc"] is None
    assert "victim@example.com" not in str(email.get("Bcc", "")) + "".join(str(v) for _, v in part.items())
    note = "Attached as application/octet-stream: the object's content type"
    text = email.get_body(("plain",)).get_content()
    html = email.get_body(("html",)).get_content()
    assert note in text
    assert "not a valid media type" in text
    assert '"text/csv\\r\\nBcc: victim@example.com"' in text, "a safe one-line preview of what came"
    (html_note,) = re.findall(r'<p class="note"[^>]*>([^<]*)</p>', html)
    assert html_note.startswith(note.replace("'", "&#39;"))
    assert "text/csv\\r\\nBcc" in html_note, "shown escaped, on one line"


@pytest.mark.parametrize(
    ("name", "filename"),
    [
        ("in/invoice\u202efdp.exe", "invoicefdp.exe"),  # RIGHT-TO-LEFT OVERRIDE
        ("in/\u2066report\u2069\u200e.pdf", "report.pdf"),  # isolates, LEFT-TO-RIGHT MARK
        ("in/pay\u200broll\u200c\u200d\u2060\ufeff.xlsx", "payroll.xlsx"),  # zero-width, word joiner, BOM
        ("in/a\u2028b\u2029c\x85d.txt", "abcd.txt"),  # line and paragraph separators, NEL
        ("in/so\u00adft\U000e0041.txt", "soft.txt"),  # soft hyphen, tag character
        ("in/bad\ud800surrogate.txt", "badsurrogate.txt"),  # not encodable at all
        ("in/x\u17b4\u17b5\u180b.exe", "x.exe"),  # Khmer inherent vowels, a Mongolian variation selector
        ("in/a\ufe0fb\U000e0100.pdf", "ab.pdf"),  # variation selectors
        ("in/=?utf-8?q?invoice=E2=80=AEfdp.exe?=", "=_utf-8_q_invoice=E2=80=AEfdp.exe_="),  # an RFC 2047 word
        ("in/invoice.pdf                                   .exe", "invoice.pdf .exe"),  # pushing .exe out of view
        ("in/.bashrc", "bashrc"),
        ("in/...", "object"),
        ("in/\u202e\u200b", "object"),
        ("in/\x00\x1f\x7f.", "object"),
    ],
)
def test_attachment_filenames_show_what_the_file_is(name, filename):
    assert safe_filename(name) == filename


@pytest.mark.parametrize(("stem", "extension"), [("a" * 400, ".pdf"), ("数" * 300, ".csv"), ("é" * 250, ".gz")])
def test_a_very_long_name_is_cut_to_200_utf8_bytes_keeping_its_extension(stem, extension):
    filename = safe_filename(f"in/{stem}{extension}")
    assert 190 < len(filename.encode()) <= 200
    assert filename.endswith(extension)
    assert stem.startswith(filename.removesuffix(extension)), "cut on a character, never inside one"


def test_an_extension_too_long_to_be_one_is_cut_like_the_rest():
    filename = safe_filename("report." + "x" * 400)
    assert len(filename.encode()) <= 200
    assert filename.startswith("report.xxx")


@pytest.mark.parametrize(
    ("event_type", "content_type", "why"),
    [
        ("text/csv", "text/csv", None),
        ("Text/CSV; charset=utf-8", "text/csv", None),
        ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
         "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", None),
        ("", "application/octet-stream", None),  # unknown is not hostile
        (HOSTILE_TYPE, "application/octet-stream", INVALID),
        ("text/csv\n", "application/octet-stream", INVALID),
        ("text", "application/octet-stream", INVALID),
        ("text/csv/x", "application/octet-stream", INVALID),
        ("text/ csv", "application/octet-stream", INVALID),
        ("text/c\u202esv", "application/octet-stream", INVALID),
        ("text/" + "c" * 200, "application/octet-stream", INVALID),
        ("multipart/mixed; boundary=x", "application/octet-stream", CONTAINER),  # would be read as our own parts
        ("message/rfc822", "application/octet-stream", CONTAINER),  # would show a forged email inline
    ],
)  # fmt: skip
def test_only_a_valid_media_type_is_kept(fake_gcs, event_type, content_type, why):
    generation = _upload(fake_gcs, "unit/data.bin", b"12345", "application/octet-stream")
    data = object_resource("finalize", BUCKET, "unit/data.bin", size=5, content_type=event_type)
    data["generation"] = str(generation)
    event = decode(storage_cloud_event("finalize", data, "evt"))
    extras = ObjectAccess(settings_for(STORAGE_EMULATOR_HOST=fake_gcs.url)).extras(event, RULE.delivery)
    (attachment,) = extras.attachments
    assert (attachment.content_type, attachment.data) == (content_type, b"12345")
    if why is None:
        assert extras.notes == ()
        return
    (note,) = extras.notes
    assert note.startswith("Attached as application/octet-stream: the object's content type ")
    assert note.endswith(f" {why}.")
    assert _hidden(note) == [] and len(note) < 300, "one safe line"


def _message(attachment: Attachment) -> Message:
    return Message(Address("alerts@example.com"), (Envelope(to=(Address("ops@example.com"),)),), "s", "t", "<p>h</p>",
                   "n" * 32, ("c",), attachments=(attachment,))  # fmt: skip


def test_an_attachment_is_always_safe_to_send_whoever_built_it():
    """Defence in depth: a dead letter written before these checks, or a future caller."""
    attachment = Attachment("in\u202evoice\r\n\x00.exe", HOSTILE_TYPE, b"x")
    assert (attachment.filename, attachment.content_type) == ("invoice.exe", "application/octet-stream")
    mime = as_mime(_message(attachment), Envelope(to=(Address("ops@example.com"),)))
    part = _attachment_part(mime)
    assert (part.get_content_type(), part.get_filename()) == ("application/octet-stream", "invoice.exe")
    assert mime["Bcc"] is None
    (sent,) = build_payload(_message(attachment), [Envelope(to=(Address("ops@example.com"),))])["attachments"]
    assert (sent["type"], sent["filename"]) == ("application/octet-stream", "invoice.exe")
    stored = _message(attachment).to_dict()["attachments"]
    assert stored == [{"filename": "invoice.exe", "content_type": "application/octet-stream", "size": 1}]


def test_fake_gcs_server_is_stopped_even_when_the_test_fails():
    def fail_inside() -> str:
        with running_fake_gcs() as gcs:
            assert gcs.bucket("probe").exists()
            raise RuntimeError(gcs.url)

    with pytest.raises(RuntimeError) as failure:
        fail_inside()
    url = str(failure.value)
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"{url}/storage/v1/b", timeout=2)
