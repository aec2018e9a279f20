"""The Jinja2 environment templates render in.

Jinja2's ``ImmutableSandboxedEnvironment`` (its ``SandboxedEnvironment`` that also refuses
``list.append``, ``dict.update`` and the like) refuses unsafe attributes — ``__class__``,
``__globals__``, ``mro``, ``gi_frame`` … — with a ``SecurityError`` when one is used. On top:

- ``StrictUndefined``, whose error names the missing variable by its path (``data.order.id``);
- only ``range`` (at most ``Limits.max_range`` items) and ``dict`` as globals: no ``cycler``,
  ``joiner``, ``namespace`` or ``lipsum``;
- the size guards of guards.py on operators, concatenation, block buffers, filters, method
  calls and every ``{{ }}`` output, so no single step builds a value over
  ``Limits.max_value_chars`` (the time budget, budget.py, bounds the number of steps);
- the locale filters of filters.py;
- ``None`` prints as an empty string (``{{ notification.action_url }}`` when there is none).

One environment autoescapes HTML (``email_html``), the other does not (every other part).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from jinja2 import StrictUndefined, TemplateRuntimeError, UndefinedError
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.nodes import Concat
from jinja2.runtime import Context, markup_join, str_join
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import missing

from notifier.templates.filters import LOCALE_FILTERS
from notifier.templates.guards import (
    Limits,
    ValueTooLarge,
    check_binop,
    check_brace_format,
    check_call,
    check_result,
    check_size,
    guarded_filters,
)
from notifier.templates.scope import child_path, current_scope_or_none, path_of


class MissingName(UndefinedError):
    """A variable the render's data does not have; the message is its path (``data.name``)."""


class PathStrictUndefined(StrictUndefined):
    """StrictUndefined whose error names the missing variable by where it was looked up."""

    __slots__ = ()

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = missing,
        name: str | None = None,
        exc: type[TemplateRuntimeError] = UndefinedError,
    ) -> None:
        # A hint is Jinja explaining something else ("No first item, sequence was empty"),
        # and SecurityError an unsafe attribute: only a plain miss is a missing variable.
        if exc is UndefinedError and hint is None:
            exc = MissingName
        super().__init__(hint, obj, name, exc)

    @property
    def _undefined_message(self) -> str:
        if self._undefined_exception is not MissingName:
            return str(super()._undefined_message)
        name = self._undefined_name
        if self._undefined_obj is missing:
            return str(name)
        scope = current_scope_or_none()
        owner = path_of(self._undefined_obj, scope.roots) if scope is not None else None
        return child_path(owner, name) if owner is not None else str(name)


class _GuardedCodeGenerator(CodeGenerator):
    """Jinja's code generator, except that ``a ~ b`` is size-checked before it is joined."""

    @optimizeconst
    def visit_Concat(self, node: Concat, frame: Frame) -> None:
        escape = (
            "context.eval_ctx.autoescape"
            if frame.eval_ctx.volatile
            else repr(bool(frame.eval_ctx.autoescape))
        )
        self.write(f"environment.guarded_join({escape}, (")
        for argument in node.nodes:
            self.visit(argument, frame)
            self.write(", ")
        self.write("))")


class NotifierSandbox(ImmutableSandboxedEnvironment):
    intercepted_binops = frozenset({"+", "*", "%", "**"})
    code_generator_class = _GuardedCodeGenerator

    def __init__(self, *, autoescape: bool, limits: Limits) -> None:
        super().__init__(
            undefined=PathStrictUndefined,
            autoescape=autoescape,
            finalize=self._finalize,
            auto_reload=False,
        )
        self.limits = limits
        self.globals.clear()
        self.globals.update(range=self._range, dict=dict)
        self.filters = {**guarded_filters(limits), **LOCALE_FILTERS}

    def _range(self, *args: int) -> range:
        numbers = range(*args)
        if len(numbers) > self.limits.max_range:
            raise ValueTooLarge(f"range() of more than {self.limits.max_range} items")
        return numbers

    def _finalize(self, value: Any) -> Any:
        if value is None:
            return ""
        if type(value) is not str or len(value) > self.limits.max_value_chars:  # the rare case
            check_size(value, self.limits, "an output")
        return value

    def concat(self, pieces: Iterable[str]) -> str:
        """How generated code joins block buffers (macros, ``{% set %}`` blocks, filter
        blocks): checked as it goes."""
        total, collected = 0, []
        for piece in pieces:
            total += len(piece)
            if total > self.limits.max_value_chars:
                raise ValueTooLarge(
                    f"a block would be over {self.limits.max_value_chars} characters"
                )
            collected.append(piece)
        return "".join(collected)

    def guarded_join(self, autoescape: bool, pieces: tuple[Any, ...]) -> str:
        check_size(pieces, self.limits, "a ~ concatenation")
        return markup_join(pieces) if autoescape else str_join(pieces)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        check_binop(operator, left, right, self.limits)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Any:
        # Jinja hands out a sandboxed str.format/format_map at attribute access; check its
        # widths too.
        formatted = super().wrap_str_format(value)
        if formatted is None:
            return None
        fmt = value.__self__

        def checked(*args: Any, **kwargs: Any) -> str:
            check_brace_format(fmt, (args, kwargs), self.limits)
            return str(formatted(*args, **kwargs))

        return checked

    def call(
        __self,  # Jinja's spelling: keeps "self" free as a keyword argument
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        args = check_call(__obj, args, kwargs, __self.limits)
        result = super().call(__context, __obj, *args, **kwargs)
        return check_result(result, __self.limits, "a call")
