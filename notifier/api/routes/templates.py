"""Templates: ``PUT/GET/DELETE /v1/templates/{key}``, the list, and a preview that renders
without storing anything. Producers only (an API key)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status

from notifier.api.deps import ContextDep, ProducerDep, SessionDep
from notifier.api.errors import NotFound, Unprocessable
from notifier.models.base import utcnow
from notifier.schemas.errors import AUTHENTICATED, error_responses
from notifier.schemas.template import (
    TEMPLATE_KEY_PATTERN,
    PreviewParts,
    PreviewWarning,
    SmsSize,
    TemplatePage,
    TemplatePreview,
    TemplatePreviewRequest,
    TemplatePublic,
    TemplateSummary,
    TemplateUpsert,
)
from notifier.storage.recipients import get_recipient
from notifier.storage.templates import (
    TemplateEntry,
    delete_template,
    find_template,
    list_templates,
    put_template,
)
from notifier.templates import (
    PARTS,
    NotificationInfo,
    RecipientInfo,
    RenderedTemplate,
    RenderRequest,
    TemplateError,
    builtin_template,
)
from notifier.templates.sms import sms_segments

router = APIRouter(
    prefix="/v1/templates", tags=["templates"], responses=error_responses(*AUTHENTICATED)
)

TemplateKey = Annotated[
    str,
    Path(
        pattern=TEMPLATE_KEY_PATTERN,
        max_length=64,
        description="lowercase letters, digits, '.', '_' and '-', starting with a letter or digit",
    ),
]


def _refused(exc: TemplateError) -> Unprocessable:
    return Unprocessable(str(exc), details=exc.details)


def _public(entry: TemplateEntry) -> TemplatePublic:
    return TemplatePublic.from_definition(
        entry.definition, created_at=entry.created_at, updated_at=entry.updated_at
    )


@router.get("", response_model=TemplatePage)
async def list_all(
    _: ProducerDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(pattern=TEMPLATE_KEY_PATTERN, max_length=64)] = None,
) -> TemplatePage:
    rows, next_cursor = await list_templates(session, after=cursor, limit=limit)
    return TemplatePage(
        items=[
            TemplateSummary(
                key=row.key,
                version=row.version,
                builtin=row.builtin,
                description=row.description,
                default_locale=row.default_locale,
                locales=row.locales,
                updated_at=row.updated_at,
            )
            for row in rows
        ],
        next_cursor=next_cursor,
    )


@router.get("/{key}", response_model=TemplatePublic)
async def get_one(key: TemplateKey, _: ProducerDep, session: SessionDep) -> TemplatePublic:
    entry = await find_template(session, key)
    if entry is None:
        raise NotFound(f"no template {key!r}")
    return _public(entry)


@router.put(
    "/{key}",
    response_model=TemplatePublic,
    status_code=status.HTTP_201_CREATED,
    responses={200: {"model": TemplatePublic, "description": "Replaced: a new version"}},
)
async def put_one(
    key: TemplateKey,
    payload: TemplateUpsert,
    _: ProducerDep,
    session: SessionDep,
    context: ContextDep,
    response: Response,
) -> TemplatePublic:
    """Store a template: 201 when the key had no stored template (a built-in's first
    override included), 200 when it replaces one. Every PUT is a new version."""
    sources = payload.sources()
    try:
        await context.renderer.validate_async(sources)
    except TemplateError as exc:
        raise _refused(exc.located(key=key)) from None
    entry, created = await put_template(
        session,
        key,
        description=payload.description,
        default_locale=payload.default_locale,
        locales=sources,
        now=utcnow(),
    )
    await session.commit()
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return _public(entry)


@router.delete("/{key}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_one(key: TemplateKey, _: ProducerDep, session: SessionDep) -> Response:
    """Delete the stored template; a built-in of the same key takes over again."""
    deleted = await delete_template(session, key)
    if not deleted:
        await session.rollback()
        builtin = " (built-in templates cannot be deleted)" if builtin_template(key) else ""
        raise NotFound(f"no stored template {key!r}{builtin}")
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{key}/preview", response_model=TemplatePreview)
async def preview(
    key: TemplateKey,
    payload: TemplatePreviewRequest,
    _: ProducerDep,
    session: SessionDep,
    context: ContextDep,
) -> TemplatePreview:
    """Render every part, as the channels would send it, for ``data`` and (optionally) a
    user's locale and time zone or a locale of your choice. Nothing is stored."""
    entry = await find_template(session, key)
    if entry is None:
        raise NotFound(f"no template {key!r}")
    recipient = None
    if payload.user_id is not None:
        row = await get_recipient(session, payload.user_id)
        recipient = RecipientInfo(
            id=payload.user_id,
            locale=row.locale if row else None,
            timezone=row.timezone if row else None,
        )
    await session.close()  # hold no connection while rendering
    try:
        rendered = await context.renderer.render_async(
            RenderRequest(
                template=entry.definition,
                data=payload.data,
                locale=payload.locale,
                recipient=recipient,
                notification=NotificationInfo(
                    notification_type=payload.notification.notification_type.value,
                    priority=payload.notification.priority.value,
                    action_url=payload.notification.action_url,
                ),
                task=payload.task,
            )
        )
    except TemplateError as exc:
        raise _refused(exc) from None
    return _preview(rendered, builtin=entry.definition.builtin)


def _preview(rendered: RenderedTemplate, *, builtin: bool) -> TemplatePreview:
    parts = rendered.parts.with_fallbacks()
    sms_text = parts["sms"] or ""
    size = sms_segments(sms_text)
    warnings = []
    if size.segments > 1:
        why = "" if size.encoding == "GSM-7" else " (a character outside GSM-7 makes it UCS-2)"
        warnings.append(
            PreviewWarning(
                code="sms_segments",
                message=(
                    f"the SMS takes {size.segments} segments: {size.units} {size.encoding} "
                    f"units{why}, over one segment's {size.single_segment_limit}"
                ),
            )
        )
    return TemplatePreview(
        key=rendered.key,
        version=rendered.version,
        builtin=builtin,
        locale=rendered.locale,
        parts=PreviewParts.model_validate(parts),
        defaulted=[part for part in PARTS if getattr(rendered.parts, part) is None],
        sms=SmsSize(encoding=size.encoding, units=size.units, segments=size.segments),
        warnings=warnings,
    )
