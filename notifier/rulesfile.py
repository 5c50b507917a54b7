"""``notify.toml`` → :class:`~notifier.rules.RuleSet`, with every problem reported at once.

Messages look like ``notify.toml: rules[2] (finance-reports): events: unknown event "finalise"
(did you mean "finalize"?)``: the file, where in it, the key, and what to do.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jinja2

from notifier.addresses import Address, parse_addresses
from notifier.events import KINDS
from notifier.rules import GlobError, Globs, Recipients, Rule, RuleSet

DEFAULT_KEYS = ("from", "to", "cc", "bcc", "reply_to", "separate_envelopes")
RULE_KEYS = (
    "name", "events", "buckets", "include", "exclude", "content_types", "min_size", "max_size",
    "metadata", "subject", "template", "stop", *DEFAULT_KEYS,
)  # fmt: skip
TOP_KEYS = ("defaults", "rules", "ignore")
_LISTS = ("to", "cc", "bcc")

_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*")
_SIZE_UNITS = {
    "": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2,
    "gb": 1000**3, "gib": 1024**3, "tb": 1000**4, "tib": 1024**4,
}  # fmt: skip
_MEDIA_TYPE = re.compile(r"(\*/\*|[a-z0-9][a-z0-9!#$&^_.+-]*/(\*|[a-z0-9][a-z0-9!#$&^_.+-]*))")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")


@dataclass(frozen=True, slots=True)
class EnvDefaults:
    """What the environment supplies where the file is silent."""

    sender: Address | None
    to: tuple[Address, ...]


def load_rules(
    path: Path, env: EnvDefaults, template_dirs: Iterable[Path], state_bucket: str | None
) -> tuple[RuleSet | None, list[str]]:
    """Parse ``path``; return the rule set (None if unusable) and every problem found."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        return None, [f"{path}: cannot read: {error}"]
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        return None, [f"{path.name}: not valid TOML: {error}"]
    parser = _Parser(path.name, tuple(template_dirs))
    rules = parser.parse(document, env)
    if parser.problems:
        return None, parser.problems
    return RuleSet(rules, ignore=parser.ignore, state_bucket=state_bucket), []


def default_rules(env: EnvDefaults, state_bucket: str | None) -> RuleSet:
    """Without a rules file: every event to the environment's recipients."""
    assert env.sender is not None
    return RuleSet((Rule("default", Recipients(env.sender, to=env.to)),), state_bucket=state_bucket)


class _Parser:
    def __init__(self, filename: str, template_dirs: tuple[Path, ...]) -> None:
        self.filename = filename
        self.template_dirs = template_dirs
        self.problems: list[str] = []
        self.ignore: Globs | None = None

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{self.filename}: {where}{message}")

    def parse(self, document: dict[str, Any], env: EnvDefaults) -> tuple[Rule, ...]:
        self._unknown_keys(document, TOP_KEYS, "")
        defaults = self._table(document.get("defaults", {}), "defaults")
        self._unknown_keys(defaults, DEFAULT_KEYS, "defaults: ")
        if "ignore" in document:
            self.ignore = self._globs(document["ignore"], "ignore", "")
        raw_rules = document.get("rules", [])
        if not isinstance(raw_rules, list) or not all(isinstance(r, dict) for r in raw_rules):
            self.problem("rules: ", "expected [[rules]] tables")
            raw_rules = []
        if not raw_rules:  # only [defaults]: everything goes to the defaults' recipients
            raw_rules = [{"name": "default"}]
        rules, names = [], set()
        for index, raw in enumerate(raw_rules):
            name = raw.get("name")
            if isinstance(name, str) and name in names:
                self.problem(f"rules[{index}] ({name}): ", "name: another rule has this name")
            names.add(name)
            rule = self._rule(raw, index, defaults, env)
            if rule is not None:
                rules.append(rule)
        return tuple(rules)

    # -- one rule ----------------------------------------------------------------------------

    def _rule(self, raw: dict[str, Any], index: int, defaults: dict[str, Any], env: EnvDefaults) -> Rule | None:
        name = raw.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            where = f"rules[{index}]: "
            self.problem(where, "name: required: a short name of letters, digits, '.', '_' or '-'")
            name = f"#{index}"
        else:
            where = f"rules[{index}] ({name}): "
        before = len(self.problems)
        self._unknown_keys(raw, RULE_KEYS, where)
        recipients = self._recipients(raw, defaults, where, env)
        events = self._choices(raw.get("events", list(KINDS)), KINDS, "events", "event", where)
        buckets = self._strings(raw["buckets"], "buckets", where) if "buckets" in raw else None
        include = self._globs(raw["include"], "include", where) if "include" in raw else None
        exclude = self._globs(raw["exclude"], "exclude", where) if "exclude" in raw else None
        content_types = self._content_types(raw.get("content_types", []), where)
        min_size = self._size(raw.get("min_size"), "min_size", where)
        max_size = self._size(raw.get("max_size"), "max_size", where)
        if min_size is not None and max_size is not None and min_size > max_size:
            self.problem(where, f"min_size ({min_size} bytes) is larger than max_size ({max_size} bytes)")
        metadata = self._metadata(raw.get("metadata", {}), where)
        subject = self._subject(raw.get("subject"), where)
        template = self._template(raw.get("template"), where)
        stop = self._bool(raw.get("stop", False), "stop", where)
        if len(self.problems) > before or recipients is None:
            return None
        return Rule(
            name=name, recipients=recipients, events=frozenset(events),
            buckets=frozenset(buckets) if buckets is not None else None, include=include, exclude=exclude,
            content_types=tuple(content_types), min_size=min_size, max_size=max_size,
            metadata=MappingProxyType(metadata), subject=subject, template=template, stop=stop,
        )  # fmt: skip

    def _recipients(
        self, raw: dict[str, Any], defaults: dict[str, Any], where: str, env: EnvDefaults
    ) -> Recipients | None:
        """Sender and recipients from the rule, else [defaults], else the environment; None (and a
        problem) if unusable. A rule setting any of to/cc/bcc replaces all three defaults."""
        before = len(self.problems)
        merged = {**defaults, **raw}
        sender = self._addresses(merged["from"], "from", where) if "from" in merged else [env.sender]
        lists_from = next((t for t in (raw, defaults) if any(k in t for k in _LISTS)), None)
        if lists_from is None:
            lists = {"to": env.to, "cc": (), "bcc": ()}
        else:
            lists = {key: tuple(self._addresses(lists_from.get(key, []), key, where)) for key in _LISTS}
        reply_to = self._addresses(merged.get("reply_to", []), "reply_to", where)
        separate = self._bool(merged.get("separate_envelopes", True), "separate_envelopes", where)
        if len(self.problems) > before:  # a bad address or value: already said
            return None
        if sender == [None]:
            self.problem(where, "from: no sender: set from here, in [defaults], or NOTIFY_FROM")
        elif len(sender) != 1:
            self.problem(where, f"from: expected one address, got {len(sender)}")
        if len(reply_to) > 1:
            self.problem(where, f"reply_to: expected one address, got {len(reply_to)}")
        if not any(lists.values()):
            self.problem(where, "no recipients: set to, cc or bcc here or in [defaults], or NOTIFY_TO")
        elif not separate and not lists["to"]:
            self.problem(where, "to: required when separate_envelopes = false (cc and bcc need a To)")
        if len(self.problems) > before or sender[0] is None:
            return None
        reply = reply_to[0] if reply_to else None
        return Recipients(sender[0], reply_to=reply, separate_envelopes=separate, **lists)

    # -- values ------------------------------------------------------------------------------

    def _unknown_keys(self, table: dict[str, Any], known: tuple[str, ...], where: str) -> None:
        for key in table:
            if key not in known:
                self.problem(where, f"{key}: unknown key{_did_you_mean(key, known)}")

    def _table(self, value: Any, where: str) -> dict[str, Any]:
        if isinstance(value, dict):
            return value
        self.problem(f"{where}: ", f"expected a table, got {_kind(value)}")
        return {}

    def _strings(self, value: Any, key: str, where: str) -> list[str]:
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            self.problem(where, f"{key}: expected a string or a list of non-empty strings, got {_kind(value)}")
            return []
        return values

    def _choices(self, value: Any, allowed: Iterable[str], key: str, noun: str, where: str) -> list[str]:
        chosen = self._strings(value, key, where)
        for item in chosen:
            if item not in allowed:
                self.problem(where, f'{key}: unknown {noun} "{item}"{_did_you_mean(item, allowed)}')
        return chosen

    def _globs(self, value: Any, key: str, where: str) -> Globs | None:
        patterns = self._strings(value, key, where)
        for pattern in patterns:
            try:
                Globs((pattern,))
            except GlobError as error:
                self.problem(where, f"{key}: bad glob: {error}")
                return None
        return Globs(tuple(patterns)) if patterns else None

    def _addresses(self, value: Any, key: str, where: str) -> list[Address]:
        found = []
        for item in self._strings(value, key, where):
            try:
                found.extend(parse_addresses(item, key))
            except ValueError as error:
                self.problem(where, str(error))
        return found

    def _content_types(self, value: Any, where: str) -> list[str]:
        types = [t.strip().lower() for t in self._strings(value, "content_types", where)]
        for media_type in types:
            if not _MEDIA_TYPE.fullmatch(media_type):
                self.problem(where, f'content_types: "{media_type}" is not a media type like "text/csv" or "image/*"')
        return types

    def _size(self, value: Any, key: str, where: str) -> int | None:
        if value is None:
            return None
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        match = _SIZE.fullmatch(value) if isinstance(value, str) else None
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _SIZE_UNITS:
            self.problem(where, f'{key}: cannot read {value!r} as a size; write bytes or e.g. "1 KiB", "5 MB"')
            return None
        return int(float(match.group(1)) * _SIZE_UNITS[unit])

    def _metadata(self, value: Any, where: str) -> dict[str, str]:
        table = self._table(value, f"{where}metadata") if not isinstance(value, dict) else value
        for key, wanted in table.items():
            if not isinstance(wanted, str):
                self.problem(where, f"metadata.{key}: expected a string, got {_kind(wanted)}")
        return {k: v for k, v in table.items() if isinstance(v, str)}

    def _subject(self, value: Any, where: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            self.problem(where, f"subject: expected a non-empty string, got {_kind(value)}")
            return None
        try:
            jinja2.Environment(autoescape=True).parse(value)  # syntax check only
        except jinja2.TemplateSyntaxError as error:
            self.problem(where, f"subject: template error: {error.message}")
        return value

    def _template(self, value: Any, where: str) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str) or not _NAME.fullmatch(value):
            self.problem(where, f"template: expected a template folder name, got {value!r}")
            return None
        known = sorted({p.name for d in self.template_dirs if d.is_dir() for p in d.iterdir() if p.is_dir()})
        if value not in known:
            self.problem(where, f'template: unknown template "{value}"{_did_you_mean(value, known)}'
                         f"; expected a folder in {', '.join(str(d) for d in self.template_dirs)}")  # fmt: skip
        return value

    def _bool(self, value: Any, key: str, where: str) -> bool:
        if isinstance(value, bool):
            return value
        self.problem(where, f"{key}: expected true or false, got {_kind(value)}")
        return False


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _kind(value: Any) -> str:
    names: dict[type, Callable[[Any], str]] = {
        str: lambda v: f"the string {v!r}", bool: lambda v: str(v).lower(), int: lambda v: f"the number {v}",
        float: lambda v: f"the number {v}", list: lambda v: "a list", dict: lambda v: "a table",
    }  # fmt: skip
    return names.get(type(value), lambda v: type(v).__name__)(value)
