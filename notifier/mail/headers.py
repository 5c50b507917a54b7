"""Header values: one line, without control or bidi characters, bounded."""

from __future__ import annotations

import re
import unicodedata

SUBJECT_LIMIT = 200  # characters; clients cut long subjects anyway, and RFC 5322 lines are ≤ 998

# Bidirectional overrides and isolates can make a subject read differently from what it says.
_BIDI_CONTROLS = dict.fromkeys(map(ord, "\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"))
_WHITESPACE = re.compile(r"\s+")


def one_line(text: str, limit: int = SUBJECT_LIMIT) -> str:
    """Collapse whitespace (CR/LF included), drop control and bidi characters, cap with '…'."""
    text = _WHITESPACE.sub(" ", text.translate(_BIDI_CONTROLS))
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cc").strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
