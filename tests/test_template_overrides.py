"""NOTIFY_TEMPLATES_DIR overriding a few files: a base of yours works with every body of ours; a
block of ours your base lacks is one warning at start-up, and what breaks rendering stops the
start-up naming the base."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from notifier.addresses import Address
from notifier.events import KINDS, decode
from notifier.render import Renderer, TemplateError
from notifier.rules import Conditions, Delivery, Notification, Recipients, Rule
from tests.conftest import storage_cloud_event

RULE = Rule("r", Conditions(), Delivery(Recipients(Address("alerts@example.com"), to=(Address("a@example.com"),))))
# A base of one's own: the documented blocks, none of our css_* variables.
BASE_HTML = """<!DOCTYPE html><html><head><title>{% block title %}{% endblock %}</title></head>
<body><div style="border-top: 4px solid {% block accent %}{% endblock %}">
<h1>{% block headline %}{% endblock %}</h1><p>{% block summary %}{% endblock %}</p>
<table>{% block extra_facts %}{% endblock %}</table><p>ACME BASE {{ event.name }}</p></div></body></html>"""
BASE_TXT = """{% block headline %}{% endblock %}
{% block summary %}{% endblock %}
{%- block extra_facts %}{% endblock %}
-- ACME BASE {{ event.name | line }}"""


def _templates_dir(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / "tpl" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "tpl" / name).write_text(text, encoding="utf-8")
    return tmp_path / "tpl"


def _render(renderer: Renderer, kind: str):
    event = decode(storage_cloud_event(kind, name="reports/q3.csv", metageneration="3"))
    return renderer.render(Notification("n" * 32, event, RULE))


def test_a_base_html_of_yours_alone_works_with_every_body_of_ours(tmp_path):
    renderer = Renderer(_templates_dir(tmp_path, {"base.html": BASE_HTML}))  # every kind is tried here

    for kind in KINDS:
        message = _render(renderer, kind)
        assert "ACME BASE reports/q3.csv" in message.html
        assert "ACME BASE" not in message.text
    metadata = _render(renderer, "metadata").html
    assert "Metadata changed in acme</h1>" in metadata
    assert "Metageneration</th>" in metadata and ">3</td>" in metadata  # the body's own fact, styled by it


def test_a_base_txt_of_yours_alone_works_with_every_body_of_ours(tmp_path):
    renderer = Renderer(_templates_dir(tmp_path, {"base.txt": BASE_TXT}))

    for kind in KINDS:
        message = _render(renderer, kind)
        assert message.text.endswith("-- ACME BASE reports/q3.csv\n")
        assert "ACME BASE" not in message.html
    assert "Metageneration: 3" in _render(renderer, "metadata").text


def test_both_bases_of_yours_work_with_every_body_of_ours(tmp_path):
    renderer = Renderer(_templates_dir(tmp_path, {"base.html": BASE_HTML, "base.txt": BASE_TXT}))

    for kind in KINDS:
        message = _render(renderer, kind)
        assert "ACME BASE reports/q3.csv" in message.html
        assert "ACME BASE reports/q3.csv" in message.text


def test_one_body_of_yours_alone_still_gets_our_base_and_its_styles(tmp_path):
    body = """{% extends "base.html" %}{% block headline %}Ours: {{ event.name }}{% endblock %}
{% block extra_facts %}<tr><th style="{{ css_th }}">Team</th><td style="{{ css_td }}">finance</td></tr>{% endblock %}"""
    renderer = Renderer(_templates_dir(tmp_path, {"metadata/body.html": body}))

    html = _render(renderer, "metadata").html
    assert "Ours: reports/q3.csv" in html
    assert "vertical-align: top" in html.split("Team</th>")[0].rsplit("<th", 1)[1]  # css_th from our base
    assert "Metadata changed in acme" in _render(renderer, "metadata").text  # body.txt still ours
    assert "New object in acme" in _render(renderer, "finalize").html


# What a block of ours holds, seen in the metadata email (whose bodies fill both blocks).
SHOWN_BY = {"summary": "its content did not", "extra_facts": "Metageneration"}


@pytest.mark.parametrize(("base", "blocks", "bodies"), [
    ("base.html", ("extra_facts",), ("metadata/body.html",)),
    ("base.html", ("summary", "extra_facts"), ("finalize/body.html", "metadata/body.html")),
    ("base.txt", ("summary",), ("finalize/body.txt",)),
])  # fmt: skip
def test_a_base_of_yours_without_a_block_ours_fill_starts_with_one_warning_naming_both(
    tmp_path, capsys, base, blocks, bodies
):
    text = BASE_HTML if base == "base.html" else BASE_TXT
    for block in blocks:
        text = text.replace(f"{{% block {block} %}}{{% endblock %}}", "")
        assert f"block {block}" not in text
    capsys.readouterr()

    renderer = Renderer(_templates_dir(tmp_path, {base: text}))  # an upgrade must not take it down

    (warning,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert warning["severity"] == "WARNING"
    message = warning["message"]
    assert message.startswith(f"templates/{base}: "), message
    for block in blocks:
        assert f"{{% block {block} %}}" in message, message
    for body in bodies:
        assert f"templates/{body}" in message, message
    assert "will not show" in message, message
    message = _render(renderer, "metadata")
    rendered = message.html if base == "base.html" else message.text
    assert "ACME BASE reports/q3.csv" in rendered
    for block in blocks:
        assert SHOWN_BY[block] not in rendered, f"{block} has nowhere to go in this base"


def test_a_base_of_yours_with_every_block_starts_without_a_word(tmp_path, capsys):
    capsys.readouterr()

    renderer = Renderer(_templates_dir(tmp_path, {"base.html": BASE_HTML, "base.txt": BASE_TXT}))

    assert capsys.readouterr().out == ""
    message = _render(renderer, "metadata")
    for shown in SHOWN_BY.values():
        assert shown in message.html and shown in message.text


def test_a_variable_your_base_uses_but_never_defines_is_named_in_the_base(tmp_path):
    base = BASE_HTML.replace("<body>", '<body style="{{ css_body }}">')

    with pytest.raises(TemplateError) as caught:
        Renderer(_templates_dir(tmp_path, {"base.html": base}))

    message = str(caught.value)
    assert message.startswith("templates/base.html (used by templates/"), message
    assert "UndefinedError: 'css_body' is undefined" in message
