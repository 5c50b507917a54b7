"""Our templates ship precompiled (templates/_compiled): loaded from their modules instead of being
compiled on the first event, and only while each still matches its source file and the Jinja that
compiled it; a user's template of the same name is compiled from the user's file."""

from __future__ import annotations

import hashlib

import jinja2

from notifier import templates as templates_module
from notifier.config import BUILTIN_TEMPLATES
from notifier.render import template_context
from notifier.templates import COMPILED, Templates, _sample_event, precompile


def _module_file(template: jinja2.Template) -> str:
    return template.root_render_func.__code__.co_filename


def test_the_shipped_modules_are_what_our_templates_compile_to_now(tmp_path):
    written = precompile(tmp_path)
    shipped = sorted(p.name for p in COMPILED.glob("tmpl_*.py"))
    assert sorted(p.name for p in written) == shipped, "run: python -m notifier.templates"
    for path in written:
        assert path.read_text() == (COMPILED / path.name).read_text(), (
            f"{path.name} is stale: python -m notifier.templates"
        )


def test_our_templates_load_from_their_modules_and_render_as_compiled_from_source():
    context = template_context(_sample_event("finalize"))
    precompiled = Templates().set_for(None, "finalize")
    assert all(_module_file(t).startswith(str(COMPILED)) for t in precompiled)
    assert all(t.filename == str(BUILTIN_TEMPLATES / t.name) for t in precompiled), "errors name the template file"
    from_source = Templates()
    from_source.environment.loader = jinja2.FileSystemLoader(str(BUILTIN_TEMPLATES))
    compiled = from_source.set_for(None, "finalize")
    assert not any(_module_file(t).startswith(str(COMPILED)) for t in compiled)
    assert [t.render(context) for t in precompiled] == [t.render(context) for t in compiled]


def test_a_users_template_of_the_same_name_is_compiled_from_the_users_file(tmp_path):
    (tmp_path / "finalize").mkdir()
    (tmp_path / "finalize" / "subject.txt").write_text("Mine: {{ object.name }}")
    subject, text, _ = Templates(tmp_path).set_for(None, "finalize")
    assert _module_file(subject) == str(tmp_path / "finalize" / "subject.txt")
    assert subject.render(template_context(_sample_event("finalize"))) == "Mine: sample/object.csv"
    assert _module_file(text).startswith(str(COMPILED)), "the files the user did not override stay precompiled"


def test_a_module_that_no_longer_matches_its_source_is_not_used(tmp_path, monkeypatch):
    for path in COMPILED.glob("tmpl_*.py"):  # every module claims another source
        (tmp_path / path.name).write_text(path.read_text().replace("source_sha256 = '", "source_sha256 = 'x"))
    monkeypatch.setattr(templates_module, "COMPILED", tmp_path)
    subject, _, _ = Templates().set_for(None, "finalize")
    assert _module_file(subject) == str(BUILTIN_TEMPLATES / "finalize" / "subject.txt"), "compiled from the file"
    digest = hashlib.sha256((BUILTIN_TEMPLATES / "finalize" / "subject.txt").read_bytes()).hexdigest()
    assert (
        f"source_sha256 = '{digest}'"
        in (COMPILED / f"{jinja2.ModuleLoader.get_template_key('finalize/subject.txt')}.py").read_text()
    )
