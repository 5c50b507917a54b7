"""Every ``notify.toml`` rule key, once: its check and the field it fills (:data:`RULE_KEYS`).

:mod:`notifier.rulesfile` reads a file with this table: the known keys, did-you-mean, the keys
``[defaults]`` may set, the "only means something with" checks and each
:class:`~notifier.rules.Rule` are derived from it. A check reports a problem through
:meth:`KeyChecks.problem` and returns the value to use, or :data:`BAD`.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import jinja2

from notifier.addresses import Address, parse_addresses
from notifier.batching import GROUP_FIELDS, MAX_CAP, MAX_WINDOW, MIN_WINDOW
from notifier.events import KINDS
from notifier.globs import GlobError, Globs
from notifier.units import UnitError, parse_duration, parse_size

MAX_LINK_TTL = 7 * 86400.0  # V4 signed URLs live at most 7 days
MIN_LINK_TTL = 1.0  # and whole seconds: a shorter one would sign a link already dead
MAX_ATTACHMENT = 20 * 1024**2  # base64 grows it by a third; SendGrid takes 30 MB in all
BAD = object()  # a value whose problem has been reported
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")  # a rule's name, a template folder's
_COUNT = re.compile(r"[0-9]{1,5}")  # ASCII digits only: str.isdigit() takes "²" and "١٠"
_MEDIA_TYPE = re.compile(r"(\*/\*|[a-z0-9][a-z0-9!#$&^_.+-]*/(\*|[a-z0-9][a-z0-9!#$&^_.+-]*))")

Check = Callable[["KeyChecks", Any, str, str], Any]  # (parser, value, key, where) → the value to use, or BAD
# Where a key's value goes: a field of the Rule, of its Conditions ("when"), of its Delivery, of its
# Recipients, of its Batching (the digest keys: rulesfile builds one value from them); or "switch":
# the key fills nothing itself, another key `needs` it.
Target = Literal["rule", "when", "delivery", "recipients", "batching", "switch"]


@dataclass(frozen=True, slots=True)
class RuleKey:
    """One ``notify.toml`` rule key: how its value is checked and which field it fills."""

    check: Check | None  # None: the rule's name, checked where the rule is read
    target: Target
    field: str = ""
    # With `needs`: the field's value when the needed key has the needed value and this key is absent.
    default: Any = None
    needs: tuple[str, object] | None = None  # (key, value) without which this key means nothing
    in_defaults: bool = False  # [defaults] may set it too
    never_empty: bool = False  # an empty list would match nothing: refused


class KeyChecks:
    """The checks of rule values, and where their problems go."""

    def __init__(self, filename: str, template_dirs: tuple[Path, ...]) -> None:
        self.filename = filename
        self.template_dirs = template_dirs
        self.problems: list[str] = []

    @functools.cached_property
    def template_folders(self) -> list[str]:
        """Listed once per file, not once per rule."""
        return sorted({p.name for d in self.template_dirs if d.is_dir() for p in d.iterdir() if p.is_dir()})

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{self.filename}: {where}{message}")

    # -- checks: each returns the value to use, or BAD after reporting a problem ---------------

    def strings(self, value: Any, key: str, where: str) -> Any:
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            self.problem(where, f"{key}: expected a string or a list of non-empty strings, got {kind(value)}")
            return BAD
        if not values and (entry := RULE_KEYS.get(key)) is not None and entry.never_empty:
            self.problem(where, f"{key}: an empty list matches nothing; leave the key out to match everything")
            return BAD
        return values

    def events(self, value: Any, key: str, where: str) -> Any:
        chosen = self.strings(value, key, where)
        if chosen is BAD:
            return BAD
        unknown = [item for item in chosen if item not in KINDS]
        for item in unknown:
            self.problem(where, f'{key}: unknown event "{item}"{did_you_mean(item, KINDS)}')
        return BAD if unknown else frozenset(chosen)

    def bucket_names(self, value: Any, key: str, where: str) -> Any:
        names = self.strings(value, key, where)
        return names if names is BAD else frozenset(names)

    def globs(self, value: Any, key: str, where: str) -> Any:
        patterns = self.strings(value, key, where)
        if patterns is BAD:
            return BAD
        try:
            return Globs(tuple(patterns))  # compiled once; one by one only to name each that is wrong
        except GlobError as error:
            errors = [str(error)]
        for pattern in patterns:
            try:
                Globs((pattern,))
            except GlobError as error:
                errors.append(str(error))
        for error in errors[1:] or errors:  # each bad pattern's own error; the whole list's if none alone fails
            self.problem(where, f"{key}: bad glob: {error}")
        return BAD

    def addresses(self, value: Any, key: str, where: str) -> Any:
        items = self.strings(value, key, where)
        if items is BAD:
            return BAD
        found: list[Address] = []
        bad = False
        for item in items:
            try:
                found.extend(parse_addresses(item, key))
            except ValueError as error:
                self.problem(where, str(error))
                bad = True
        return BAD if bad else tuple(found)

    def one_address(self, value: Any, key: str, where: str) -> Any:
        found = self.addresses(value, key, where)
        if found is not BAD and len(found) != 1:
            self.problem(where, f"{key}: expected one address, got {len(found)}")
            return BAD
        return found if found is BAD else found[0]

    def content_types(self, value: Any, key: str, where: str) -> Any:
        types = self.strings(value, key, where)
        if types is BAD:
            return BAD
        types = [t.strip().lower() for t in types]
        bad = [t for t in types if not _MEDIA_TYPE.fullmatch(t)]
        for media_type in bad:
            self.problem(where, f'{key}: "{media_type}" is not a media type like "text/csv" or "image/*"')
        return BAD if bad else tuple(types)

    def size(self, value: Any, key: str, where: str) -> Any:
        try:
            return parse_size(value)
        except UnitError as error:
            self.problem(where, f"{key}: {error}")
            return BAD

    def metadata(self, value: Any, key: str, where: str) -> Any:
        if not isinstance(value, dict):
            self.problem(where, f'{key}: expected a table such as {{ team = "finance" }}, got {kind(value)}')
            return BAD
        bad = [k for k, v in value.items() if not isinstance(v, str)]
        for k in bad:
            self.problem(where, f"{key}.{k}: expected a string, got {kind(value[k])}")
        return BAD if bad else MappingProxyType(dict(value))

    def subject(self, value: Any, key: str, where: str) -> Any:
        if not isinstance(value, str) or not value.strip():
            self.problem(where, f"{key}: expected a non-empty string, got {kind(value)}")
            return BAD
        if error := _subject_syntax_error(value):
            self.problem(where, f"{key}: {error}")
            return BAD
        return value

    def template(self, value: Any, key: str, where: str) -> Any:
        if not isinstance(value, str) or not NAME.fullmatch(value):
            self.problem(where, f"{key}: expected a template folder name, got {kind(value)}")
            return BAD
        known = self.template_folders
        if value not in known:
            folders = ", ".join(str(d) for d in self.template_dirs)
            self.problem(
                where, f'{key}: unknown template "{value}"{did_you_mean(value, known)}; expected a folder in {folders}'
            )
            return BAD
        return value

    def link(self, value: Any, key: str, where: str) -> Any:
        if value in ("console", "signed"):
            return value
        self.problem(where, f'{key}: expected "console" or "signed", got {kind(value)}')
        return BAD

    def link_ttl(self, value: Any, key: str, where: str) -> Any:
        try:
            return parse_duration(value, minimum=MIN_LINK_TTL, maximum=MAX_LINK_TTL)
        except UnitError as error:
            self.problem(where, f"{key}: {error}")
            return BAD

    def attachment_size(self, value: Any, key: str, where: str) -> Any:
        try:
            return parse_size(value, maximum=MAX_ATTACHMENT)
        except UnitError as error:
            hint = "; SendGrid takes 30 MB per message, base64 included" if _is_size(value) else ""
            self.problem(where, f"{key}: {error}{hint}")
            return BAD

    def template_id(self, value: Any, key: str, where: str) -> Any:
        if isinstance(value, str) and re.fullmatch(r"d-[0-9a-f]{32}", value):
            return value
        self.problem(
            where, f'{key}: expected a SendGrid dynamic template id like "d-" and 32 hex digits, got {kind(value)}'
        )
        return BAD

    def digest_window(self, value: Any, key: str, where: str) -> Any:
        try:
            seconds = parse_duration(value, minimum=MIN_WINDOW, maximum=MAX_WINDOW)
        except UnitError as error:
            self.problem(where, f"{key}: {error} (the flush runs once a minute; a held event waits a day at most)")
            return BAD
        # Windows are aligned to whole minutes (the flush's); digest_max_wait to whole seconds.
        step = 1 if key == "digest_max_wait" else 60
        if seconds % step:
            self.problem(where, f"{key}: expected whole {'seconds' if step == 1 else 'minutes'}, got {kind(value)}")
            return BAD
        return seconds

    def group_by(self, value: Any, key: str, where: str) -> Any:
        fields = ", ".join(f'"{f}"' for f in GROUP_FIELDS)
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            self.problem(where, f"{key}: expected a list of {fields}, got {kind(value)}")
            return BAD
        for item in values:
            if item not in GROUP_FIELDS:
                self.problem(
                    where, f'{key}: unknown field "{item}"{did_you_mean(item, GROUP_FIELDS)}; expected {fields}'
                )
                return BAD
        if len(set(values)) != len(values):
            self.problem(where, f"{key}: a field is named twice")
            return BAD
        return tuple(values)

    def max_emails(self, value: Any, key: str, where: str) -> Any:
        expected = f'expected "N/period", N from 1 to {MAX_CAP:,} and a period from 1 minute to 1 day, such as "20/h"'
        count, slash, period = value.partition("/") if isinstance(value, str) else ("", "", "")
        count = count.strip()
        if not slash or not _COUNT.fullmatch(count) or not 1 <= int(count) <= MAX_CAP:
            self.problem(where, f"{key}: {expected}, got {kind(value)}")
            return BAD
        period = period.strip()
        try:  # "20/h": a bare unit is one of it
            seconds = parse_duration(
                ("1" + period) if period.isalpha() else period, minimum=MIN_WINDOW, maximum=MAX_WINDOW
            )
        except UnitError:
            self.problem(where, f"{key}: {expected}, got {kind(value)}")
            return BAD
        if seconds % 60:  # a cap's window is aligned to whole minutes, as a digest's
            self.problem(where, f"{key}: expected a period of whole minutes, got {kind(value)}")
            return BAD
        return int(count), seconds

    def boolean(self, value: Any, key: str, where: str) -> Any:
        if isinstance(value, bool):
            return value
        self.problem(where, f"{key}: expected true or false, got {kind(value)}")
        return BAD


# Adding a rule key: one entry here, its check above if none fits, and its use where the field is read.
RULE_KEYS: dict[str, RuleKey] = {
    "name": RuleKey(None, "rule", "name"),
    "events": RuleKey(KeyChecks.events, "when", "events", never_empty=True),
    "buckets": RuleKey(KeyChecks.bucket_names, "when", "buckets", never_empty=True),
    "include": RuleKey(KeyChecks.globs, "when", "include", never_empty=True),
    "exclude": RuleKey(KeyChecks.globs, "when", "exclude"),
    "content_types": RuleKey(KeyChecks.content_types, "when", "content_types", never_empty=True),
    "min_size": RuleKey(KeyChecks.size, "when", "min_size"),
    "max_size": RuleKey(KeyChecks.size, "when", "max_size"),
    "metadata": RuleKey(KeyChecks.metadata, "when", "metadata"),
    "subject": RuleKey(KeyChecks.subject, "delivery", "subject"),
    "template": RuleKey(KeyChecks.template, "delivery", "template"),
    "stop": RuleKey(KeyChecks.boolean, "rule", "stop"),
    "link": RuleKey(KeyChecks.link, "switch"),  # "console" is the default link, in every email anyway
    "link_ttl": RuleKey(KeyChecks.link_ttl, "delivery", "signed_link_ttl", default=86400.0, needs=("link", "signed")),
    "attach": RuleKey(KeyChecks.boolean, "switch"),
    "attach_max_size": RuleKey(
        KeyChecks.attachment_size, "delivery", "attach_max_size", default=5 * 1024**2, needs=("attach", True)
    ),
    "sendgrid_template_id": RuleKey(KeyChecks.template_id, "delivery", "template_id"),
    "from": RuleKey(KeyChecks.one_address, "recipients", "sender", in_defaults=True),
    "to": RuleKey(KeyChecks.addresses, "recipients", "to", in_defaults=True),
    "cc": RuleKey(KeyChecks.addresses, "recipients", "cc", in_defaults=True),
    "bcc": RuleKey(KeyChecks.addresses, "recipients", "bcc", in_defaults=True),
    "reply_to": RuleKey(KeyChecks.one_address, "recipients", "reply_to", in_defaults=True),
    "separate_envelopes": RuleKey(KeyChecks.boolean, "recipients", "separate_envelopes", in_defaults=True),
    "digest": RuleKey(KeyChecks.digest_window, "batching", "window"),
    "digest_max_wait": RuleKey(KeyChecks.digest_window, "batching", "max_wait"),
    "group_by": RuleKey(KeyChecks.group_by, "batching", "group_by"),
    "max_emails": RuleKey(KeyChecks.max_emails, "batching", "cap"),
}


def defaults_keys() -> tuple[str, ...]:
    return tuple(key for key, entry in RULE_KEYS.items() if entry.in_defaults)


def holds(value: Any, wanted: object) -> bool:
    """``value == wanted`` of the same type: 1 is not true."""
    return type(value) is type(wanted) and value == wanted


def literal(value: object) -> str:
    """A value as TOML writes it: "signed", true."""
    return f'"{value}"' if isinstance(value, str) else _toml(value)


def _is_size(value: Any) -> bool:
    try:
        parse_size(value)
    except UnitError:
        return False
    return True


@functools.lru_cache(maxsize=256)  # rules often share a subject
def _subject_syntax_error(subject: str) -> str | None:
    """What is wrong with a subject's Jinja syntax, or None."""
    try:
        _syntax_environment().parse(subject)
    except jinja2.TemplateSyntaxError as error:
        return f"template error: {error.message}"
    except RecursionError:
        return "nested too deeply"
    return None


@functools.cache
def _syntax_environment() -> jinja2.Environment:
    return jinja2.Environment(autoescape=True)


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _toml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def kind(value: Any) -> str:
    names: dict[type, Callable[[Any], str]] = {
        str: lambda v: f"the string {v!r}", bool: lambda v: _toml(v), int: lambda v: f"the number {v}",
        float: lambda v: f"the number {v}", list: lambda v: "a list", dict: lambda v: "a table",
    }  # fmt: skip
    return names.get(type(value), lambda v: type(v).__name__)(value)
