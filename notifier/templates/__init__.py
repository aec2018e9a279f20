"""Templates and localisation: producers send a template key and data instead of texts.

The public surface, for the API, the enqueue path and the triggers:

- ``TemplateRenderer`` (renderer.py): ``render(RenderRequest) -> RenderedTemplate`` in any
  thread, ``render_async``/``render_many`` on its own thread pool, ``validate`` for a PUT;
- ``RenderRequest``, ``RecipientInfo``, ``NotificationInfo``: what a render needs, and
  ``RenderedTemplate``/``RenderedParts``: what it gives (render_types.py);
- ``TemplateDefinition`` (definition.py) and the built-ins (builtins.py);
- the errors (errors.py), every one a ``TemplateError`` that the API answers with 422.

How the sandbox is bounded: sandbox.py (what a template may do), guards.py (how large a value
may grow), budget.py (how long a render may run).
"""

from __future__ import annotations

from notifier.templates.builtins import builtin_template, builtin_templates
from notifier.templates.definition import PARTS, TemplateDefinition
from notifier.templates.errors import (
    InvalidLocale,
    InvalidTemplate,
    MissingVariable,
    OutputTooLarge,
    RenderFailed,
    RenderLimitExceeded,
    TemplateError,
    TemplateSyntaxInvalid,
    UnknownTemplate,
    UnsafeTemplate,
)
from notifier.templates.guards import Limits
from notifier.templates.render_types import (
    NotificationInfo,
    RecipientInfo,
    RenderedParts,
    RenderedTemplate,
    RenderRequest,
)
from notifier.templates.renderer import TemplateRenderer

__all__ = [
    "PARTS",
    "InvalidLocale",
    "InvalidTemplate",
    "Limits",
    "MissingVariable",
    "NotificationInfo",
    "OutputTooLarge",
    "RecipientInfo",
    "RenderFailed",
    "RenderLimitExceeded",
    "RenderRequest",
    "RenderedParts",
    "RenderedTemplate",
    "TemplateDefinition",
    "TemplateError",
    "TemplateRenderer",
    "TemplateSyntaxInvalid",
    "UnknownTemplate",
    "UnsafeTemplate",
    "builtin_template",
    "builtin_templates",
]
