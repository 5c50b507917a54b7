"""Who hears about an event: compiled rules, the global ignores, and :meth:`RuleSet.route`.

Everything here is built once at start-up (by :mod:`notifier.rulesfile` or from the environment)
and only read afterwards, so matching an event is a few dictionary look-ups, ``str.startswith``
calls and compiled regular expressions.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from notifier.addresses import Address, unique
from notifier.events import KINDS, StorageEvent
from notifier.globs import Globs, literal_prefix, literal_suffix
from notifier.mail.base import Envelope

if TYPE_CHECKING:
    from notifier.batching import Batching


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
class Conditions:
    """What an event must be for a rule to match: every condition that is set holds."""

    events: frozenset[str] = frozenset(KINDS)
    buckets: frozenset[str] | None = None
    include: Globs | None = None
    exclude: Globs | None = None
    content_types: tuple[str, ...] = ()  # "type/subtype" or "type/*", lower case
    min_size: int | None = None
    max_size: int | None = None
    metadata: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))

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
class Delivery:
    """What a matching rule sends, and to whom; matching never looks at it."""

    recipients: Recipients
    subject: str | None = None  # a Jinja template overriding the template set's subject.txt
    template: str | None = None  # templates/<template>/ instead of templates/<kind>/
    signed_link_ttl: float | None = None  # seconds; a V4 signed download link (never for deletes)
    attach_max_size: int | None = None  # bytes; attach objects up to this size
    # A provider-side template (a SendGrid dynamic template id): the provider renders the email
    # from our template data; backends without such templates send ours.
    template_id: str | None = None
    # A digest or cap (digest, digest_max_wait, group_by, max_emails): matching events are held
    # for a digest instead of sent one by one (notifier.digest).
    batching: Batching | None = None


@dataclass(frozen=True, slots=True)
class Rule:
    """One ``[[rules]]`` entry: when it matches, what it delivers, and whether routing stops there."""

    name: str
    when: Conditions
    delivery: Delivery
    stop: bool = False

    def matches(self, event: StorageEvent) -> bool:
        return self.when.matches(event)


@dataclass(frozen=True, slots=True)
class Notification:
    """One email to send about one event, for one rule."""

    id: str
    event: StorageEvent
    rule: Rule

    @property
    def delivery(self) -> Delivery:
        return self.rule.delivery

    @property
    def recipients(self) -> Recipients:
        return self.rule.delivery.recipients


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
        kept = tuple(r for r in rules if kind in r.when.events)
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
    when = rule.when
    patterns = when.include.patterns if when.include else ()
    prefixes = [literal_prefix(p) for p in patterns]
    if patterns and all("/" in prefix for prefix in prefixes):
        return "folders", tuple({prefix.split("/", 1)[0] for prefix in prefixes})
    # The extension is what follows the last dot of the last segment: "*.d/config" has none.
    endings = [literal_suffix(p).rsplit("/", 1)[-1] for p in patterns]
    if patterns and all("." in ending for ending in endings):
        return "extensions", tuple({ending[ending.rfind(".") :] for ending in endings})
    if when.buckets:
        return "buckets", tuple(when.buckets)
    if when.content_types:
        return "media_types", when.content_types
    if when.metadata:
        return "metadata", (next(iter(when.metadata.items())),)
    return None, ()


def notification_id(event: StorageEvent, rule: Rule) -> str:
    """One id per object change, rule and recipients: a redelivery, or a 1st-gen and a 2nd-gen
    function on the same bucket, compute the same id for the same email."""
    recipients = sorted(a.key for a in rule.delivery.recipients.everyone)
    key = "\n".join([*event.change_key, rule.name, *recipients])
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:32]
