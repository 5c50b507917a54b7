"""``notify.toml`` → :class:`~notifier.rules.RuleSet`, with every problem reported at once.

Messages look like ``notify.toml: rules[2] (finance-reports): events: unknown event "finalise"
(did you mean "finalize"?)``: the file, where in it, the key, and what to do. Problems come in
file order: each key is checked where it stands, then what depends on several keys.
"""

from __future__ import annotations

import difflib
import functools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import MappingProxyType
from typing import Any

import jinja2

from notifier.addresses import Address, parse_addresses
from notifier.events import KINDS
from notifier.globs import GlobError, Globs
from notifier.rules import Conditions, Delivery, Recipients, Rule, RuleSet

TOP_KEYS = ("defaults", "rules", "ignore")
DEFAULT_KEYS = ("from", "to", "cc", "bcc", "reply_to", "separate_envelopes")
RULE_KEYS = ("name", "events", "buckets", "include", "exclude", "content_types", "min_size", "max_size",
             "metadata", "subject", "template", "stop", "link", "link_ttl", "attach", "attach_max_size",
             "sendgrid_template_id", *DEFAULT_KEYS)  # fmt: skip
# Rule keys that set something other than a Rule field of the same name.
_SHAPING_KEYS = ("link", "link_ttl", "attach", "attach_max_size")
MAX_LINK_TTL = 7 * 86400.0  # V4 signed URLs live at most 7 days
DEFAULT_LINK_TTL = 86400.0
MAX_ATTACHMENT = 20 * 1024**2  # base64 grows it by a third; SendGrid takes 30 MB in all
DEFAULT_ATTACHMENT = 5 * 1024**2
_LISTS = ("to", "cc", "bcc")
_NEVER_EMPTY = ("events", "buckets", "include", "content_types")
_BAD = object()  # a value whose problem has been reported

_SIZE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*")
_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2,
               "gb": 1000**3, "gib": 1024**3, "tb": 1000**4, "tib": 1024**4}  # fmt: skip
_MEDIA_TYPE = re.compile(r"(\*/\*|[a-z0-9][a-z0-9!#$&^_.+-]*/(\*|[a-z0-9][a-z0-9!#$&^_.+-]*))")
# A rules file is read whole and every rule compiled at start-up (0.15 ms a rule, its globs' regexes
# mostly; 0.5 ms with a subject of its own), so a generated file of 100,000 rules held the cold start
# for minutes. At these limits start-up takes at most 0.15-0.55 s more; beyond them, deploy one
# function per group of buckets.
MAX_RULES_FILE_BYTES = 1024 * 1024
MAX_RULES = 1000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_DURATION = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*(s|m|h|d)?\s*")
_DURATION_UNITS = {None: 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float | None:
    """Seconds from "90", "30m", "12h" or "7d"; None if it is not such a duration."""
    match = _DURATION.fullmatch(text)
    return float(match[1]) * _DURATION_UNITS[match[2]] if match else None


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
        with path.open("rb") as file:
            data = file.read(MAX_RULES_FILE_BYTES + 1)
        text = data.decode("utf-8-sig")  # a byte-order mark, as some Windows editors write, is skipped
    except (OSError, UnicodeDecodeError) as error:
        return None, [f"{path}: cannot read: {error}"]
    if len(data) > MAX_RULES_FILE_BYTES:
        return None, [f"{path.name}: larger than {MAX_RULES_FILE_BYTES:,} bytes (1 MiB), too large for a rules file"]
    import tomllib  # only with a rules file: 4 ms of cold start

    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        return None, [f"{path.name}: not valid TOML: {error}"]
    except RecursionError:
        return None, [f"{path.name}: nested too deeply (arrays or inline tables inside each other)"]
    parser = _Parser(path.name, tuple(template_dirs), env)
    rules = parser.parse(document)
    if parser.problems:
        return None, parser.problems
    return RuleSet(rules, ignore=parser.ignore, state_bucket=state_bucket), []


def default_rules(env: EnvDefaults, state_bucket: str | None) -> RuleSet:
    """Without a rules file: every event to the environment's recipients."""
    assert env.sender is not None
    return RuleSet(
        (Rule("default", Conditions(), Delivery(Recipients(env.sender, to=env.to))),), state_bucket=state_bucket
    )


class _Parser:
    def __init__(self, filename: str, template_dirs: tuple[Path, ...], env: EnvDefaults) -> None:
        self.filename = filename
        self.template_dirs = template_dirs
        self.env = env
        self.problems: list[str] = []
        self.ignore: Globs | None = None

    @functools.cached_property
    def template_folders(self) -> list[str]:
        """Listed once per file, not once per rule."""
        return sorted({p.name for d in self.template_dirs if d.is_dir() for p in d.iterdir() if p.is_dir()})

    def problem(self, where: str, message: str) -> None:
        self.problems.append(f"{self.filename}: {where}{message}")

    def parse(self, document: dict[str, Any]) -> tuple[Rule, ...]:
        defaults: dict[str, Any] = {}
        raw_rules: list[dict[str, Any]] = []
        for key, value in document.items():  # TOML keeps the file's order
            if key == "ignore":
                ignore = self.globs(value, key, "")
                self.ignore = None if ignore is _BAD else ignore
            elif key == "defaults":
                defaults = self._section(value, DEFAULT_KEYS, "defaults: ")
            elif key == "rules":
                if isinstance(value, list) and all(isinstance(r, dict) for r in value):
                    raw_rules = value
                else:
                    self.problem("rules: ", f"expected [[rules]] tables, got {_kind(value)}")
            else:
                self.problem("", f"{key}: unknown key{_did_you_mean(key, TOP_KEYS)}")
        if not raw_rules:  # only [defaults]: everything goes to the defaults' recipients
            rule = self._rule("default", {}, defaults, "defaults: ")
            return (rule,) if rule else ()
        if len(raw_rules) > MAX_RULES:
            self.problem(
                "rules: ",
                f"{len(raw_rules):,} rules, more than the {MAX_RULES:,} allowed (each one slows every"
                " start-up); one rule can cover several buckets and folders with lists of buckets and globs",
            )
            return ()
        rules, names = [], set()
        for index, raw in enumerate(raw_rules):
            name = raw.get("name")
            valid = isinstance(name, str) and _NAME.fullmatch(name)
            where = f"rules[{index}] ({name}): " if valid else f"rules[{index}]: "
            if name is None or name == "":
                self.problem(where, "name: required: a short name of letters, digits, '.', '_' or '-'")
            elif not valid:
                self.problem(where, f"name: {name!r} is not a rule name: use letters, digits, '.', '_' or '-'")
            elif name in names:
                self.problem(where, "name: another rule has this name")
            names.add(name)
            rule = self._rule(name, self._section(raw, RULE_KEYS, where), defaults, where)
            if rule is not None:
                rules.append(rule)
        return tuple(rules)

    def _section(self, table: Any, known: tuple[str, ...], where: str) -> dict[str, Any]:
        """Check every key of a table where it stands; the checked values (or _BAD) by key."""
        if not isinstance(table, dict):
            self.problem(where, f"expected a table, got {_kind(table)}")
            return {}
        checked = {}
        for key, value in table.items():
            if key not in known:
                self.problem(where, f"{key}: unknown key{_did_you_mean(key, known)}")
            elif key != "name":
                checked[key] = _CHECKS[key](self, value, key, where)
        return checked

    def _rule(self, name: Any, own: dict[str, Any], defaults: dict[str, Any], where: str) -> Rule | None:
        before = len(self.problems)
        recipients = self._recipients(own, defaults, where)
        min_size, max_size = own.get("min_size"), own.get("max_size")
        if isinstance(min_size, int) and isinstance(max_size, int) and min_size > max_size:
            self.problem(where, f"min_size ({min_size} bytes) is larger than max_size ({max_size} bytes)")
        if "link_ttl" in own and own.get("link") not in ("signed", _BAD):
            self.problem(where, 'link_ttl: only means something with link = "signed"')
        if "attach_max_size" in own and own.get("attach") is not True and own.get("attach") is not _BAD:
            self.problem(where, "attach_max_size: only means something with attach = true")
        if len(self.problems) > before or recipients is None or _BAD in own.values() or not isinstance(name, str):
            return None
        fields = {k: v for k, v in own.items() if k not in DEFAULT_KEYS and k not in _SHAPING_KEYS}
        if own.get("link") == "signed":
            fields["signed_link_ttl"] = own.get("link_ttl", DEFAULT_LINK_TTL)
        if own.get("attach"):
            fields["attach_max_size"] = own.get("attach_max_size", DEFAULT_ATTACHMENT)
        if "sendgrid_template_id" in fields:
            fields["template_id"] = fields.pop("sendgrid_template_id")
        for key in ("events", "buckets"):
            if key in fields:
                fields[key] = frozenset(fields[key])
        delivered = ("subject", "template", "signed_link_ttl", "attach_max_size", "template_id")
        delivery = Delivery(recipients, **{k: fields.pop(k) for k in delivered if k in fields})
        stop = fields.pop("stop", False)
        return Rule(name, Conditions(**fields), delivery, stop)

    def _recipients(self, own: dict[str, Any], defaults: dict[str, Any], where: str) -> Recipients | None:
        """From the rule, else [defaults], else the environment. A rule setting any of to/cc/bcc
        replaces all three defaults. None (after a problem, unless already reported) if unusable."""
        sender = own.get("from", defaults.get("from", self.env.sender))
        lists_from = next((t for t in (own, defaults) if any(k in t for k in _LISTS)), None)
        lists = {k: lists_from.get(k, ()) for k in _LISTS} if lists_from else {"to": self.env.to, "cc": (), "bcc": ()}
        reply_to = own.get("reply_to", defaults.get("reply_to"))
        separate = own.get("separate_envelopes", defaults.get("separate_envelopes", True))
        if _BAD in (sender, reply_to, separate, *lists.values()):
            return None
        if sender is None:
            self.problem(where, "from: no sender: set from here, in [defaults], or NOTIFY_FROM")
        if not any(lists.values()):
            self.problem(where, "no recipients: set to, cc or bcc here or in [defaults], or NOTIFY_TO")
        elif not separate and not lists["to"]:
            self.problem(where, "to: required when separate_envelopes = false (cc and bcc need a To)")
        elif sender is not None:
            return Recipients(sender, reply_to=reply_to, separate_envelopes=separate, **lists)
        return None

    # -- checks: each returns the value to use, or _BAD after reporting a problem ---------------

    def strings(self, value: Any, key: str, where: str) -> Any:
        values = [value] if isinstance(value, str) else value
        if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
            self.problem(where, f"{key}: expected a string or a list of non-empty strings, got {_kind(value)}")
            return _BAD
        if not values and key in _NEVER_EMPTY:
            self.problem(where, f"{key}: an empty list matches nothing; leave the key out to match everything")
            return _BAD
        return values

    def events(self, value: Any, key: str, where: str) -> Any:
        chosen = self.strings(value, key, where)
        if chosen is _BAD:
            return _BAD
        unknown = [item for item in chosen if item not in KINDS]
        for item in unknown:
            self.problem(where, f'{key}: unknown event "{item}"{_did_you_mean(item, KINDS)}')
        return _BAD if unknown else chosen

    def globs(self, value: Any, key: str, where: str) -> Any:
        patterns = self.strings(value, key, where)
        if patterns is _BAD:
            return _BAD
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
        return _BAD

    def addresses(self, value: Any, key: str, where: str) -> Any:
        items = self.strings(value, key, where)
        if items is _BAD:
            return _BAD
        found: list[Address] = []
        bad = False
        for item in items:
            try:
                found.extend(parse_addresses(item, key))
            except ValueError as error:
                self.problem(where, str(error))
                bad = True
        return _BAD if bad else tuple(found)

    def one_address(self, value: Any, key: str, where: str) -> Any:
        found = self.addresses(value, key, where)
        if found is not _BAD and len(found) != 1:
            self.problem(where, f"{key}: expected one address, got {len(found)}")
            return _BAD
        return found if found is _BAD else found[0]

    def content_types(self, value: Any, key: str, where: str) -> Any:
        types = self.strings(value, key, where)
        if types is _BAD:
            return _BAD
        types = [t.strip().lower() for t in types]
        bad = [t for t in types if not _MEDIA_TYPE.fullmatch(t)]
        for media_type in bad:
            self.problem(where, f'{key}: "{media_type}" is not a media type like "text/csv" or "image/*"')
        return _BAD if bad else tuple(types)

    def size(self, value: Any, key: str, where: str) -> Any:
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
        match = _SIZE.fullmatch(value) if isinstance(value, str) else None
        unit = match.group(2).lower() if match else None
        if match is None or unit not in _SIZE_UNITS:
            shown = _toml(value) if not isinstance(value, str) else repr(value)
            self.problem(where, f'{key}: cannot read {shown} as a size; write bytes or e.g. "1 KiB", "5 MB"')
            return _BAD
        return int(Decimal(match.group(1)) * _SIZE_UNITS[unit])  # Decimal: "8.2 MB" is 8200000

    def metadata(self, value: Any, key: str, where: str) -> Any:
        if not isinstance(value, dict):
            self.problem(where, f'{key}: expected a table such as {{ team = "finance" }}, got {_kind(value)}')
            return _BAD
        bad = [k for k, v in value.items() if not isinstance(v, str)]
        for k in bad:
            self.problem(where, f"{key}.{k}: expected a string, got {_kind(value[k])}")
        return _BAD if bad else MappingProxyType(dict(value))

    def subject(self, value: Any, key: str, where: str) -> Any:
        if not isinstance(value, str) or not value.strip():
            self.problem(where, f"{key}: expected a non-empty string, got {_kind(value)}")
            return _BAD
        if error := _subject_syntax_error(value):
            self.problem(where, f"{key}: {error}")
            return _BAD
        return value

    def template(self, value: Any, key: str, where: str) -> Any:
        if not isinstance(value, str) or not _NAME.fullmatch(value):
            self.problem(where, f"{key}: expected a template folder name, got {_kind(value)}")
            return _BAD
        known = self.template_folders
        if value not in known:
            folders = ", ".join(str(d) for d in self.template_dirs)
            self.problem(
                where, f'{key}: unknown template "{value}"{_did_you_mean(value, known)}; expected a folder in {folders}'
            )
            return _BAD
        return value

    def link(self, value: Any, key: str, where: str) -> Any:
        if value in ("console", "signed"):
            return value
        self.problem(where, f'{key}: expected "console" or "signed", got {_kind(value)}')
        return _BAD

    def link_ttl(self, value: Any, key: str, where: str) -> Any:
        seconds = parse_duration(value) if isinstance(value, str) else None
        if seconds is None or not 0 < seconds <= MAX_LINK_TTL:
            self.problem(where, f'{key}: expected a duration up to 7 days such as "24h" or "30m", got {_kind(value)}')
            return _BAD
        return seconds

    def attachment_size(self, value: Any, key: str, where: str) -> Any:
        size = self.size(value, key, where)
        if size is not _BAD and size > MAX_ATTACHMENT:
            self.problem(where, f"{key}: at most 20 MiB ({MAX_ATTACHMENT} bytes): SendGrid takes 30 MB per message")
            return _BAD
        return size

    def template_id(self, value: Any, key: str, where: str) -> Any:
        if isinstance(value, str) and re.fullmatch(r"d-[0-9a-f]{32}", value):
            return value
        self.problem(
            where, f'{key}: expected a SendGrid dynamic template id like "d-" and 32 hex digits, got {_kind(value)}'
        )
        return _BAD

    def boolean(self, value: Any, key: str, where: str) -> Any:
        if isinstance(value, bool):
            return value
        self.problem(where, f"{key}: expected true or false, got {_kind(value)}")
        return _BAD


_CHECKS: dict[str, Callable[[_Parser, Any, str, str], Any]] = {
    "events": _Parser.events,
    "buckets": lambda p, v, k, w: p.strings(v, k, w),
    "include": _Parser.globs,
    "exclude": _Parser.globs,
    "content_types": _Parser.content_types,
    "min_size": _Parser.size,
    "max_size": _Parser.size,
    "metadata": _Parser.metadata,
    "subject": _Parser.subject,
    "template": _Parser.template,
    "stop": _Parser.boolean,
    "from": _Parser.one_address,
    "to": _Parser.addresses,
    "cc": _Parser.addresses,
    "bcc": _Parser.addresses,
    "reply_to": _Parser.one_address,
    "separate_envelopes": _Parser.boolean,
    "link": _Parser.link,
    "link_ttl": _Parser.link_ttl,
    "attach": _Parser.boolean,
    "attach_max_size": _Parser.attachment_size,
    "sendgrid_template_id": _Parser.template_id,
}


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


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""


def _toml(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _kind(value: Any) -> str:
    names: dict[type, Callable[[Any], str]] = {
        str: lambda v: f"the string {v!r}", bool: lambda v: _toml(v), int: lambda v: f"the number {v}",
        float: lambda v: f"the number {v}", list: lambda v: "a list", dict: lambda v: "a table",
    }  # fmt: skip
    return names.get(type(value), lambda v: type(v).__name__)(value)
