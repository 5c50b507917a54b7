"""Our templates and the user's: one bounded environment, loaded per rule and kind, tried at start-up.

What the user wrote is compiled and tried with sample events at start-up, so a typo fails the
deploy. User templates (NOTIFY_TEMPLATES_DIR, named sets, rule subjects) override ours file by file
and run in Jinja's sandbox (:mod:`notifier.jinja_sandbox`): they can read the values they are given
but not reach into Python. Each template is compiled once per instance; sharing them between
threads is safe.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
from collections.abc import Callable, Iterable
from datetime import tzinfo
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any

import jinja2

from notifier.config import BUILTIN_TEMPLATES
from notifier.events import KINDS, StorageEvent
from notifier.filters import FILTERS, show_hidden_characters
from notifier.jinja_sandbox import RenderLimitError, Sandbox, render_within_budget
from notifier.log import get_logger, log
from notifier.rules import Rule

# Our templates compiled to Python modules (``python -m notifier.templates`` writes them; a test
# checks they are current). The build compiles them to bytecode with the rest, so the first event
# imports them instead of compiling templates: about 20 ms off a cold start.
COMPILED = BUILTIN_TEMPLATES / "_compiled"
TEMPLATE_FILES = ("subject.txt", "body.txt", "body.html")
DIGEST = "digest"  # templates/digest/: the digest email (notifier.digest_context), overridable like the kinds'
# What the bodies share: the base each extends (by the body's extension), and the styles both import.
BASE_OF = {"body.txt": "base.txt", "body.html": "base.html"}
SHARED_FILES = (*BASE_OF.values(), "styles.html")
# What the blocks our bodies fill hold: named when a base of the user's has nowhere to put one.
BLOCK_HOLDS = {
    "title": "the page title",
    "accent": "the colour of the top bar",
    "headline": "the headline",
    "summary": "the sentence saying what happened to the object",
    "extra_facts": "the metageneration, a fact only metadata events have",
}

TemplateSet = tuple[jinja2.Template, jinja2.Template, jinja2.Template]  # subject, text body, HTML body
ContextFor = Callable[[StorageEvent], dict[str, Any]]


class TemplateError(ValueError):
    """A template is missing or broken; the message names the file."""


class Templates:
    """The environment, the template sets by (named set or None for the kind's own, kind), and the
    rule subjects by rule name."""

    def __init__(self, templates_dir: Path | None = None, *, timezone: tzinfo | None = None) -> None:
        self.templates_dir = templates_dir
        self.environment = Sandbox(
            loader=_Loader([str(p) for p in (templates_dir, BUILTIN_TEMPLATES) if p is not None]),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default_for_string=False),
            undefined=jinja2.StrictUndefined,
            auto_reload=False,  # compiled once per instance; no stat() per event
            keep_trailing_newline=False,
            finalize=show_hidden_characters,
        )
        for name, made_for in FILTERS.items():
            self.environment.filters[name] = made_for(timezone)
        self.timezone = timezone
        self._sets: dict[tuple[str | None, str], TemplateSet] = {}
        self._subjects: dict[str, jinja2.Template] = {}
        self._digest: TemplateSet | None = None

    @classmethod
    def for_rules(
        cls,
        templates_dir: Path | None,
        rules: Iterable[Rule],
        *,
        context: ContextFor,
        check_html: Callable[[str], object],
        timezone: tzinfo | None = None,
        check_builtin: bool = False,
    ) -> Templates:
        """Every template ``rules`` use, what the user wrote compiled and tried now: each with a
        sample event and ``context``, HTML through ``check_html`` too (the CSS inliner). Ours
        alone are tested in CI and compiled on first use, which keeps their compilation (tens of
        ms) off the cold start; ``check_builtin`` (check-config) tries them as well."""
        rules = tuple(rules)
        templates = cls(templates_dir, timezone=timezone)
        everything = templates_dir is not None or check_builtin
        templates._compile(rules, {(None, kind) for kind in KINDS} if everything else set())
        if everything and any(rule.delivery.batching for rule in rules):
            templates.digest_set()  # a rule sends digests: templates/digest/ is tried too
        _Trial(templates, context, check_html).run(rules)
        templates._warn_of_missing_blocks()  # after the trial: a start-up that fails says only why
        return templates

    def set_for(self, template_name: str | None, kind: str) -> TemplateSet:
        """The named set's files where it has them, else the kind's own."""
        templates = self._sets.get((template_name, kind))
        if templates is None:  # first use of one of ours; two threads may both compile it, harmlessly
            templates = self._sets[template_name, kind] = self._load_set(template_name, kind)
        return templates

    def digest_set(self) -> TemplateSet:
        """templates/digest/ (the user's files where they have them, else ours)."""
        if self._digest is None:  # first use of ours; two threads may both compile it, harmlessly
            self._digest = self._load_set(None, DIGEST)
        return self._digest

    def loaded(self) -> list[tuple[tuple[str | None, str], TemplateSet]]:
        """The sets compiled so far, by (named set or None, kind)."""
        return list(self._sets.items())

    def subject_for(self, rule_name: str) -> jinja2.Template | None:
        """The rule's own subject template (the ``subject`` key), if it has one."""
        return self._subjects.get(rule_name)

    def file_of(self, template: jinja2.Template, error: BaseException) -> str:
        """Where ``error`` happened: ``templates/<name>``, or the template it extends, includes or
        imports when that is where it failed (a user's base.html, say)."""
        own = f"templates/{template.name}"
        culprit = self._innermost_template(error.__traceback__)
        return own if culprit in (None, template.name) else f"templates/{culprit} (used by {own})"

    # -- loading ---------------------------------------------------------------------------------

    def _compile(self, rules: tuple[Rule, ...], wanted: set[tuple[str | None, str]]) -> None:
        compiled: dict[str, jinja2.Template] = {}  # many rules often share a subject: compile it once
        for rule in rules:
            if (name := rule.delivery.template) is not None:
                wanted.update((name, kind) for kind in rule.when.events)
            if (subject := rule.delivery.subject) is not None:
                if subject not in compiled:
                    compiled[subject] = self._compile_subject(rule.name, subject)
                self._subjects[rule.name] = compiled[subject]
        for name, kind in sorted(wanted, key=lambda key: (key[0] or "", key[1])):
            self._sets[name, kind] = self._load_set(name, kind)
        if not wanted.issuperset((None, kind) for kind in KINDS):
            _check_builtin_files()  # a stat per file: an incomplete upload still fails the deploy

    def _load_set(self, name: str | None, kind: str) -> TemplateSet:
        def candidates(part: str) -> list[str]:
            return ([f"{name}/{part}"] if name else []) + [f"{kind}/{part}"]

        subject, text, html = (self._load(candidates(part)) for part in TEMPLATE_FILES)
        return subject, text, html

    def _load(self, names: list[str]) -> jinja2.Template:
        try:
            return self.environment.select_template(names)
        except jinja2.TemplatesNotFound:
            searched = self.environment.loader.searchpath  # type: ignore[union-attr]
            raise TemplateError(f"template {names[0]!r} not found in {searched}") from None
        except jinja2.TemplateSyntaxError as error:
            raise TemplateError(f"{error.filename}:{error.lineno}: {error.message}") from None
        except (RecursionError, ValueError, ArithmeticError) as error:  # e.g. nested too deeply
            raise TemplateError(f"{names[0]}: cannot compile: {type(error).__name__}: {error}") from None

    def _compile_subject(self, rule_name: str, subject: str) -> jinja2.Template:
        where = f"rule {rule_name!r}: subject"
        try:
            return self.environment.from_string(subject)
        except jinja2.TemplateSyntaxError as error:
            raise TemplateError(f"{where}: {error.message}") from None
        except (RecursionError, ValueError, ArithmeticError) as error:
            raise TemplateError(f"{where}: cannot compile: {type(error).__name__}: {error}") from None

    # -- a user's base.html / base.txt -----------------------------------------------------------

    def _warn_of_missing_blocks(self) -> None:
        """One WARNING line when a base of the user's lacks a block a body of ours fills: that part
        of the email (the summary, the metadata's facts...) would vanish without a word. Not an
        error: such a base rendered before this check existed, and an upgrade must not stop it."""
        problems = [problem for base in BASE_OF.values() if (problem := self._blocks_missing_from(base))]
        if problems:
            log(get_logger(), logging.WARNING, "; ".join(problems))

    def _blocks_missing_from(self, base: str) -> str | None:
        if self.templates_dir is None or not (self.templates_dir / base).is_file():
            return None
        blocks = set(self._load([base]).blocks)
        missing: dict[str, list[str]] = {}
        for template in self._our_bodies_extending(base):
            for block in sorted(set(template.blocks) - blocks):
                missing.setdefault(block, []).append(f"templates/{template.name}")
        if not missing:
            return None
        lacks = " and no ".join(
            f"{{% block {block} %}} ({BLOCK_HOLDS.get(block, 'its content')}, filled by {', '.join(by)})"
            for block, by in missing.items()
        )
        return (
            f"templates/{base}: has no {lacks}: what they hold will not show in the emails; add each"
            " block where that part of the email belongs, or override those bodies too"
        )

    def _our_bodies_extending(self, base: str) -> list[jinja2.Template]:
        bodies = {t.name: t for _, templates in self.loaded() for t in templates[1:] if self._is_ours(t)}
        return [t for name, t in sorted(bodies.items()) if BASE_OF[name.rsplit("/", 1)[-1]] == base]

    def _is_ours(self, template: jinja2.Template) -> bool:
        return template.filename is not None and Path(template.filename).is_relative_to(BUILTIN_TEMPLATES)

    def _innermost_template(self, traceback: TracebackType | None) -> str | None:
        """The template name of the innermost template frame: Jinja rewrites a template's frames
        to carry its file name (and marks them, which tells them from Python's own)."""
        roots = [os.path.normpath(root) + os.sep for root in self.environment.loader.searchpath]  # type: ignore[union-attr]
        innermost = None
        while traceback is not None:
            frame = traceback.tb_frame
            if "__jinja_exception__" in frame.f_globals or "__jinja_template__" in frame.f_globals:
                filename = os.path.normpath(frame.f_code.co_filename)
                root = next((r for r in roots if filename.startswith(r)), None)
                innermost = Path(filename[len(root) :]).as_posix() if root is not None else innermost
            traceback = traceback.tb_next
        return innermost


class _Loader(jinja2.FileSystemLoader):
    """Finds a template as FileSystemLoader does (the user's folder first); one of ours that still
    matches the module precompiled from it is loaded from that module, anything else is compiled."""

    def load(
        self, environment: jinja2.Environment, name: str, globals: dict[str, Any] | None = None
    ) -> jinja2.Template:
        source, filename, uptodate = self.get_source(environment, name)
        module = _precompiled(name, filename, source)
        if module is None:
            code = environment.compile(source, name, filename)
            return environment.template_class.from_code(
                environment, code, globals if globals is not None else {}, uptodate
            )
        module.__file__ = filename  # the template's file, not the module's: errors name it, as compiled ones do
        return environment.template_class.from_module_dict(
            environment, module.__dict__, globals if globals is not None else {}
        )


def _precompiled(name: str, filename: str, source: str) -> ModuleType | None:
    """The module precompiled from our ``name``, if ``filename`` is ours and the module was compiled
    from this very source by this Jinja; else None (a user's file, an edit since, another Jinja)."""
    if not Path(filename).is_relative_to(BUILTIN_TEMPLATES):
        return None
    key = jinja2.ModuleLoader.get_template_key(name)
    spec = importlib.util.spec_from_file_location(f"notifier_templates_compiled.{key}", COMPILED / f"{key}.py")
    if spec is None or spec.loader is None or not (COMPILED / f"{key}.py").is_file():
        return None
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except Exception:  # noqa: BLE001 - a module from another Jinja may not even import: compile instead
        return None
    current = getattr(module, "source_sha256", None) == _digest(source)
    return module if current and getattr(module, "jinja_version", None) == jinja2.__version__ else None


def _digest(source: str) -> str:
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


def precompile(target: Path = COMPILED) -> list[Path]:
    """Write our templates compiled to Python modules into ``target``, each ending with the digest
    of its source and the Jinja version (appended: the code's line numbers map to the template's)."""
    environment = Templates().environment
    loader = jinja2.FileSystemLoader(str(BUILTIN_TEMPLATES))
    target.mkdir(parents=True, exist_ok=True)
    written = []
    names = [f"{kind}/{part}" for kind in (*KINDS, DIGEST) for part in TEMPLATE_FILES] + list(SHARED_FILES)
    for name in sorted(names):
        source, filename, _ = loader.get_source(environment, name)
        code = environment.compile(source, name, filename, raw=True, defer_init=True)
        path = target / jinja2.ModuleLoader.get_module_filename(name)
        path.write_text(f"{code}\nsource_sha256 = {_digest(source)!r}\njinja_version = {jinja2.__version__!r}\n")
        written.append(path)
    return written


class _Trial:
    """Each template compiled so far rendered once with a sample event (HTML through the CSS
    inliner too), so that a typo (StrictUndefined), a bad filter, a loop that never ends or bad
    CSS stops the start-up with its file named, instead of dead-lettering every email."""

    def __init__(self, templates: Templates, context: ContextFor, check_html: Callable[[str], object]) -> None:
        self._templates = templates
        self._context = context
        self._check_html = check_html

    def run(self, rules: tuple[Rule, ...]) -> None:
        samples = {kind: _sample_event(kind) for kind in KINDS}
        for (_, kind), (where, template) in self._checks(rules).items():
            output = self._try(template, self._context(samples[kind]), where, f"a sample {kind} event")
            if where.endswith(".html"):
                self._check_css(output, where)
        if self._templates._digest is not None:
            self._run_digest(self._templates._digest)

    def _run_digest(self, templates: TemplateSet) -> None:
        from notifier import digest_context  # only where a rule sends digests

        context = digest_context.sample_context(self._templates.timezone)
        for template in templates:
            where = f"templates/{template.name}"
            output = self._try(template, context, where, "a sample digest")
            if where.endswith(".html"):
                self._check_css(output, where)

    def _check_css(self, html: str, where: str) -> None:
        try:
            self._check_html(html)
        except Exception as error:  # noqa: BLE001 - the CSS inliner's own errors, or its import failing
            raise TemplateError(f"{where}: CSS inlining failed: {type(error).__name__}: {error}") from None

    def _checks(self, rules: tuple[Rule, ...]) -> dict[tuple[int, str], tuple[str, jinja2.Template]]:
        """(template, kind) → where it is: a template shared by sets, or a subject by rules, is tried once."""
        checks: dict[tuple[int, str], tuple[str, jinja2.Template]] = {}
        for (_, kind), templates in self._templates.loaded():
            for template in templates:
                checks.setdefault((id(template), kind), (f"templates/{template.name}", template))
        for rule in rules:
            template = self._templates.subject_for(rule.name)
            for kind in (k for k in KINDS if k in rule.when.events) if template is not None else ():  # in a set order
                checks.setdefault((id(template), kind), (f"rule {rule.name!r}: subject", template))
        return checks

    def _try(self, template: jinja2.Template, context: dict[str, Any], where: str, sample: str) -> str:
        """Render at start-up; whatever it raises stops the start-up with the file named."""
        try:
            return render_within_budget(template, context, alarm=True)  # start-up: in the main thread
        except Exception as error:  # noqa: BLE001 - not only Jinja's errors: OverflowError, RecursionError...
            if template.name is not None:
                where = self._templates.file_of(template, error)
            raise TemplateError(f"{where}: {what_failed(error)} (checked with {sample})") from None


def what_failed(error: Exception) -> str:
    """What went wrong: our own limits say it in words, other errors need their type too."""
    return str(error) if isinstance(error, RenderLimitError) else f"{type(error).__name__}: {error}"


def _check_builtin_files() -> None:
    names = [f"{kind}/{part}" for kind in (*KINDS, DIGEST) for part in TEMPLATE_FILES] + list(SHARED_FILES)
    missing = [name for name in names if not (BUILTIN_TEMPLATES / name).is_file()]
    if missing:
        raise TemplateError(f"{BUILTIN_TEMPLATES}: missing {', '.join(missing)} (was templates/ uploaded?)")


def _sample_event(kind: str) -> StorageEvent:
    from notifier.events import decode
    from notifier.payloads import object_resource, storage_cloud_event

    data = object_resource(kind, "sample-bucket", "sample/object.csv", size=1024, content_type="text/csv",
                           metadata={"sample": "value"})  # fmt: skip
    return decode(storage_cloud_event(kind, data, "sample"))


if __name__ == "__main__":  # python -m notifier.templates: rewrite templates/_compiled after editing ours
    for old in COMPILED.glob("tmpl_*.py"):
        old.unlink()
    print("\n".join(str(path) for path in precompile()))
