"""The digest email (templates/digest/, Renderer.render_digest): its subject, counts, the first 100
objects and a command listing the rest, per-folder counts, hostile names kept harmless, the time
zone, a user's override, and `preview --digest`."""

from __future__ import annotations

import os
import re
import shlex
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from urllib.parse import unquote, urlsplit
from zoneinfo import ZoneInfo

import pytest

from notifier.addresses import Address
from notifier.batching import Batching
from notifier.digest import Group, HeldEntry, Run
from notifier.filters import console_url, format_size
from notifier.jinja_sandbox import MAX_OUTPUT
from notifier.render import Renderer, TemplateError
from notifier.rules import Conditions, Delivery, Recipients, Rule
from notifier.tools.cli import main
from tests.conftest import read_eml

START = datetime(2026, 11, 28, 10, 0, tzinfo=UTC)
RECIPIENTS = Recipients(
    Address("alerts@example.com", "Alerts"), to=(Address("a@example.com"), Address("b@example.com")),
    reply_to=Address("ops@example.com"),
)  # fmt: skip
RULE = Rule("reports", Conditions(), Delivery(RECIPIENTS, subject="One: {{ object.name }}",
                                              batching=Batching.digest(600)))  # fmt: skip
GROUP = Group("0123456789abcdef01234567", "reports")


@pytest.fixture(scope="module")
def renderer():
    return Renderer(rules=[RULE])


def _entries(names, kinds=("finalize",), bucket="acme-uploads", size=1000):
    return tuple(
        HeldEntry(GROUP, int(START.timestamp()), f"id{i:05d}", kinds[i % len(kinds)], bucket, name,
                  size + i, START + timedelta(seconds=i % 600))
        for i, name in enumerate(names)
    )  # fmt: skip


def _run(entries, windows=1):
    starts = tuple(int(START.timestamp()) + 600 * w for w in range(windows))
    return Run(GROUP, starts, entries, 600.0)


def _digest(renderer, entries, windows=1, rule=RULE):
    return renderer.render_digest(rule, _run(entries, windows), entries, "d" * 32)


def _reports(count, folders=("reports/", "reports/2026/", "reports/2025/q4/")):
    return [f"{folders[i % len(folders)]}file-{i:04d}.csv" for i in range(count)]


class _Html(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs, self.text, self.scripts = [], [], 0

    def handle_starttag(self, tag, attrs):
        self.scripts += tag == "script"
        self.hrefs += [v for k, v in attrs if k == "href"]

    def handle_data(self, data):
        self.text.append(data)


def _html(html):
    parser = _Html()
    parser.feed(html)
    return parser


def _html_text(html):
    return " ".join(" ".join(_html(html).text).split())


# -- the subject ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kinds", "what"),
    [(("finalize",), "new objects"), (("delete",), "deleted objects"), (("finalize", "delete"), "changes")],
)
def test_the_subject_says_how_many_what_where_and_when(renderer, kinds, what):
    message = _digest(renderer, _entries(_reports(37), kinds))
    assert message.subject == f"37 {what} in gs://acme-uploads/reports/ (10:00–10:10 UTC)"


def test_the_period_is_the_runs_windows_with_the_dates_when_it_spans_days(renderer):
    late = Run(GROUP, (int(datetime(2026, 11, 28, 23, 50, tzinfo=UTC).timestamp()),) * 1, (), 1800.0)
    entries = _entries(["a/x.csv", "a/y.csv"])
    message = renderer.render_digest(RULE, late, entries, "d" * 32)
    assert message.subject == "2 new objects in gs://acme-uploads/a/ (Nov 28 23:50–Nov 29 00:20 UTC)"
    assert _digest(renderer, entries, windows=3).subject.endswith("(10:00–10:30 UTC)")


def test_the_location_is_the_longest_common_folder_not_a_common_prefix(renderer):
    entries = _entries(["logs/2026-11/a.txt", "logs/2026-12/b.txt"])
    assert " in gs://acme-uploads/logs/ (" in _digest(renderer, entries).subject
    top = _entries(["a.txt", "logs/b.txt"])
    assert " in gs://acme-uploads/ (" in _digest(renderer, top).subject


def test_the_rules_own_subject_is_for_one_object_the_digest_has_its_own(renderer):
    message = _digest(renderer, _entries(_reports(3)))
    assert not message.subject.startswith("One:")


# -- what the email holds ------------------------------------------------------------------------


def test_counts_per_kind_folders_and_sizes_add_up(renderer):
    entries = _entries(_reports(37), ("finalize", "finalize", "delete"))
    message = _digest(renderer, entries)
    total = sum(e.size for e in entries)
    for body in (message.text, _html_text(message.html)):
        kinds = {k: int(n) for n, k in re.findall(r"(\d+) (new|deleted) objects?", body)}
        assert kinds == {"new": 25, "deleted": 12} and sum(kinds.values()) == 37
        assert format_size(total) in body
        assert "10:00–10:10 UTC" in body
        folders = dict(re.findall(r"(gs://acme-uploads/\S+/):? (\d+)", body))
        assert folders == {"gs://acme-uploads/reports/": "13", "gs://acme-uploads/reports/2026/": "12",
                           "gs://acme-uploads/reports/2025/q4/": "12"}  # fmt: skip
        assert sum(map(int, folders.values())) == 37


def test_each_object_has_its_name_size_time_and_console_link(renderer):
    entries = _entries(["reports/a b.csv", "reports/c#d.csv"])
    message = _digest(renderer, entries)
    hrefs = _html(message.html).hrefs
    text = _html_text(message.html)
    for entry in entries:
        link = console_url(entry.bucket, entry.name)
        assert link in hrefs and link in message.text
        for body in (message.text, text):
            assert entry.name in body and format_size(entry.size) in body
            assert entry.time.strftime("%Y-%m-%dT%H:%M:%SZ") in body


def test_at_most_100_objects_then_and_n_more_with_a_command_listing_the_folder(renderer):
    entries = _entries(_reports(237))
    message = _digest(renderer, entries)
    links = [h for h in _html(message.html).hrefs if h.startswith("https://console.cloud.google.com/")]
    assert len(links) == 100
    assert len(re.findall(r"https://console\.cloud\.google\.com/\S+", message.text)) == 100
    assert [e.name for e in entries[:100]] == [unquote(h.rsplit("/acme-uploads/", 1)[1]) for h in links]
    assert "and 137 more" in message.text and "and 137 more" in _html_text(message.html)
    text_command = next(line for line in message.text.splitlines() if "gcloud storage ls" in line)
    html_command = next(t for t in _html(message.html).text if "gcloud storage ls" in t)
    for command in (text_command, html_command):
        assert shlex.split(command) == ["gcloud", "storage", "ls", "--recursive", "gs://acme-uploads/reports/"]


def test_no_and_more_when_everything_is_shown(renderer):
    message = _digest(renderer, _entries(_reports(100)))
    assert "more" not in message.text and "gcloud" not in message.text


@pytest.mark.parametrize("folder", ["it's $(rm -rf ~) `x` & y/", "a b/;echo hi/", "dollar$HOME/"])
def test_the_command_parses_back_to_the_folder_whatever_it_is_named(renderer, folder):
    entries = _entries([f"{folder}f{i}.csv" for i in range(101)])
    message = _digest(renderer, entries)
    line = next(line for line in message.text.splitlines() if "gcloud storage ls" in line)
    assert shlex.split(line)[-1] == f"gs://acme-uploads/{folder}"
    html_command = next(t for t in _html(message.html).text if "gcloud storage ls" in t)
    assert shlex.split(html_command)[-1] == f"gs://acme-uploads/{folder}"


def test_the_top_20_folders_then_how_many_more(renderer):
    names = [f"data/f{i % 23:02d}/x{i}.csv" for i in range(23 * 2 + 5)]  # f00-f04 hold 3, the others 2
    message = _digest(renderer, _entries(names))
    shown = re.findall(r"gs://acme-uploads/data/(f\d\d)/:? (\d+)", message.text)
    assert len(shown) == 20
    assert shown[:5] == [(f"f{i:02d}", "3") for i in range(5)], "the busiest first"
    assert "and 3 more folders" in message.text and "and 3 more folders" in _html_text(message.html)


def test_a_digest_has_text_and_html_no_attachments_and_the_rules_recipients(renderer):
    message = _digest(renderer, _entries(_reports(5)))
    assert message.categories == ("storage-notifier", "digest")
    assert message.attachments == () and message.template_id is None
    assert message.notification_id == "d" * 32
    assert message.sender == RECIPIENTS.sender and message.reply_to == RECIPIENTS.reply_to
    assert message.envelopes == RECIPIENTS.envelopes()
    assert message.text.endswith("\n") and "<" not in message.text
    assert "<style" not in message.html and "max-width: 600px" in message.html


def test_redirected_digests_say_whom_they_were_meant_for():
    message = _digest(Renderer(rules=[RULE], redirected=True), _entries(_reports(3)))
    assert "meant for a@example.com, b@example.com" in message.text
    assert "meant for a@example.com, b@example.com" in _html_text(message.html)


def test_the_period_in_notify_timezone_too():
    message = _digest(Renderer(rules=[RULE], timezone=ZoneInfo("Europe/Paris")), _entries(_reports(3)))
    assert message.subject.endswith("(10:00–10:10 UTC)")
    for body in (message.text, _html_text(message.html)):
        assert "10:00–10:10 UTC" in body and "11:00–11:10 CET" in body
    assert "CET" not in _digest(Renderer(rules=[RULE]), _entries(_reports(3))).text


# -- hostile names -------------------------------------------------------------------------------


HOSTILE = [
    'x/<script>alert("x")</script>.csv',
    'x/"><img src=x onerror=alert(1)>',
    "x/evil\u202egnp.exe",
    "x/line\r\nBcc: victim@example.com",
    "folder\r\nBcc: victim@example.com\u202e/deep/f.csv",
    "é" * 512,
    "<" * 1024,
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_escaped_encoded_and_never_raw_in_a_header(renderer, name):
    twins = [name] if len(name.encode()) == 1024 else [name, name + "2"]
    entries = _entries([*twins, "x/y.csv"])
    message = _digest(renderer, entries)
    parsed = _html(message.html)
    assert parsed.scripts == 0 and "<img" not in message.html and "<script" not in message.html
    assert not re.search(r"[\x00-\x1f\x7f\u202a-\u202e\u2066-\u2069]", message.subject)
    assert len(message.subject) <= 200
    assert "\u202e" not in message.text and "\u202e" not in message.html
    for href in parsed.hrefs:
        assert href.startswith("https://console.cloud.google.com/"), href
        assert not re.search(r"[\s<>\"#?]", urlsplit(href).path), href
    assert console_url("acme-uploads", name) in parsed.hrefs
    assert not any("\r" in line or "Bcc:" in line[:4] for line in message.text.split("\n"))


def test_a_full_digest_of_1024_byte_hostile_names_renders_within_the_bounds(renderer):
    names = [f"{i:04d}" + "<\u202e\r\n" * 127 + "é" * 129 for i in range(300)]  # 1,024 bytes each
    assert {len(n.encode()) for n in names} == {1024}
    message = _digest(renderer, _entries(names))
    assert len(_html(message.html).hrefs) == 100
    assert len(message.html) < MAX_OUTPUT and len(message.text) < MAX_OUTPUT
    assert "and 200 more" in message.text
    assert message.text.count("\\u202e") >= 100 * 127


# -- your templates ------------------------------------------------------------------------------


def test_your_templates_digest_overrides_ours_file_by_file(tmp_path):
    (tmp_path / "digest").mkdir()
    (tmp_path / "digest" / "subject.txt").write_text("[{{ rule }}] {{ count }} files: {{ period }}")
    message = _digest(Renderer(tmp_path, rules=[RULE]), _entries(_reports(4)))
    assert message.subject == "[reports] 4 files: 10:00–10:10 UTC"
    assert "gs://acme-uploads/reports/" in message.text, "the bodies stay ours"


@pytest.mark.parametrize(
    ("file", "text"),
    [("body.html", "{{ objects[0].nmae }}"), ("body.txt", "{% for %}"), ("subject.txt", "{{ 1 / 0 }}")],
)
def test_start_up_refuses_a_broken_digest_template_naming_the_file(tmp_path, file, text):
    (tmp_path / "digest").mkdir()
    (tmp_path / "digest" / file).write_text(text)
    with pytest.raises(TemplateError, match=rf"digest/{re.escape(file)}"):
        Renderer(tmp_path, rules=[RULE])


def test_check_config_tries_our_digest_templates_the_cold_start_does_not(monkeypatch):
    from notifier import digest_context

    monkeypatch.setattr(digest_context, "sample_context", lambda timezone: {})  # every variable undefined
    Renderer(rules=[RULE])  # ours ship precompiled and tested: not tried on a cold start
    with pytest.raises(TemplateError, match=r"templates/digest/subject\.txt: UndefinedError: .*sample digest"):
        Renderer(rules=[RULE], check_builtin=True)


def test_our_digest_templates_ship_precompiled():
    from notifier.templates import COMPILED, Templates

    assert all(t.root_render_func.__code__.co_filename.startswith(str(COMPILED)) for t in Templates().digest_set())


# -- preview --digest ----------------------------------------------------------------------------


def test_preview_renders_a_sample_digest_to_files(clean_notifier_env, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("NOTIFY_TO", "ops@example.com")
    code = main(["preview", "finalize", "gs://acme-uploads/reports/q3.csv", "--digest", "37", "--out", str(tmp_path)])
    assert code == 0
    out = capsys.readouterr().out
    assert re.search(r"Subject: 37 new objects in gs://acme-uploads/reports/ \(\d\d:\d0–\d\d:\d0 UTC\)", out)
    (eml,) = tmp_path.glob("*.eml")
    email = read_eml(eml)
    assert email["To"] == "ops@example.com"
    assert email.get_body(("plain",)).get_content().count("https://console.cloud.google.com/") == 37
    assert {p.suffix for p in tmp_path.iterdir()} == {".txt", ".html", ".eml"}


@pytest.mark.parametrize("count", ["1", "10001", "²", "9" * 5000])
def test_preview_refuses_a_digest_of_fewer_than_two_or_too_many(tmp_path, capsys, count):
    with pytest.raises(SystemExit):
        main(["preview", "finalize", "gs://acme/x.csv", "--digest", count, "--out", str(tmp_path)])
    assert "--digest: expected 2 to 10,000 objects" in capsys.readouterr().err


def test_digest_templates_are_tried_only_when_a_rule_sends_digests(tmp_path):
    (tmp_path / "digest").mkdir()
    (tmp_path / "digest" / "body.txt").write_text("{{ nope }}")
    single = Rule("single", Conditions(), Delivery(RECIPIENTS))
    Renderer(tmp_path, rules=[single])  # an upgrade does not stop a start-up over a set no rule uses
    with pytest.raises(TemplateError, match=r"templates/digest/body\.txt: UndefinedError: 'nope'.*sample digest"):
        Renderer(tmp_path, rules=[single, RULE])


# -- in a real browser ---------------------------------------------------------------------------


@pytest.mark.parametrize("width", [600, 375])
def test_a_digest_reads_well_in_a_real_browser(tmp_path, renderer, width):
    from notifier.tools.browser import BrowserError, chromium, measure

    try:
        chromium()
    except BrowserError as missing:
        if os.environ.get("CI"):  # .ci/run installs Chromium: missing there is a failure
            raise
        pytest.skip(str(missing))
    folder = "reports/2026/quarterly-close/very-long-folder-name-without-spaces-at-all-anywhere/"
    entries = _entries([f"{folder}sub{i % 3}/Q3 revenue (final) #{i}.csv" for i in range(105)], ("finalize", "delete"))
    page = tmp_path / "digest.html"
    page.write_text(_digest(renderer, entries).html, encoding="utf-8")

    seen = measure(page, width=width)
    text = " ".join(seen["text"].split())
    assert f"105 changes in gs://acme-uploads/{folder}" in text
    assert "and 5 more" in text
    assert f"gcloud storage ls --recursive gs://acme-uploads/{folder}" in text
    assert seen["scrollWidth"] <= seen["width"], f"{seen['scrollWidth']}px wide in a {seen['width']}px window"
    assert len(seen["links"]) == 100
    assert all(urlsplit(link).scheme == "https" and " " not in link and "%23" in link for link in seen["links"])
