"""JSON log lines on stdout: one line per record, Cloud Logging fields, secrets redacted everywhere."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from notifier import log as log_module
from notifier.log import LOGGER_NAME, get_logger, log, register_secret

SECRET = "SG.log-test-secret-0123456789abcdef"


@pytest.fixture(autouse=True)
def secrets(monkeypatch):
    """A private secret registry, so these tests neither see nor leave behind other secrets."""
    registry: list[str] = []
    monkeypatch.setattr(log_module, "_secrets", registry)
    return registry


@pytest.fixture
def logger():
    logger = get_logger()
    assert logger.level == logging.INFO
    return logger


def raw_output(capsys) -> str:
    out, err = capsys.readouterr()
    assert err == ""
    return out


def records(capsys) -> list[dict[str, Any]]:
    out = raw_output(capsys)
    assert out.endswith("\n")
    return [json.loads(line) for line in out.split("\n")[:-1]]


def only_record(capsys) -> dict[str, Any]:
    (record,) = records(capsys)
    return record


def test_a_record_is_one_json_line_with_cloud_logging_fields(logger, capsys):
    before = datetime.now(UTC)
    log(logger, logging.INFO, "sent: finalize gs://acme/a.csv", bucket="acme", size=3, ok=True)

    record = only_record(capsys)

    assert record["severity"] == "INFO"
    assert record["message"] == "sent: finalize gs://acme/a.csv"
    assert record["logger"] == LOGGER_NAME
    assert (record["bucket"], record["size"], record["ok"]) == ("acme", 3, True)
    stamp = datetime.fromisoformat(record["time"])
    assert stamp.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= stamp <= datetime.now(UTC) + timedelta(seconds=1)
    assert "traceback" not in record


@pytest.mark.parametrize(
    ("level", "severity"),
    [
        (logging.INFO, "INFO"),
        (logging.WARNING, "WARNING"),
        (logging.ERROR, "ERROR"),
        (logging.CRITICAL, "CRITICAL"),
        (25, "DEFAULT"),
    ],
)
def test_level_becomes_severity(logger, capsys, level, severity):
    log(logger, level, "x")
    assert only_record(capsys)["severity"] == severity


def test_debug_is_below_the_default_level(logger, capsys):
    log(logger, logging.DEBUG, "noise")
    assert raw_output(capsys) == ""


def test_none_fields_are_left_out_but_other_falsy_values_kept(logger, capsys):
    log(logger, logging.INFO, "m", status=None, generation=None, attempts=0, error="", retried=False, tags=[])

    record = only_record(capsys)

    assert "status" not in record and "generation" not in record
    assert (record["attempts"], record["error"], record["retried"], record["tags"]) == (0, "", False, [])


def test_values_json_cannot_encode_are_written_as_text(logger, capsys):
    when = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
    log(logger, logging.INFO, "m", path=Path("outbox/a.eml"), when=when, pair=(1, 2))

    record = only_record(capsys)

    assert (record["path"], record["when"], record["pair"]) == ("outbox/a.eml", str(when), [1, 2])


@pytest.mark.parametrize("text", ["Übersicht ✓", "报告/数据.csv", "😀 emoji", "Ελληνικά", "עברית"])
def test_non_ascii_stays_readable(logger, capsys, text):
    log(logger, logging.INFO, f"object {text}", object=text)

    out = raw_output(capsys)

    assert out.count(text) == 2
    assert "\\u" not in out
    assert json.loads(out)["object"] == text


@pytest.mark.parametrize(
    "message",
    [
        "line one\nline two",
        "windows\r\nline",
        "old mac\rline",
        "trailing newline\n",
        "\n\n\n",
        "tab\tand nul\x00 and escape\x1b[31m",
        'evil\n{"severity": "CRITICAL", "message": "forged"}',
    ],
)
def test_a_message_with_line_breaks_is_still_exactly_one_line(logger, capsys, message):
    log(logger, logging.WARNING, message, object=message)

    out = raw_output(capsys)

    assert out.count("\n") == 1 and out.endswith("\n")
    assert "\r" not in out and "\x00" not in out and "\x1b" not in out
    record = json.loads(out)
    assert (record["message"], record["object"], record["severity"]) == (message, message, "WARNING")


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x85"])
def test_unicode_line_separators_do_not_split_the_line(logger, capsys, separator):
    log(logger, logging.INFO, f"object a{separator}b.txt")
    assert len(raw_output(capsys).splitlines()) == 1


def test_a_lone_surrogate_still_gives_one_valid_utf8_line(logger, capsys):
    log(logger, logging.ERROR, "invalid event: name x\udc00y", object="x\ud800y")

    out = raw_output(capsys)

    out.encode("utf-8")
    assert out.count("\n") == 1
    record = json.loads(out)
    assert (record["message"], record["object"]) == ("invalid event: name x\udc00y", "x\ud800y")


def test_a_registered_secret_is_redacted_in_message_and_fields(logger, capsys):
    register_secret(SECRET)

    log(
        logger,
        logging.ERROR,
        f"401 for key {SECRET}; again {SECRET}",
        error=f"Authorization: Bearer {SECRET}",
        url=f"https://api.example.com/?key={SECRET}&x=1",
        nested={"headers": {"Authorization": f"Bearer {SECRET}"}},
    )

    out = raw_output(capsys)
    record = json.loads(out)
    assert SECRET not in out
    assert record["message"] == "401 for key [redacted]; again [redacted]"
    assert record["error"] == "Authorization: Bearer [redacted]"
    assert record["url"] == "https://api.example.com/?key=[redacted]&x=1"
    assert record["nested"] == {"headers": {"Authorization": "Bearer [redacted]"}}


def test_a_secret_is_redacted_inside_a_logged_traceback(logger, capsys):
    register_secret(SECRET)
    try:
        try:
            raise ConnectionError(f"refused for token {SECRET}")
        except ConnectionError as cause:
            raise RuntimeError(f"send failed: {SECRET!r}") from cause
    except RuntimeError:
        log(logger, logging.ERROR, "send failed", exc_info=True, error="RuntimeError")

    out = raw_output(capsys)
    record = json.loads(out)
    assert SECRET not in out
    assert "RuntimeError: send failed: '[redacted]'" in record["traceback"]
    assert "ConnectionError: refused for token [redacted]" in record["traceback"]
    assert record["traceback"].startswith("Traceback (most recent call last):")
    assert out.count("\n") == 1


def test_an_empty_secret_is_ignored(logger, capsys, secrets):
    register_secret("")
    log(logger, logging.INFO, "nothing to hide")
    assert secrets == []
    assert only_record(capsys)["message"] == "nothing to hide"


def test_unregistered_text_is_left_alone(logger, capsys):
    register_secret(SECRET)
    log(logger, logging.INFO, f"almost {SECRET[:-1]}")
    assert only_record(capsys)["message"] == f"almost {SECRET[:-1]}"


@pytest.mark.parametrize("secret", ['pa"ss-word-123', "back\\slash-secret"])
def test_a_secret_with_characters_json_escapes_is_redacted(logger, capsys, secret):
    register_secret(secret)
    log(logger, logging.INFO, f"password={secret}")
    assert only_record(capsys)["message"] == "password=[redacted]"


def test_overlapping_secrets_are_redacted_whole(logger, capsys):
    # Set order is per-process random; 32 pairs make "every pair happens to go longest-first" ~2**-32.
    pairs = [(f"tok{i:02d}x", f"tok{i:02d}x-and-more") for i in range(32)]
    for short, long in pairs:
        register_secret(short)
        register_secret(long)
    log(logger, logging.INFO, " ".join(long for _, long in pairs))
    assert only_record(capsys)["message"] == " ".join(["[redacted]"] * len(pairs))


def test_each_call_writes_its_own_line(logger, capsys):
    for i in range(3):
        log(logger, logging.INFO, f"n{i}\nmore", i=i)
    assert [(r["message"], r["i"]) for r in records(capsys)] == [(f"n{i}\nmore", i) for i in range(3)]


def test_get_logger_is_configured_once(logger):
    assert get_logger() is logger
    assert sum(isinstance(h, log_module._StdoutHandler) for h in logger.handlers) == 1
    assert logger.propagate is False


def test_a_long_field_is_cut_with_its_length_stated(logger, capsys):
    log(logger, logging.ERROR, "invalid event", name="n" * 3_145_728, bucket="acme")

    out = raw_output(capsys)
    record = json.loads(out)
    assert len(out) < 16 * 1024
    assert record["name"].startswith("n" * 100)
    assert record["name"].endswith("…[cut: 3145728 characters]")
    assert record["bucket"] == "acme"


def test_a_long_message_and_traceback_are_cut_and_the_line_stays_bounded(logger, capsys):
    try:
        raise ValueError("v" * 1_000_000)
    except ValueError:
        log(logger, logging.ERROR, "m" * 1_000_000, exc_info=True, **{f"f{i}": "x" * 5000 for i in range(20)})

    out = raw_output(capsys)
    record = json.loads(out)
    assert out.count("\n") == 1
    assert len(out.encode()) <= 16 * 1024
    assert "[cut: 1000000 characters]" in record["message"]
    assert "[cut:" in record["traceback"]
    assert record["severity"] == "ERROR"


def test_a_line_of_escaped_characters_stays_bounded(logger, capsys):
    # JSON writes each control character as six; the bound is on the line written, not the input.
    log(logger, logging.INFO, "controls", **{f"f{i}": "\x01" * 1999 for i in range(10)})

    out = raw_output(capsys)
    assert len(out.encode()) <= 16 * 1024
    assert json.loads(out)["message"] == "controls"


def test_a_secret_straddling_the_cut_leaves_no_prefix(logger, capsys):
    register_secret(SECRET)
    cut_at = log_module.FIELD_LIMIT
    value = "x" * (cut_at - 10) + SECRET + "y" * 5000  # the cut would fall inside the secret

    log(logger, logging.ERROR, value, error=value)

    out = raw_output(capsys)
    record = json.loads(out)
    assert SECRET[:10] not in out
    assert record["error"].startswith("x" * (cut_at - 10) + "[redacted]")


def test_short_values_and_non_text_values_are_left_alone(logger, capsys):
    log(logger, logging.INFO, "ok", count=10**30, nested={"a": [1, 2]}, text="t" * 100)
    record = only_record(capsys)
    assert (record["count"], record["nested"], record["text"]) == (10**30, {"a": [1, 2]}, "t" * 100)


def test_a_huge_nested_value_is_cut_as_text(logger, capsys):
    log(logger, logging.INFO, "nested", nested={"k": "z" * 100_000})
    out = raw_output(capsys)
    assert len(out) < 16 * 1024
    assert "[cut:" in json.loads(out)["nested"]
