"""The rule-key table: one entry per notify.toml key, from which everything about the key derives."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

import pytest

from notifier.batching import Batching
from notifier.config import ConfigError, load_settings
from notifier.rulekeys import BAD, RULE_KEYS, RuleKey
from notifier.rules import Conditions, Delivery, Recipients, Rule
from notifier.tools.cli import main

README = Path(__file__).resolve().parent.parent / "README.md"
TARGETS = {"rule": Rule, "when": Conditions, "delivery": Delivery, "recipients": Recipients, "batching": Batching}

pytestmark = pytest.mark.usefixtures("clean_notifier_env")


def mailgun_template(parser: Any, value: Any, key: str, where: str) -> Any:
    """A check as a new key would bring: the value to use, or a reported problem."""
    if isinstance(value, str) and re.fullmatch(r"[a-z][a-z0-9-]{0,40}", value):
        return value
    parser.problem(where, f"{key}: expected a Mailgun template name, got {value!r}")
    return BAD


@pytest.fixture
def new_key(monkeypatch):
    """A provider-side template key for another provider: one entry, fed into Delivery.template_id."""
    monkeypatch.setitem(RULE_KEYS, "mailgun_template", RuleKey(mailgun_template, "delivery", "template_id"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "notify.toml"
    path.write_text('[defaults]\nfrom = "alerts@example.com"\nto = "ops@example.com"\n' + text, encoding="utf-8")
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_settings({"NOTIFY_BACKEND": "console", "NOTIFY_CONFIG": str(path)})
    return caught.value.problems


def test_without_the_entry_the_key_is_unknown(tmp_path):
    path = write(tmp_path, '[[rules]]\nname = "r"\nmailgun_template = "weekly"\n')
    assert problems(path) == ['notify.toml: rules[0] (r): mailgun_template: unknown key (did you mean "template"?)']


@pytest.mark.usefixtures("new_key")
def test_a_new_entry_is_read_into_its_field(tmp_path):
    path = write(tmp_path, '[[rules]]\nname = "r"\nmailgun_template = "weekly"\n')
    settings = load_settings({"NOTIFY_BACKEND": "console", "NOTIFY_CONFIG": str(path)})
    (rule,) = settings.rules.rules
    assert rule.delivery.template_id == "weekly"
    assert rule.when == Conditions(), "a delivery key never reaches what matches"


@pytest.mark.usefixtures("new_key")
def test_a_new_entry_is_known_to_check_config(tmp_path, capsys):
    path = write(tmp_path, '[[rules]]\nname = "r"\nmailgun_template = "weekly"\n')
    assert main(["check-config", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"{path}: OK, 1 rule(s), backend console"

    bad = write(tmp_path, '[[rules]]\nname = "r"\nmailgun_template = "Weekly Digest"\n')
    assert main(["check-config", str(bad)]) == 1
    assert capsys.readouterr().err.splitlines() == [
        "notify.toml: rules[0] (r): mailgun_template: expected a Mailgun template name, got 'Weekly Digest'",
        "1 problem(s) found.",
    ]


@pytest.mark.usefixtures("new_key")
def test_a_new_entry_is_offered_as_did_you_mean_and_stays_out_of_defaults(tmp_path):
    path = write(tmp_path, '[[rules]]\nname = "r"\nmailgun_templat = "weekly"\n')
    assert problems(path) == [
        'notify.toml: rules[0] (r): mailgun_templat: unknown key (did you mean "mailgun_template"?)'
    ]
    path.write_text('[defaults]\nmailgun_template = "weekly"\n', encoding="utf-8")
    assert problems(path) == ["notify.toml: defaults: mailgun_template: unknown key"]


def test_a_key_that_needs_another_is_checked_from_its_entry(tmp_path, monkeypatch):
    needs_attach = RuleKey(mailgun_template, "delivery", "template_id", needs=("attach", True))
    monkeypatch.setitem(RULE_KEYS, "mailgun_template", needs_attach)
    path = write(tmp_path, '[[rules]]\nname = "r"\nmailgun_template = "weekly"\n')
    assert problems(path) == ["notify.toml: rules[0] (r): mailgun_template: only means something with attach = true"]


# -- the table against the code and the README -------------------------------------------------


def test_every_field_is_fed_by_some_key():
    fed = {(entry.target, entry.field) for entry in RULE_KEYS.values()}
    wanted = {(target, f.name) for target, cls in TARGETS.items() for f in dataclasses.fields(cls)}
    built_from_the_others = {
        ("rule", "when"),
        ("rule", "delivery"),
        ("delivery", "recipients"),
        ("delivery", "batching"),
    }
    assert wanted - built_from_the_others - fed == set()


def test_every_key_names_a_real_field_and_every_switch_is_needed():
    for key, entry in RULE_KEYS.items():
        if entry.target == "switch":
            assert any(other.needs and other.needs[0] == key for other in RULE_KEYS.values()), key
        else:
            assert entry.field in {f.name for f in dataclasses.fields(TARGETS[entry.target])}, key
        if entry.needs:
            assert entry.needs[0] in RULE_KEYS, key


def test_defaults_are_the_recipient_keys():
    in_defaults = {key for key, entry in RULE_KEYS.items() if entry.in_defaults}
    assert in_defaults == {key for key, entry in RULE_KEYS.items() if entry.target == "recipients"}


def test_every_key_is_documented_in_the_readme():
    text = README.read_text(encoding="utf-8")
    routing = text[text.index("## Routing rules") : text.index("## Configuration")]
    per_rule = text[text.index("**Per rule** in `notify.toml`") : text.index("A link that cannot be signed")]
    documented = routing + per_rule
    missing = [key for key in RULE_KEYS if f"`{key}`" not in documented and f"`{key} =" not in documented]
    assert missing == []
