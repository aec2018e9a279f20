"""Size guards: every operation in a template that can build a value much larger than its
inputs checks, before it runs, that the result stays within ``Limits.max_value_chars``.

The time budget (budget.py) interrupts Python code between steps, but one step in C can
allocate gigabytes (``'x' * 10**9``, ``'%999999999s' % x``, ``s.replace('', t)``). So the
sandbox routes each such step through a check here: operators (``+ * % **``), concatenation
(``~`` and block buffers), the filters that take a width or a repeated string, and the str
methods a template may call. Sizes are estimated within a small constant factor of the real
``str()`` length (``measure``), which is all a bound needs.
"""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import filters as jinja_filters
from jinja2.exceptions import SecurityError
from jinja2.nodes import EvalContext
from jinja2.utils import pass_environment, pass_eval_context

from notifier.templates.errors import RenderLimitExceeded


@dataclass(frozen=True, slots=True)
class Limits:
    max_value_chars: int = 262_144  # the largest part (email_html): a longer value is useless
    max_range: int = 10_000  # items of range(); loops over data are bounded by its 64 KiB
    max_int_bits: int = 16_384  # ~4,900 decimal digits
    max_argument: int = 1_000  # a width, count or repeated string given to a filter or method
    # One render (all its parts): budget.py. A million steps take about 0.2 s; the largest
    # built-in (a 50-event digest, every part) takes under 10,000.
    max_steps: int = 1_000_000
    seconds: float = 1.0
    batch_seconds: float = 10.0  # one render_many call


class ValueTooLarge(RenderLimitExceeded):
    """The template builds a value larger than the sandbox allows."""


def measure(value: object, limit: int) -> int:
    """Roughly ``len(str(value))``: exact for strings, an estimate for containers and numbers.
    Walks at most ``limit`` items and returns as soon as the total passes ``limit``, so values
    that share items (``[a, a, a]``) cost no more to measure than to refuse."""
    total = 0
    pending: list[object] = [value]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, int):
            total += item.bit_length() // 3 + 2
        elif isinstance(item, list | tuple | set | frozenset):
            total += 2 + 2 * len(item)
            if total <= limit:
                pending.extend(item)
        elif isinstance(item, Mapping):
            total += 2 + 4 * len(item)
            if total <= limit:
                pending.extend(item.keys())
                pending.extend(item.values())
        else:
            total += 32  # floats, None, booleans, macros, undefined: short representations
        if total > limit:
            return total
    return total


def check_size(value: object, limits: Limits, what: str = "a value") -> None:
    size = measure(value, limits.max_value_chars)
    if size > limits.max_value_chars:
        raise ValueTooLarge(f"{what} would be over {limits.max_value_chars} characters")


def check_result(value: Any, limits: Limits, what: str) -> Any:
    if isinstance(value, str | list | tuple) and len(value) > limits.max_value_chars:
        raise ValueTooLarge(f"{what} built a value over {limits.max_value_chars} characters")
    return value


def check_argument(value: object, limits: Limits, what: str) -> None:
    """A width or count (int), or a string that a filter repeats, bounded by max_argument."""
    if isinstance(value, str):
        if len(value) > limits.max_argument:
            raise ValueTooLarge(f"{what} is over {limits.max_argument} characters")
    elif isinstance(value, int) and abs(value) > limits.max_argument:
        raise ValueTooLarge(f"{what} is over {limits.max_argument}")


def check_int_bits(bits: int, limits: Limits) -> None:
    if bits > limits.max_int_bits:
        raise ValueTooLarge(f"a number of more than {limits.max_int_bits} bits")


# %[(name)][flags][width][.precision]type
_PERCENT_FIELD = re.compile(r"%(?:\([^)]*\))?[#0\- +]*(\*|\d+)?(?:\.(\*|\d+))?[a-zA-Z%]")
_DIGITS = re.compile(r"\d+")


def check_percent_format(fmt: str, args: object, limits: Limits) -> None:
    """``fmt % args``: the widths and precisions, summed, plus the arguments, must fit."""
    total = len(fmt) + measure(args, limits.max_value_chars)
    for width, precision in _PERCENT_FIELD.findall(fmt):
        if "*" in (width, precision):
            raise ValueTooLarge("a * width or precision in a % format is not allowed")
        total += int(width or 0) + int(precision or 0)
        if total > limits.max_value_chars:
            raise ValueTooLarge(f"the % format would be over {limits.max_value_chars} characters")
    if total > limits.max_value_chars:
        raise ValueTooLarge(f"the % format would be over {limits.max_value_chars} characters")


def check_brace_format(fmt: str, args: object, limits: Limits) -> None:
    """``fmt.format(...)``: no nested fields in a spec (a width from an argument), and the
    widths, summed, plus the arguments, must fit."""
    total = len(fmt) + measure(args, limits.max_value_chars)
    try:
        fields = list(string.Formatter().parse(fmt))
    except ValueError:
        return  # malformed: str.format raises its own error
    for _literal, _name, spec, _conversion in fields:
        if not spec:
            continue
        if "{" in spec:
            raise ValueTooLarge("a format spec taken from an argument is not allowed")
        total += sum(int(digits) for digits in _DIGITS.findall(spec))
    if total > limits.max_value_chars:
        raise ValueTooLarge(f"the format would be over {limits.max_value_chars} characters")


def check_replace(s: str, old: str, new: str, count: int | None, limits: Limits) -> None:
    found = len(s) + 1 if old == "" else s.count(old)
    if count is not None and count >= 0:
        found = min(found, count)
    if len(s) + found * len(new) > limits.max_value_chars:
        raise ValueTooLarge(f"replace() would build over {limits.max_value_chars} characters")


def check_join(items: list[Any], separator: str, limits: Limits) -> None:
    if measure(items, limits.max_value_chars) + len(separator) * len(items) > (
        limits.max_value_chars
    ):
        raise ValueTooLarge(f"join() would build over {limits.max_value_chars} characters")


def check_binop(operator: str, left: Any, right: Any, limits: Limits) -> None:
    """The intercepted operators: ``+``, ``*``, ``%`` and ``**``."""
    ints = _is_int(left) and _is_int(right)
    if operator == "**":
        if ints and right > 0 and abs(left) > 1:
            check_int_bits(abs(left).bit_length() * right, limits)
    elif operator == "*":
        if ints:
            check_int_bits(abs(left).bit_length() + abs(right).bit_length(), limits)
        elif _is_int(right) or _is_int(left):
            sequence, times = (left, right) if _is_int(right) else (right, left)
            if isinstance(sequence, str | list | tuple) and times > 0:
                size = measure(sequence, limits.max_value_chars)
                if size * times > limits.max_value_chars:
                    raise ValueTooLarge(
                        f"repeating a value {times} times: over {limits.max_value_chars} characters"
                    )
    elif operator == "+":
        if isinstance(left, str | list | tuple) and isinstance(right, str | list | tuple):
            check_size((left, right), limits, "a concatenation")
    elif operator == "%" and isinstance(left, str):
        check_percent_format(left, right, limits)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# str methods a template may call, beyond these: center/ljust/rjust/zfill, replace, join,
# format and format_map, checked. Not: expandtabs, encode, translate, maketrans.
_LINEAR_STR_METHODS = frozenset(
    (
        *("capitalize", "casefold", "count", "endswith", "find", "index", "lower", "lstrip"),
        *("isalnum", "isalpha", "isascii", "isdecimal", "isdigit", "isidentifier", "islower"),
        *("isnumeric", "isprintable", "isspace", "istitle", "isupper", "partition", "rfind"),
        *("removeprefix", "removesuffix", "rindex", "rpartition", "rsplit", "rstrip", "split"),
        *("splitlines", "startswith", "strip", "swapcase", "title", "upper"),
        *("striptags", "unescape"),  # Markup's
    )
)
_METHODS_BY_TYPE: dict[type, frozenset[str]] = {
    dict: frozenset({"get", "items", "keys", "values", "copy"}),
    list: frozenset({"index", "count", "copy"}),
    tuple: frozenset({"index", "count"}),
    int: frozenset({"bit_length", "conjugate"}),
    float: frozenset({"is_integer", "conjugate", "hex"}),
}


def check_call(
    function: Any, args: tuple[Any, ...], kwargs: dict[str, Any], limits: Limits
) -> tuple[Any, ...]:
    """A method call on a plain value: only the ones that cannot build something huge, and the
    padding, replacing, joining and formatting ones after a size check. Returns the arguments
    to call with (``str.join``'s iterable, listed to be measured)."""
    owner = getattr(function, "__self__", None)
    name = getattr(function, "__name__", "?")
    if isinstance(owner, str):
        return _check_str_call(owner, name, args, kwargs, limits)
    for kind, allowed in _METHODS_BY_TYPE.items():
        if type(owner) is kind and name not in allowed:
            raise SecurityError(f"{kind.__name__}.{name}() is not available in templates")
    if isinstance(owner, bytes | bytearray):
        raise SecurityError("bytes methods are not available in templates")
    return args


def _check_str_call(
    owner: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any], limits: Limits
) -> tuple[Any, ...]:
    if name in _LINEAR_STR_METHODS:
        return args
    if name in ("center", "ljust", "rjust", "zfill"):
        width = args[0] if args else kwargs.get("width", 0)
        if _is_int(width) and width > limits.max_value_chars:
            raise ValueTooLarge(f"str.{name}() width over {limits.max_value_chars}")
    elif name == "replace":
        old, new = (*args, None, None)[:2]
        count = args[2] if len(args) > 2 else kwargs.get("count")
        if isinstance(old, str) and isinstance(new, str):
            check_replace(owner, old, new, count if _is_int(count) else None, limits)
    elif name == "join" and len(args) == 1:
        items = list(args[0])
        check_join(items, owner, limits)
        return (items,)
    elif name in ("format", "format_map"):
        check_brace_format(owner, (args, kwargs), limits)
    else:
        raise SecurityError(f"str.{name}() is not available in templates")
    return args


def _limits(environment: Any) -> Limits:
    limits: Limits = environment.limits  # the sandbox's (sandbox.py)
    return limits


# Jinja's filters that take a width, a count or a repeated string, each checked before it runs.
# They read the limits from the environment Jinja passes them (``pass_environment`` or, for
# the ones that take the evaluation context, ``eval_ctx.environment``).
@pass_environment
def _center(environment: Any, value: str, width: int = 80) -> str:
    limits = _limits(environment)
    if _is_int(width) and width > limits.max_value_chars:
        raise ValueTooLarge(f"center() width over {limits.max_value_chars}")
    return jinja_filters.do_center(value, width)


@pass_environment
def _indent(
    environment: Any, s: str, width: int | str = 4, first: bool = False, blank: bool = False
) -> str:
    limits = _limits(environment)
    check_argument(width, limits, "the indent")
    step = len(width) if isinstance(width, str) else max(int(width), 0)
    if len(str(s)) + (str(s).count("\n") + 1) * step > limits.max_value_chars:
        raise ValueTooLarge(f"indent() would build over {limits.max_value_chars} characters")
    return jinja_filters.do_indent(s, width, first, blank)


@pass_environment
def _wordwrap(
    environment: Any,
    s: str,
    width: int = 79,
    break_long_words: bool = True,
    wrapstring: str | None = None,
    break_on_hyphens: bool = True,
) -> str:
    limits = _limits(environment)
    joint = wrapstring if wrapstring is not None else environment.newline_sequence
    check_argument(joint, limits, "the wrapstring")
    if len(s) + (len(s) // max(int(width), 1) + 1) * len(joint) > limits.max_value_chars:
        raise ValueTooLarge(f"wordwrap() would build over {limits.max_value_chars} characters")
    return jinja_filters.do_wordwrap(
        environment, s, width, break_long_words, wrapstring, break_on_hyphens
    )


@pass_eval_context
def _replace(eval_ctx: EvalContext, s: str, old: str, new: str, count: int | None = None) -> str:
    check_replace(str(s), str(old), str(new), count, _limits(eval_ctx.environment))
    return jinja_filters.do_replace(eval_ctx, s, old, new, count)


@pass_eval_context
def _join(eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    items = list(value)
    check_join(items, str(d), _limits(eval_ctx.environment))
    return str(jinja_filters.do_join(eval_ctx, items, d, attribute))


@pass_environment
def _format(environment: Any, value: str, *args: Any, **kwargs: Any) -> str:
    check_percent_format(str(value), (args, kwargs), _limits(environment))
    return jinja_filters.do_format(value, *args, **kwargs)


@pass_eval_context
def _urlize(eval_ctx: EvalContext, value: str, *args: Any, **kwargs: Any) -> str:
    # target=, rel= and the like are written into every link found.
    for argument in (*args, *kwargs.values()):
        if isinstance(argument, str):
            check_argument(argument, _limits(eval_ctx.environment), "an urlize() argument")
    return jinja_filters.do_urlize(eval_ctx, value, *args, **kwargs)


@pass_environment
def _batch(environment: Any, value: Iterable[Any], linecount: int, fill_with: Any = None) -> Any:
    check_argument(linecount, _limits(environment), "the batch size")
    return jinja_filters.do_batch(value, linecount, fill_with)


@pass_environment
def _slice(environment: Any, value: Any, slices: int, fill_with: Any = None) -> Any:
    check_argument(slices, _limits(environment), "the number of slices")
    return jinja_filters.do_slice(value, slices, fill_with)


@pass_environment
def _sum(environment: Any, iterable: Any, attribute: Any = None, start: Any = 0) -> Any:
    # Adding up lists or strings is quadratic, in C: numbers only.
    if not isinstance(start, int | float):
        raise SecurityError("sum() adds numbers only")
    return jinja_filters.sync_do_sum(environment, iterable, attribute, start)


@pass_eval_context
def _tojson(eval_ctx: EvalContext, value: Any, indent: int | None = None) -> Any:
    if indent is not None and (not _is_int(indent) or not 0 <= indent <= 16):
        raise ValueTooLarge("tojson() indent is at most 16")
    return jinja_filters.do_tojson(eval_ctx, value, indent)


_CHECKED_FILTERS: dict[str, Callable[..., Any]] = {
    "center": _center,
    "indent": _indent,
    "wordwrap": _wordwrap,
    "replace": _replace,
    "join": _join,
    "format": _format,
    "urlize": _urlize,
    "batch": _batch,
    "slice": _slice,
    "sum": _sum,
    "tojson": _tojson,
}


def guarded_filters(limits: Limits) -> dict[str, Callable[..., Any]]:
    """Jinja's built-in filters that a template may use: the ones above checked before they
    run, every one's result checked after (a ``len``). Left out: ``random`` (a resend must be
    byte-identical)."""
    return {
        name: _result_checked(name, _CHECKED_FILTERS.get(name, function), limits)
        for name, function in jinja_filters.FILTERS.items()
        if name != "random"
    }


def _result_checked(name: str, function: Callable[..., Any], limits: Limits) -> Callable[..., Any]:
    # wraps() also copies ``jinja_pass_arg``, from which Jinja reads whether to pass the
    # context, the evaluation context or the environment first.
    @functools.wraps(function)
    def filtered(*args: Any, **kwargs: Any) -> Any:
        result = function(*args, **kwargs)
        if isinstance(result, str | list | tuple) and len(result) > limits.max_value_chars:
            raise ValueTooLarge(f"the {name} filter built a value over {limits.max_value_chars}")
        return result

    return filtered
