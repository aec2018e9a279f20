"""A user's inbox, read marks, recipient profile, tokens and push subscriptions."""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status

from notifier.api.deps import ContextDep, ProducerDep, SessionDep, UserAccessDep, UserIdPath
from notifier.api.errors import NotFound, Unprocessable
from notifier.models.base import utcnow
from notifier.models.recipient import Recipient
from notifier.schemas.delivery_plan import SeenMarks, SeenResult
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
from notifier.storage import escalation, notifications, push, recipients
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
    user_id: UserIdPath,
    notification_id: uuid.UUID,
    _: UserAccessDep,
    context: ContextDep,
    session: SessionDep,
) -> NotificationPublic:
    row = await get_notification(session, notification_id, for_update=True)
    if row is None or row.user_id != user_id:
        raise NotFound("no such notification")
    await notifications.mark_read(session, row, utcnow(), context.wakeups)
    await session.commit()
    return NotificationPublic.from_row(row)


@router.post("/notifications/seen", response_model=SeenResult)
async def mark_seen(
    user_id: UserIdPath,
    payload: SeenMarks,
    _: UserAccessDep,
    context: ContextDep,
    session: SessionDep,
) -> SeenResult:
    """The user saw these (a client without a socket; the inbox page for what it shows): their
    waiting ``seen`` escalation steps are skipped. Ids not the user's are ignored, as the ack
    ignores them: seeing is not a read mark (docs/architecture.md, "Digest, throttle and
    escalation")."""
    skipped = await escalation.mark_seen(session, user_id, payload.ids, utcnow(), context.wakeups)
    await session.commit()
    return SeenResult(skipped=skipped)


@router.post("/notifications/read-all", response_model=ReadAllResult)
async def read_all(
    user_id: UserIdPath, _: UserAccessDep, context: ContextDep, session: SessionDep
) -> ReadAllResult:
    updated = await mark_all_read(session, user_id, context.wakeups)
    await session.commit()
    return ReadAllResult(updated=updated, unread_count=await unread_count(session, user_id))


@router.put("/recipient", response_model=RecipientPublic)
async def put_recipient(
    user_id: UserIdPath, payload: RecipientUpsert, _: ProducerDep, session: SessionDep
) -> RecipientPublic:
    """Replace the whole profile: a field left out is cleared (PATCH changes only some)."""
    fields = _recipient_fields(payload, set(recipients.RECIPIENT_FIELDS))
    return _recipient_public(await recipients.save_recipient(session, user_id, fields))


@router.patch("/recipient", response_model=RecipientPublic)
async def patch_recipient(
    user_id: UserIdPath, payload: RecipientPatch, _: ProducerDep, session: SessionDep
) -> RecipientPublic:
    """Change only the fields sent (``null`` clears one); creates the profile if absent."""
    fields = _recipient_fields(payload, payload.model_fields_set)
    return _recipient_public(await recipients.save_recipient(session, user_id, fields))


def _recipient_fields(payload: RecipientUpsert | RecipientPatch, names: set[str]) -> dict[str, Any]:
    values: dict[str, Any] = {
        "email": payload.email,
        "phone": payload.phone,
        "locale": payload.locale,
        "timezone": payload.timezone,
        "preferences": payload.preferences or {},
        "quiet_hours": payload.quiet_hours.model_dump() if payload.quiet_hours else None,
    }
    return {name: values[name] for name in recipients.RECIPIENT_FIELDS if name in names}


def _recipient_public(row: Recipient) -> RecipientPublic:
    return RecipientPublic.model_validate(row.to_dict())


@router.get("/recipient", response_model=RecipientPublic)
async def get_recipient(
    user_id: UserIdPath, _: UserAccessDep, session: SessionDep
) -> RecipientPublic:
    row = await recipients.get_recipient(session, user_id)
    if row is None:
        raise NotFound("this user has no recipient profile")
    return _recipient_public(row)


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
    stored = await push.subscribe(
        session,
        user_id,
        endpoint=payload.endpoint,
        p256dh=payload.keys.p256dh,
        auth=payload.keys.auth,
    )
    response.status_code = status.HTTP_201_CREATED if stored.created else status.HTTP_200_OK
    row = stored.subscription
    return PushSubscriptionPublic(
        id=row.id, user_id=row.user_id, endpoint=row.endpoint, created_at=row.created_at
    )


@router.delete("/push-subscriptions", status_code=status.HTTP_204_NO_CONTENT)
async def unsubscribe_push(
    user_id: UserIdPath,
    _: UserAccessDep,
    session: SessionDep,
    endpoint: Annotated[str, Query(min_length=1, max_length=2048, pattern=r"^[^\x00-\x1f\x7f]+$")],
) -> Response:
    if not await push.unsubscribe(session, user_id, endpoint):
        raise NotFound("no such push subscription for this user")
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
