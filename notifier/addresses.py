"""Email addresses: parsing ``Name <address>`` lists strictly, and the mailbox value."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from email import errors
from email.policy import default as default_policy
from email.utils import formataddr

# The WHATWG "valid e-mail address" grammar: what browsers accept in <input type=email>. Strict
# enough to catch typos, loose enough for every real address; stdlib only, so no import cost.
_ADDR_SPEC = re.compile(
    r"[a-zA-Z0-9.!#$%&'*+/=?^_`{|}~-]+@[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*"
)


@dataclass(frozen=True, slots=True)
class Address:
    """A mailbox: the address proper and an optional display name."""

    email: str
    name: str = ""

    def __str__(self) -> str:
        return formataddr((self.name, self.email))

    @property
    def key(self) -> str:
        """What makes two addresses the same recipient."""
        return self.email.lower()


def parse_addresses(raw: str, where: str) -> list[Address]:
    """Parse a comma-separated address list; raise ``ValueError`` naming ``where`` and the culprit."""
    if "\r" in raw or "\n" in raw:
        raise ValueError(f"{where}: must not contain line breaks")
    # The email package's RFC 5322 parser: it records defects instead of guessing silently.
    what = "email address list" if "," in raw else "email address"
    try:
        header = default_policy.header_factory("to", raw)
    except Exception:  # noqa: BLE001 - the stdlib parser trips on some malformed input ("ops@")
        raise ValueError(f"{where}: {raw!r} is not a valid {what}") from None
    if any(not isinstance(d, errors.ObsoleteHeaderDefect) for d in header.defects):
        raise ValueError(f"{where}: {raw!r} is not a valid {what}")
    parsed = []
    for mailbox in header.addresses:
        if not _ADDR_SPEC.fullmatch(mailbox.addr_spec):
            raise ValueError(f"{where}: {mailbox.addr_spec or raw!r} is not a valid email address")
        parsed.append(Address(email=mailbox.addr_spec, name=mailbox.display_name))
    if not parsed:
        raise ValueError(f"{where}: expected at least one email address")
    return parsed


def unique(addresses: Iterable[Address], seen: set[str] | None = None) -> tuple[Address, ...]:
    """``addresses`` without repeats (case-insensitive), skipping any already in ``seen``."""
    seen = set() if seen is None else seen
    kept = []
    for address in addresses:
        if address.key not in seen:
            seen.add(address.key)
            kept.append(address)
    return tuple(kept)
