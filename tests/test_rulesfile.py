"""notify.toml → RuleSet through load_settings(): exact problem messages, all at once, and what a valid file means."""

from __future__ import annotations

from pathlib import Path

import pytest

from notifier.addresses import Address
from notifier.config import BUILTIN_TEMPLATES, ConfigError, Settings, load_settings
from notifier.events import KINDS

LOCAL = {"NOTIFY_BACKEND": "console"}  # no outbox directory to check; local sender and recipient
SENDGRID = {
    "NOTIFY_BACKEND": "sendgrid",
    "SENDGRID_API_KEY": "SG.test-key-0123456789",
}  # no local fallbacks for from/to

R = '[[rules]]\nname = "r"\n'  # one rule named r, followed by the keys under test
W = "notify.toml: rules[0] (r): "  # where its problems are reported
SIZE = 'expected a size such as 1024 (bytes), "1 KiB" or "5 MB", got'  # notifier.units' one wording
NAME_RULE = "name: required: a short name of letters, digits, '.', '_' or '-'"
BAD_TYPE = "expected a string or a list of non-empty strings, got"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "notify.toml"
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, **env: str) -> Settings:
    return load_settings({**LOCAL, "NOTIFY_CONFIG": str(write(tmp_path, text)), **env})


def problems(tmp_path: Path, text: str, **env: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, text, **env)
    return caught.value.problems


def rule_named(settings: Settings, name: str):
    (rule,) = [r for r in settings.rules.rules if r.name == name]
    return rule


def a(email: str, name: str = "") -> Address:
    return Address(email, name)


# -- every problem, word for word --------------------------------------------------------------

# (toml text, every problem load_settings reports)
INVALID = [
    # TOML itself
    pytest.param("[[rules]\n", ["notify.toml: not valid TOML: Expected ']]' at the end of an array declaration (at line 1, column 8)"], id="toml-syntax"),
    pytest.param('name = "x\n', ["notify.toml: not valid TOML: Illegal character '\\n' (at line 1, column 10)"], id="toml-unterminated-string"),
    # unknown keys, with and without a hint
    pytest.param("[[rule]]\nname = 'r'\n", ['notify.toml: rule: unknown key (did you mean "rules"?)'], id="top-key-hint"),
    pytest.param("ignores = ['x']\n", ['notify.toml: ignores: unknown key (did you mean "ignore"?)'], id="top-key-hint-ignore"),
    pytest.param("version = 1\n", ["notify.toml: version: unknown key"], id="top-key-no-hint"),
    pytest.param("[defaults]\ntoo = ['a@example.com']\n", ['notify.toml: defaults: too: unknown key (did you mean "to"?)'], id="defaults-key-hint"),
    pytest.param("[defaults]\nsender = 'a@example.com'\n", ["notify.toml: defaults: sender: unknown key"], id="defaults-key-no-hint"),
    pytest.param("[defaults]\nevents = ['delete']\n", ["notify.toml: defaults: events: unknown key"], id="defaults-rule-only-key"),
    pytest.param(R + "evnets = ['delete']\n", [W + 'evnets: unknown key (did you mean "events"?)'], id="rule-key-hint"),
    pytest.param(R + "replyto = 'a@example.com'\n", [W + 'replyto: unknown key (did you mean "reply_to"?)'], id="rule-key-hint-underscore"),
    pytest.param(R + "colour = 'red'\n", [W + "colour: unknown key"], id="rule-key-no-hint"),
    # wrong types
    pytest.param("defaults = 5\n", ["notify.toml: defaults: expected a table, got the number 5"], id="defaults-number"),
    pytest.param("[rules]\nname = 'r'\n", ["notify.toml: rules: expected [[rules]] tables, got a table"], id="rules-table"),
    pytest.param("rules = ['r']\n", ["notify.toml: rules: expected [[rules]] tables, got a list"], id="rules-strings"),
    pytest.param(R + "events = 5\n", [W + f"events: {BAD_TYPE} the number 5"], id="events-number"),
    pytest.param(R + "events = ['finalize', 5]\n", [W + f"events: {BAD_TYPE} a list"], id="events-list-with-number"),
    pytest.param(R + "events = ['finalise']\n", [W + 'events: unknown event "finalise" (did you mean "finalize"?)'], id="events-typo"),
    pytest.param(R + "events = ['deleted', 'bogus']\n", [W + 'events: unknown event "deleted" (did you mean "delete"?)', W + 'events: unknown event "bogus"'], id="events-each-unknown"),
    pytest.param(R + "buckets = true\n", [W + f"buckets: {BAD_TYPE} true"], id="buckets-bool"),
    pytest.param(R + "include = { a = 1 }\n", [W + f"include: {BAD_TYPE} a table"], id="include-table"),
    pytest.param(R + "exclude = 1.5\n", [W + f"exclude: {BAD_TYPE} the number 1.5"], id="exclude-float"),
    pytest.param("ignore = 3\n", [f"notify.toml: ignore: {BAD_TYPE} the number 3"], id="ignore-number"),
    pytest.param(R + "content_types = 'csv'\n", [W + 'content_types: "csv" is not a media type like "text/csv" or "image/*"'], id="content-type-no-slash"),
    pytest.param(R + "content_types = { text = 'csv' }\n", [W + f"content_types: {BAD_TYPE} a table"], id="content-types-table"),
    pytest.param(R + "stop = 'yes'\n", [W + "stop: expected true or false, got the string 'yes'"], id="stop-string"),
    pytest.param(R + "stop = 1\n", [W + "stop: expected true or false, got the number 1"], id="stop-number"),
    pytest.param(R + "separate_envelopes = 'no'\n", [W + "separate_envelopes: expected true or false, got the string 'no'"], id="separate-string"),
    pytest.param(R + "metadata = { team = 5 }\n", [W + "metadata.team: expected a string, got the number 5"], id="metadata-value-number"),
    pytest.param(R + "metadata = { team = true, tier = ['a'] }\n", [W + "metadata.team: expected a string, got true", W + "metadata.tier: expected a string, got a list"], id="metadata-each-value"),
    pytest.param(R + "metadata = 'team=finance'\n", [W + "metadata: expected a table such as { team = \"finance\" }, got the string 'team=finance'"], id="metadata-string"),
    pytest.param(R + "subject = 5\n", [W + "subject: expected a non-empty string, got the number 5"], id="subject-number"),
    pytest.param(R + "subject = '  '\n", [W + "subject: expected a non-empty string, got the string '  '"], id="subject-blank"),
    pytest.param(R + "template = '../finalize'\n", [W + "template: expected a template folder name, got the string '../finalize'"], id="template-path"),
    pytest.param(R + "template = 7\n", [W + "template: expected a template folder name, got the number 7"], id="template-number"),
    # sizes
    pytest.param(R + "min_size = -1\n", [W + f"min_size: {SIZE} -1"], id="size-negative"),
    pytest.param(R + "min_size = 'lots'\n", [W + f"min_size: {SIZE} 'lots'"], id="size-word"),
    pytest.param(R + "max_size = '1 XB'\n", [W + f"max_size: {SIZE} '1 XB'"], id="size-unknown-unit"),
    pytest.param(R + "max_size = '-5 MB'\n", [W + f"max_size: {SIZE} '-5 MB'"], id="size-negative-string"),
    pytest.param(R + "max_size = 1.5\n", [W + f"max_size: {SIZE} 1.5"], id="size-float"),
    pytest.param(R + "max_size = [1]\n", [W + f"max_size: {SIZE} a list"], id="size-list"),
    pytest.param(R + "min_size = '2 KB'\nmax_size = '1 KiB'\n", [W + "min_size (2000 bytes) is larger than max_size (1024 bytes)"], id="min-over-max"),
    # globs
    pytest.param(R + "include = ['a**b']\n", [W + "include: bad glob: '**' must be a whole path segment, as in 'a/**/b' (in 'a**b')"], id="glob-inner-doublestar"),
    pytest.param(R + "exclude = ['a/***/b']\n", [W + "exclude: bad glob: '**' must be a whole path segment, as in 'a/**/b' (in 'a/***/b')"], id="glob-triple-star"),
    pytest.param(R + "include = ['abc[d']\n", [W + "include: bad glob: unclosed '[' at position 3 (in 'abc[d'); write '\\[' for a literal '['"], id="glob-unclosed-bracket"),
    pytest.param(R + "include = ''\n", [W + f"include: {BAD_TYPE} the string ''"], id="glob-empty-string"),
    pytest.param(R + "exclude = ['raw/**', '']\n", [W + f"exclude: {BAD_TYPE} a list"], id="glob-empty-in-list"),
    pytest.param(R + "include = ['abc\\']\n", [W + "include: bad glob: '\\' at the end escapes nothing (in 'abc\\\\')"], id="glob-trailing-backslash"),
    pytest.param("ignore = ['**/tmp**']\n", ["notify.toml: ignore: bad glob: '**' must be a whole path segment, as in 'a/**/b' (in '**/tmp**')"], id="ignore-bad-glob"),
    # addresses
    pytest.param(R + "to = ['not-an-address']\n", [W + "to: 'not-an-address' is not a valid email address"], id="to-bad"),
    pytest.param(R + "cc = 'ops at example.com'\n", [W + "cc: 'ops at example.com' is not a valid email address"], id="cc-bad"),
    pytest.param(R + "bcc = ['x@example.com, y']\n", [W + "bcc: 'x@example.com, y' is not a valid email address list"], id="bcc-bad-in-list"),
    pytest.param(R + "from = 'Alerts alerts@example.com'\n", [W + "from: 'Alerts alerts@example.com' is not a valid email address"], id="from-bad"),
    pytest.param(R + "reply_to = '<>'\n", [W + "reply_to: '<>' is not a valid email address"], id="reply-to-bad"),
    pytest.param(R + 'to = "a@example.com\\nBcc: evil@example.com"\n', [W + "to: must not contain line breaks"], id="to-header-injection"),
    pytest.param(R + "to = 5\n", [W + f"to: {BAD_TYPE} the number 5"], id="to-number"),
    pytest.param(R + "from = ['a@example.com', 'b@example.com']\n", [W + "from: expected one address, got 2"], id="two-froms-list"),
    pytest.param(R + "from = 'a@example.com, b@example.com'\n", [W + "from: expected one address, got 2"], id="two-froms-one-string"),
    pytest.param("[defaults]\nfrom = ['a@example.com', 'b@example.com']\n[[rules]]\nname = 'r'\n", ["notify.toml: defaults: from: expected one address, got 2"], id="two-froms-in-defaults"),
    pytest.param(R + "reply_to = ['a@example.com', 'b@example.com']\n", [W + "reply_to: expected one address, got 2"], id="two-reply-tos"),
    # recipients
    pytest.param(R + "to = []\n", [W + "no recipients: set to, cc or bcc here or in [defaults], or NOTIFY_TO"], id="empty-to"),
    pytest.param(R + "to = []\ncc = []\nbcc = []\n", [W + "no recipients: set to, cc or bcc here or in [defaults], or NOTIFY_TO"], id="empty-lists"),
    pytest.param(R + "separate_envelopes = false\ncc = ['a@example.com']\n", [W + "to: required when separate_envelopes = false (cc and bcc need a To)"], id="shared-without-to"),
    pytest.param("[defaults]\nseparate_envelopes = false\nbcc = ['a@example.com']\n[[rules]]\nname = 'r'\n", [W + "to: required when separate_envelopes = false (cc and bcc need a To)"], id="shared-without-to-from-defaults"),
    # names
    pytest.param("[[rules]]\nto = ['a@example.com']\n", [f"notify.toml: rules[0]: {NAME_RULE}"], id="name-missing"),
    pytest.param("[[rules]]\nname = ''\n", [f"notify.toml: rules[0]: {NAME_RULE}"], id="name-empty"),
    pytest.param("[[rules]]\nname = 'ok'\n[[rules]]\nevents = 'delete'\nstop = 'no'\n", [f"notify.toml: rules[1]: {NAME_RULE}", "notify.toml: rules[1]: stop: expected true or false, got the string 'no'"], id="name-missing-then-more"),
    pytest.param("[[rules]]\nname = 'a'\n[[rules]]\nname = 'b'\n[[rules]]\nname = 'a'\n[[rules]]\nname = 'a'\n", ["notify.toml: rules[2] (a): name: another rule has this name", "notify.toml: rules[3] (a): name: another rule has this name"], id="name-duplicates"),
    # subjects
    pytest.param(R + "subject = '{{ object.name '\n", [W + "subject: template error: unexpected end of template, expected 'end of print statement'."], id="subject-unclosed"),
    pytest.param(R + "subject = '{% if %}x{% endif %}'\n", [W + "subject: template error: Expected an expression, got 'end of statement block'"], id="subject-empty-if"),
    pytest.param(R + "subject = '{{ object.name }'\n", [W + "subject: template error: unexpected '}'"], id="subject-single-brace"),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), INVALID)
def test_each_problem_is_reported_word_for_word(tmp_path, text, expected):
    assert problems(tmp_path, text) == expected


def test_the_readme_example_message(tmp_path):
    text = '[[rules]]\nname = "r0"\n[[rules]]\nname = "finance-reports"\nevents = ["finalise"]\n'
    assert problems(tmp_path, text) == [
        'notify.toml: rules[1] (finance-reports): events: unknown event "finalise" (did you mean "finalize"?)'
    ]


def test_all_problems_are_reported_at_once_in_file_order(tmp_path):
    text = """\
colour = "blue"

[defaults]
form = "alerts@example.com"

[[rules]]
name = "finance-reports"
events = ["finalise"]

[[rules]]
name = "raw"
include = ["raw**"]

[[rules]]
name = "big"
min_size = "lots"
"""
    assert problems(tmp_path, text) == [
        "notify.toml: colour: unknown key",
        'notify.toml: defaults: form: unknown key (did you mean "from"?)',
        'notify.toml: rules[0] (finance-reports): events: unknown event "finalise" (did you mean "finalize"?)',
        "notify.toml: rules[1] (raw): include: bad glob: '**' must be a whole path segment, as in 'a/**/b' (in 'raw**')",
        f"notify.toml: rules[2] (big): min_size: {SIZE} 'lots'",
    ]


def test_one_rule_with_many_problems_reports_each(tmp_path):
    text = (
        R
        + "colour = 1\nevents = 5\ninclude = ['a**b']\nmin_size = 'x'\nmetadata = { a = 1 }\nsubject = 5\nstop = 'y'\n"
    )
    assert problems(tmp_path, text) == [
        W + "colour: unknown key",
        W + f"events: {BAD_TYPE} the number 5",
        W + "include: bad glob: '**' must be a whole path segment, as in 'a/**/b' (in 'a**b')",
        W + f"min_size: {SIZE} 'x'",
        W + "metadata.a: expected a string, got the number 1",
        W + "subject: expected a non-empty string, got the number 5",
        W + "stop: expected true or false, got the string 'y'",
    ]


def test_environment_problems_come_first_then_the_file(tmp_path):
    found = problems(tmp_path, R + "colour = 1\n", NOTIFY_BACKEND="pigeon")
    assert found == [
        "NOTIFY_BACKEND: expected one of sendgrid, smtp, outbox, console, got 'pigeon'",
        W + "colour: unknown key",
    ]


# -- the environment and the file together -----------------------------------------------------


def test_notify_config_naming_a_missing_file(tmp_path):
    missing = tmp_path / "nope" / "notify.toml"
    with pytest.raises(ConfigError) as caught:
        load_settings({**LOCAL, "NOTIFY_CONFIG": str(missing)})
    assert caught.value.problems == [f"NOTIFY_CONFIG: {str(missing)!r} is not a file"]


def test_notify_config_naming_a_directory(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_settings({**LOCAL, "NOTIFY_CONFIG": str(tmp_path)})
    assert caught.value.problems == [f"NOTIFY_CONFIG: {str(tmp_path)!r} is not a file"]


def test_no_recipients_anywhere_for_sendgrid(tmp_path):
    text = '[defaults]\nfrom = "alerts@example.com"\n\n[[rules]]\nname = "all"\n'
    assert problems(tmp_path, text, **SENDGRID) == [
        "notify.toml: rules[0] (all): no recipients: set to, cc or bcc here or in [defaults], or NOTIFY_TO"
    ]


def test_no_sender_anywhere_for_sendgrid(tmp_path):
    text = '[[rules]]\nname = "all"\nto = "ops@example.com"\n'
    assert problems(tmp_path, text, **SENDGRID) == [
        "notify.toml: rules[0] (all): from: no sender: set from here, in [defaults], or NOTIFY_FROM"
    ]


def test_neither_sender_nor_recipients_for_sendgrid_reports_both_for_each_rule(tmp_path):
    text = '[[rules]]\nname = "a"\n[[rules]]\nname = "b"\nto = "x@example.com"\n'
    assert problems(tmp_path, text, **SENDGRID) == [
        "notify.toml: rules[0] (a): from: no sender: set from here, in [defaults], or NOTIFY_FROM",
        "notify.toml: rules[0] (a): no recipients: set to, cc or bcc here or in [defaults], or NOTIFY_TO",
        "notify.toml: rules[1] (b): from: no sender: set from here, in [defaults], or NOTIFY_FROM",
    ]


def test_a_rule_with_its_own_recipients_needs_no_notify_to(tmp_path):
    text = '[[rules]]\nname = "a"\nfrom = "alerts@example.com"\nbcc = "x@example.com"\n'
    rule = rule_named(load(tmp_path, text, **SENDGRID), "a")
    assert (rule.delivery.recipients.to, rule.delivery.recipients.bcc) == ((), (a("x@example.com"),))


@pytest.fixture
def templates_dir(tmp_path):
    directory = tmp_path / "my-templates"
    (directory / "report").mkdir(parents=True)
    (directory / "not-a-folder").write_text("x")
    return directory


def test_a_template_folder_in_notify_templates_dir_is_known(tmp_path, templates_dir):
    text = R + "template = 'report'\n"
    settings = load(tmp_path, text, NOTIFY_TEMPLATES_DIR=str(templates_dir))
    assert rule_named(settings, "r").delivery.template == "report"


def test_a_builtin_template_folder_is_known(tmp_path):
    assert rule_named(load(tmp_path, R + "template = 'delete'\n"), "r").delivery.template == "delete"


@pytest.mark.parametrize(
    ("template", "hint"),
    [("reprot", ' (did you mean "report"?)'), ("zzz", ""), ("not-a-folder", "")],
)
def test_an_unknown_template_names_where_it_was_looked_for(tmp_path, templates_dir, template, hint):
    found = problems(tmp_path, R + f"template = '{template}'\n", NOTIFY_TEMPLATES_DIR=str(templates_dir))
    assert found == [
        W + f'template: unknown template "{template}"{hint}; expected a folder in {templates_dir}, {BUILTIN_TEMPLATES}'
    ]


def test_a_user_template_is_unknown_without_notify_templates_dir(tmp_path):
    assert problems(tmp_path, R + "template = 'report'\n") == [
        W + f'template: unknown template "report"; expected a folder in {BUILTIN_TEMPLATES}'
    ]


# -- what a valid file means -------------------------------------------------------------------


def test_rules_inherit_every_default(tmp_path):
    text = """\
[defaults]
from = "Storage Alerts <alerts@example.com>"
to = ["ops@example.com", "Dev <dev@example.com>"]
cc = "lead@example.com"
bcc = ["audit@example.com"]
reply_to = "Help Desk <help@example.com>"
separate_envelopes = false

[[rules]]
name = "plain"
"""
    recipients = rule_named(load(tmp_path, text), "plain").delivery.recipients
    assert recipients.sender == a("alerts@example.com", "Storage Alerts")
    assert recipients.to == (a("ops@example.com"), a("dev@example.com", "Dev"))
    assert recipients.cc == (a("lead@example.com"),)
    assert recipients.bcc == (a("audit@example.com"),)
    assert recipients.reply_to == a("help@example.com", "Help Desk")
    assert recipients.separate_envelopes is False


DEFAULTS = """\
[defaults]
from = "alerts@example.com"
to = "ops@example.com"
cc = "lead@example.com"
bcc = "audit@example.com"
reply_to = "help@example.com"
"""


@pytest.mark.parametrize(
    ("keys", "lists"),
    [
        ("to = 'x@example.com'", (("x@example.com",), (), ())),
        ("cc = 'x@example.com'", ((), ("x@example.com",), ())),
        ("bcc = 'x@example.com'", ((), (), ("x@example.com",))),
        ("to = []\ncc = 'x@example.com'", ((), ("x@example.com",), ())),
    ],
)
def test_any_list_in_a_rule_replaces_all_three_default_lists(tmp_path, keys, lists):
    recipients = rule_named(load(tmp_path, DEFAULTS + f"[[rules]]\nname = 'own'\n{keys}\n"), "own").delivery.recipients
    assert tuple(tuple(x.email for x in getattr(recipients, f)) for f in ("to", "cc", "bcc")) == lists
    assert recipients.sender == a("alerts@example.com")  # the rest is still inherited
    assert recipients.reply_to == a("help@example.com")


def test_a_rule_overrides_sender_reply_to_and_envelopes_one_by_one(tmp_path):
    text = (
        DEFAULTS
        + "[[rules]]\nname = 'own'\nfrom = 'B <b@example.com>'\nreply_to = 'c@example.com'\nseparate_envelopes = false\n"
    )
    recipients = rule_named(load(tmp_path, text), "own").delivery.recipients
    assert (recipients.sender, recipients.reply_to, recipients.separate_envelopes) == (
        a("b@example.com", "B"),
        a("c@example.com"),
        False,
    )
    assert [x.email for x in recipients.everyone] == ["ops@example.com", "lead@example.com", "audit@example.com"]


def test_the_environment_fills_in_where_the_file_is_silent(tmp_path):
    env = {**SENDGRID, "NOTIFY_FROM": "Ops <ops@example.com>", "NOTIFY_TO": "a@example.com, B <b@example.com>"}
    text = '[[rules]]\nname = "silent"\n[[rules]]\nname = "own"\nfrom = "x@example.com"\ncc = "y@example.com"\n'
    settings = load(tmp_path, text, **env)
    silent, own = rule_named(settings, "silent").delivery.recipients, rule_named(settings, "own").delivery.recipients
    assert settings.backend == "sendgrid"
    assert silent.sender == a("ops@example.com", "Ops")
    assert silent.to == (a("a@example.com"), a("b@example.com", "B"))
    assert (silent.cc, silent.bcc, silent.reply_to, silent.separate_envelopes) == ((), (), None, True)
    assert (own.sender, own.to, own.cc) == (a("x@example.com"), (), (a("y@example.com"),))


def test_defaults_beat_the_environment(tmp_path):
    env = {**SENDGRID, "NOTIFY_FROM": "env@example.com", "NOTIFY_TO": "env-to@example.com"}
    text = '[defaults]\nfrom = "file@example.com"\ncc = "file-cc@example.com"\n[[rules]]\nname = "r"\n'
    recipients = rule_named(load(tmp_path, text, **env), "r").delivery.recipients
    assert (recipients.sender, recipients.to, recipients.cc) == (a("file@example.com"), (), (a("file-cc@example.com"),))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"1 KiB"', 1024),
        ('"5 MB"', 5_000_000),
        ('"1.5 GiB"', 1_610_612_736),
        ("42", 42),
        ('"42"', 42),
        ("0", 0),
        ('"2kb"', 2000),
        ('" 3 MiB "', 3 * 1024**2),
        ('"1 TB"', 10**12),
        ('"7 B"', 7),
        pytest.param('"8.2 MB"', 8_200_000),
    ],
)  # fmt: skip
def test_sizes_are_read_in_bytes(tmp_path, value, expected):
    rule = rule_named(load(tmp_path, R + f"min_size = {value}\nmax_size = {value}\n"), "r")
    assert (rule.when.min_size, rule.when.max_size) == (expected, expected)


def test_a_file_with_only_defaults_is_one_rule_named_default(tmp_path):
    text = 'ignore = "**/*.part"\n[defaults]\nfrom = "alerts@example.com"\nto = ["a@example.com", "b@example.com"]\n'
    settings = load(tmp_path, text)
    (rule,) = settings.rules.rules
    assert rule.name == "default"
    assert rule.when.events == frozenset(KINDS)
    assert (rule.when.buckets, rule.when.include, rule.when.exclude, rule.when.min_size, rule.stop) == (
        None,
        None,
        None,
        None,
        False,
    )
    assert rule.delivery.recipients.sender == a("alerts@example.com")
    assert rule.delivery.recipients.to == (a("a@example.com"), a("b@example.com"))
    assert settings.rules.ignore.patterns == ("**/*.part",)


def test_an_empty_file_sends_everything_to_the_environment(tmp_path):
    settings = load(tmp_path, "", NOTIFY_FROM="alerts@example.com", NOTIFY_TO="ops@example.com")
    (rule,) = settings.rules.rules
    assert (rule.name, rule.delivery.recipients.sender, rule.delivery.recipients.to) == (
        "default",
        a("alerts@example.com"),
        (a("ops@example.com"),),
    )


def test_a_string_is_accepted_where_a_list_is(tmp_path):
    text = (
        R
        + "events = 'delete'\nbuckets = 'acme'\ninclude = 'raw/**'\nexclude = '**/*.tmp'\ncontent_types = 'Text/CSV'\nto = 'x@example.com'\n"
    )
    settings = load(tmp_path, text, NOTIFY_STATE_BUCKET="state-bucket")
    rule = rule_named(settings, "r")
    assert rule.when.events == frozenset({"delete"})
    assert rule.when.buckets == frozenset({"acme"})
    assert rule.when.include.patterns == ("raw/**",)
    assert rule.when.exclude.patterns == ("**/*.tmp",)
    assert rule.when.content_types == ("text/csv",)
    assert rule.delivery.recipients.to == (a("x@example.com"),)
    assert settings.rules.state_bucket == "state-bucket"


def test_every_key_of_the_readme_example_is_read(tmp_path, templates_dir):
    text = """\
ignore = ["**/_tmp/**", "**/*.part"]

[defaults]
from = "Storage Alerts <alerts@example.com>"
to = ["ops@example.com"]

[[rules]]
name = "finance-reports"
events = ["finalize"]
buckets = ["acme-uploads"]
include = ["reports/**/*.csv"]
exclude = ["**/draft-*"]
content_types = ["text/csv", "image/*"]
min_size = "1 KiB"
max_size = "5 MB"
metadata = { team = "finance" }
to = ["finance@example.com"]
subject = "New report: {{ object.name }}"
template = "report"
stop = true

[[rules]]
name = "raw-deletions"
events = ["delete"]
include = ["raw/**"]
to = ["data-team@example.com"]
"""
    settings = load(tmp_path, text, NOTIFY_TEMPLATES_DIR=str(templates_dir))
    assert settings.rules_file == tmp_path / "notify.toml"
    assert [r.name for r in settings.rules.rules] == ["finance-reports", "raw-deletions"]
    finance = rule_named(settings, "finance-reports")
    assert finance.when.events == frozenset({"finalize"})
    assert finance.when.buckets == frozenset({"acme-uploads"})
    assert finance.when.include.patterns == ("reports/**/*.csv",)
    assert finance.when.exclude.patterns == ("**/draft-*",)
    assert finance.when.content_types == ("text/csv", "image/*")
    assert (finance.when.min_size, finance.when.max_size) == (1024, 5_000_000)
    assert dict(finance.when.metadata) == {"team": "finance"}
    assert (finance.delivery.subject, finance.delivery.template, finance.stop) == (
        "New report: {{ object.name }}",
        "report",
        True,
    )
    assert finance.delivery.recipients.to == (a("finance@example.com"),)
    raw = rule_named(settings, "raw-deletions")
    assert (raw.delivery.subject, raw.delivery.template, raw.stop, raw.when.buckets) == (None, None, False, None)
    assert raw.delivery.recipients.sender == a("alerts@example.com", "Storage Alerts")
    assert settings.rules.ignore.patterns == ("**/_tmp/**", "**/*.part")


def test_the_example_file_is_valid(tmp_path):
    example = Path(__file__).resolve().parent.parent / "notify.example.toml"
    settings = load_settings({**LOCAL, "NOTIFY_CONFIG": str(example)})
    assert [r.name for r in settings.rules.rules] == [
        "finance-reports",
        "raw-deletions",
        "confidential",
        "everything-else",
    ]


# -- known bugs: the correct behaviour, expected to fail until fixed ---------------------------


def test_an_address_ending_in_at_is_a_problem_not_a_crash(tmp_path):
    assert problems(tmp_path, R + "to = 'ops@'\n") == [W + "to: 'ops@' is not a valid email address"]


def test_every_bad_glob_in_a_list_is_reported(tmp_path):
    assert problems(tmp_path, R + "exclude = ['a**b', 'x[y']\n") == [
        W + "exclude: bad glob: '**' must be a whole path segment, as in 'a/**/b' (in 'a**b')",
        W + "exclude: bad glob: unclosed '[' at position 1 (in 'x[y'); write '\\[' for a literal '['",
    ]


def test_a_reversed_range_names_the_pattern_plainly(tmp_path):
    (found,) = problems(tmp_path, R + "include = ['reports/[z-a].csv']\n")
    assert found.startswith(W + "include: bad glob: ")
    assert "bad character range z-a" in found
    assert "'reports/[z-a].csv'" in found
    assert "('reports/[z-a].csv',)" not in found


def test_a_boolean_size_is_shown_as_toml_writes_it(tmp_path):
    assert problems(tmp_path, R + "min_size = true\n") == [W + f"min_size: {SIZE} true"]


@pytest.mark.parametrize(("value", "shown"), [('"finance reports"', "finance reports"), ("5", "5")])
def test_an_invalid_name_is_not_called_missing(tmp_path, value, shown):
    (found,) = problems(tmp_path, f"[[rules]]\nname = {value}\n")
    assert found.startswith("notify.toml: rules[0]: name: ")
    assert "required" not in found
    assert shown in found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("[defaults]\nfrom = 'bad'\n[[rules]]\nname = 'a'\n[[rules]]\nname = 'b'\n", ["notify.toml: defaults: from: 'bad' is not a valid email address"], id="from-two-rules"),
        pytest.param("[defaults]\nseparate_envelopes = 'no'\n", ["notify.toml: defaults: separate_envelopes: expected true or false, got the string 'no'"], id="only-defaults"),
        pytest.param("[defaults]\nreply_to = 5\n[[rules]]\nname = 'a'\n[[rules]]\nname = 'b'\n", [f"notify.toml: defaults: reply_to: {BAD_TYPE} the number 5"], id="reply-to-two-rules"),
    ],
)  # fmt: skip
def test_a_problem_in_defaults_is_reported_once_under_defaults(tmp_path, text, expected):
    assert problems(tmp_path, text) == expected


def test_bad_default_recipients_are_reported_even_when_every_rule_overrides_them(tmp_path):
    text = "[defaults]\nto = 'not-an-address'\n[[rules]]\nname = 'a'\nto = 'a@example.com'\n"
    assert problems(tmp_path, text) == ["notify.toml: defaults: to: 'not-an-address' is not a valid email address"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("ignore = ['a**b']\n[defaults]\ncolour = 1\n", ["notify.toml: ignore: bad glob: '**' must be a whole path segment, as in 'a/**/b' (in 'a**b')", "notify.toml: defaults: colour: unknown key"], id="ignore-before-defaults"),
        pytest.param(R + "stop = 'y'\nevents = 5\n", [W + "stop: expected true or false, got the string 'y'", W + f"events: {BAD_TYPE} the number 5"], id="keys-within-a-rule"),
    ],
)  # fmt: skip
def test_problems_follow_file_order_everywhere(tmp_path, text, expected):
    assert problems(tmp_path, text) == expected


def test_link_and_attachment_keys(tmp_path):
    text = (
        '[[rules]]\nname = "a"\nto = "x@example.com"\nlink = "signed"\nlink_ttl = "48h"\nattach = true\n'
        'attach_max_size = "2 MiB"\nsendgrid_template_id = "d-0123456789abcdef0123456789abcdef"\n'
        '[[rules]]\nname = "b"\nto = "x@example.com"\nlink = "signed"\nattach = true\n'
    )
    a, b = load(tmp_path, text).rules.rules
    assert (a.delivery.signed_link_ttl, a.delivery.attach_max_size, a.delivery.template_id) == (
        172800.0,
        2 * 1024**2,
        "d-0123456789abcdef0123456789abcdef",
    )
    assert (b.delivery.signed_link_ttl, b.delivery.attach_max_size) == (86400.0, 5 * 1024**2), "the documented defaults"


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('link = "signd"', "link: expected \"console\" or \"signed\", got the string 'signd'"),
        ('link = "signed"\nlink_ttl = "9d"', 'link_ttl: expected a duration from 1 second up to 7 days such as 90 (seconds), "30m", "12h" or "7d", got \'9d\''),
        ('link_ttl = "1h"', 'link_ttl: only means something with link = "signed"'),
        ('attach = true\nattach_max_size = "30 MiB"', f"attach_max_size: {SIZE.replace('a size', 'a size up to 20 MiB')} '30 MiB'; SendGrid takes 30 MB per message, base64 included"),
        ('attach_max_size = "1 MiB"', "attach_max_size: only means something with attach = true"),
        ('sendgrid_template_id = "x"', 'sendgrid_template_id: expected a SendGrid dynamic template id like "d-" and 32 hex digits, got the string \'x\''),
        ("events = []", "events: an empty list matches nothing; leave the key out to match everything"),
        ("include = []", "include: an empty list matches nothing; leave the key out to match everything"),
    ],
)  # fmt: skip
def test_link_attachment_and_empty_list_problems(tmp_path, line, problem):
    assert problems(tmp_path, R + line + "\n") == [W + problem]


def test_every_bad_address_of_a_list_is_reported(tmp_path):
    assert problems(tmp_path, R + 'to = ["nope", "ok@example.com", "also-bad"]\n') == [
        W + "to: 'nope' is not a valid email address",
        W + "to: 'also-bad' is not a valid email address",
    ]
