"""Every built-in email, rendered by headless Chromium at desktop (600 px) and phone (375 px) width:
every fact in the DOM text, nothing wider than the screen, every link well-formed."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import pytest

from notifier.addresses import Address
from notifier.events import KINDS, decode
from notifier.objects import Extras
from notifier.render import Renderer
from notifier.rules import Conditions, Delivery, Notification, Recipients, Rule
from notifier.tools.browser import BrowserError, chromium, measure
from tests.conftest import storage_cloud_event

try:
    chromium()
except BrowserError as missing:
    # Locally, say what to install; in CI (.ci/run installs Chromium) a missing browser is a failure.
    if os.environ.get("CI"):
        raise
    pytest.skip(f"{missing}", allow_module_level=True)

RULE = Rule("r", Conditions(), Delivery(Recipients(Address("alerts@example.com"), to=(Address("a@example.com"),))))
NAME = "reports/2026/quarterly-close/very-long-folder-name-without-spaces/Q3 revenue (final) #2.csv"


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pages")
    renderer = Renderer()
    extras = Extras(
        download_url="https://storage.googleapis.com/acme-uploads/x?X-Goog-Signature=ab", notes=("A note.",)
    )
    rendered = {}
    for kind in KINDS:
        event = decode(storage_cloud_event(kind, bucket="acme-uploads", name=NAME, size="48213", generation="1764000000000001",
                                           metadata={"team": "finance", "owner": "ana.lopez@example.com"}))  # fmt: skip
        message = renderer.render(Notification("n" * 32, event, RULE), extras if kind != "delete" else Extras())
        page = folder / f"{kind}.html"
        page.write_text(message.html, encoding="utf-8")
        rendered[kind] = (page, event)
    return rendered


@pytest.mark.parametrize("width", [600, 375])
@pytest.mark.parametrize("kind", KINDS)
def test_every_email_reads_well_in_a_real_browser(pages, kind, width):
    page, event = pages[kind]
    seen = measure(page, width=width)

    text = " ".join(seen["text"].split())
    for fact in (event.bucket, NAME, "47.1 KiB (48,213 bytes)", "text/csv", "1764000000000001", event.event_id,
                 f"gs://acme-uploads/{NAME}", "team = finance", "Open in Cloud Console"):  # fmt: skip
        assert fact in text, fact
    assert seen["scrollWidth"] <= seen["width"], f"{seen['scrollWidth']}px wide in a {seen['width']}px window"
    assert seen["images"] == [] or all(complete and natural for _, complete, natural in seen["images"])
    assert seen["links"], "the email links to the object"
    for link in seen["links"]:
        parts = urlsplit(link)
        assert parts.scheme in ("https", "gs"), link
        assert parts.netloc and " " not in link, link
    consoles = [link for link in seen["links"] if link.startswith("https://console.cloud.google.com/")]
    assert consoles and all("%20" in link and "%23" in link for link in consoles)


def test_the_download_button_is_only_there_when_there_is_a_link(pages):
    with_link = measure(pages["finalize"][0])
    without = measure(pages["delete"][0])
    assert "Download" in with_link["text"] and any("X-Goog-Signature" in link for link in with_link["links"])
    assert "Download" not in without["text"]
