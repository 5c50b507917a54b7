"""Templates → Message: every field shown, hostile names escaped, links encoded, CSS inlined."""

from __future__ import annotations

import dataclasses
import re
from html.parser import HTMLParser
from urllib.parse import unquote, urlsplit

import jinja2
import pytest

from notifier.events import KINDS, decode
from notifier.filters import console_url, encode_object_name, format_size, one_line
from notifier.render import Renderer, TemplateError
from tests.conftest import settings_for, storage_cloud_event

SETTINGS = settings_for()


@pytest.fixture(scope="module")
def renderer():
    return Renderer()


def _render(renderer, kind="finalize", name="reports/q3.csv", **overrides):
    event = decode(storage_cloud_event(kind, name=name, **overrides))
    (notification,) = SETTINGS.rules.route(event)
    return event, renderer.render(notification)


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.hrefs, self.text, self.scripts = [], [], 0

    def handle_starttag(self, tag, attrs):
        self.scripts += tag == "script"
        self.hrefs += [v for k, v in attrs if k == "href"]

    def handle_data(self, data):
        self.text.append(data)


def _parse(html):
    parser = _Links()
    parser.feed(html)
    return parser


@pytest.mark.parametrize("kind", KINDS)
def test_every_email_shows_every_fact(renderer, kind):
    event, message = _render(renderer, kind, size="1234567", generation="1700000000123456")
    html_text = " ".join(" ".join(_parse(message.html).text).split())
    for body in (message.text, html_text):
        assert event.bucket in body
        assert event.name in body
        assert "1.2 MiB (1,234,567 bytes)" in body
        assert "text/csv" in body
        assert "1700000000123456" in body
        assert re.search(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body), "time in UTC, ISO 8601"
        assert event.event_id in body
        assert f"gs://{event.bucket}/{event.name}" in body
    assert console_url(event.bucket, event.name) in message.text
    assert console_url(event.bucket, event.name) in _parse(message.html).hrefs
    assert message.subject and "\n" not in message.subject


def test_words_say_what_happened_per_kind(renderer):
    words = {kind: _render(renderer, kind)[1].text.splitlines()[0] for kind in KINDS}
    assert "New object" in words["finalize"]
    assert "deleted" in words["delete"]
    assert "archived" in words["archive"]
    assert "Metadata changed" in words["metadata"]
    assert len(set(words.values())) == 4


def test_our_emails_carry_their_styles_inline_and_no_style_block(renderer):
    _, message = _render(renderer)
    assert "<style" not in message.html
    assert 'style="' in message.html
    assert "max-width: 600px" in message.html
    assert 'class="bar" style="height: 6px; border-radius: 8px 8px 0 0; background: #1e8e3e;' in message.html


def test_a_style_block_in_a_template_of_your_own_is_inlined(tmp_path):
    (tmp_path / "finalize").mkdir()
    (tmp_path / "finalize" / "body.html").write_text(
        "<html><head><STYLE>.name { color: #c5221f; } p { margin: 0; }</STYLE></head>"
        '<body><p class="name">{{ event.name }}</p></body></html>'
    )
    _, message = _render(Renderer(tmp_path), name="<b>q3</b>.csv")

    assert "<style" not in message.html.lower()
    assert '<p class="name" style="margin: 0;color: #c5221f;">&lt;b&gt;q3&lt;/b&gt;.csv</p>' in message.html


def test_plain_text_alternative_has_no_markup(renderer):
    _, message = _render(renderer)
    assert "<" not in message.text and "&amp;" not in message.text
    assert message.text.endswith("\n")


HOSTILE = [
    '<script>alert("x")</script>.csv',
    '"><img src=x onerror=alert(1)>',
    "javascript:alert(1)",
    "a b#c?d%20e&f=g.txt",
    "../../etc/passwd",
    "/leading/slash",
    "folder//double",
    "trailing/folder/",
    "evil\u202egnp.exe",
    "ünïcødé/数据/файл.csv",
    "x" * 1024,
]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_are_escaped_in_html_and_encoded_in_links(renderer, name):
    event, message = _render(renderer, name=name, metadata={"note": '<b>bold</b> & "quoted"'})
    parsed = _parse(message.html)
    assert parsed.scripts == 0
    assert "<img" not in message.html and "<b>bold" not in message.html
    assert "&lt;b&gt;bold&lt;/b&gt;" in message.html
    for href in parsed.hrefs:
        assert href.startswith(("https://console.cloud.google.com/", "gs://")), href
        assert not re.search(r"[\s<>\"#?]", urlsplit(href).path), href
    console = next(h for h in parsed.hrefs if h.startswith("https://"))
    path = urlsplit(console).path
    assert urlsplit(console).query == "" and urlsplit(console).fragment == ""
    assert unquote(path.split(f"/_details/{event.bucket}/", 1)[1]) == name
    gs = next(h for h in parsed.hrefs if h.startswith("gs://"))
    assert unquote(gs) == f"gs://{event.bucket}/{name}"


@pytest.mark.parametrize("name", ["a\u2028b", "a\u0085b", "tab\there", "bell\x07", "rtl\u202eevil", "x" * 1024])
def test_subject_is_one_capped_line_without_controls(renderer, name):
    _, message = _render(renderer, name=name)
    assert not re.search(r"[\x00-\x1f\x7f\u0085\u2028\u2029\u202a-\u202e\u2066-\u2069]", message.subject)
    assert len(message.subject) <= 200


def test_one_line_collapses_crlf_and_truncates_with_an_ellipsis():
    assert one_line("a\r\n  b\nc") == "a b c"
    assert one_line("y" * 300, limit=10) == "y" * 9 + "…"
    assert one_line("  padded  ") == "padded"


@pytest.mark.parametrize("name", ["../x", "a/./b", "a/../b", "/x", "a//b", ".", ".."])
def test_dot_and_empty_segments_are_fully_encoded_so_browsers_cannot_resolve_them(name):
    encoded = encode_object_name(name)
    assert "/" not in encoded
    assert unquote(encoded) == name


def test_plain_nested_names_keep_readable_slashes():
    assert encode_object_name("reports/2026/Q3 revenue.csv") == "reports/2026/Q3%20revenue.csv"


@pytest.mark.parametrize(
    ("size", "shown"),
    [
        (None, "unknown"),
        (0, "0 bytes"),
        (1, "1 byte"),
        (1023, "1023 bytes"),
        (1024, "1.0 KiB (1,024 bytes)"),
        (5 * 1024**3, "5.0 GiB (5,368,709,120 bytes)"),
    ],
)
def test_sizes_are_human_readable_and_exact(size, shown):
    assert format_size(size) == shown


def test_user_templates_override_file_by_file(tmp_path):
    (tmp_path / "finalize").mkdir()
    (tmp_path / "finalize" / "subject.txt").write_text("Custom: {{ event.name }}\n")
    renderer = Renderer(tmp_path)
    _, message = _render(renderer)
    assert message.subject == "Custom: reports/q3.csv"
    assert "New object" in message.text  # body.txt still the built-in one


def test_templates_use_strict_undefined_and_fail_at_start_up(tmp_path):
    (tmp_path / "delete").mkdir()
    (tmp_path / "delete" / "body.txt").write_text("{{ event.nmae }}")
    with pytest.raises(TemplateError, match=r"templates/delete/body\.txt: UndefinedError: .* has no attribute 'nmae'"):
        Renderer(tmp_path)  # a typo stops the start-up, not every email


def test_syntax_error_in_a_template_is_reported_at_construction_with_the_file(tmp_path):
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "body.html").write_text("{% if %}")
    with pytest.raises(TemplateError, match=r"archive/body\.html:1"):
        Renderer(tmp_path)


def test_templates_are_compiled_once_not_loaded_per_event(renderer, monkeypatch):
    _render(renderer)  # ours are compiled on first use

    def no_loading(*_args):
        pytest.fail("a template was loaded while rendering an event")

    monkeypatch.setattr(jinja2.FileSystemLoader, "get_source", no_loading)
    monkeypatch.setattr(jinja2.FileSystemLoader, "load", no_loading)
    _render(renderer)
    _render(renderer, "metadata")


def test_line_breaks_in_values_cannot_forge_lines_in_the_text_body(renderer):
    name = "evil\r\nBcc: victim@example.com\u2028Object: fake.csv"
    _, message = _render(renderer, name=name, metadata={"k\nFake": "v\rBcc: x"})
    lines = message.text.splitlines()
    assert not [line for line in lines if line.startswith(("Bcc:", "Object: fake"))]
    assert "Object:         evil\\r\\nBcc: victim@example.com\\u2028Object: fake.csv" in lines


def test_huge_metadata_is_cut_short(renderer):
    # decode() refuses more than Cloud Storage's 8 KiB; an event built otherwise is still cut short.
    metadata = {f"key{i:05}": "v" * 2000 for i in range(1000)}
    event = dataclasses.replace(decode(storage_cloud_event()), metadata=metadata)
    (notification,) = SETTINGS.rules.route(event)
    message = renderer.render(notification)
    assert "... and 950 more" in message.text
    assert "and 950 more" in message.html
    assert len(message.text) < 50_000
    assert "v" * 501 not in message.text


@pytest.fixture
def loaded(monkeypatch):
    """Names of the templates the loader loads (compiles, or imports precompiled), in order."""
    from notifier.templates import _Loader

    names = []
    original = _Loader.load

    def spy(self, environment, name, globals=None):
        names.append(name)
        return original(self, environment, name, globals)

    monkeypatch.setattr(_Loader, "load", spy)
    return names


def test_our_own_templates_are_compiled_on_first_use_to_keep_them_off_the_cold_start(loaded):
    renderer = Renderer()
    assert loaded == [], "nothing of ours is compiled at start-up"

    _render(renderer, "finalize")
    assert _kinds(loaded) == {"finalize"}

    loaded.clear()
    _render(renderer, "finalize")
    assert loaded == []


def test_check_config_compiles_and_tries_our_templates_too(loaded):
    Renderer(check_builtin=True)

    assert _kinds(loaded) == set(KINDS)


def test_a_templates_directory_makes_every_kind_compile_and_be_tried_at_start_up(tmp_path, loaded):
    (tmp_path / "finalize").mkdir()
    (tmp_path / "finalize" / "subject.txt").write_text("Custom: {{ event.name }}\n")

    Renderer(tmp_path)

    assert _kinds(loaded) == set(KINDS)


def _kinds(names):
    return {name.split("/")[0] for name in names if "/" in name}  # base.html and base.txt come along


def test_the_sandbox_decides_as_jinjas_own_however_often_it_is_asked():
    from jinja2.sandbox import SandboxedEnvironment

    ours, jinjas = Renderer().templates.environment, SandboxedEnvironment()
    values = [decode(storage_cloud_event("finalize")), "text", {"a": 1}, len, str, Renderer.render, (i for i in ())]
    for value in values:
        for attr in ("name", "upper", "keys", "mro", "__class__", "_private", "__globals__", "gi_frame", "__code__"):
            for _ in range(2):  # the second answer comes from the cache
                assert ours.is_safe_attribute(value, attr, None) == jinjas.is_safe_attribute(value, attr, None), (
                    type(value),
                    attr,
                )


def test_a_missing_template_of_ours_still_stops_the_start_up(tmp_path, monkeypatch):
    import shutil

    from notifier import templates

    copy = tmp_path / "templates"
    shutil.copytree(templates.BUILTIN_TEMPLATES, copy)
    (copy / "archive" / "body.txt").unlink()
    monkeypatch.setattr(templates, "BUILTIN_TEMPLATES", copy)

    with pytest.raises(TemplateError, match=r"missing archive/body\.txt \(was templates/ uploaded\?\)"):
        Renderer()


def test_css_a_template_of_yours_cannot_inline_stops_the_start_up(tmp_path, monkeypatch):
    import css_inline

    (tmp_path / "finalize").mkdir()
    (tmp_path / "finalize" / "body.html").write_text("<style>p { color: red }</style><p>{{ event.name }}</p>")

    original = Renderer._inline_css

    def broken(self, html):
        if "<style>" in html:
            raise css_inline.InlineError("cannot parse")
        return original(self, html)

    monkeypatch.setattr(Renderer, "_inline_css", broken)
    with pytest.raises(TemplateError, match=r"templates/finalize/body\.html: CSS inlining failed: InlineError"):
        Renderer(tmp_path)


@pytest.mark.parametrize("hidden", ["\u202e", "\u2067", "\u200b", "\ufeff", "\U000e0041", "\u2028"])
def test_invisible_and_bidi_characters_in_a_name_are_shown_as_escapes_everywhere(renderer, hidden):
    """An unclosed right-to-left override once reversed the rest of the HTML sentence, and
    "invoice\u202efdp.exe" displayed as "invoiceexe.pdf" in the body."""
    name = f"invoice{hidden}fdp.exe"
    _, message = _render(renderer, name=name, metadata={"note": f"x{hidden}y"})
    escape = hidden.encode("unicode_escape").decode()
    for part in (message.subject, message.text, message.html):
        assert hidden not in part
    assert f"invoice{escape}fdp.exe" in message.text
    assert f"invoice{escape}fdp.exe" in message.html
    assert f"x{escape}y" in message.html
