"""``notify.toml`` → :class:`~notifier.rules.RuleSet`, with every problem reported at once.

Messages look like ``notify.toml: rules[2] (finance-reports): events: unknown event "finalise"
(did you mean "finalize"?)``: the file, where in it, the key, and what to do. Problems come in
file order: each key is checked where it stands, then what depends on several keys. What each
key means is one entry of :data:`notifier.rulekeys.RULE_KEYS`; this module reads the file with it.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from notifier.addresses import Address
from notifier.batching import Batching
from notifier.globs import Globs
from notifier.rulekeys import BAD, NAME, RULE_KEYS, KeyChecks, Target, defaults_keys, did_you_mean, holds, kind, literal
from notifier.rules import Conditions, Delivery, Recipients, Rule, RuleSet
from notifier.units import describe_duration

TOP_KEYS = ("defaults", "rules", "ignore")
_LISTS = ("to", "cc", "bcc")
# A rules file is read whole and every rule compiled at start-up (0.15 ms a rule, its globs' regexes
# mostly; 0.5 ms with a subject of its own), so a generated file of 100,000 rules held the cold start
# for minutes. At these limits start-up takes at most 0.15-0.55 s more; beyond them, deploy one
# function per group of buckets.
MAX_RULES_FILE_BYTES = 1024 * 1024
MAX_RULES = 1000


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


class _Parser(KeyChecks):
    def __init__(self, filename: str, template_dirs: tuple[Path, ...], env: EnvDefaults) -> None:
        super().__init__(filename, template_dirs)
        self.env = env
        self.ignore: Globs | None = None

    def parse(self, document: dict[str, Any]) -> tuple[Rule, ...]:
        defaults: dict[str, Any] = {}
        raw_rules: list[dict[str, Any]] = []
        for key, value in document.items():  # TOML keeps the file's order
            if key == "ignore":
                ignore = self.globs(value, key, "")
                self.ignore = None if ignore is BAD else ignore
            elif key == "defaults":
                defaults = self._section(value, defaults_keys(), "defaults: ")
            elif key == "rules":
                if isinstance(value, list) and all(isinstance(r, dict) for r in value):
                    raw_rules = value
                else:
                    self.problem("rules: ", f"expected [[rules]] tables, got {kind(value)}")
            else:
                self.problem("", f"{key}: unknown key{did_you_mean(key, TOP_KEYS)}")
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
            valid = isinstance(name, str) and NAME.fullmatch(name)
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

    def _section(self, table: Any, known: Collection[str], where: str) -> dict[str, Any]:
        """Check every key of a table where it stands; the checked values (or BAD) by key."""
        if not isinstance(table, dict):
            self.problem(where, f"expected a table, got {kind(table)}")
            return {}
        checked = {}
        for key, value in table.items():
            if key not in known:
                self.problem(where, f"{key}: unknown key{did_you_mean(key, known)}")
            elif check := RULE_KEYS[key].check:
                checked[key] = check(self, value, key, where)
        return checked

    def _rule(self, name: Any, own: dict[str, Any], defaults: dict[str, Any], where: str) -> Rule | None:
        before = len(self.problems)
        recipients = self._recipients(own, defaults, where)
        self._cross_key_checks(own, where)
        if len(self.problems) > before or recipients is None or BAD in own.values() or not isinstance(name, str):
            return None
        fields: dict[Target, dict[str, Any]] = {"rule": {}, "when": {}, "delivery": {}, "batching": {}}
        for key, entry in RULE_KEYS.items():
            if entry.target not in fields:
                continue  # recipients are built above; switches fill nothing
            if entry.needs is not None:
                if holds(own.get(entry.needs[0]), entry.needs[1]):
                    fields[entry.target][entry.field] = own.get(key, entry.default)
            elif key in own:
                fields[entry.target][entry.field] = own[key]
        delivery = Delivery(recipients, **fields["delivery"], batching=_batching(**fields["batching"]))
        return Rule(name, Conditions(**fields["when"]), delivery, **fields["rule"])

    def _cross_key_checks(self, own: dict[str, Any], where: str) -> None:
        """What depends on two keys: sizes in order, and each key's `needs` from the table."""
        min_size, max_size = own.get("min_size"), own.get("max_size")
        if isinstance(min_size, int) and isinstance(max_size, int) and min_size > max_size:
            self.problem(where, f"min_size ({min_size} bytes) is larger than max_size ({max_size} bytes)")
        self._digest_checks(own, where)
        for key, entry in RULE_KEYS.items():
            if entry.needs is None or key not in own:
                continue
            needed, wanted = entry.needs
            if own.get(needed) is not BAD and not holds(own.get(needed), wanted):
                self.problem(where, f"{key}: only means something with {needed} = {literal(wanted)}")

    def _digest_checks(self, own: dict[str, Any], where: str) -> None:
        """The digest keys that mean something only together."""
        digest, wait = own.get("digest"), own.get("digest_max_wait")
        if "digest_max_wait" in own and "digest" not in own:
            self.problem(where, "digest_max_wait: only means something with digest")
        elif isinstance(digest, float) and isinstance(wait, float) and wait < digest:
            self.problem(
                where,
                f"digest_max_wait ({describe_duration(wait)}) is shorter than digest"
                f" ({describe_duration(digest)}): a digest waits for its window to close",
            )
        if "group_by" in own and "digest" not in own and "max_emails" not in own:
            self.problem(where, "group_by: only means something with digest or max_emails")
        if "digest" in own and "max_emails" in own:
            self.problem(
                where, "max_emails: only means something without digest (a digest sends one email per window already)"
            )

    def _recipients(self, own: dict[str, Any], defaults: dict[str, Any], where: str) -> Recipients | None:
        """From the rule, else [defaults], else the environment. A rule setting any of to/cc/bcc
        replaces all three defaults. None (after a problem, unless already reported) if unusable."""
        sender = own.get("from", defaults.get("from", self.env.sender))
        lists_from = next((t for t in (own, defaults) if any(k in t for k in _LISTS)), None)
        lists = {k: lists_from.get(k, ()) for k in _LISTS} if lists_from else {"to": self.env.to, "cc": (), "bcc": ()}
        reply_to = own.get("reply_to", defaults.get("reply_to"))
        separate = own.get("separate_envelopes", defaults.get("separate_envelopes", True))
        if BAD in (sender, reply_to, separate, *lists.values()):
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


def _batching(window: float | None = None, max_wait: float | None = None, group_by: tuple[str, ...] = (),
              cap: tuple[int, float] | None = None) -> Batching | None:  # fmt: skip
    """The rule's digest or cap from its keys, or None when it sends every event at once."""
    if window is not None:
        return Batching.digest(window, max_wait, group_by)
    if cap is not None:
        return Batching.capped(cap[0], cap[1], group_by)
    return None
