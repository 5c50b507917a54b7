"""The Jinja environment templates run in: Jinja's sandbox, bounded in time and in size.

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
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from functools import wraps
from itertools import islice
from typing import Any

import jinja2
from jinja2 import nodes
from jinja2.compiler import CodeGenerator, Frame
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

RENDER_SECONDS = 1.0  # per template; rendering one takes about a tenth of a millisecond
MAX_OUTPUT = 1_000_000  # characters of one template's output, or of any string or list it makes
MAX_INT_BITS = 10_000  # Python refuses to print integers of more than 4,300 digits anyway

# A width or precision of a million or more, in "%10s" and in "{:>10}" formats.
_HUGE_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\d{7,}|\d*\.\d{7,})")
_HUGE_BRACE = re.compile(r"\{[^{}:]*:[^{}]*\d{7,}[^{}]*\}")
_SIZED = (str, list, tuple)
_SHORT = (str, list, tuple, dict, range)
_SHORT_LOOP = 1000  # turns of a loop over these that need no deadline check of their own


class RenderLimitError(SecurityError):
    """A template went over a bound: too slow, or making too large an output or value."""


class _Budget(threading.local):
    """The deadline of the render running on this thread (none outside :func:`render_within_budget`)."""

    deadline = math.inf
    seconds = 0.0


_budget = _Budget()


def render_within_budget(template: jinja2.Template, context: dict[str, Any]) -> str:
    """``template.render(context)`` within RENDER_SECONDS."""
    _budget.seconds = RENDER_SECONDS
    _budget.deadline = time.monotonic() + RENDER_SECONDS
    try:
        return template.render(context)
    finally:
        _budget.deadline = math.inf


def _check_time() -> None:
    if time.monotonic() > _budget.deadline:
        raise RenderLimitError(f"rendering took more than {_budget.seconds:g} s: is a loop too large?")


def _check_size(size: int, what: str) -> None:
    if size > MAX_OUTPUT:
        raise RenderLimitError(f"{what} would make more than {MAX_OUTPUT:,} characters")


def _check_format(text: Any, what: str) -> None:
    if isinstance(text, str) and (_HUGE_PERCENT.search(text) or _HUGE_BRACE.search(text)):
        raise RenderLimitError(f"{what}: a width or precision of a million or more")


def _check_widths(name: str, args: Iterable[Any]) -> None:
    for value in args:
        if type(value) is int and value > MAX_OUTPUT:
            raise RenderLimitError(f"{name}: a width or count of {value:,} (at most {MAX_OUTPUT:,})")


def _check_replace(text: Any, old: Any, new: Any, count: Any = -1) -> None:
    if isinstance(text, str) and isinstance(old, str) and isinstance(new, str) and len(new) > len(old):
        times = text.count(old) if old else len(text) + 1
        times = times if not isinstance(count, int) or count < 0 else min(times, count)
        _check_size(len(text) + times * (len(new) - len(old)), "replace")


def _check_join(items: Any, separator: Any = "") -> None:
    if isinstance(items, (list, tuple)):
        text = sum(len(item) for item in items if isinstance(item, str))
        _check_size(text + len(str(separator)) * max(len(items) - 1, 0), "join")


# -- operators -----------------------------------------------------------------------------------


def _check_multiply(left: Any, right: Any) -> None:
    for sequence, count in ((left, right), (right, left)):
        if isinstance(sequence, _SIZED) and isinstance(count, int):
            if len(sequence) * count > MAX_OUTPUT:
                raise RenderLimitError(
                    f"'*' would make a string or list of {len(sequence) * count:,} items (at most {MAX_OUTPUT:,})"
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
    "%": lambda left, _right: _check_format(left, "'%'"),
}

# str methods a template may call that can make a large string: what to check before the call.
_METHOD_CHECKS: dict[str, Callable[[str, str, tuple[Any, ...]], None]] = {
    **dict.fromkeys(("center", "ljust", "rjust", "zfill", "expandtabs"), lambda s, n, a: _check_widths(n, a)),
    "format": lambda s, n, a: _check_format(s, "format"),
    "format_map": lambda s, n, a: _check_format(s, "format_map"),
    "replace": lambda s, n, a: _check_replace(s, *a),
    "join": lambda s, n, a: _check_join(a[0] if a else (), s),
}


def _widths_of(name: str) -> Callable[..., None]:
    return lambda _value, *args, **kwargs: _check_widths(name, [*args, *kwargs.values()])


# Filters that can make a large value from small arguments, and the check made before each.
# (Filters marked pass_eval_context get the evaluation context first; the checks skip it.)
_FILTER_CHECKS: dict[str, Callable[..., None]] = {
    **{name: _widths_of(name) for name in ("center", "indent", "slice", "batch")},
    "format": lambda value, *a, **k: _check_format(value, "format"),
    "replace": lambda _ctx, *a, **k: _check_replace(*a, **k),
    "join": lambda _ctx, value, d="", *a, **k: _check_join(value, d),
}


def _bounded_filter(name: str, function: Callable[..., Any]) -> Callable[..., Any]:
    check = _FILTER_CHECKS[name]

    @wraps(function)  # keeps Jinja's pass_eval_context mark
    def bounded(*args: Any, **kwargs: Any) -> Any:
        check(*args, **kwargs)
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
            node.iter = nodes.Call(nodes.EnvironmentAttribute("bounded_loop"), [node.iter], [], None, None)
        super().visit_For(node, frame)

    def visit_Call(self, node: nodes.Call, frame: Frame, forward_caller: bool = False) -> None:
        if not _is_bounded(node):
            return super().visit_Call(node, frame, forward_caller=forward_caller)
        self.write("environment.bounded_loop(")  # a direct call: ours needs no sandbox check
        self.visit(node.args[0], frame)
        self.write(")")
        return None

    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        self.write("environment.bounded_concatenation(")
        super().visit_Concat(node, frame)
        self.write(")")


def _is_bounded(node: nodes.Node) -> bool:
    return isinstance(node, nodes.Call) and node.node == nodes.EnvironmentAttribute("bounded_loop")


class Sandbox(SandboxedEnvironment):
    """Jinja's sandbox, bounded (see the module's docstring), deciding once per (type, attribute
    name) whether an attribute is safe: Jinja's decision depends on nothing else, and repeating it
    on every access made a quarter of the rendering time."""

    code_generator_class = _BoundedCode
    intercepted_binops = frozenset(_BINOP_CHECKS)
    _MAX_DECISIONS = 4096  # templates name few attributes; a bound all the same

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self._decisions: dict[tuple[type, str], bool] = {}
        for name in _FILTER_CHECKS:
            self.filters[name] = _bounded_filter(name, self.filters[name])

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
            check(text, method.__name__, args)
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
