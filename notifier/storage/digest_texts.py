"""What a digest says (docs/architecture.md, "Digest, throttle and escalation"): the template
``digest.<key>`` if one is stored, else the built-in ``digest`` (or a stored override of it),
rendered in the recipient's locale and time zone with ``data.count`` and ``data.events``, as an
enqueue by template renders: title and message replaced, the channel parts stored in
``rendered_parts``, ``metadata.template = {key, version, locale}``.

Runs inside the window's close (``storage/digests.py``), before the digest row is written. A
render that fails (a ``digest.<key>`` that needs a variable a digest lacks, say) must not stop
the close: the digest keeps its plain built-in text and the failure is logged, naming the
template.
"""

from __future__ import annotations

import logging

from sqlalchemy.ext.asyncio import AsyncSession

from notifier.models.notification import Notification
from notifier.storage.recipients import get_recipient
from notifier.storage.templates import find_templates
from notifier.templates import (
    NotificationInfo,
    RecipientInfo,
    RenderRequest,
    TemplateError,
    TemplateRenderer,
)

log = logging.getLogger(__name__)

BUILTIN_DIGEST = "digest"
TITLE_MAX = 200  # the column's size: a longer rendered title must not fail the close


def template_key_for(digest_key: str) -> str:
    """The template a producer registers to word the digests of ``digest_key``."""
    return f"{BUILTIN_DIGEST}.{digest_key}"


async def render_digest(
    session: AsyncSession, renderer: TemplateRenderer, digest: Notification, digest_key: str
) -> None:
    """Replace the digest's plain text by its template's, in place (module docstring)."""
    own = template_key_for(digest_key)
    templates = await find_templates(session, {own, BUILTIN_DIGEST})
    template = templates.get(own) or templates.get(BUILTIN_DIGEST)
    if template is None:  # the package lost its built-in file: the plain text goes out
        log.error("no %r template; the digest's plain text is sent", BUILTIN_DIGEST)
        return
    profile = await get_recipient(session, digest.user_id)
    metadata = dict(digest.notification_metadata or {})
    request = RenderRequest(
        template=template,
        data=metadata.get("data", {}),
        recipient=RecipientInfo(
            id=digest.user_id,
            locale=profile.locale if profile else None,
            timezone=profile.timezone if profile else None,
        ),
        notification=NotificationInfo(
            notification_type=digest.notification_type,
            priority=digest.priority,
            action_url=digest.action_url,
        ),
    )
    try:
        result = await renderer.render_async(request)
    except TemplateError as exc:
        log.warning("digest template %r failed, the plain text is sent: %s", template.key, exc)
        return
    digest.title = result.parts.title[:TITLE_MAX]
    digest.message = result.parts.message
    digest.rendered_parts = result.parts.channel_parts()
    metadata["template"] = {"key": result.key, "version": result.version, "locale": result.locale}
    digest.notification_metadata = metadata
