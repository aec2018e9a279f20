"""Enqueue by template: ``template`` + ``data`` (+ ``locale``) rendered into the texts a
notification stores, before anything is written (docs/architecture.md, "Templates").

A request (or a whole batch) costs one query for its templates and one for its recipients
(their locale and time zone), then one hop to the renderer's thread pool for all its renders.
Any render that fails refuses the whole request with 422, naming the variable, part and
locale; nothing is written. What a render gives:

- ``title`` and ``message``: the notification's own, as if the producer had sent them;
- the channel parts the template has (``email_subject``, ``email_html``, ``sms``,
  ``push_title``, ``push_body``), stored in ``rendered_parts`` so that every attempt, retries
  included, sends the same bytes;
- ``metadata.template = {"key", "version", "locale"}`` (the resolved locale), in the
  producer's metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from notifier.api.context import ServiceContext
from notifier.api.errors import Unprocessable
from notifier.schemas.notification import NotificationCreate
from notifier.storage.recipients import get_recipients
from notifier.storage.templates import find_templates, require_template
from notifier.templates import (
    NotificationInfo,
    RecipientInfo,
    RenderedTemplate,
    RenderRequest,
    TemplateError,
)

# The parts a channel reads instead of title and message (notifier/channels/*).
CHANNEL_PARTS = ("email_subject", "email_html", "sms", "push_title", "push_body")


async def render_templated(
    context: ServiceContext, payloads: Sequence[NotificationCreate], *, batch: bool
) -> tuple[list[NotificationCreate], list[dict[str, str] | None] | None]:
    """``payloads`` with every templated one rendered, and the channel parts per payload (None
    when none of them uses a template: the plain path does no I/O here)."""
    indexes = [index for index, payload in enumerate(payloads) if payload.template is not None]
    if not indexes:
        return list(payloads), None
    async with context.sessions() as session:
        templates = await find_templates(session, {_key(payloads[i]) for i in indexes})
        recipients = await get_recipients(session, {payloads[i].user_id for i in indexes})
    requests: list[RenderRequest] = []
    for index in indexes:
        payload = payloads[index]
        try:
            template = require_template(templates, _key(payload))
        except TemplateError as exc:
            raise _refused(exc, index if batch else None, "template") from None
        profile = recipients.get(payload.user_id)
        requests.append(
            RenderRequest(
                template=template,
                data=payload.data or {},
                locale=payload.locale,
                recipient=RecipientInfo(
                    id=payload.user_id,
                    locale=profile.locale if profile else None,
                    timezone=profile.timezone if profile else None,
                ),
                notification=NotificationInfo(
                    notification_type=payload.notification_type.value,
                    priority=payload.priority.value,
                    action_url=payload.action_url,
                ),
            )
        )
    results = await context.renderer.render_many(requests)
    rendered = list(payloads)
    parts: list[dict[str, str] | None] = [None] * len(payloads)
    for index, result in zip(indexes, results, strict=True):
        if isinstance(result, TemplateError):
            raise _refused(result, index if batch else None, "data")
        rendered[index], parts[index] = _apply(payloads[index], result)
    return rendered, parts


def _apply(
    payload: NotificationCreate, result: RenderedTemplate
) -> tuple[NotificationCreate, dict[str, str]]:
    texts = result.parts
    metadata: dict[str, Any] = {
        **payload.metadata,
        "template": {"key": result.key, "version": result.version, "locale": result.locale},
    }
    # model_copy skips validation: the rendered texts were held to the same limits (title 200
    # characters on one line, message 10,000) by the renderer (templates/definition.py).
    copy = payload.model_copy(
        update={"title": texts.title, "message": texts.message, "metadata": metadata}
    )
    channel_parts = {
        name: value for name in CHANNEL_PARTS if (value := getattr(texts, name)) is not None
    }
    return copy, channel_parts


def _key(payload: NotificationCreate) -> str:
    if payload.template is None:
        raise ValueError("not a templated notification")
    return payload.template


def _refused(exc: TemplateError, index: int | None, field: str) -> Unprocessable:
    loc: list[str | int] = ["body"] if index is None else ["body", "notifications", index]
    details = {**exc.details, "loc": [*loc, field]}
    where = "" if index is None else f"notifications[{index}]: "
    return Unprocessable(f"{where}{exc}", details=details)
