"""What a PUT refuses before anything is stored: a part that does not parse or compile (with
its line), and what the sandbox would refuse at render time but can be seen in the source —
unsafe attribute names, names that are not in scope (``cycler``, ``joiner``, ``namespace``,
``lipsum``, or a typo), ``{% include %}``/``{% import %}``/``{% extends %}``, a ``range`` over
the limit, a literal part longer than its output limit.

What only data can reveal (a missing variable, a value too large, a runaway loop) is refused
when a render meets it (renderer.py).
"""

from __future__ import annotations

from typing import Any

from jinja2 import TemplateSyntaxError, meta, nodes
from jinja2.sandbox import (
    UNSAFE_ASYNC_GENERATOR_ATTRIBUTES,
    UNSAFE_COROUTINE_ATTRIBUTES,
    UNSAFE_GENERATOR_ATTRIBUTES,
)

from notifier.templates.definition import OUTPUT_LIMITS
from notifier.templates.errors import InvalidTemplate, TemplateSyntaxInvalid, UnsafeTemplate
from notifier.templates.guards import Limits
from notifier.templates.sandbox import NotifierSandbox

NAMES_IN_SCOPE = ("data", "user", "notification", "task")
_REMOVED_GLOBALS = frozenset({"cycler", "joiner", "namespace", "lipsum"})
_UNSAFE_ATTRIBUTES = frozenset(
    {
        "mro",
        "func_globals",
        "func_code",
        "f_globals",
        "f_locals",
        "f_builtins",
        "f_code",
        "tb_frame",
        "im_func",
        "im_self",
        *UNSAFE_GENERATOR_ATTRIBUTES,
        *UNSAFE_COROUTINE_ATTRIBUTES,
        *UNSAFE_ASYNC_GENERATOR_ATTRIBUTES,
    }
)


def check_part(environment: NotifierSandbox, source: str, *, part: str) -> None:
    """Parse, inspect and compile one part's source; raises TemplateSyntaxInvalid or
    UnsafeTemplate (the caller adds the key and locale)."""
    try:
        tree = environment.parse(source)
        _check_tree(tree, environment.limits, part)
        _check_literal_length(tree, part)
        environment.compile(tree)
    except TemplateSyntaxError as exc:  # also an unknown filter or test (compile, meta)
        raise _syntax_error(exc, part) from None


def _syntax_error(exc: TemplateSyntaxError, part: str) -> TemplateSyntaxInvalid:
    return TemplateSyntaxInvalid(f"line {exc.lineno}: {exc.message}", part=part, line=exc.lineno)


def _unsafe(message: str, node: nodes.Node, part: str) -> UnsafeTemplate:
    return UnsafeTemplate(f"line {node.lineno}: {message}", part=part, line=node.lineno)


def _check_tree(tree: nodes.Template, limits: Limits, part: str) -> None:
    for statement in tree.find_all((nodes.Extends, nodes.Include, nodes.Import, nodes.FromImport)):
        raise _unsafe("templates cannot extend, include or import others", statement, part)
    for node in tree.find_all((nodes.Getattr, nodes.Getitem, nodes.Filter)):
        name = _attribute_name(node)
        if name is not None and (name.startswith("_") or name in _UNSAFE_ATTRIBUTES):
            raise _unsafe(f"access to attribute {name!r} is not allowed", node, part)
    for call in tree.find_all(nodes.Call):
        _check_range(call, limits, part)
    unknown = meta.find_undeclared_variables(tree) - set(NAMES_IN_SCOPE)
    if unknown:
        name = sorted(unknown)[0]
        where = next(n for n in tree.find_all(nodes.Name) if n.name == name)
        if name in _REMOVED_GLOBALS:
            raise _unsafe(f"{name} is not available in templates", where, part)
        raise _unsafe(
            f"unknown name {name!r}: templates see {', '.join(NAMES_IN_SCOPE)}", where, part
        )


def _attribute_name(node: nodes.Node) -> str | None:
    """The attribute a node reads, when the source spells it: ``x.name``, ``x['name']``,
    ``x|attr('name')``."""
    if isinstance(node, nodes.Getattr):
        return str(node.attr)
    if isinstance(node, nodes.Getitem) and isinstance(node.arg, nodes.Const):
        return node.arg.value if isinstance(node.arg.value, str) else None
    if isinstance(node, nodes.Filter) and node.name == "attr" and node.args:
        first = node.args[0]
        if isinstance(first, nodes.Const) and isinstance(first.value, str):
            return first.value
    return None


def _check_range(call: nodes.Call, limits: Limits, part: str) -> None:
    if not (isinstance(call.node, nodes.Name) and call.node.name == "range"):
        return
    arguments = [_constant_int(argument, limits) for argument in call.args]
    known = [argument for argument in arguments if argument is not None]
    if call.args and len(known) == len(arguments) and not call.kwargs:
        try:
            size = len(range(*known))
        except (TypeError, ValueError):
            return  # the render reports it
        if size > limits.max_range:
            raise _unsafe(f"range() of more than {limits.max_range} items", call, part)


def _constant_int(node: nodes.Node, limits: Limits) -> int | None:
    """The value of a constant integer expression (``10**9``, ``-1``), or None if it is not
    one or would be too large to compute."""
    if isinstance(node, nodes.Const):
        value: Any = node.value
        return value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(node, nodes.Neg):
        inner = _constant_int(node.node, limits)
        return -inner if inner is not None else None
    if isinstance(node, nodes.Add | nodes.Sub | nodes.Mul | nodes.Pow):
        left, right = _constant_int(node.left, limits), _constant_int(node.right, limits)
        if left is None or right is None:
            return None
        if isinstance(node, nodes.Pow):
            if right < 0 or abs(left).bit_length() * right > limits.max_int_bits:
                return None  # the render refuses a number that large
            return int(left**right)
        if isinstance(node, nodes.Add):
            return left + right
        if isinstance(node, nodes.Sub):
            return left - right
        return left * right
    return None


def _check_literal_length(tree: nodes.Template, part: str) -> None:
    """A part with no template code at all renders as itself: refuse it now if it is longer
    than the part's output limit, rather than at every render."""
    body = tree.body
    if len(body) != 1 or not isinstance(body[0], nodes.Output):
        return
    pieces = body[0].nodes
    if all(isinstance(piece, nodes.TemplateData) for piece in pieces):
        text = "".join(p.data for p in pieces if isinstance(p, nodes.TemplateData))
        size = len(text.encode()) if part == "email_html" else len(text.strip())
        if size > OUTPUT_LIMITS[part]:
            raise InvalidTemplate(
                f"{size} characters: over the limit of {OUTPUT_LIMITS[part]} for {part}",
                part=part,
                limit=OUTPUT_LIMITS[part],
            )
