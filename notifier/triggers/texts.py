"""What a triggered notification says: the built-in templates (``task.completed``,
``task.failed``, ``task.log.error``, ``task.log.critical``; notifier/templates/builtin/), or a
stored template of the same key that overrides one, rendered in the task owner's locale and
time zone.

rules.py decides who is notified and how, with plain English texts and the template key in
``metadata.template.key``; ``render_triggered`` then replaces the texts with the rendered
ones, sets ``metadata.template = {key, version, locale}`` and stores the channel parts, as
an enqueue by template does. It costs the request one query for the templates and one for
the recipient, and runs in the request's transaction.

A render that fails (an override that needs a variable the task lacks, say) must not refuse
the producer's task report: that notification keeps the English text and the failure is
logged, naming the template.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from notifier.models.log import TaskLog
from notifier.models.notification import Notification
from notifier.models.task import TaskProgress
from notifier.storage.recipients import get_recipient
from notifier.storage.templates import find_templates
from notifier.templates import (
    NotificationInfo,
    RecipientInfo,
    RenderedTemplate,
    RenderRequest,
    TemplateError,
    TemplateRenderer,
)

logger = logging.getLogger(__name__)


def template_key(notification: Notification) -> str | None:
    template = (notification.notification_metadata or {}).get("template")
    key = template.get("key") if isinstance(template, dict) else None
    return key if isinstance(key, str) else None


async def render_triggered(
    session: AsyncSession,
    renderer: TemplateRenderer,
    task: TaskProgress,
    notifications: Sequence[Notification],
    *,
    log: TaskLog | None = None,
) -> None:
    """Render each notification's template (rules.py named it) in place."""
    keyed = [(n, key) for n in notifications if (key := template_key(n)) is not None]
    if not keyed:
        return
    templates = await find_templates(session, {key for _, key in keyed})
    profile = await get_recipient(session, task.user_id)
    recipient = RecipientInfo(
        id=task.user_id,
        locale=profile.locale if profile else None,
        timezone=profile.timezone if profile else None,
    )
    task_view = task.to_dict()
    data: dict[str, Any] = {"log": log.to_dict()} if log is not None else {}
    requests: list[tuple[Notification, RenderRequest]] = []
    for notification, key in keyed:
        template = templates.get(key)
        if template is None:  # a built-in key: cannot happen, unless the package lost a file
            logger.error("trigger template %r not found; the English text is sent", key)
            continue
        requests.append(
            (
                notification,
                RenderRequest(
                    template=template,
                    data=data,
                    recipient=recipient,
                    notification=NotificationInfo(
                        notification_type=notification.notification_type,
                        priority=notification.priority,
                        action_url=notification.action_url,
                    ),
                    task=task_view,
                ),
            )
        )
    results = await renderer.render_many([request for _, request in requests])
    for (notification, _), result in zip(requests, results, strict=True):
        if isinstance(result, TemplateError):
            logger.warning("trigger template failed, the English text is sent: %s", result)
            continue
        _apply(notification, result)


def _apply(notification: Notification, result: RenderedTemplate) -> None:
    texts = result.parts
    notification.title = texts.title
    notification.message = texts.message
    notification.notification_metadata = {
        **(notification.notification_metadata or {}),
        "template": {"key": result.key, "version": result.version, "locale": result.locale},
    }
    notification.rendered_parts = texts.channel_parts()
