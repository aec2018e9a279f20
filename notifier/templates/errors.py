"""What can go wrong with a template, as typed errors. The API answers every one with 422.

    TemplateError                       (base; ``details`` says where: key, locale, part, ...)
    ├── UnknownTemplate                 no stored or built-in template has this key
    ├── InvalidLocale                   a requested locale that is not a BCP 47 tag Babel knows
    ├── InvalidTemplate                 refused at PUT: a part is not a template we can store
    │   └── TemplateSyntaxInvalid       Jinja syntax error (``details.line``)
    ├── UnsafeTemplate                  a sandbox violation: refused at PUT where it can be seen
    │                                   statically, else at render (Jinja's SecurityError)
    ├── MissingVariable                 StrictUndefined: the data lacks ``details.variable``
    ├── RenderLimitExceeded             out of time or steps, a value or recursion too large
    │   └── OutputTooLarge              a rendered part over its limit (``details.limit``)
    └── RenderFailed                    any other error a template raised while rendering

Each docstring is the error's default message.
"""

from __future__ import annotations

from typing import Any


class TemplateError(Exception):
    """The template cannot be stored or rendered as asked."""

    reason = "template_error"

    def __init__(
        self,
        message: str | None = None,
        *,
        key: str | None = None,
        locale: str | None = None,
        part: str | None = None,
        **details: Any,
    ) -> None:
        self.message = message or (self.__doc__ or self.reason).strip()
        super().__init__(self.message)
        self.key = key
        self.locale = locale
        self.part = part
        self.extra = details

    def located(
        self, *, key: str | None = None, locale: str | None = None, part: str | None = None
    ) -> TemplateError:
        """Fill in where the error happened, keeping what the raiser already knew."""
        self.key = self.key or key
        self.locale = self.locale or locale
        self.part = self.part or part
        return self

    @property
    def details(self) -> dict[str, Any]:
        where = {"key": self.key, "locale": self.locale, "part": self.part}
        found = {name: value for name, value in where.items() if value is not None}
        return {"reason": self.reason, **found, **self.extra}

    def __str__(self) -> str:
        where = ".".join(p for p in (self.key, self.locale, self.part) if p)
        return f"{where}: {self.message}" if where else self.message


class UnknownTemplate(TemplateError):
    """No stored or built-in template has this key."""

    reason = "unknown_template"


class InvalidLocale(TemplateError):
    """Not a BCP 47 language tag that Babel knows (e.g. en, fr-BE, zh-CN)."""

    reason = "invalid_locale"


class InvalidTemplate(TemplateError):
    """This template cannot be stored."""

    reason = "invalid_template"


class TemplateSyntaxInvalid(InvalidTemplate):
    """The template has a syntax error."""

    reason = "syntax_error"


class UnsafeTemplate(TemplateError):
    """The template does something the sandbox does not allow."""

    reason = "unsafe_template"


class MissingVariable(TemplateError):
    """The template uses a variable the data does not have."""

    reason = "missing_variable"

    def __init__(self, variable: str, **where: Any) -> None:
        super().__init__(f"{variable} is undefined: the data has no such value", **where)
        self.extra["variable"] = variable
        self.variable = variable


class RenderLimitExceeded(TemplateError):
    """The template exceeded a rendering limit."""

    reason = "render_limit"


class OutputTooLarge(RenderLimitExceeded):
    """A rendered part is longer than its limit."""

    reason = "output_too_large"


class RenderFailed(TemplateError):
    """The template raised an error while rendering."""

    reason = "render_failed"
