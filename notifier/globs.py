"""Globs over object names: one backtracking-safe matcher for rules, ignores and the rule index.

Object names are chosen by whoever uploads, so no pattern may take more than linear-ish time on a
hostile name: patterns with at most one ``**`` become one atomic-grouped regex, the others are
matched segment by segment (dynamic programming over segments).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_GLOB_SPECIAL = "*?[\\"


class GlobError(ValueError):
    """A pattern that is not a valid glob; the message says what is wrong."""


def glob_to_regex(pattern: str) -> str:
    """Translate one glob over object names into a regular expression (to be full-matched).

    ``*`` matches within one path segment, ``?`` one character other than ``/``, ``[abc]`` /
    ``[!abc]`` one character of (or not of) a set, ``**`` as a whole segment any number of
    segments (``a/**/b`` matches ``a/b`` and ``a/x/y/b``), and ``\\`` makes the next character
    literal. Matching is case-sensitive, like Cloud Storage names.

    Object names are chosen by whoever uploads, so the regex must not backtrack badly: like
    ``fnmatch``, each ``*`` and the fixed characters after it become one atomic group that takes
    the earliest match, which is always a right one when what follows is another wildcard.
    """
    tokens = _glob_tokens(pattern)
    out: list[str] = []
    i = 0
    while i < len(tokens):
        kind, regex = tokens[i]
        i += 1
        if kind != "star":
            out.append(regex)
            continue
        run = []
        while i < len(tokens) and tokens[i][0] == "one":
            run.append(tokens[i][1])
            i += 1
        fixed = "".join(run)
        out.append(f"[^/]*{fixed}" if i == len(tokens) else f"(?>[^/]*?{fixed})")
    return "".join(out)


def _glob_tokens(pattern: str) -> list[tuple[str, str]]:
    """("one", regex of one character) | ("star", "") | ("dirs", regex) | ("all", regex)."""
    if not pattern:
        raise GlobError("empty pattern")
    tokens: list[tuple[str, str]] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if pattern.startswith("**", i):
            at_start, at_end = i == 0 or pattern[i - 1] == "/", i + 2 == n or pattern[i + 2] == "/"
            if not (at_start and at_end) or pattern.startswith("***", i):
                raise GlobError(f"'**' must be a whole path segment, as in 'a/**/b' (in {pattern!r})")
            if i + 2 == n:  # trailing: everything below
                tokens.append(("all", ".*"))
                i += 2
            else:  # leading or inner "**/": zero or more whole segments (each one is unambiguous)
                if not tokens or tokens[-1][0] != "dirs":  # "**/**/" means the same as "**/"
                    tokens.append(("dirs", "(?:[^/]*/)*"))
                i += 3
        elif char == "*":
            tokens.append(("star", ""))
            i += 1
        elif char == "?":
            tokens.append(("one", "[^/]"))
            i += 1
        elif char == "[":
            j = i + 1
            j += pattern[j : j + 1] == "!"
            j += pattern[j : j + 1] == "]"  # a "]" first in the set is literal
            end = pattern.find("]", j)
            if end < 0:
                raise GlobError(f"unclosed '[' at position {i} (in {pattern!r}); write '\\[' for a literal '['")
            body = pattern[i + 1 : end]
            negate = body.startswith("!")
            body = (body[1:] if negate else body).replace("\\", "\\\\").replace("[", "\\[").replace("^", "\\^")
            try:
                re.compile(f"[{body}]")
            except re.error as error:  # e.g. a reversed range such as [z-a]
                raise GlobError(f"{error.msg} in {pattern!r}") from None
            tokens.append(("one", f"[^/{body}]" if negate else f"(?!/)[{body}]"))
            i = end + 1
        elif char == "\\":
            if i + 1 == n:
                raise GlobError(f"'\\' at the end escapes nothing (in {pattern!r})")
            tokens.append(("one", re.escape(pattern[i + 1])))
            i += 2
        else:
            tokens.append(("one", re.escape(char)))
            i += 1
    return tokens


def literal_prefix(pattern: str) -> str:
    """The characters every match must start with (up to the first wildcard or escape)."""
    cut = min((pattern.find(c) for c in _GLOB_SPECIAL if c in pattern), default=len(pattern))
    return pattern[:cut]


@dataclass(frozen=True)
class Globs:
    """Several globs compiled into one matcher: a name matches if any pattern matches it."""

    patterns: tuple[str, ...]
    _regex: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _by_segment: tuple[_SegmentGlob, ...] = field(init=False, repr=False, compare=False)
    # When every pattern has a literal prefix, a name without one of them is rejected cheaply.
    _prefixes: tuple[str, ...] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # One regex for the usual patterns; several "**" could make a regex backtrack without end
        # on a hostile name, so those are matched segment by segment instead.
        simple = [p for p in self.patterns if p.split("/").count("**") <= 1]
        regex = "|".join(f"(?:{glob_to_regex(p)})" for p in simple)
        segmented = tuple(_SegmentGlob.compile(p) for p in self.patterns if p not in simple)
        prefixes = tuple(literal_prefix(p) for p in self.patterns)
        object.__setattr__(self, "_regex", re.compile(regex, re.DOTALL) if simple else None)
        object.__setattr__(self, "_by_segment", segmented)
        object.__setattr__(self, "_prefixes", prefixes if all(prefixes) else None)

    def matches(self, name: str) -> bool:
        if self._prefixes is not None and not name.startswith(self._prefixes):
            return False
        if self._regex is not None and self._regex.fullmatch(name) is not None:
            return True
        return any(glob.matches(name) for glob in self._by_segment)


@dataclass(frozen=True, slots=True)
class _SegmentGlob:
    """A glob as one regex per path segment (None for ``**``), matched by dynamic programming:
    time proportional to pattern segments × name segments, whatever the name."""

    segments: tuple[re.Pattern[str] | None, ...]

    @classmethod
    def compile(cls, pattern: str) -> _SegmentGlob:
        parts: list[re.Pattern[str] | None] = []
        for part in pattern.split("/"):
            if part == "**":
                if not parts or parts[-1] is not None:  # "**/**" is "**"
                    parts.append(None)
            else:
                parts.append(re.compile(glob_to_regex(part), re.DOTALL) if part else re.compile(""))
        return cls(tuple(parts))

    def matches(self, name: str) -> bool:
        names = name.split("/")
        count = len(names)
        # reachable[j]: the pattern so far matches names[:j] exactly.
        reachable = [True] + [False] * count
        for position, segment in enumerate(self.segments):
            if segment is None:
                last = position == len(self.segments) - 1  # a trailing "**" needs one segment or more
                following, seen = [False] * (count + 1), False
                for j in range(count + 1):
                    following[j] = seen if last else (seen or reachable[j])
                    seen = seen or reachable[j]
                reachable = following
            else:
                reachable = [False] + [reachable[j] and segment.fullmatch(names[j]) is not None for j in range(count)]
        return reachable[count]


def literal_suffix(pattern: str) -> str:
    """The characters every match must end with (after the last wildcard, class or escape)."""
    return pattern[max(pattern.rfind(c) for c in "*?]\\") + 1 :]
