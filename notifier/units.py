"""Durations and sizes as people write them ("90", "30m", "1.5h", "5 MB", "2 MiB"): one grammar
and one error wording for the environment, notify.toml and the command line.

A duration is a number of seconds, or a number followed by s, m, h or d. A size is a number of
bytes, or a number followed by B, KB/KiB, MB/MiB, GB/GiB or TB/TiB. Both allow a decimal point,
spaces around the unit, and any letter case. Callers prefix the name of the variable, key or flag.
"""

from __future__ import annotations

import re
from decimal import Decimal

DURATION_EXAMPLE = 'such as 90 (seconds), "30m", "12h" or "7d"'
SIZE_EXAMPLE = 'such as 1024 (bytes), "1 KiB" or "5 MB"'
_MAX_DIGITS = 20  # a number of thousands of digits is slow to convert and means nothing here
_NUMBER_AND_UNIT = re.compile(rf"\s*([0-9]{{1,{_MAX_DIGITS}}}(?:\.[0-9]{{1,{_MAX_DIGITS}}})?)\s*([a-zA-Z]*)\s*")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_SIZE_UNITS = {"": 1, "b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2,
               "gb": 1000**3, "gib": 1024**3, "tb": 1000**4, "tib": 1024**4}  # fmt: skip


class UnitError(ValueError):
    """Not a duration (or size) as this module reads them; the message says what was expected."""


def parse_duration(value: object, *, minimum: float | None = None, maximum: float | None = None) -> float:
    """Seconds, more than zero (at least ``minimum``, at most ``maximum``), from a string or a
    number of seconds."""
    seconds = _amount(value, _DURATION_UNITS)
    low, high = minimum or 0, float("inf") if maximum is None else maximum
    if seconds is None or not 0 < seconds < float("inf") or not low <= seconds <= high:
        raise UnitError(f"expected a duration{_range(minimum, maximum)} {DURATION_EXAMPLE}, got {shown(value)}")
    return float(seconds)


def _range(minimum: float | None, maximum: float | None) -> str:
    """The limits of a duration in words: " from 1 second up to 7 days", " up to 7 days", ..."""
    if minimum is None:
        return "" if maximum is None else f" up to {describe_duration(maximum)}"
    if maximum is None:
        return f" of at least {describe_duration(minimum)}"
    return f" from {describe_duration(minimum)} up to {describe_duration(maximum)}"


def parse_size(value: object, *, maximum: int | None = None) -> int:
    """Bytes, zero or more (and at most ``maximum``), from a string or a whole number of bytes."""
    size = None if isinstance(value, float) else _amount(value, _SIZE_UNITS)  # 1.5 bytes is not a size
    if size is None or (maximum is not None and size > maximum):
        limit = f" up to {describe_size(maximum)}" if maximum is not None else ""
        raise UnitError(f"expected a size{limit} {SIZE_EXAMPLE}, got {shown(value)}")
    return int(size)


def describe_duration(seconds: float) -> str:
    """The largest whole unit: 604800 → "7 days", 90 → "90 seconds"."""
    for unit, length in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= length and seconds % length == 0:
            count = int(seconds // length)
            return f"{count} {unit}{'s' if count != 1 else ''}"
    return f"{seconds:g} seconds"


def describe_size(size: int) -> str:
    """The largest whole binary unit: 20971520 → "20 MiB", 1000 → "1,000 bytes"."""
    for unit, length in (("TiB", 1024**4), ("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= length and size % length == 0:
            return f"{size // length:,} {unit}"
    return f"{size:,} bytes"


def shown(value: object) -> str:
    """A value as the error quotes it: a string in quotes (cut at 40 characters), else as TOML
    writes it (true, 1.5, a list)."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:37]) + "..."
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int | float):
        return str(value)
    return {list: "a list", dict: "a table"}.get(type(value), type(value).__name__)


def _amount(value: object, units: dict[str, int]) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return Decimal(str(value)) if value >= 0 else None
    if not isinstance(value, str):
        return None
    match = _NUMBER_AND_UNIT.fullmatch(value)
    if match is None or match[2].lower() not in units:
        return None
    return Decimal(match[1]) * units[match[2].lower()]  # Decimal: "8.2 MB" is exactly 8200000
