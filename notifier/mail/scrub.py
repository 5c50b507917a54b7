"""Scrubbing secrets out of text that came from outside: what a provider, or a proxy in between,
echoed back of our request (the SendGrid key in an error body, the SMTP password in a reply).

Redaction happens here, where an error text is built, before it is stored, logged, printed or cut:
the log formatter's own redaction (notifier.log) is the second line of defence, not the first.
"""

from __future__ import annotations

import base64
import bisect
import functools
import html
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass

REDACTED = "[redacted]"
_HARMLESS_PREFIX = 8  # this many characters of a secret, from its start, tell nothing worth hiding
_WINDOW = 12  # this many consecutive characters of a secret, from anywhere in it, are a leak
# One character as an echo may have escaped it: JSON (\u0053, a surrogate pair, \" \/ ...), HTML
# (&#83; &#0083; &#x53; &quot;) or a URL (a run of %53, decoded together: a character may be
# several UTF-8 bytes). Each alternative starts with a fixed character: no backtracking blow-up.
_ESCAPE = re.compile(
    r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}|\\u[0-9a-fA-F]{4}|\\[\"\\/bfnrt]"
    r"|&#0*[0-9]{1,7};|&#[xX]0*[0-9a-fA-F]{1,6};|&[A-Za-z][A-Za-z0-9]{1,31};|(?:%[0-9a-fA-F]{2})+"
)
_JSON_ESCAPES = {"\\b": "\b", "\\f": "\f", "\\n": "\n", "\\r": "\r", "\\t": "\t"}


def scrub(text: str, secrets: Iterable[str | None], *, limit: int | None = None) -> str:
    """``text`` with every trace of ``secrets`` replaced by ``[redacted]``, then cut to ``limit``.

    A provider, or a proxy in between, may echo our request in an error body, so a secret can come
    back as is, JSON- or HTML-escaped, percent-encoded, hex- or base64-encoded (``Basic``
    credentials, SMTP ``AUTH PLAIN``), cut short, or only in part (a provider that strips the
    "SG." it recognised, a key split across two error entries): any run of 12 of its characters,
    wherever it starts, counts, and so does any run of more than 8 from its start. Redacting before
    the cut, and again after it, leaves no such run at the cut. Out of scope: a secret written
    backwards or with characters between its characters.
    """
    spellings = _spellings(tuple(sorted({secret for secret in secrets if secret})))
    text = _redacted(text, spellings)
    if limit is not None and len(text) > limit:
        text = _redacted(_cut(text, limit), spellings)
    return text


def _cut(text: str, limit: int) -> str:
    """The first ``limit`` characters; a ``[redacted]`` the cut would split is kept whole."""
    marker = text.find(REDACTED, max(0, limit - len(REDACTED) + 1))
    return text[:marker] + REDACTED if 0 <= marker < limit else text[:limit]


@dataclass(frozen=True, slots=True)
class _Spelling:
    """A secret written one way, compared after ``fold`` (same length) on both sides. Any
    ``window`` consecutive characters of ``text`` are a leak, and so is its first ``prefix``. Every
    such run holds one of the ``blocks`` (short pieces, a stride apart), so :func:`_runs` looks for
    those with ``str.find`` (fast, in C) and checks the windows only around what it finds: linear
    in the text, and no regex to compile, however long the secret."""

    text: str
    window: int
    prefix: int
    fold: str  # a key of _FOLDS
    windows: frozenset[str]
    blocks: frozenset[str]

    @property
    def stride(self) -> int:
        return self.window + 1 - _block_size(self.window)


# Differences no echo should get through: a space written "+" (form encoding), hex digits in upper
# case, base64's URL-safe alphabet. The same for each character, so positions do not move.
_FOLDS = {
    "plain": str.maketrans(" ", "+"),
    "hex": str.maketrans("ABCDEF", "abcdef"),
    "base64": str.maketrans("-_", "+/"),
}


def _block_size(window: int) -> int:
    """Blocks this long, ``window + 1 - size`` apart: every window holds one whole."""
    return window // 3 + 1


def _spelling(text: str, window: int, prefix: int, fold: str) -> _Spelling:
    text = text.translate(_FOLDS[fold])
    window, prefix = min(window, len(text)), min(prefix, len(text))
    size = _block_size(window)
    windows = frozenset(text[start : start + window] for start in range(len(text) - window + 1))
    blocks = frozenset(text[start : start + size] for start in range(0, len(text) - size + 1, window + 1 - size))
    return _Spelling(text, window, prefix, fold, windows, blocks)


@functools.lru_cache(maxsize=16)
def _spellings(secrets: tuple[str, ...]) -> tuple[_Spelling, ...]:
    """Each secret as is, as hex of its UTF-8 bytes (a byte is two digits: windows and prefixes
    double) and as its base64 cores. Escapes of single characters are undone in the text instead
    (:func:`_unescaped`)."""
    spellings = set()
    for secret in secrets:
        data = secret.encode("utf-8", "surrogatepass")
        spellings.add(_spelling(secret, _WINDOW, _HARMLESS_PREFIX + 1, "plain"))
        if len(data) > _HARMLESS_PREFIX:  # a short secret's hex digits would match innocent hex
            spellings.add(_spelling(data.hex(), 2 * _WINDOW, 2 * _HARMLESS_PREFIX + 2, "hex"))
        spellings |= {_spelling(core, _WINDOW, _HARMLESS_PREFIX + 1, "base64") for core in _base64_cores(secret)}
    return tuple(sorted(spellings, key=lambda spelling: (spelling.fold, spelling.text)))


def _redacted(text: str, spellings: tuple[_Spelling, ...]) -> str:
    """``text`` with each run of a secret found in it, as is or unescaped, replaced by one marker."""
    if not spellings:
        return text
    runs = _all_runs(text, spellings)
    unescaped = _unescaped(text)
    if unescaped is not None:
        plain, pieces = unescaped
        starts = [piece[0] for piece in pieces]
        runs += [_original(run, starts, pieces) for run in _all_runs(plain, spellings)]
    merged: list[list[int]] = []
    for start, stop in sorted(runs):
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], stop)
        else:
            merged.append([start, stop])
    kept, end = [], 0
    for start, stop in merged:
        kept += [text[end:start], REDACTED]
        end = stop
    return "".join([*kept, text[end:]])


def _all_runs(text: str, spellings: tuple[_Spelling, ...]) -> list[tuple[int, int]]:
    folded = {fold: text.translate(table) for fold, table in _FOLDS.items()}
    return [run for spelling in spellings for run in _runs(folded[spelling.fold], spelling)]


def _runs(text: str, spelling: _Spelling) -> list[tuple[int, int]]:
    """Where in ``text`` a window or a long enough prefix of ``spelling`` is: (start, end) pairs.
    A window starting at ``i`` holds a block starting between ``i`` and ``i + stride - 1``."""
    found = set()
    for block in spelling.blocks:
        at = text.find(block)
        while at >= 0:
            found.add(at)
            at = text.find(block, at + 1)
    runs, checked = [], -1
    for at in sorted(found):
        for start in range(max(at - spelling.stride + 1, checked + 1, 0), at + 1):
            if text[start : start + spelling.window] in spelling.windows:
                runs.append((start, start + spelling.window))
        checked = at
        # A prefix shorter than a window: the longest there is (a longer one is in the windows).
        sizes = range(spelling.window - 1, spelling.prefix - 1, -1)
        size = next((size for size in sizes if text.startswith(spelling.text[:size], at)), 0)
        if size:
            runs.append((at, at + size))
    return runs


def _unescaped(text: str) -> tuple[str, list[tuple[int, int, int]]] | None:
    """``text`` with each escaped character written as itself, and where each piece of it came
    from: (start in the result, start in ``text``, end in ``text``); None when nothing is escaped."""
    plain: list[str] = []
    pieces: list[tuple[int, int, int]] = []
    length, end = 0, 0
    for match in _ESCAPE.finditer(text):
        for start, stop, chars in _escaped(match):
            if chars is None:
                continue
            if start > end:
                plain.append(text[end:start])
                pieces.append((length, end, -1))  # -1: as is, one character for one
                length += start - end
            plain.append(chars)
            pieces.append((length, start, stop))
            length, end = length + len(chars), stop
    if not pieces:
        return None
    plain.append(text[end:])
    pieces.append((length, end, -1))
    return "".join(plain), pieces


def _escaped(match: re.Match[str]) -> list[tuple[int, int, str | None]]:
    """The characters one escape stands for, each with where it is; None for an unknown entity."""
    token, start = match.group(), match.start()
    if token.startswith("%"):
        decoded = bytes.fromhex(token.replace("%", "")).decode("utf-8", "surrogateescape")
        chars = []
        for char in decoded:
            size = 3 * len(char.encode("utf-8", "surrogateescape"))
            chars.append((start, start + size, char))
            start += size
        return chars
    if token.startswith("&"):
        char = html.unescape(token)
        return [(start, match.end(), None if char == token else char)]
    if token.startswith("\\u"):
        return [(start, match.end(), json.loads(f'"{token}"'))]
    return [(start, match.end(), _JSON_ESCAPES.get(token, token[1]))]


def _original(run: tuple[int, int], starts: list[int], pieces: list[tuple[int, int, int]]) -> tuple[int, int]:
    """Where a run of the unescaped text was in the text as it came (``starts``: the pieces' first)."""

    def at(index: int) -> tuple[int, int]:
        plain_start, start, stop = pieces[bisect.bisect_right(starts, index) - 1]
        return (start + index - plain_start, start + index - plain_start + 1) if stop < 0 else (start, stop)

    return at(run[0])[0], at(run[1] - 1)[1]


def _base64_cores(secret: str) -> set[str]:
    """What base64 of any text holding ``secret`` always contains, wherever the secret starts
    within base64's 3-byte groups: the groups made of the secret's bytes alone."""
    data = secret.encode("utf-8", "surrogatepass")
    cores = set()
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + data).decode()  # URL-safe: folded (_FOLDS)
        end = len(encoded) if (shift + len(data)) % 3 == 0 else len(encoded) - 4
        core = encoded[4 if shift else 0 : end]
        if len(core) >= _WINDOW:  # shorter cores would match innocent base64
            cores.add(core)
    return cores
