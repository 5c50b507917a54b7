"""Jinja's sandbox, bounded in time and in size: the environment every template runs in.

The sandbox keeps a template from reaching into Python; it does not keep one from spinning
(``{% for i in r %}{% for j in r %}``) or from building a gigabyte (``"x" * 10**9``). Here every
render gets a deadline, checked wherever a template can repeat work (each call, each turn of a
loop), and every operation that can make a large value is checked before it runs: ``*``, ``**``,
``%``, ``+``, ``~``, the filters and string methods taking a width, ``replace`` and ``join``. What
a template outputs is capped as well. A normal email never comes near any of these bounds.
"""

from __future__ import annotations

import math
import re
import signal
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from functools import wraps
from itertools import islice
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import generate_lorem_ipsum

RENDER_SECONDS = 1.0  # per template; rendering one takes about a tenth of a millisecond
MAX_OUTPUT = 1_000_000  # characters of one template's output, or of any string or list it makes
MAX_INT_BITS = 10_000  # Python refuses to print integers of more than 4,300 digits anyway

# A width or precision of a million or more, in "%10s" and in "{:>10}" formats.
# A width or precision taken from an argument: "%*s", "%.*f", "{:>{}}".
_ARGUMENT_WIDTH = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\*|\d*\.\*)|\{[^{}]*:[^{}]*\{")
# The part of a "%" conversion or a "{}" field that holds its width and precision.
_FORMAT_SPECS = re.compile(r"%(?:\([^)]*\))?([-#0 +]*\d*(?:\.\d*)?)|\{[^{}]*?:([^{}]*)\}")
_NUMBERS = re.compile(r"\d+")
_SIZED = (str, list, tuple)
# What str() prints with all its members: the size of that text is estimated before it is made.
_CONTAINERS = (list, tuple, set, frozenset, dict, type({}.keys()), type({}.values()), type({}.items()))
_CONTAINER_TYPES = frozenset(_CONTAINERS)  # subclasses (a template cannot make them) print their own way
_TEXT_DEPTH = 64  # Python prints deeper nesting, but a template has no need of it
_MAX_WRAPPED_LINES = 50_000  # wordwrap's time grows faster than its lines: 100,000 took 0.2 s
_MAX_LIPSUM_WORDS = 100_000
_SHORT = (str, list, tuple, dict, range)
_SHORT_LOOP = 1000  # turns of a loop over these that need no deadline check of their own


class RenderLimitError(SecurityError):
    """A template went over a bound: too slow, or making too large an output or value."""


class _Budget(threading.local):
    """The deadline of the render running on this thread (none outside :func:`render_within_budget`)."""

    deadline = math.inf
    seconds = 0.0


_budget = _Budget()


def render_within_budget(template: jinja2.Template, context: dict[str, Any], *, alarm: bool = False) -> str:
    """``template.render(context)`` within RENDER_SECONDS. With ``alarm`` (start-up), a wall-clock
    alarm also stops a render stuck inside one filter, where the template's own checks never run."""
    _budget.seconds = RENDER_SECONDS
    _budget.deadline = time.monotonic() + RENDER_SECONDS
    try:
        with _alarm(RENDER_SECONDS) if alarm else nullcontext():
            return template.render(context)
    finally:
        _budget.deadline = math.inf


@contextmanager
def _alarm(seconds: float) -> Iterator[None]:
    """SIGALRM after ``seconds``, raising RenderLimitError between two bytecodes of whatever runs,
    then every half second in case the first was swallowed. Signals reach only the main thread (a
    worker thread renders events: it has the in-template checks alone). What was set before,
    handler and timer, is put back."""
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "setitimer"):
        yield
        return
    armed = [True]

    def ring(_signum: int, _frame: Any) -> None:
        if armed[0]:
            raise RenderLimitError(f"rendering took more than {seconds:g} s: is a filter's input too large?")

    previous = signal.signal(signal.SIGALRM, ring)
    started = time.monotonic()
    theirs, their_interval = signal.setitimer(signal.ITIMER_REAL, seconds, 0.5)
    try:
        yield
    finally:
        armed[0] = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous if previous is not None else signal.SIG_DFL)
        if theirs:
            left = max(theirs - (time.monotonic() - started), 0.001)
            signal.setitimer(signal.ITIMER_REAL, left, their_interval)


def _check_time() -> None:
    if time.monotonic() > _budget.deadline:
        raise RenderLimitError(f"rendering took more than {_budget.seconds:g} s: is a loop too large?")


def _check_size(size: int, what: str) -> None:
    if size > MAX_OUTPUT:
        raise RenderLimitError(f"{what} would make more than {MAX_OUTPUT:,} characters")


def _check_format(text: Any, what: str, args: Iterable[Any] = ()) -> None:
    """``text`` formatted with ``args``: the widths written in it, added up (a width repeated a
    thousand times is as large as one a thousand times larger), and the text the arguments print.
    A width taken from an argument (``%*s``, ``{:>{}}``) is refused outright: it can come indexed,
    nested or in pieces, and no email needs one."""
    if not isinstance(text, str):
        return
    if _ARGUMENT_WIDTH.search(text):
        raise RenderLimitError(f"{what}: a width or precision taken from an argument ('%*s', '{{:{{}}}}')")
    written = sum(int(n) for spec in _FORMAT_SPECS.findall(text) for n in _NUMBERS.findall("".join(spec)))
    if written > MAX_OUTPUT:
        raise RenderLimitError(f"{what}: widths and precisions adding up to {written:,} (at most {MAX_OUTPUT:,})")
    _check_text(tuple(args), what)


def _mapping_values(args: tuple[Any, ...]) -> Iterable[Any]:
    return args[0].values() if args and isinstance(args[0], dict) else args


def _format_args(right: Any) -> tuple[Any, ...]:
    return right if isinstance(right, tuple) else (right,)


def _text_size(value: Any) -> int:
    """About how many characters ``str(value)`` has, counted without making it and only until it
    passes MAX_OUTPUT, so it costs at most half a million steps (a few tens of ms)."""
    if not isinstance(value, _CONTAINERS):
        return _leaf_size(value)
    size, stack = 2, [_members(value)]
    while stack and size <= MAX_OUTPUT:
        item = next(stack[-1], stack)  # the stack itself marks the end: it is never a member
        if item is stack:
            stack.pop()
        elif isinstance(item, _CONTAINERS):
            size += 4
            if len(stack) < _TEXT_DEPTH:
                stack.append(_members(item))
        else:
            size += _leaf_size(item) + 2
    return size


def _members(container: Any) -> Iterator[Any]:
    return iter(container.items()) if isinstance(container, dict) else iter(container)


def _leaf_size(value: Any) -> int:
    if isinstance(value, (str, bytes)):
        return len(value)
    if type(value) is int:
        return value.bit_length() * 30 // 100 + 2  # digits
    return 8  # numbers, dates, None: short; an object's own text is not known


def _check_text(value: Any, what: str) -> None:
    if isinstance(value, _CONTAINERS):
        _check_size(_text_size(value), what)


def _check_widths(name: str, args: Iterable[Any]) -> None:
    for value in args:
        if type(value) is int and value > MAX_OUTPUT:
            raise RenderLimitError(f"{name}: a width or count of {value:,} (at most {MAX_OUTPUT:,})")


def _check_replace(text: Any, old: Any, new: Any, count: Any = -1) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str) and len(new) > len(old):
        times = text.count(old) if old else len(text) + 1
        times = times if not isinstance(count, int) or count < 0 else min(times, count)
        _check_size(len(text) + times * (len(new) - len(old)), "replace")


def _check_join(items: Any, separator: Any = "", *_args: Any, **_kwargs: Any) -> None:
    if isinstance(items, (list, tuple)):
        text = _text_size(items) - 2 - 2 * len(items)  # no brackets, no ", " between items
        _check_size(text + len(str(separator)) * max(len(items) - 1, 0), "join")


def _check_wordwrap(text: Any, width: Any = 79, *_args: Any, **_kwargs: Any) -> None:
    _check_text(text, "wordwrap")
    if isinstance(text, str) and type(width) is int:
        lines = len(text) // max(width, 1)
        if lines > _MAX_WRAPPED_LINES:
            raise RenderLimitError(
                f"wordwrap: {len(text):,} characters at width {width} make about {lines:,} lines"
                f" (at most {_MAX_WRAPPED_LINES:,})"
            )
        _check_size(len(text) + lines, "wordwrap")


def _bounded_lipsum(n: int = 5, html: bool = True, min: int = 20, max: int = 100) -> str:  # Jinja's names
    """Jinja's ``lipsum()``, up to _MAX_LIPSUM_WORDS words: a million paragraphs took a minute."""
    if type(n) is int and type(min) is int and type(max) is int and n * (min if min > max else max) > _MAX_LIPSUM_WORDS:
        raise RenderLimitError(f"lipsum: {n:,} paragraphs of up to {max:,} words (at most {_MAX_LIPSUM_WORDS:,} words)")
    return generate_lorem_ipsum(n, html, min, max)


# -- operators -----------------------------------------------------------------------------------


def _check_multiply(left: Any, right: Any) -> None:
    for sequence, count in ((left, right), (right, left)):
        if isinstance(sequence, _SIZED) and isinstance(count, int):
            # Counted as printed, nesting included: [big_list] * 999999 holds one reference a copy,
            # but comparing or printing it is 999999 times the work of big_list.
            size = len(sequence) if isinstance(sequence, str) else _text_size(sequence)
            if size * count > MAX_OUTPUT:
                raise RenderLimitError(
                    f"'*' would make about {size * count:,} characters' worth (at most {MAX_OUTPUT:,})"
                )
            return
    if isinstance(left, int) and isinstance(right, int):
        _check_bits(left.bit_length() + right.bit_length(), "*")


def _check_power(base: Any, exponent: Any) -> None:
    if isinstance(base, int) and isinstance(exponent, int) and exponent > 0 and abs(base) > 1:
        _check_bits(exponent * math.log2(abs(base)), "**")


def _check_bits(bits: float, operator: str) -> None:
    if bits > MAX_INT_BITS:
        raise RenderLimitError(f"'{operator}' would make a number of about {bits:,.0f} bits (at most {MAX_INT_BITS:,})")


def _check_add(left: Any, right: Any) -> None:
    if isinstance(left, _SIZED) and isinstance(right, _SIZED):
        _check_size(len(left) + len(right), "'+'")


_BINOP_CHECKS: dict[str, Callable[[Any, Any], None]] = {
    "*": _check_multiply,
    "**": _check_power,
    "+": _check_add,
    "%": lambda left, right: _check_format(left, "'%'", _format_args(right)),
}

# str methods a template may call that can make a large string: what to check before the call.
_METHOD_CHECKS: dict[str, Callable[[str, str, tuple[Any, ...], dict[str, Any]], None]] = {
    **dict.fromkeys(("center", "ljust", "rjust", "zfill", "expandtabs"), lambda s, n, a, k: _check_widths(n, a)),
    "format": lambda s, n, a, k: _check_format(s, "format", (*a, *k.values())),
    "format_map": lambda s, n, a, k: _check_format(s, "format_map", _mapping_values(a)),
    "replace": lambda s, n, a, k: _check_replace(s, *a),
    "join": lambda s, n, a, k: _check_join(a[0] if a else (), s),
}


def _widths_of(name: str) -> Callable[..., None]:
    return lambda _value, *args, **kwargs: _check_widths(name, [*args, *kwargs.values()])


def _text_of(name: str) -> Callable[..., None]:
    return lambda value, *_args, **_kwargs: _check_text(value, name)


def _widths_and_text_of(name: str) -> Callable[..., None]:
    widths = _widths_of(name)
    return lambda value, *args, **kwargs: (_check_text(value, name), widths(value, *args, **kwargs))


# Filters that can make a large value from small arguments, or print a container, and the check
# made before each (on the filter's own arguments: the environment or context Jinja passes first
# to some is skipped).
_STRINGIFYING = (
    *("string", "pprint", "tojson", "upper", "lower", "title", "capitalize", "trim", "e", "escape"),
    *("forceescape", "safe", "striptags", "urlize", "urlencode", "truncate", "wordcount", "xmlattr"),
)
_FILTER_CHECKS: dict[str, Callable[..., None]] = {
    **{name: _text_of(name) for name in _STRINGIFYING},
    **{name: _widths_and_text_of(name) for name in ("center", "indent")},
    **{name: _widths_of(name) for name in ("slice", "batch")},
    "format": lambda value, *a, **k: _check_format(value, "format", (*a, *k.values())),
    "replace": lambda value, *a, **k: (_check_text(value, "replace"), _check_replace(value, *a, **k)),
    "join": _check_join,
    "wordwrap": _check_wordwrap,
}
# Filters that loop in Python over their input, or hand it to a C loop that calls back into
# Python: their input is fed through _checked_turns so that the deadline is checked on each item.
_LOOPING = ("select", "reject", "map", "sum", "unique", "sort", "groupby", "max", "min")


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    check = _FILTER_CHECKS.get(name)
    looping = name in _LOOPING
    skip = 1 if getattr(function, "jinja_pass_arg", None) is not None else 0

    @wraps(function)  # keeps Jinja's pass_context / pass_environment mark
    def bounded(*args: Any, **kwargs: Any) -> Any:
        if check is not None and len(args) > skip:
            check(*args[skip:], **kwargs)
        if looping and len(args) > skip:
            args = (*args[:skip], _checked_turns(args[skip]), *args[skip + 1 :])
        return function(*args, **kwargs)

    return bounded


def _checked_turns(iterable: Iterable[Any]) -> Iterator[Any]:
    deadline, clock = _budget.deadline, time.monotonic
    for item in iterable:
        if clock() > deadline:
            _check_time()
        yield item


# -- the environment -----------------------------------------------------------------------------


class _BoundedCode(CodeGenerator):
    """Jinja's code generator, with each ``for`` loop's iterable and each ``~`` checked."""

    def visit_For(self, node: nodes.For, frame: Frame) -> None:
        if not _is_bounded(node.iter):
            node.iter = _call("bounded_loop", node.iter)
        super().visit_For(node, frame)

    def visit_Call(self, node: nodes.Call, frame: Frame, forward_caller: bool = False) -> None:
        if not _is_bounded(node):
            return super().visit_Call(node, frame, forward_caller=forward_caller)
        self.write(f"environment.{node.node.name}(")  # type: ignore[attr-defined]  # a direct call: ours needs no sandbox check
        self.visit(node.args[0], frame)
        self.write(")")
        return None

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        node.nodes = [_call("sized_text", part) for part in node.nodes]  # each part checked before str() of it
        self.write("environment.bounded_concatenation(")
        super().visit_Concat(node, frame)
        self.write(")")


_OURS = frozenset({"bounded_loop", "sized_text"})


def _call(name: str, node: nodes.Expr) -> nodes.Call:
    return nodes.Call(nodes.EnvironmentAttribute(name), [node], [], None, None)


def _is_bounded(node: nodes.Node) -> bool:
    return (
        isinstance(node, nodes.Call) and isinstance(node.node, nodes.EnvironmentAttribute) and node.node.name in _OURS
    )


class Sandbox(SandboxedEnvironment):
    """Jinja's sandbox, bounded (see the module's docstring), deciding once per (type, attribute
    name) whether an attribute is safe: Jinja's decision depends on nothing else, and repeating it
    on every access made a quarter of the rendering time."""

    code_generator_class = _BoundedCode
    intercepted_binops = frozenset(_BINOP_CHECKS)
    _MAX_DECISIONS = 4096  # templates name few attributes; a bound all the same

    def __init__(self, **options: Any) -> None:
        options["finalize"] = _printed(options.get("finalize"))
        super().__init__(**options)
        self._decisions: dict[tuple[type, str], bool] = {}
        for name in (*_FILTER_CHECKS, *_LOOPING):
            self.filters[name] = _bounded_filter(name, self.filters[name])
        self.globals["lipsum"] = _bounded_lipsum

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        key = (type(obj), attr)
        safe = self._decisions.get(key)
        if safe is None:
            safe = super().is_safe_attribute(obj, attr, value)
            if len(self._decisions) < self._MAX_DECISIONS:
                self._decisions[key] = safe
        return safe

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        _check_time()
        method = getattr(__obj, "__wrapped__", __obj)  # str.format comes wrapped by the sandbox
        text = getattr(method, "__self__", None)
        if isinstance(text, str) and (check := _METHOD_CHECKS.get(getattr(method, "__name__", ""))):
            check(text, method.__name__, args, kwargs)
        elif isinstance(text, list | tuple) and getattr(method, "__name__", "") in ("count", "index"):
            _check_text(text, f"list.{method.__name__}")  # compares in C, where no deadline is checked
        return super().call(__context, __obj, *args, **kwargs)

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        _BINOP_CHECKS[operator](left, right)
        return super().call_binop(context, operator, left, right)

    @staticmethod
    def bounded_loop(iterable: Iterable[Any]) -> Iterable[Any]:
        """Checks the deadline as a loop starts, and on each turn of a long one: nested loops
        start their inner loops again and again, so a spin is caught however they nest."""
        _check_time()
        if isinstance(iterable, _SHORT) and len(iterable) <= _SHORT_LOOP:
            return iterable  # not worth a check per turn (most loops: 40 turns cost 2 µs checked)
        return _checked_turns(iterable)

    @staticmethod
    def sized_text(value: Any) -> Any:
        _check_text(value, "'~'")
        return value

    @staticmethod
    def bounded_concatenation(text: str) -> str:
        _check_size(len(text), "'~'")
        return text

    @staticmethod
    def concat(chunks: Iterable[str]) -> str:  # type: ignore[override]  # how Jinja joins what a template outputs
        chunks, parts, size = iter(chunks), [], 0
        while batch := list(islice(chunks, 128)):  # in batches: measuring each piece cost 5% of rendering
            text = "".join(batch)
            size += len(text)
            if size > MAX_OUTPUT:
                raise RenderLimitError(f"the output is more than {MAX_OUTPUT:,} characters")
            parts.append(text)
        return "".join(parts)


def _printed(finalize: Callable[[Any], Any] | None) -> Callable[[Any], Any]:
    """What a template prints, first checked: ``{{ a_list }}`` would make the text of each member."""

    def printed(value: Any, then: Callable[[Any], Any] = finalize or (lambda value: value)) -> Any:
        if value.__class__ in _CONTAINER_TYPES:  # a set lookup: called for each value printed
            _check_size(_text_size(value), "printing a list or dict")
        return then(value)

    return printed
