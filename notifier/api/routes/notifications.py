"""Producers enqueue notifications, read them back, and retry or cancel them."""

from __future__ import annotations

import math
import uuid
from collections import Counter
from typing import Any

from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from notifier.api.context import ServiceContext
from notifier.api.deps import ContextDep, PrincipalDep, ProducerDep, SessionDep
from notifier.api.errors import Conflict, NotFound, TooManyRequests, Unprocessable
from notifier.api.idempotency import IdempotencyKeyHeader, IdempotentRequest
from notifier.api.rate_limit import retry_after_header
from notifier.models.base import utcnow
from notifier.models.notification import Channel, Notification
from notifier.schemas.errors import AUTHENTICATED, error_responses
from notifier.schemas.notification import (
    NotificationBatchCreate,
    NotificationBatchPublic,
    NotificationCreate,
    NotificationPublic,
)
from notifier.storage.notifications import (
    cancel_unsent_channels,
    get_notification,
    requeue_failed_channels,
    wake_dispatchers,
)

router = APIRouter(
    prefix="/v1/notifications",
    tags=["notifications"],
    responses=error_responses(*AUTHENTICATED, 409),
)


def _build(payload: NotificationCreate) -> Notification:
    if Channel.BROWSER in payload.channels:
        from notifier.channels.browser import push_payload_fits

        if not push_payload_fits(
            title=payload.title,
            message=payload.message,
            action_url=payload.action_url,
            notification_type=payload.notification_type,
            priority=payload.priority,
        ):
            raise Unprocessable(
                "the notification is too large for a Web Push message (3993 bytes after "
                "encoding); shorten the title or message, or drop the browser channel",
                details=[
                    {
                        "loc": ["body", "message"],
                        "msg": "too large for Web Push",
                        "type": "push_payload_too_large",
                    }
                ],
            )
    return Notification.build(
        user_id=payload.user_id,
        title=payload.title,
        message=payload.message,
        notification_type=payload.notification_type,
        priority=payload.priority,
        channels=payload.channels,
        related_task_id=payload.related_task_id,
        action_url=payload.action_url,
        metadata=payload.metadata,
        recipient=payload.recipient.model_dump(exclude_none=True) if payload.recipient else None,
        send_at=payload.send_at,
        expires_at=payload.expires_at,
    )


def _charge_recipients(context: ServiceContext, rows: list[Notification]) -> dict[str, int]:
    """Spend each recipient's rate-limit tokens, all or none; 429 if any recipient is over."""
    wanted = Counter(row.user_id for row in rows)
    charged: dict[str, int] = {}
    for user_id, count in wanted.items():
        wait = context.recipient_limits.take(user_id, count)
        if wait == math.inf:  # more than the burst at once: waiting would never help
            _refund(context, charged)
            raise Unprocessable(
                f"this batch holds {count} notifications for user {user_id!r}, more than the "
                f"{context.recipient_limits.burst:g} one recipient may get at once; split it",
                details=[
                    {
                        "loc": ["body", "notifications"],
                        "msg": "too many for one recipient",
                        "type": "recipient_burst_exceeded",
                    }
                ],
            )
        if wait is not None:
            _refund(context, charged)
            raise TooManyRequests(
                f"too many notifications for user {user_id!r}; try again later",
                details={"user_id": user_id},
                headers={"Retry-After": retry_after_header(wait)},
            )
        charged[user_id] = count
    return charged


def _refund(context: ServiceContext, charged: dict[str, int]) -> None:
    for user_id, count in charged.items():
        context.recipient_limits.refund(user_id, count)


async def _enqueue(
    *,
    request: Request,
    context: ServiceContext,
    session: AsyncSession,
    principal_key_id: str,
    idempotency_key: str | None,
    body: Any,
    rows: list[Notification],
    response: dict[str, Any],
) -> JSONResponse:
    """Insert ``rows`` (and the idempotency record) in one transaction, then wake workers.

    Concurrent requests with one key race on the idempotency table's primary key: the loser's
    insert fails, and it answers with the winner's stored response.
    """
    guard = IdempotentRequest(request, api_key_id=principal_key_id, key=idempotency_key, body=body)
    earlier = await guard.earlier_response(session)
    if earlier is not None:
        return earlier
    guard.remember(session, status.HTTP_202_ACCEPTED, response)
    charged = _charge_recipients(context, rows)
    session.add_all(rows)
    try:
        # Flush before anything else runs a query: the insert that loses the race on the
        # idempotency key fails here (or at commit), never in an autoflush outside this block.
        await session.flush()
        await wake_dispatchers(session)
        await session.commit()
    except IntegrityError:
        await session.rollback()
        _refund(context, charged)
        earlier = await guard.earlier_response(session)
        if earlier is None:
            raise
        return earlier
    context.enqueued()
    return JSONResponse(response, status_code=status.HTTP_202_ACCEPTED)


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=NotificationPublic,
    responses={200: {"model": NotificationPublic, "description": "Idempotent replay"}},
)
async def enqueue_notification(
    payload: NotificationCreate,
    request: Request,
    principal: ProducerDep,
    context: ContextDep,
    session: SessionDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    row = _build(payload)
    response = NotificationPublic.from_row(row).model_dump(mode="json")
    return await _enqueue(
        request=request,
        context=context,
        session=session,
        principal_key_id=principal.api_key_id or "",
        idempotency_key=idempotency_key,
        body=payload.model_dump(mode="json"),
        rows=[row],
        response=response,
    )


@router.post(
    "/batch",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=NotificationBatchPublic,
    responses={200: {"model": NotificationBatchPublic, "description": "Idempotent replay"}},
)
async def enqueue_batch(
    payload: NotificationBatchCreate,
    request: Request,
    principal: ProducerDep,
    context: ContextDep,
    session: SessionDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    rows = [_build(item) for item in payload.notifications]
    response = {
        "notifications": [NotificationPublic.from_row(r).model_dump(mode="json") for r in rows]
    }
    return await _enqueue(
        request=request,
        context=context,
        session=session,
        principal_key_id=principal.api_key_id or "",
        idempotency_key=idempotency_key,
        body=payload.model_dump(mode="json"),
        rows=rows,
        response=response,
    )


@router.get("/{notification_id}", response_model=NotificationPublic)
async def read_notification(
    notification_id: uuid.UUID, principal: PrincipalDep, session: SessionDep
) -> NotificationPublic:
    row = await get_notification(session, notification_id)
    if row is None or not principal.may_access_user(row.user_id):
        raise NotFound("no such notification")
    return NotificationPublic.from_row(row)


@router.post("/{notification_id}/retry", response_model=NotificationPublic)
async def retry_notification(
    notification_id: uuid.UUID, _: ProducerDep, context: ContextDep, session: SessionDep
) -> NotificationPublic:
    row = await get_notification(session, notification_id, for_update=True)
    if row is None:
        raise NotFound("no such notification")
    if requeue_failed_channels(row, utcnow()) == 0:
        raise Conflict("no channel of this notification has failed; there is nothing to retry")
    await wake_dispatchers(session)
    await session.commit()
    context.enqueued()
    return NotificationPublic.from_row(row)


@router.post("/{notification_id}/cancel", response_model=NotificationPublic)
async def cancel_notification(
    notification_id: uuid.UUID, _: ProducerDep, session: SessionDep
) -> NotificationPublic:
    row = await get_notification(session, notification_id, for_update=True)
    if row is None:
        raise NotFound("no such notification")
    if cancel_unsent_channels(row, utcnow()) == 0:
        raise Conflict("every channel was already sent or settled; there is nothing to cancel")
    await session.commit()
    return NotificationPublic.from_row(row)
