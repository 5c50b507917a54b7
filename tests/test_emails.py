"""What the emails say and carry: wording per event, links, notes, local time, switches."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from types import SimpleNamespace
from zoneinfo import ZoneInfo

import pytest
from jinja2.exceptions import SecurityError

from notifier.addresses import Address
from notifier.events import decode
from notifier.mail.base import Attachment
from notifier.mail.redirect import RedirectBackend
from notifier.mail.sendgrid import build_payload
from notifier.objects import Extras
from notifier.render import Renderer, TemplateError
from notifier.rules import Conditions, Delivery, Notification, Recipients, Rule
from notifier.tools.cli import main
from notifier.tools.variables_doc import variables_markdown
from tests.conftest import storage_cloud_event

ROOT = Path(__file__).resolve().parent.parent
RULE = Rule(
    "r",
    Conditions(),
    Delivery(Recipients(Address("alerts@example.com"), to=(Address("a@example.com"), Address("b@example.com")))),
)


def _render(kind="finalize", renderer=None, rule=RULE, extras=None, **data):
    event = decode(storage_cloud_event(kind, name="reports/q3.csv", generation="17", **data))
    return (renderer or Renderer()).render(Notification("n" * 32, event, rule), extras or Extras())


@pytest.mark.parametrize(
    ("kind", "data", "says", "never"),
    [
        ("finalize", {}, "a new object, or a new version of an existing one (the event does not say which)", "replaced in"),
        ("finalize", {"overwroteGeneration": "12"}, "generation 17 is a new upload over generation 12", "does not say"),
        ("delete", {}, "Generation 17 of reports/q3.csv was deleted from bucket acme: removed, or replaced", "soft"),
        ("delete", {"overwrittenByGeneration": "18"}, "because a new upload (generation 18) replaced it", "soft"),
        ("delete", {"softDeleteTime": "2026-11-25T10:00:00Z", "hardDeleteTime": "2026-12-02T10:00:00Z"},
         "soft-deleted from bucket acme. It can be restored until 2026-12-02T10:00:00Z", "Generation 17"),
        ("archive", {}, "is no longer the live version in bucket acme: it was deleted or replaced", "soft"),
        ("archive", {"overwrittenByGeneration": "18"}, ": generation 18 replaced it", "deleted or replaced"),
        ("metadata", {"metageneration": "3", "metadata": {"team": "finance"}},
         "changed (metageneration 3); its content did not", "replaced"),
    ],
)  # fmt: skip
def test_the_words_say_only_what_the_event_proves(kind, data, says, never):
    message = _render(kind, **data)
    assert says in message.text
    assert never not in message.text
    assert says.split(":")[0].replace("reports/q3.csv", "") in message.html.replace(
        "<strong>reports/q3.csv</strong>", ""
    )


def test_metadata_changes_show_the_custom_metadata():
    message = _render("metadata", metadata={"team": "finance", "owner": "<b>x</b>"})
    assert "Metadata:       owner = <b>x</b>" in message.text
    assert "owner = &lt;b&gt;x&lt;/b&gt;" in message.html


def test_download_link_notes_and_attachments_reach_the_message():
    extras = Extras(
        download_url="https://storage.googleapis.com/acme/reports/q3.csv?X-Goog-Signature=ab&x=1",
        attachments=(Attachment("q3.csv", "text/csv", b"1,2"),),
        notes=("Not attached: <too> big",),
    )
    message = _render(extras=extras)
    assert (
        "Download (signed link):\n  https://storage.googleapis.com/acme/reports/q3.csv?X-Goog-Signature=ab&x=1"
        in message.text
    )
    assert 'href="https://storage.googleapis.com/acme/reports/q3.csv?X-Goog-Signature=ab&amp;x=1"' in message.html
    assert "Not attached: &lt;too&gt; big" in message.html
    assert message.attachments == extras.attachments


def test_local_time_with_a_time_zone():
    renderer = Renderer(timezone=ZoneInfo("Asia/Tokyo"))
    message = _render(renderer=renderer, updated="2026-11-25T15:30:00Z")
    event = decode(storage_cloud_event(updated="2026-11-25T15:30:00Z"))
    local = (event.event_time or event.updated).astimezone(ZoneInfo("Asia/Tokyo")).strftime("%Y-%m-%d %H:%M JST")
    assert f"Local time:     {local}" in message.text
    assert "Local time" not in _render().text


def test_redirect_sends_everything_to_one_address_and_says_for_whom():
    sent = []
    backend = SimpleNamespace(name="recording", send=lambda message, deadline: sent.append(message))
    RedirectBackend(backend, Address("qa@example.com")).send(_render(renderer=Renderer(redirected=True)), deadline=0)
    (message,) = sent
    assert [[a.email for a in e.to] for e in message.envelopes] == [["qa@example.com"]]
    assert message.headers["X-Original-Recipients"] == "a@example.com, b@example.com"
    assert "[Redirected for testing: meant for a@example.com, b@example.com]" in message.text
    assert "meant for a@example.com, b@example.com" in message.html


def test_user_templates_run_in_the_sandbox(tmp_path):
    (tmp_path / "finalize").mkdir()
    (tmp_path / "finalize" / "subject.txt").write_text("{{ event.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(TemplateError, match=r"templates/finalize/subject\.txt: SecurityError"):
        Renderer(tmp_path)  # tried at start-up, so the function would not start
    with pytest.raises(SecurityError):
        Renderer().templates.environment.from_string("{{ ''.__class__.__base__ }}").render()


def test_a_sendgrid_dynamic_template_gets_the_same_data():
    rule = Rule("r", Conditions(), Delivery(RULE.delivery.recipients, template_id="d-" + "0" * 32))
    message = _render(rule=rule, metadata={"team": "finance"})
    payload = build_payload(message, message.envelopes)
    assert payload["template_id"] == "d-" + "0" * 32
    assert "content" not in payload and "subject" not in payload
    data = payload["personalizations"][0]["dynamic_template_data"]
    json.dumps(data)  # JSON values only
    assert data["object"]["name"] == "reports/q3.csv"
    assert data["metadata"] == {"team": "finance"}
    assert data["subject"] == "Uploaded: reports/q3.csv (acme)"
    assert data["console_url"].startswith("https://console.cloud.google.com/")


def test_sendgrid_sandbox_mode_and_attachments_in_the_payload():
    message = _render(extras=Extras(attachments=(Attachment("q3.csv", "text/csv", b"1,2"),)))
    payload = build_payload(message, message.envelopes, sandbox=True)
    assert payload["mail_settings"] == {"sandbox_mode": {"enable": True}}
    assert payload["attachments"] == [
        {
            "content": base64.b64encode(b"1,2").decode(),
            "filename": "q3.csv",
            "type": "text/csv",
            "disposition": "attachment",
        }
    ]
    assert "mail_settings" not in build_payload(message, message.envelopes)


def test_the_variables_document_is_generated_from_the_code(capsys):
    assert main(["variables"]) == 0
    printed = capsys.readouterr().out
    assert printed == variables_markdown()
    assert (ROOT / "docs" / "template-variables.md").read_text() == printed, (
        "run: python -m notifier variables > docs/template-variables.md"
    )


def test_every_context_variable_is_documented():
    from notifier.render import TEMPLATE_VARIABLES, template_context

    assert set(template_context(decode(storage_cloud_event()))) == set(TEMPLATE_VARIABLES)
