"""notifier.units: one grammar for durations and sizes, one error wording, wherever they are read."""

from __future__ import annotations

import math
from decimal import Decimal
from pathlib import Path

import pytest

from notifier.config import ConfigError, load_settings
from notifier.tools.cli import main
from notifier.units import UnitError, parse_duration, parse_size

DURATION_EXPECTED = 'expected a duration such as 90 (seconds), "30m", "12h" or "7d", got'
SIZE_EXPECTED = 'expected a size such as 1024 (bytes), "1 KiB" or "5 MB", got'

pytestmark = pytest.mark.usefixtures("clean_notifier_env")


# -- the grammar ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("90", 90.0), (90, 90.0), (2.5, 2.5), ("45s", 45.0), ("30m", 1800.0), ("12h", 43200.0),
        ("7d", 604800.0), ("1.5h", 5400.0), ("0.5m", 30.0), (" 30 m ", 1800.0), ("12H", 43200.0),
        ("2 D", 172800.0), ("10S", 10.0), ("0.001", 0.001),
    ],
)  # fmt: skip
def test_durations_people_write(value, seconds):
    assert parse_duration(value) == seconds


@pytest.mark.parametrize(
    ("value", "size"),
    [
        ("1024", 1024), (1024, 1024), (0, 0), ("0", 0), ("7 B", 7), ("7b", 7), ("1 KiB", 1024),
        ("1kb", 1000), ("5 MB", 5_000_000), ("2 MiB", 2 * 1024**2), ("1 GB", 10**9),
        ("1.5 GiB", 1_610_612_736), ("1 TB", 10**12), ("1 TiB", 1024**4), ("8.2 MB", 8_200_000),
        (" 3 mib ", 3 * 1024**2), ("4KIB", 4096),
    ],
)  # fmt: skip
def test_sizes_people_write(value, size):
    assert parse_size(value) == size


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (-1, "-1"), ("-5m", "'-5m'"), (math.nan, "nan"), (math.inf, "inf"), ("inf", "'inf'"), ("nan", "'nan'"),
        (True, "true"), (False, "false"), ([1], "a list"), ({"a": 1}, "a table"), (None, "NoneType"),
        ("9" * 45, "'" + "9" * 37 + "'..."), ("5 weeks", "'5 weeks'"), ("5 ms", "'5 ms'"), ("0", "'0'"), (0, "0"),
        ("0s", "'0s'"), ("", "''"), ("1e3", "'1e3'"), ("1,5h", "'1,5h'"), ("h", "'h'"), (Decimal("NaN"), "Decimal"),
    ],
)  # fmt: skip
def test_durations_refused_say_what_was_expected(value, shown):
    with pytest.raises(UnitError) as caught:
        parse_duration(value)
    assert str(caught.value) == f"{DURATION_EXPECTED} {shown}"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (-1, "-1"), ("-5 MB", "'-5 MB'"), (math.nan, "nan"), (math.inf, "inf"), (1.5, "1.5"), (True, "true"),
        ([1], "a list"), ("9" * 21, "'" + "9" * 21 + "'"), ("1 XB", "'1 XB'"), ("lots", "'lots'"), ("", "''"),
        (None, "NoneType"), ("1 KiB 2", "'1 KiB 2'"), ("1e6", "'1e6'"),
    ],
)  # fmt: skip
def test_sizes_refused_say_what_was_expected(value, shown):
    with pytest.raises(UnitError) as caught:
        parse_size(value)
    assert str(caught.value) == f"{SIZE_EXPECTED} {shown}"


def test_a_long_value_is_cut_in_the_message():
    with pytest.raises(UnitError) as caught:
        parse_size("x" * 10_000)
    assert str(caught.value) == f"{SIZE_EXPECTED} '{'x' * 37}'..."


def test_twenty_digits_are_read_and_more_are_refused():
    assert parse_size("9" * 20) == int("9" * 20)
    with pytest.raises(UnitError):
        parse_size("9" * 21)
    with pytest.raises(UnitError):
        parse_duration("1." + "0" * 21)


# -- maximum -------------------------------------------------------------------------------------


def test_a_duration_maximum_is_inclusive_and_named_in_words():
    assert parse_duration("7d", maximum=7 * 86400) == 604800.0
    assert parse_duration("168h", maximum=7 * 86400) == 604800.0
    with pytest.raises(UnitError) as caught:
        parse_duration("7.5d", maximum=7 * 86400)
    assert str(caught.value) == (
        'expected a duration up to 7 days such as 90 (seconds), "30m", "12h" or "7d", got \'7.5d\''
    )
    with pytest.raises(UnitError) as caught:
        parse_duration(91, maximum=90)
    assert str(caught.value).startswith("expected a duration up to 90 seconds such as")


def test_a_duration_minimum_is_inclusive_and_named_with_the_maximum():
    assert parse_duration("1", minimum=1) == 1.0
    assert parse_duration("1s", minimum=1, maximum=7 * 86400) == 1.0
    with pytest.raises(UnitError) as caught:
        parse_duration("0.5", minimum=1)
    assert str(caught.value) == (
        'expected a duration of at least 1 second such as 90 (seconds), "30m", "12h" or "7d", got \'0.5\''
    )
    with pytest.raises(UnitError) as caught:
        parse_duration(0.999, minimum=1, maximum=7 * 86400)
    assert str(caught.value).startswith("expected a duration from 1 second up to 7 days such as")
    with pytest.raises(UnitError) as caught:
        parse_duration("59s", minimum=60)
    assert str(caught.value).startswith("expected a duration of at least 1 minute such as")


@pytest.mark.parametrize(
    ("value", "shown"), [('"0.001"', "'0.001'"), ("0.5", "0.5"), ('"0.9s"', "'0.9s'"), ('"0.01m"', "'0.01m'")]
)
def test_a_signed_link_lives_at_least_one_second(tmp_path, value, shown):
    """A V4 signed URL's lifetime is whole seconds: 0.001 would sign a link that is already dead."""
    expected = DURATION_EXPECTED.replace("a duration", "a duration from 1 second up to 7 days")
    assert _rules_problems(tmp_path, f'link = "signed"\nlink_ttl = {value}') == [
        f"notify.toml: rules[0] (r): link_ttl: {expected} {shown}"
    ]


def test_a_signed_link_of_one_second_is_accepted(tmp_path):
    path = tmp_path / "notify.toml"
    path.write_text('[[rules]]\nname = "r"\nto = "x@example.com"\nlink = "signed"\nlink_ttl = 1\n', encoding="utf-8")
    settings = load_settings({"NOTIFY_BACKEND": "console", "NOTIFY_CONFIG": str(path)})
    assert settings.rules.rules[0].delivery.signed_link_ttl == 1.0


def test_a_size_maximum_is_inclusive_and_named_in_the_largest_whole_unit():
    assert parse_size("20 MiB", maximum=20 * 1024**2) == 20 * 1024**2
    with pytest.raises(UnitError) as caught:
        parse_size(20 * 1024**2 + 1, maximum=20 * 1024**2)
    assert str(caught.value) == f"expected a size up to 20 MiB {SIZE_EXPECTED[len('expected a size ') :]} 20971521"
    with pytest.raises(UnitError) as caught:
        parse_size("1001", maximum=1000)
    assert str(caught.value).startswith("expected a size up to 1,000 bytes such as")


# -- the same wording everywhere ---------------------------------------------------------------


def _rules_problems(tmp_path: Path, keys: str) -> list[str]:
    path = tmp_path / "notify.toml"
    path.write_text(f'[[rules]]\nname = "r"\n{keys}\n', encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_settings({"NOTIFY_BACKEND": "console", "NOTIFY_CONFIG": str(path)})
    return caught.value.problems


@pytest.mark.parametrize("bad", ["lots", "5 weeks", "-1h"])
def test_a_bad_duration_reads_the_same_in_the_environment(bad):
    with pytest.raises(ConfigError) as caught:
        load_settings({"NOTIFY_BACKEND": "console", "NOTIFY_MAX_EVENT_AGE": bad})
    assert caught.value.problems == [f"NOTIFY_MAX_EVENT_AGE: {DURATION_EXPECTED} {bad!r}"]


@pytest.mark.parametrize("bad", ["lots", "5 weeks", "-1h"])
def test_a_bad_duration_reads_the_same_in_the_rules_file_and_on_the_command_line(tmp_path, capsys, monkeypatch, bad):
    expected_in_file = DURATION_EXPECTED.replace("a duration", "a duration from 1 second up to 7 days")
    assert _rules_problems(tmp_path, f'link = "signed"\nlink_ttl = "{bad}"') == [
        f"notify.toml: rules[0] (r): link_ttl: {expected_in_file} {bad!r}"
    ]

    monkeypatch.setenv("NOTIFY_OUTBOX_DIR", str(tmp_path))
    assert main(["replay", f"--since={bad}"]) == 1
    since = DURATION_EXPECTED.replace("a duration", "an ISO 8601 time or a duration")
    assert capsys.readouterr().err.strip().endswith(f"--since: {since} {bad!r}")


@pytest.mark.parametrize("bad", ["lots", "1 XB", "-5"])
def test_a_bad_size_reads_the_same_in_the_rules_file_and_the_command_line(tmp_path, capsys, bad):
    assert _rules_problems(tmp_path, f'min_size = "{bad}"') == [
        f"notify.toml: rules[0] (r): min_size: {SIZE_EXPECTED} {bad!r}"
    ]
    with pytest.raises(SystemExit):
        main(["route", "finalize", "gs://acme/a.csv", f"--size={bad}"])
    assert f"argument --size: {SIZE_EXPECTED} {bad!r}" in capsys.readouterr().err


def test_the_command_line_reads_sizes_with_units(capsys, monkeypatch):
    monkeypatch.setenv("NOTIFY_TO", "ops@example.com")
    assert main(["route", "finalize", "gs://acme/a.csv", "--size", "5 MB"]) == 0
    assert "(5000000 bytes, text/csv)" in capsys.readouterr().out
