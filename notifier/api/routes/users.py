"""A user's inbox, read marks, recipient profile, tokens and push subscriptions."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from notifier.api.deps import ContextDep, ProducerDep, SessionDep, UserAccessDep, UserIdPath
from notifier.api.errors import NotFound, Unprocessable
from notifier.models.base import utcnow
from notifier.models.recipient import PushSubscription, Recipient
from notifier.schemas.errors import AUTHENTICATED, error_responses
from notifier.schemas.notification import InboxPage, NotificationPublic, ReadAllResult
from notifier.schemas.user import (
    PushSubscriptionCreate,
    PushSubscriptionPublic,
    RecipientPatch,
    RecipientPublic,
    RecipientUpsert,
    TokenCreate,
    TokenPublic,
)
from notifier.storage.cursors import InvalidCursor
from notifier.storage.notifications import (
    get_notification,
    inbox_page,
    mark_all_read,
    unread_count,
)

router = APIRouter(
    prefix="/v1/users/{user_id}", tags=["users"], responses=error_responses(*AUTHENTICATED)
)


@router.get("/notifications", response_model=InboxPage)
async def inbox(
    user_id: UserIdPath,
    _: UserAccessDep,
    session: SessionDep,
    unread_only: bool = False,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> InboxPage:
    try:
        page = await inbox_page(
            session, user_id, unread_only=unread_only, limit=limit, cursor=cursor
        )
    except InvalidCursor as exc:
        raise Unprocessable(str(exc)) from None
    return InboxPage(
        items=[NotificationPublic.from_row(n) for n in page.items],
        unread_count=page.unread_count,
        next_cursor=page.next_cursor,
    )


@router.post("/notifications/{notification_id}/read", response_model=NotificationPublic)
async def mark_read(
    user_id: UserIdPath, notification_id: uuid.UUID, _: UserAccessDep, session: SessionDep
) -> NotificationPublic:
    row = await get_notification(session, notification_id, for_update=True)
    if row is None or row.user_id != user_id:
        raise NotFound("no such notification")
    row.mark_read(utcnow())
    await session.commit()
    return NotificationPublic.from_row(row)


@router.post("/notifications/read-all", response_model=ReadAllResult)
async def read_all(user_id: UserIdPath, _: UserAccessDep, session: SessionDep) -> ReadAllResult:
    updated = await mark_all_read(session, user_id)
    await session.commit()
    return ReadAllResult(updated=updated, unread_count=await unread_count(session, user_id))


@router.put("/recipient", response_model=RecipientPublic)
async def put_recipient(
    user_id: UserIdPath, payload: RecipientUpsert, _: ProducerDep, session: SessionDep
) -> RecipientPublic:
    """Replace the whole profile: a field left out is cleared (PATCH changes only some)."""
    return await _save_recipient(session, user_id, _recipient_fields(payload, set(_FIELDS)))


@router.patch("/recipient", response_model=RecipientPublic)
async def patch_recipient(
    user_id: UserIdPath, payload: RecipientPatch, _: ProducerDep, session: SessionDep
) -> RecipientPublic:
    """Change only the fields sent (``null`` clears one); creates the profile if absent."""
    return await _save_recipient(
        session, user_id, _recipient_fields(payload, payload.model_fields_set)
    )


_FIELDS = ("email", "phone", "locale", "timezone", "preferences", "quiet_hours")


def _recipient_fields(payload: RecipientUpsert | RecipientPatch, names: set[str]) -> dict[str, Any]:
    values: dict[str, Any] = {
        "email": payload.email,
        "phone": payload.phone,
        "locale": payload.locale,
        "timezone": payload.timezone,
        "preferences": payload.preferences or {},
        "quiet_hours": payload.quiet_hours.model_dump() if payload.quiet_hours else None,
    }
    return {name: values[name] for name in _FIELDS if name in names}


async def _save_recipient(
    session: AsyncSession, user_id: str, fields: dict[str, Any]
) -> RecipientPublic:
    # Two first writes for one user may both find no row and both insert; the loser of that
    # race (primary key) goes round again and updates the winner's row.
    for attempt in (1, 2):
        row = await session.get(Recipient, user_id, with_for_update=True, populate_existing=True)
        now = utcnow()
        if row is None:
            row = Recipient(user_id=user_id, created_at=now, sms_opted_out=False, preferences={})
            session.add(row)
        elif "phone" in fields and fields["phone"] != row.phone:
            row.sms_opted_out = False  # an opt-out belongs to the old number
        for name, value in fields.items():
            setattr(row, name, value)
        row.updated_at = now
        try:
            await session.commit()
        except IntegrityError:
            await session.rollback()
            if attempt == 2:
                raise
            continue
        return RecipientPublic.model_validate(row.to_dict())
    raise AssertionError("unreachable")


@router.get("/recipient", response_model=RecipientPublic)
async def get_recipient(
    user_id: UserIdPath, _: UserAccessDep, session: SessionDep
) -> RecipientPublic:
    row = await session.get(Recipient, user_id)
    if row is None:
        raise NotFound("this user has no recipient profile")
    return RecipientPublic.model_validate(row.to_dict())


@router.post("/tokens", status_code=status.HTTP_201_CREATED, response_model=TokenPublic)
async def mint_token(
    user_id: UserIdPath, _: ProducerDep, context: ContextDep, payload: TokenCreate | None = None
) -> TokenPublic:
    minted = context.tokens.mint(user_id, ttl_seconds=payload.ttl_seconds if payload else None)
    return TokenPublic(token=minted.token, expires_at=minted.expires_at)


@router.post(
    "/push-subscriptions",
    status_code=status.HTTP_201_CREATED,
    response_model=PushSubscriptionPublic,
    responses={200: {"model": PushSubscriptionPublic, "description": "Already subscribed"}},
)
async def subscribe_push(
    user_id: UserIdPath,
    payload: PushSubscriptionCreate,
    _: UserAccessDep,
    context: ContextDep,
    session: SessionDep,
    response: Response,
) -> PushSubscriptionPublic:
    from notifier.channels.push_endpoints import UnsafeEndpointError, check_push_endpoint

    try:
        await check_push_endpoint(
            payload.endpoint, allow_private=context.settings.push_allow_private_endpoints
        )
    except UnsafeEndpointError as exc:
        raise Unprocessable(
            f"endpoint: {exc}",
            details=[{"loc": ["body", "endpoint"], "msg": str(exc), "type": "unsafe_endpoint"}],
        ) from None
    query = select(PushSubscription).where(PushSubscription.endpoint == payload.endpoint)
    # The same browser subscribing twice at once: both may find no row and both insert; the
    # loser of that race (unique endpoint) goes round again and updates the winner's row.
    for attempt in (1, 2):
        found = await session.execute(
            query.with_for_update().execution_options(populate_existing=True)
        )
        row = found.scalar_one_or_none()
        if row is None:
            row = PushSubscription(
                id=uuid.uuid4(), user_id=user_id, endpoint=payload.endpoint, created_at=utcnow()
            )
            session.add(row)
            response.status_code = status.HTTP_201_CREATED
        else:
            # A browser profile has one endpoint; whoever subscribes with it last owns it.
            response.status_code = status.HTTP_200_OK
            row.user_id = user_id
        row.p256dh = payload.keys.p256dh
        row.auth = payload.keys.auth
        try:
            await session.commit()
        except IntegrityError:
            await session.rollback()
            if attempt == 2:
                raise
            continue
        return PushSubscriptionPublic(
            id=row.id, user_id=row.user_id, endpoint=row.endpoint, created_at=row.created_at
        )
    raise AssertionError("unreachable")


@router.delete("/push-subscriptions", status_code=status.HTTP_204_NO_CONTENT)
async def unsubscribe_push(
    user_id: UserIdPath,
    _: UserAccessDep,
    session: SessionDep,
    endpoint: Annotated[str, Query(min_length=1, max_length=2048, pattern=r"^[^\x00-\x1f\x7f]+$")],
) -> Response:
    result = await session.execute(
        delete(PushSubscription).where(
            PushSubscription.user_id == user_id, PushSubscription.endpoint == endpoint
        )
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        raise NotFound("no such push subscription for this user")
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
