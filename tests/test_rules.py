"""Matching semantics, one test per sentence of the README's "How matching works"."""

from __future__ import annotations

import random
import re

import pytest

from notifier.addresses import Address
from notifier.events import decode
from notifier.globs import GlobError, Globs, _glob_tokens
from notifier.mail.base import Envelope
from notifier.rules import Conditions, Delivery, Recipients, Rule, RuleSet
from tests.conftest import storage_cloud_event

SENDER = Address("alerts@example.com")
OPS = Recipients(SENDER, to=(Address("ops@example.com"),))


def event(kind="finalize", name="reports/q3.csv", bucket="acme", **data):
    return decode(storage_cloud_event(kind, bucket=bucket, name=name, **data))


def rule(name="r", recipients=OPS, **conditions):
    for key in ("include", "exclude"):
        if key in conditions:
            conditions[key] = Globs(tuple(conditions[key]))
    stop = conditions.pop("stop", False)
    return Rule(name, Conditions(**conditions), Delivery(recipients), stop)


def routed(rules, ev, **ruleset):
    return [n.rule.name for n in RuleSet(tuple(rules), **ruleset).route(ev)]


# "An event matches a rule when every condition the rule sets holds; a condition left out always
# holds. A rule with no conditions matches every event."
def test_every_set_condition_must_hold():
    r = rule(events=frozenset({"finalize"}), buckets=frozenset({"acme"}), include=["reports/**"])
    assert r.matches(event())
    assert not r.matches(event(kind="delete"))
    assert not r.matches(event(bucket="other"))
    assert not r.matches(event(name="raw/q3.csv"))


@pytest.mark.parametrize("kind", ["finalize", "delete", "archive", "metadata"])
def test_a_rule_without_conditions_matches_every_event(kind):
    assert rule().matches(event(kind=kind, name="any/thing at all.bin", content_type=None, size=None))


# "events: the event kind is one of those listed."
def test_events():
    r = rule(events=frozenset({"delete", "archive"}))
    assert [k for k in ("finalize", "delete", "archive", "metadata") if r.matches(event(kind=k))] == [
        "delete",
        "archive",
    ]


# "buckets: the bucket is one of the listed names, exactly."
@pytest.mark.parametrize(("bucket", "matches"), [("acme-uploads", True), ("acme", False), ("acme-uploads-2", False)])
def test_buckets_are_exact_names(bucket, matches):
    assert rule(buckets=frozenset({"acme-uploads", "other"})).matches(event(bucket=bucket)) is matches


# The glob sentences, as a table: pattern, names that match, names that don't.
GLOBS = [
    ("*.csv", ["q3.csv", ".csv", "a b.csv"], ["reports/q3.csv", "q3.CSV", "q3.csvx"]),
    ("reports/*", ["reports/q3.csv", "reports/"], ["reports/2026/q3.csv", "reports"]),
    ("q?.csv", ["q3.csv", "qé.csv"], ["q/.csv", "q33.csv"]),
    ("[abc].txt", ["a.txt", "c.txt"], ["d.txt", "/.txt", "A.txt"]),
    ("[!abc].txt", ["d.txt", "A.txt"], ["a.txt", "/.txt"]),
    (
        "reports/**/*.csv",
        ["reports/q3.csv", "reports/2026/q3/x.csv"],
        ["reports.csv", "reports/2026/q3.txt", "x/reports/a.csv"],
    ),
    ("**/*.part", ["a.part", "x/y/a.part"], ["a.part/x", "a.partial"]),
    ("raw/**", ["raw/a", "raw/a/b/c", "raw/"], ["raw", "rawx/a", "x/raw/a"]),
    ("**/_tmp/**", ["_tmp/a", "x/_tmp/b/c"], ["x_tmp/a", "_tmpx/a"]),
    ("**", ["", "a", "a/b/c", "weird/ names/#?%"], []),
    ("a/**/b", ["a/b", "a/x/b", "a/x/y/b"], ["a/xb", "ab"]),
    ("Reports/*", ["Reports/a"], ["reports/a", "REPORTS/a"]),
    (r"literal\*star", ["literal*star"], ["literalXstar"]),
    (r"\[x]", ["[x]"], ["x"]),
    ("data #1?/file %20.txt", ["data #1x/file %20.txt"], ["data #1/file %20.txt", "data #1x/file  .txt"]),
    ("ünï/数据/*.csv", ["ünï/数据/a.csv"], ["uni/数据/a.csv"]),
    ("*", ["x" * 1024], ["x" * 10 + "/" + "x" * 10]),
    ("**/deep.txt", ["/".join(["d"] * 200) + "/deep.txt"], ["/".join(["d"] * 200) + "/deep.txt2"]),
    ("/leading", ["/leading"], ["leading"]),
    ("line\nbreak", ["line\nbreak"], ["line break"]),
]


@pytest.mark.parametrize(("pattern", "yes", "no"), GLOBS)
def test_glob_semantics(pattern, yes, no):
    globs = Globs((pattern,))
    assert [n for n in yes if not globs.matches(n)] == []
    assert [n for n in no if globs.matches(n)] == []


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("a**b", "'**' must be a whole path segment"),
        ("a/**b", "'**' must be a whole path segment"),
        ("***", "'**' must be a whole path segment"),
        ("[abc", "unclosed '['"),
        ("", "empty pattern"),
        ("x\\", "escapes nothing"),
        ("[z-a]", "bad character range z-a in '[z-a]'"),
    ],
)
def test_bad_globs_are_errors(pattern, message):
    with pytest.raises(GlobError, match=message.replace("[", r"\[").replace("*", r"\*")):
        Globs((pattern,))


# "The name matches include if it matches any of its patterns, and is excluded if it matches any
# exclude pattern."
def test_include_any_exclude_any():
    r = rule(include=["reports/**", "exports/*.csv"], exclude=["**/_tmp/**", "**/*.part"])
    assert r.matches(event(name="reports/a.csv"))
    assert r.matches(event(name="exports/b.csv"))
    assert not r.matches(event(name="other/c.csv"))
    assert not r.matches(event(name="reports/_tmp/a.csv"))
    assert not r.matches(event(name="exports/b.part"))


def test_exclude_alone_keeps_everything_else():
    r = rule(exclude=["raw/**"])
    assert r.matches(event(name="reports/a.csv"))
    assert not r.matches(event(name="raw/a.csv"))


# content_types sentence.
@pytest.mark.parametrize(
    ("wanted", "actual", "matches"),
    [
        (("text/csv",), "text/csv", True),
        (("text/csv",), "Text/CSV; charset=utf-8", True),
        (("text/csv",), "text/plain", False),
        (("image/*",), "image/png", True),
        (("image/*",), "imagex/png", False),
        (("*/*",), "application/x-anything", True),
        (("*/*",), None, False),
        (("text/csv", "image/*"), "image/webp", True),
        (("text/csv",), None, False),
    ],
)
def test_content_types(wanted, actual, matches):
    assert rule(content_types=wanted).matches(event(contentType=actual)) is matches


# min_size / max_size sentence (the byte-string forms are tested in test_rulesfile.py).
@pytest.mark.parametrize(
    ("size", "matches"), [("1023", False), ("1024", True), ("2048", True), ("2049", False), (None, False)]
)
def test_size_bounds_are_inclusive_and_need_a_size(size, matches):
    assert rule(min_size=1024, max_size=2048).matches(event(size=size)) is matches


# metadata sentence.
@pytest.mark.parametrize(
    ("metadata", "matches"),
    [
        ({"team": "finance", "extra": "x"}, True),
        ({"team": "Finance"}, False),
        ({"team": "finance "}, False),
        ({}, False),
        ({"other": "finance"}, False),
    ],
)
def test_metadata_must_match_exactly(metadata, matches):
    assert rule(metadata={"team": "finance"}).matches(event(metadata=metadata)) is matches


# "Rules are tried in file order. Every matching rule sends its own message, so two matching rules
# mean two emails; a rule with stop = true that matches is the last one tried."
def test_every_matching_rule_in_file_order():
    rules = [rule("b", include=["reports/**"]), rule("skipped", include=["raw/**"]), rule("a")]
    assert routed(rules, event()) == ["b", "a"]


def test_stop_ends_the_search_only_when_its_rule_matches():
    rules = [rule("first"), rule("stopper", include=["reports/**"], stop=True), rule("never")]
    assert routed(rules, event(name="reports/a.csv")) == ["first", "stopper"]
    assert routed(rules, event(name="raw/a.csv")) == ["first", "never"]


def test_each_rule_gets_its_own_notification_id():
    ev = event()
    ids = [n.id for n in RuleSet((rule("a"), rule("b"))).route(ev)]
    assert len(set(ids)) == 2


# "Within one message each address appears once (case-insensitively): in to, else cc, else bcc."
def test_recipients_are_deduplicated_within_a_message():
    a, b, c = Address("a@example.com"), Address("B@Example.com", "Bee"), Address("c@example.com")
    recipients = Recipients(
        SENDER, to=(a, Address("A@EXAMPLE.COM")), cc=(Address("b@example.com"), b, a), bcc=(c, b, a)
    )
    assert recipients.to == (a,)
    assert recipients.cc == (Address("b@example.com"),)
    assert recipients.bcc == (c,)


# separate_envelopes sentences.
def test_separate_envelopes_give_everyone_their_own_copy():
    a, b, c = Address("a@example.com"), Address("b@example.com"), Address("c@example.com")
    envelopes = Recipients(SENDER, to=(a,), cc=(b,), bcc=(c,)).envelopes()
    assert envelopes == (Envelope(to=(a,)), Envelope(to=(b,)), Envelope(to=(c,)))


def test_shared_envelope_keeps_to_cc_and_bcc():
    a, b, c = Address("a@example.com"), Address("b@example.com"), Address("c@example.com")
    envelopes = Recipients(SENDER, to=(a,), cc=(b,), bcc=(c,), separate_envelopes=False).envelopes()
    assert envelopes == (Envelope(to=(a,), cc=(b,), bcc=(c,)),)


# "Always ignored, before any rule: folder placeholders (names ending in / with size 0), every
# object in the function's own state bucket, and names matching the top-level ignore globs."
@pytest.mark.parametrize(
    ("ev", "reason"),
    [
        (event(name="reports/", size="0"), "folder placeholder"),
        (event(name="reports/", size=None), "folder placeholder"),
        (event(bucket="notifier-state", name="ledger/abc"), "state bucket"),
        (event(name="reports/_tmp/a.csv"), "ignore pattern"),
    ],
)
def test_ignores_come_before_rules(ev, reason):
    rules = RuleSet((rule("all"),), ignore=Globs(("**/_tmp/**",)), state_bucket="notifier-state")
    assert reason in rules.ignore_reason(ev)


@pytest.mark.parametrize(
    "ev", [event(name="reports/", size="12"), event(name="reports/a.csv"), event(bucket="notifier-state-2")]
)
def test_not_ignored(ev):
    rules = RuleSet((rule("all"),), ignore=Globs(("**/_tmp/**",)), state_bucket="notifier-state")
    assert rules.ignore_reason(ev) is None


def test_routing_a_thousand_rules_only_reads_the_compiled_rules():
    rules = RuleSet(tuple(rule(f"r{i}", include=[f"team{i}/**/*.csv"]) for i in range(1000)))
    assert [n.rule.name for n in rules.route(event(name="team500/2026/x.csv"))] == ["r500"]
    assert rules.route(event(name="nobody/x.csv")) == []


def test_the_index_never_changes_what_matches():
    """RuleSet files rules by folder, extension, content type and metadata to skip most of them;
    the result must be exactly what asking every rule in order gives."""
    rng = random.Random(20261125)
    patterns = ["reports/**/*.csv", "reports/*", "raw/**", "**/*.part", "**/*.tar.gz", "*.csv", "**",
                "a/b/*.csv", "[ab]*/x", "team?/**", "reports/[!_]*.csv", r"lit\*/x.csv", "**/_tmp/**",
                "*.d/config", "**/x/**/*.csv", "conf.d/*"]  # fmt: skip
    names = ["reports/q3.csv", "reports/2026/q3.csv", "raw/a.json", "x/y.part", "b.tar.gz", "q.csv", "a/b/c.csv",
             "ax/x", "team1/z", "reports/_x.csv", "lit*/x.csv", "noext", "dir/.hidden", "x/_tmp/y.csv", "",
             "conf.d/config", "a/x/b/c.csv"]  # fmt: skip
    media = [None, "text/csv", "image/png", "application/json"]
    wanted_media = ["text/csv", "image/*", "*/*", "application/json"]
    rules = []
    for i in range(300):
        conditions = {}
        if rng.random() < 0.7:
            conditions["include"] = rng.sample(patterns, rng.randint(1, 2))
        if rng.random() < 0.3:
            conditions["exclude"] = rng.sample(patterns, 1)
        if rng.random() < 0.3:
            conditions["content_types"] = tuple(rng.sample(wanted_media, rng.randint(1, 2)))
        if rng.random() < 0.3:
            conditions["metadata"] = {"team": rng.choice(["a", "b"])}
        if rng.random() < 0.2:
            conditions["buckets"] = frozenset({rng.choice(["acme", "other"])})
        if rng.random() < 0.5:
            conditions["events"] = frozenset(rng.sample(["finalize", "delete", "archive", "metadata"], 2))
        rules.append(rule(f"r{i}", stop=rng.random() < 0.05, **conditions))
    ruleset = RuleSet(tuple(rules))
    checked = 0
    for name in names:
        for content_type in media:
            for kind in ("finalize", "delete"):
                for metadata in ({}, {"team": "a"}, {"team": "b", "x": "y"}):
                    ev = event(kind=kind, name=name or "-", contentType=content_type, metadata=metadata)
                    naive = []
                    for r in rules:
                        if r.matches(ev):
                            naive.append(r.name)
                            if r.stop:
                                break
                    assert [n.rule.name for n in ruleset.route(ev)] == naive, (name, content_type, kind, metadata)
                    checked += bool(naive)
    assert checked > 100, "the generated rules should match often enough to mean something"


def _naive(pattern):
    """The same glob as a plain regex, without atomic groups: slow on hostile names, exact on short ones."""
    tokens = _glob_tokens(pattern)
    return re.compile("".join("[^/]*" if kind == "star" else regex for kind, regex in tokens), re.DOTALL)


def test_the_backtracking_safe_matcher_means_exactly_what_the_plain_regex_means():
    rng = random.Random(7)
    pieces = ["a", "b", "/", "*", "?", "**/", "/**", "[ab]", "ab"]
    checked = 0
    for _ in range(3000):
        pattern = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 7)))
        try:
            globs = Globs((pattern,))
        except GlobError:
            continue
        naive = _naive(pattern)
        for _ in range(8):
            name = "".join(rng.choice("ab/") for _ in range(rng.randint(1, 9)))
            assert globs.matches(name) == (naive.fullmatch(name) is not None), (pattern, name)
            checked += 1
    assert checked > 5000


@pytest.mark.parametrize(
    ("pattern", "name"),
    [
        ("**/*_*_*_*.csv", "u/" + "_" * 1020),
        ("*a*a*a*a*b", "a" * 1024),
        ("**/a/**/a/**/a/**/b", "a/" * 511 + "c"),
        ("**/*a*/**/*b*/**/c", "ab/" * 340 + "x"),
    ],
)
def test_hostile_names_against_wildcard_heavy_patterns_are_answered(pattern, name):
    # Each of these took from seconds to minutes with a plain translation (see bench/routing.py).
    assert Globs((pattern,)).matches(name) is False
