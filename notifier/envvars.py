"""Typed readers of environment variables, shared by config.py and each provider's settings.

Each takes ``(env, var, problems, ...)``: it returns the value (or the default when the variable is
unset or blank) and, when the value is unusable, appends one problem that names the variable and
what was expected, and returns the default. Nothing here knows which variables exist.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import urlsplit

from notifier.addresses import Address, parse_addresses
from notifier.units import UnitError, parse_duration

_HTTP_URL = re.compile(r"https?://[^\s/?#]+(?:/[^\s?#]*)?")
_FALSE, _TRUE = ("", "0", "false", "no", "off"), ("1", "true", "yes", "on")


def text(env: Mapping[str, str], var: str) -> str:
    """The value without surrounding whitespace (secrets piped through echo end in "\\n")."""
    return env.get(var, "").strip()


def positive_number(env: Mapping[str, str], var: str, problems: list[str], default: float) -> float:
    """A positive, finite number of seconds."""
    return _positive(env, var, problems, default, float, "a positive number of seconds")


def positive_int(env: Mapping[str, str], var: str, problems: list[str], default: int) -> int:
    """A positive whole number."""
    return int(_positive(env, var, problems, default, int, "a positive whole number"))


def boolean(env: Mapping[str, str], var: str, problems: list[str], default: bool = False) -> bool:
    raw = text(env, var).lower()
    if not raw:
        return default
    if raw in _FALSE or raw in _TRUE:
        return raw in _TRUE
    problems.append(f"{var}: expected true or false, got {raw!r}")
    return default


def duration(env: Mapping[str, str], var: str, problems: list[str], default: float | None) -> float | None:
    """Seconds from "90", "30m", "1.5h" or "7d" (notifier.units' grammar and wording)."""
    raw = text(env, var)
    if not raw:
        return default
    try:
        return parse_duration(raw)
    except UnitError as error:
        problems.append(f"{var}: {error}")
        return default


def http_url(env: Mapping[str, str], var: str, problems: list[str], default: str) -> str:
    """An http(s) URL without a trailing slash, query or fragment."""
    url = text(env, var).rstrip("/") or default
    if not _HTTP_URL.fullmatch(url):
        problems.append(f"{var}: expected an http(s) URL, got {url!r}")
        return default
    return url


def secret_bearing_url(value: str, var: str, problems: list[str], *, carries: str) -> None:
    """A problem if the URL ``value`` (checked http(s)) would send ``carries`` unencrypted across a
    network: plain http:// is for this machine only (127.0.0.0/8, ::1, localhost: a stand-in, or a
    sidecar relay beside a deployed function)."""
    if value.startswith("http://") and not is_loopback(urlsplit(value).hostname or ""):
        problems.append(
            f"{var}: http:// only to this machine (127.0.0.0/8, ::1, localhost): {carries} goes there and"
            f" would cross the network unencrypted; use https://, got {value!r}"
        )


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 without brackets) is this machine."""
    import ipaddress

    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def addresses(env: Mapping[str, str], var: str, problems: list[str]) -> list[Address] | None:
    """The addresses in ``var``; None when it is unset, [] when it is invalid (a problem noted)."""
    raw = text(env, var)
    if not raw:
        return None
    try:
        return parse_addresses(raw, var)
    except ValueError as error:
        problems.append(str(error))
        return []


def one_address(env: Mapping[str, str], var: str, problems: list[str]) -> Address | None:
    """At most one address; None when unset or invalid (a problem noted)."""
    found = addresses(env, var, problems)
    if found is not None and len(found) > 1:
        problems.append(f"{var}: expected one address, got {len(found)}")
        return None
    return found[0] if found else None


def writable_directory_problems(path: Path, var: str) -> list[str]:
    """A directory we can write to, or can create: checked at start-up rather than on every event."""
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if existing == path and not path.is_dir():
        return [f"{var}: {str(path)!r} exists and is not a directory"]
    if not existing.is_dir():
        return [f"{var}: cannot create {str(path)!r}: {str(existing)!r} is not a directory"]
    if not os.access(existing, os.W_OK | os.X_OK):
        return [f"{var}: {str(existing)!r} is not writable"]
    return []


def _positive(
    env: Mapping[str, str], var: str, problems: list[str], default: float, kind: type[float] | type[int], expected: str
) -> float:
    raw = text(env, var)
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        value = -1
    if not 0 < value < float("inf"):  # NaN fails both comparisons
        problems.append(f"{var}: expected {expected}, got {raw!r}")
        return default
    return value
