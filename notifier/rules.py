"""Who hears about an event: compiled rules, the global ignores, and :meth:`RuleSet.route`.

Everything here is built once at start-up (by :mod:`notifier.rulesfile` or from the environment)
and only read afterwards, so matching an event is a few dictionary look-ups, ``str.startswith``
calls and compiled regular expressions.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from notifier.addresses import Address, unique
from notifier.events import KINDS, StorageEvent
from notifier.mail.base import Envelope

_GLOB_SPECIAL = "*?[\\"


class GlobError(ValueError):
    """A pattern that is not a valid glob; the message says what is wrong."""


def glob_to_regex(pattern: str) -> str:
    """Translate one glob over object names into a regular expression (to be full-matched).

    ``*`` matches within one path segment, ``?`` one character other than ``/``, ``[abc]`` /
    ``[!abc]`` one character of (or not of) a set, ``**`` as a whole segment any number of
    segments (``a/**/b`` matches ``a/b`` and ``a/x/y/b``), and ``\\`` makes the next character
    literal. Matching is case-sensitive, like Cloud Storage names.

    Object names are chosen by whoever uploads, so the regex must not backtrack badly: like
    ``fnmatch``, each ``*`` and the fixed characters after it become one atomic group that takes
    the earliest match, which is always a right one when what follows is another wildcard.
    """
    tokens = _glob_tokens(pattern)
    out: list[str] = []
    i = 0
    while i < len(tokens):
        kind, regex = tokens[i]
        i += 1
        if kind != "star":
            out.append(regex)
            continue
        run = []
        while i < len(tokens) and tokens[i][0] == "one":
            run.append(tokens[i][1])
            i += 1
        fixed = "".join(run)
        out.append(f"[^/]*{fixed}" if i == len(tokens) else f"(?>[^/]*?{fixed})")
    return "".join(out)


def _glob_tokens(pattern: str) -> list[tuple[str, str]]:
    """("one", regex of one character) | ("star", "") | ("dirs", regex) | ("all", regex)."""
    if not pattern:
        raise GlobError("empty pattern")
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if pattern.startswith("**", i):
            at_start, at_end = i == 0 or pattern[i - 1] == "/", i + 2 == n or pattern[i + 2] == "/"
            if not (at_start and at_end) or pattern.startswith("***", i):
                raise GlobError(f"'**' must be a whole path segment, as in 'a/**/b' (in {pattern!r})")
            if i + 2 == n:  # trailing: everything below
                tokens.append(("all", ".*"))
                i += 2
            else:  # leading or inner "**/": zero or more whole segments (each one is unambiguous)
                if not tokens or tokens[-1][0] != "dirs":  # "**/**/" means the same as "**/"
                    tokens.append(("dirs", "(?:[^/]*/)*"))
                i += 3
        elif char == "*":
            tokens.append(("star", ""))
            i += 1
        elif char == "?":
            tokens.append(("one", "[^/]"))
            i += 1
        elif char == "[":
            j = i + 1
            j += pattern[j : j + 1] == "!"
            j += pattern[j : j + 1] == "]"  # a "]" first in the set is literal
            end = pattern.find("]", j)
            if end < 0:
                raise GlobError(f"unclosed '[' at position {i} (in {pattern!r}); write '\\[' for a literal '['")
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            body = (body[1:] if negate else body).replace("\\", "\\\\").replace("[", "\\[").replace("^", "\\^")
            try:
                re.compile(f"[{body}]")
            except re.error as error:  # e.g. a reversed range such as [z-a]
                raise GlobError(f"{error.msg} in {pattern!r}") from None
            tokens.append(("one", f"[^/{body}]" if negate else f"(?!/)[{body}]"))
            i = end + 1
        elif char == "\\":
            if i + 1 == n:
                raise GlobError(f"'\\' at the end escapes nothing (in {pattern!r})")
            tokens.append(("one", re.escape(pattern[i + 1])))
            i += 2
        else:
            tokens.append(("one", re.escape(char)))
            i += 1
    return tokens


def literal_prefix(pattern: str) -> str:
    """The characters every match must start with (up to the first wildcard or escape)."""
    cut = min((pattern.find(c) for c in _GLOB_SPECIAL if c in pattern), default=len(pattern))
    return pattern[:cut]


@dataclass(frozen=True)
class Globs:
    """Several globs compiled into one matcher: a name matches if any pattern matches it."""

    patterns: tuple[str, ...]
    _regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _by_segment: tuple[_SegmentGlob, ...] = field(init=False, repr=False, compare=False)
    # When every pattern has a literal prefix, a name without one of them is rejected cheaply.
    _prefixes: tuple[str, ...] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # One regex for the usual patterns; several "**" could make a regex backtrack without end
        # on a hostile name, so those are matched segment by segment instead.
        simple = [p for p in self.patterns if p.split("/").count("**") <= 1]
        regex = "|".join(f"(?:{glob_to_regex(p)})" for p in simple)
        segmented = tuple(_SegmentGlob.compile(p) for p in self.patterns if p not in simple)
        prefixes = tuple(literal_prefix(p) for p in self.patterns)
        object.__setattr__(self, "_regex", re.compile(regex, re.DOTALL) if simple else None)
        object.__setattr__(self, "_by_segment", segmented)
        object.__setattr__(self, "_prefixes", prefixes if all(prefixes) else None)

    def matches(self, name: str) -> bool:
        if self._prefixes is not None and not name.startswith(self._prefixes):
            return False
        if self._regex is not None and self._regex.fullmatch(name) is not None:
            return True
        return any(glob.matches(name) for glob in self._by_segment)


@dataclass(frozen=True, slots=True)
class _SegmentGlob:
    """A glob as one regex per path segment (None for ``**``), matched by dynamic programming:
    time proportional to pattern segments × name segments, whatever the name."""

    segments: tuple[re.Pattern[str] | None, ...]

    @classmethod
    def compile(cls, pattern: str) -> _SegmentGlob:
        parts: list[re.Pattern[str] | None] = []
        for part in pattern.split("/"):
            if part == "**":
                if not parts or parts[-1] is not None:  # "**/**" is "**"
                    parts.append(None)
            else:
                parts.append(re.compile(glob_to_regex(part), re.DOTALL) if part else re.compile(""))
        return cls(tuple(parts))

    def matches(self, name: str) -> bool:
        names = name.split("/")
        count = len(names)
        # reachable[j]: the pattern so far matches names[:j] exactly.
        reachable = [True] + [False] * count
        for position, segment in enumerate(self.segments):
            if segment is None:
                last = position == len(self.segments) - 1  # a trailing "**" needs one segment or more
                following, seen = [False] * (count + 1), False
                for j in range(count + 1):
                    following[j] = seen if last else (seen or reachable[j])
                    seen = seen or reachable[j]
                reachable = following
            else:
                reachable = [False] + [reachable[j] and segment.fullmatch(names[j]) is not None for j in range(count)]
        return reachable[count]


def media_type(content_type: str | None) -> str:
    """``Text/CSV; charset=utf-8`` → ``text/csv``."""
    return (content_type or "").split(";", 1)[0].strip().lower()


@dataclass(frozen=True, slots=True)
class Recipients:
    sender: Address
    to: tuple[Address, ...] = ()
    cc: tuple[Address, ...] = ()
    bcc: tuple[Address, ...] = ()
    reply_to: Address | None = None
    # Every recipient gets a message addressed to them alone, so nobody sees the others.
    separate_envelopes: bool = True

    def __post_init__(self) -> None:
        # De-duplicated within the message: an address is in To, else Cc, else Bcc, never twice.
        seen: set[str] = set()
        for name in ("to", "cc", "bcc"):
            object.__setattr__(self, name, unique(getattr(self, name), seen))

    @property
    def everyone(self) -> tuple[Address, ...]:
        return self.to + self.cc + self.bcc

    def envelopes(self) -> tuple[Envelope, ...]:
        if self.separate_envelopes:
            return tuple(Envelope(to=(address,)) for address in self.everyone)
        return (Envelope(to=self.to, cc=self.cc, bcc=self.bcc),)


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``[[rules]]`` entry: an event matches when every condition that is set holds."""

    name: str
    recipients: Recipients
    events: frozenset[str] = frozenset(KINDS)
    buckets: frozenset[str] | None = None
    include: Globs | None = None
    exclude: Globs | None = None
    content_types: tuple[str, ...] = ()  # "type/subtype" or "type/*", lower case
    min_size: int | None = None
    max_size: int | None = None
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    subject: str | None = None  # a Jinja template overriding the template set's subject.txt
    template: str | None = None  # templates/<template>/ instead of templates/<kind>/
    stop: bool = False
    signed_link_ttl: float | None = None  # seconds; a V4 signed download link (never for deletes)
    attach_max_size: int | None = None  # bytes; attach objects up to this size
    sendgrid_template_id: str | None = None  # a SendGrid dynamic template instead of ours

    def matches(self, event: StorageEvent) -> bool:
        if event.kind not in self.events:
            return False
        if self.buckets is not None and event.bucket not in self.buckets:
            return False
        if self.include is not None and not self.include.matches(event.name):
            return False
        if self.exclude is not None and self.exclude.matches(event.name):
            return False
        if self.content_types and not self._content_type_matches(media_type(event.content_type)):
            return False
        if self.min_size is not None and (event.size is None or event.size < self.min_size):
            return False
        if self.max_size is not None and (event.size is None or event.size > self.max_size):
            return False
        return all(event.metadata.get(key) == value for key, value in self.metadata.items())

    def _content_type_matches(self, actual: str) -> bool:
        family = actual.split("/", 1)[0] + "/*"
        return any(wanted in (actual, family, "*/*") for wanted in self.content_types) and bool(actual)


@dataclass(frozen=True, slots=True)
class Notification:
    """One email to send about one event, for one rule."""

    id: str
    event: StorageEvent
    rule: Rule

    @property
    def recipients(self) -> Recipients:
        return self.rule.recipients


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    ignore: Globs | None = None  # extra ignore patterns from the rules file
    state_bucket: str | None = None  # the function's own bucket: never notify about it
    _index: dict[str, _KindIndex] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {kind: _KindIndex.build(self.rules, kind) for kind in KINDS})

    def by_name(self, name: str) -> Rule | None:
        return next((rule for rule in self.rules if rule.name == name), None)

    def ignore_reason(self, event: StorageEvent) -> str | None:
        """Why no rule is even asked about ``event``, or None."""
        if event.name.endswith("/") and not event.size:
            return "folder placeholder (name ends with '/', size 0)"
        if self.state_bucket is not None and event.bucket == self.state_bucket:
            return f"the function's own state bucket {self.state_bucket!r}"
        if self.ignore is not None and self.ignore.matches(event.name):
            return "matches an ignore pattern of the rules file"
        return None

    def route(self, event: StorageEvent) -> list[Notification]:
        """One notification per matching rule, in file order; a matching ``stop`` rule ends it."""
        notifications = []
        for rule in self._index[event.kind].candidates(event):
            if rule.matches(event):
                notifications.append(Notification(notification_id(event, rule), event, rule))
                if rule.stop:
                    break
        return notifications


@dataclass(frozen=True, slots=True)
class _KindIndex:
    """The rules for one event kind, filed so that most rules that cannot match are never asked.

    Each rule is filed under the most selective thing every match must have: the top-level folder
    its include patterns start with (``team42/**/*.csv``), else the extension they end with
    (``**/*.part``), else its buckets, else its content types, else its first metadata pair. The
    rest are always asked. :meth:`candidates` returns the rules to ask, in file order; ``Rule.matches`` decides.
    """

    rules: tuple[Rule, ...]
    always: frozenset[int]
    folders: dict[str, frozenset[int]]
    extensions: dict[str, frozenset[int]]
    buckets: dict[str, frozenset[int]]
    media_types: dict[str, frozenset[int]]
    metadata: dict[tuple[str, str], frozenset[int]]

    @classmethod
    def build(cls, rules: Iterable[Rule], kind: str) -> _KindIndex:
        kept = tuple(r for r in rules if kind in r.events)
        files: dict[str, dict[Any, set[int]]] = {
            "folders": {}, "extensions": {}, "buckets": {}, "media_types": {}, "metadata": {}
        }  # fmt: skip
        always = set()
        for position, rule in enumerate(kept):
            index, keys = _filing(rule)
            if index is None:
                always.add(position)
            for key in keys:
                files[index].setdefault(key, set()).add(position)
        frozen = {name: {k: frozenset(v) for k, v in table.items()} for name, table in files.items()}
        return cls(kept, frozenset(always), **frozen)

    def candidates(self, event: StorageEvent) -> list[Rule]:
        name = event.name
        found = set(self.always)
        if "/" in name:
            found.update(self.folders.get(name.split("/", 1)[0], ()))
        dot = name.rfind(".")
        if dot >= 0 and "/" not in name[dot:]:
            found.update(self.extensions.get(name[dot:], ()))
        found.update(self.buckets.get(event.bucket, ()))
        if self.media_types and (media := media_type(event.content_type)):
            for key in (media, media.split("/", 1)[0] + "/*", "*/*"):
                found.update(self.media_types.get(key, ()))
        if self.metadata:
            for pair in event.metadata.items():
                found.update(self.metadata.get(pair, ()))
        return [self.rules[position] for position in sorted(found)]


def _filing(rule: Rule) -> tuple[str | None, tuple[Any, ...]]:
    """Which index a rule goes in, and under which keys (see :class:`_KindIndex`)."""
    patterns = rule.include.patterns if rule.include else ()
    prefixes = [literal_prefix(p) for p in patterns]
    if patterns and all("/" in prefix for prefix in prefixes):
        return "folders", tuple({prefix.split("/", 1)[0] for prefix in prefixes})
    # The extension is what follows the last dot of the last segment: "*.d/config" has none.
    endings = [_literal_suffix(p).rsplit("/", 1)[-1] for p in patterns]
    if patterns and all("." in ending for ending in endings):
        return "extensions", tuple({ending[ending.rfind(".") :] for ending in endings})
    if rule.buckets:
        return "buckets", tuple(rule.buckets)
    if rule.content_types:
        return "media_types", rule.content_types
    if rule.metadata:
        return "metadata", (next(iter(rule.metadata.items())),)
    return None, ()


def _literal_suffix(pattern: str) -> str:
    """The characters every match must end with (after the last wildcard, class or escape)."""
    return pattern[max(pattern.rfind(c) for c in "*?]\\") + 1 :]


def notification_id(event: StorageEvent, rule: Rule) -> str:
    """One id per object change, rule and recipients: a redelivery, or a 1st-gen and a 2nd-gen
    function on the same bucket, compute the same id for the same email."""
    recipients = sorted(a.key for a in rule.recipients.everyone)
    key = "\n".join([*event.change_key, rule.name, *recipients])
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
