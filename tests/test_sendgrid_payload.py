"""Our v3 Mail Send JSON against the one SendGrid's own helpers build, for a broad set of messages.

The function builds the payload itself (importing the SDK costs cold start, see README
"Performance"); the SDK's ``sendgrid.helpers.mail`` stays the reference here, in the test only.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from sendgrid.helpers.mail import Attachment as SendGridAttachment
from sendgrid.helpers.mail import (
    Bcc,
    Category,
    Cc,
    CustomArg,
    Disposition,
    Email,
    FileContent,
    FileName,
    FileType,
    Header,
    Mail,
    MailSettings,
    Personalization,
    ReplyTo,
    SandBoxMode,
    TemplateId,
    To,
)

from notifier.addresses import Address
from notifier.mail.base import Attachment, Envelope, Message
from notifier.mail.sendgrid import build_payload

ROOT = Path(__file__).resolve().parent.parent


def sdk_payload(message: Message, envelopes: Iterable[Envelope], *, sandbox: bool = False) -> dict[str, Any]:
    """The body notifier.mail.sendgrid built with the SDK's helpers until issue 15 (verbatim)."""
    templated = message.template_id is not None
    mail = Mail(
        from_email=Email(message.sender.email, message.sender.name or None),
        subject=None if templated else message.subject,
        plain_text_content=None if templated else message.text,
        html_content=None if templated else message.html,
    )
    for position, envelope in enumerate(envelopes):
        personalization = Personalization()
        for address in envelope.to:
            personalization.add_to(To(address.email, address.name or None))
        for address in envelope.cc:
            personalization.add_cc(Cc(address.email, address.name or None))
        for address in envelope.bcc:
            personalization.add_bcc(Bcc(address.email, address.name or None))
        if templated:
            personalization.dynamic_template_data = dict(message.template_data)
        mail.add_personalization(personalization, index=position)  # the helper prepends by default
    if templated:
        mail.template_id = TemplateId(message.template_id)
    if message.reply_to is not None:
        mail.reply_to = ReplyTo(message.reply_to.email, message.reply_to.name or None)
    mail.header = Header("X-Notification-Id", message.notification_id)
    for key, value in message.headers.items():
        mail.header = Header(key, value)
    mail.custom_arg = CustomArg("notification_id", message.notification_id)
    for category in message.categories:
        mail.category = Category(category)
    for attachment in message.attachments:
        mail.add_attachment(
            SendGridAttachment(
                FileContent(base64.b64encode(attachment.data).decode()),
                FileName(attachment.filename),
                FileType(attachment.content_type),
                Disposition("attachment"),
            )
        )
    if sandbox:
        mail.mail_settings = MailSettings(sandbox_mode=SandBoxMode(True))
    return mail.get()


OPS, DATA = Address("ops@example.com"), Address("data@example.com", "Data Team")
QUOTED = Address("o'brien+tag@sub.example.com", 'Smith, "Jo" ; Ann')
BASE = Message(
    sender=Address("alerts@example.com", "Storage Alerts"),
    envelopes=(Envelope(to=(OPS, DATA)),),
    subject="Uploaded: reports/q3.csv (acme)",
    text="plain body\n",
    html="<p>html body</p>",
    notification_id="0123456789abcdef0123456789abcdef",
    categories=("storage-notifier", "finalize"),
)


def _with(**fields: Any) -> Message:
    return Message(**{**{f: getattr(BASE, f) for f in Message.__slots__}, **fields})


MESSAGES = {
    "plain": BASE,
    "unnamed sender, no categories": _with(sender=Address("alerts@example.com"), categories=()),
    "named and unnamed, cc and bcc": _with(
        envelopes=(Envelope(to=(OPS,), cc=(DATA, Address("c@example.com")), bcc=(QUOTED,)),)
    ),
    "every character an address may hold": _with(
        envelopes=(Envelope(to=(Address("x!#$%&'*+/=?^_`{|}~-@example.com"), Address("UPPER@Example.COM", "U"))),)
    ),
    "several envelopes": _with(
        envelopes=tuple(Envelope(to=(Address(f"u{i}@example.com", f"User {i}" if i % 2 else ""),)) for i in range(5))
    ),
    "the same address twice in one field, cased differently": _with(
        envelopes=(Envelope(to=(OPS, Address("OPS@example.com", "Ops")), cc=(DATA, DATA)),)
    ),
    "reply-to named": _with(reply_to=Address("help@example.com", "Help Desk")),
    "reply-to unnamed": _with(reply_to=Address("help@example.com")),
    "custom headers": _with(headers={"X-Bucket": "acme", "X-Priority": "1", "List-Id": "<alerts.example.com>"}),
    "a custom header named like ours": _with(headers={"X-Notification-Id": "theirs", "X-Other": "x"}),
    "several categories": _with(categories=("a", "b", "c", "storage-notifier")),
    "attachments": _with(
        attachments=(
            Attachment("q3.csv", "text/csv", b"a,b\n1,2\n"),
            Attachment("empty.bin", "application/octet-stream", b""),
            Attachment("r\u00e9sum\u00e9.pdf", "application/pdf", bytes(range(256))),
        )
    ),
    "empty text, html only": _with(text=""),
    "empty html": _with(html=""),
    "empty subject": _with(subject=""),
    "non-ASCII everywhere": _with(
        subject="H\u00e9 \u2603", text="\u00e9\n", sender=Address("alerts@example.com", "Alertes \u00e9t\u00e9")
    ),
    "dynamic template with data": _with(
        template_id="d-0123456789abcdef",
        template_data={"bucket": "acme", "object": {"name": "q3.csv", "size": 2048}, "tags": ["a", "b"]},
        envelopes=(Envelope(to=(OPS,), bcc=(DATA,)), Envelope(to=(QUOTED,))),
    ),
    "dynamic template without data": _with(template_id="d-0123456789abcdef"),
    "everything at once": _with(
        envelopes=(Envelope(to=(OPS,), cc=(DATA,)), Envelope(to=(QUOTED,), bcc=(Address("b@example.com"),))),
        reply_to=Address("help@example.com", "Help"),
        headers={"X-Bucket": "acme"},
        attachments=(Attachment("a.txt", "text/plain", b"A"), Attachment("b.txt", "text/plain", b"B")),
    ),
}


@pytest.mark.parametrize("sandbox", [False, True], ids=["live", "sandbox"])
@pytest.mark.parametrize("message", MESSAGES.values(), ids=MESSAGES.keys())
def test_the_payload_is_the_one_the_sdk_built(message, sandbox):
    ours = build_payload(message, message.envelopes, sandbox=sandbox)
    reference = sdk_payload(message, message.envelopes, sandbox=sandbox)

    assert ours == reference
    # The same keys in the same order: the request body is the same bytes as before.
    assert json.dumps(ours) == json.dumps(reference)


def test_a_batch_of_envelopes_is_one_personalization_each_in_order():
    envelopes = [Envelope(to=(Address(f"u{i}@example.com"),)) for i in range(3)]

    ours = build_payload(BASE, envelopes[1:])

    assert ours == sdk_payload(BASE, envelopes[1:])
    assert [p["to"][0]["email"] for p in ours["personalizations"]] == ["u1@example.com", "u2@example.com"]


def test_sending_through_sendgrid_imports_neither_the_sdk_nor_its_http_client():
    # A subprocess: this test module itself imports the SDK as the reference.
    code = (
        "import sys, time\n"
        "from notifier.addresses import Address\n"
        "from notifier.mail.base import Envelope, Message\n"
        "from notifier.mail.sendgrid import SendGridBackend, build_payload\n"
        "m = Message(Address('a@example.com'), (Envelope(to=(Address('b@example.com'),)),), 's', 't', 'h', 'n', ())\n"
        "build_payload(m, m.envelopes)\n"
        "print(sorted(n for n in sys.modules if n.split('.')[0] in "
        "('sendgrid', 'python_http_client', 'cryptography', 'requests')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)

    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
