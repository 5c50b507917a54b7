"""The outbound proxy: which one a request goes through, whether a proxy URL is usable, and the
secrets it carries. One definition for the start-up check (config) and the HTTP client.

The proxy comes from HTTPS_PROXY / HTTP_PROXY (either case) unless NO_PROXY exempts the host, read
with urllib.request.getproxies as every Python HTTP client reads it. A proxy URL may hold a
password, so no text made here ever quotes one.
"""

from __future__ import annotations

import re
import urllib.request
from collections.abc import Mapping
from urllib.parse import unquote, urlsplit

VARIABLES = ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")
FORM = "http://[USER:PASSWORD@]HOST[:PORT] or https://[USER:PASSWORD@]HOST[:PORT]"


def proxy_for(scheme: str, host: str) -> str | None:
    """The proxy URL urllib (and requests) would use for ``scheme://host``, or None."""
    proxy = urllib.request.getproxies().get(scheme)
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def problem(value: str) -> str | None:
    """What makes ``value`` unusable as a proxy URL (never quoting it), or None. HOST:PORT alone is
    an http:// proxy, as the HTTP client reads it."""
    try:
        parts = urlsplit(value if "://" in value else f"http://{value}")
    except ValueError:  # e.g. an unclosed [ of an IPv6 address
        return f"expected {FORM}"
    try:
        port = parts.port
    except ValueError:  # past 65535, or not a number
        port = 0
    if parts.scheme.lower() not in ("http", "https"):
        return f"expected an http:// or https:// proxy URL: {FORM}"
    if not parts.hostname:
        return f"expected a host: {FORM}"
    if port is not None and not 1 <= port <= 65535:
        return f"the port must be 1-65535: {FORM}"
    return None


def passwords(env: Mapping[str, str]) -> list[str]:
    """The passwords in the proxy variables, as written and %-decoded (as sent)."""
    found = []
    for var in VARIABLES:  # by hand, as urlsplit splits it: a malformed URL has one too
        authority = re.split(r"[/?#]", env.get(var, "").strip().partition("://")[2], maxsplit=1)[0]
        password = authority.rpartition("@")[0].partition(":")[2]
        if password:
            found += [password, unquote(password)]
    return found


def authorization(proxy: str) -> dict[str, str]:
    """The Proxy-Authorization header the URL's credentials make (none without a user)."""
    import urllib3

    parts = urlsplit(proxy)
    if parts.username is None:
        return {}
    return urllib3.make_headers(proxy_basic_auth=f"{unquote(parts.username)}:{unquote(parts.password or '')}")
