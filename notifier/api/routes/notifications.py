"""Producers enqueue notifications, read them back, and retry or cancel them."""

from __future__ import annotations

import dataclasses
import math
import uuid
from collections import Counter
from typing import Any

import orjson
from fastapi import APIRouter, Request, status
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy.exc import IntegrityError

from notifier.api.context import ServiceContext
from notifier.api.deps import (
    ContextDep,
    PrincipalDep,
    ProducerDep,
    SessionDep,
)
from notifier.api.errors import Conflict, NotFound, TooManyRequests, Unprocessable
from notifier.api.idempotency import IdempotencyKeyHeader, IdempotentRequest
from notifier.api.rate_limit import retry_after_header
from notifier.api.template_enqueue import GroupRender, render_templated
from notifier.auth import Principal
from notifier.channels.registry import CHANNELS
from notifier.channels.spec import PayloadDraft
from notifier.models.base import utcnow
from notifier.models.notification import Channel
from notifier.schemas.delivery_plan import CancelByKey, CancelByKeyResult
from notifier.schemas.errors import AUTHENTICATED, error_responses
from notifier.schemas.notification import (
    NotificationBatchCreate,
    NotificationBatchPublic,
    NotificationCreate,
    NotificationPublic,
)
from notifier.storage.enqueue import (
    PreparedEnqueue,
    insert_prepared,
    prepare,
    write_connection,
)
from notifier.storage.escalation import cancel_by_key
from notifier.storage.notifications import (
    cancel_unsent_channels,
    get_notification,
    requeue_failed_channels,
)
from notifier.storage.wakeups import DISPATCH, WEBHOOKS

router = APIRouter(
    prefix="/v1/notifications",
    tags=["notifications"],
    responses=error_responses(*AUTHENTICATED, 409),
)


def _check_payload_limits(payload: NotificationCreate, parts: dict[str, str] | None = None) -> None:
    """422 if the notification does not fit a limit of one of its channels (``ChannelSpec``):
    better refused now than ``failed`` later. ``parts``: a template's rendered channel parts."""
    parts = parts or {}
    for name in payload.channels:
        spec = CHANNELS.get(name)
        limit = spec.payload_limit if spec is not None else None
        if limit is None:
            continue
        # Rendered by now (a template's title and message replaced the payload's).
        draft = PayloadDraft.of(payload)
        if name == Channel.BROWSER.value:  # push sends its own parts (channels/browser.py)
            draft = dataclasses.replace(
                draft,
                title=parts.get("push_title", draft.title),
                message=parts.get("push_body", draft.message),
            )
        if not limit.fits(draft):
            raise Unprocessable(
                limit.message,
                details=[{"loc": ["body", "message"], "msg": limit.reason, "type": limit.code}],
            )


def _charge_recipients(context: ServiceContext, user_ids: list[str]) -> dict[str, int]:
    """Spend each recipient's rate-limit tokens, all or none; 429 if any recipient is over."""
    if not context.recipient_limits.enabled:
        return {}
    wanted = Counter(user_ids) if len(user_ids) != 1 else {user_ids[0]: 1}
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


def _group_render(request: Request, context: ServiceContext) -> GroupRender:
    """This app's shared renders for enqueues by template (made on first use, as the writer)."""
    group: GroupRender | None = getattr(request.app.state, "template_group_render", None)
    if group is None or group.context is not context:
        group = request.app.state.template_group_render = GroupRender(context)
    return group


async def _enqueue(
    *,
    request: Request,
    context: ServiceContext,
    guard: IdempotentRequest,
    prepared: PreparedEnqueue,
    response: dict[str, Any],
) -> Response:
    """Insert the prepared rows (and the idempotency record) in one transaction, then answer.

    The 202 goes out only after the commit. Without an Idempotency-Key the rows join whatever
    other enqueues are waiting (``GroupCommit``). With one, the request writes alone:
    concurrent requests with one key race on the idempotency table's primary key, the loser's
    insert fails, and it answers with the winner's stored response. A replay is answered
    before any rate-limit token is spent.

    Then the websocket fast path's frames go out (``ServiceContext.deliver_enqueued``): after
    the commit, never before, so whoever receives one finds its row.
    """
    charged: dict[str, int] = {}
    writer = context.enqueue_writer()
    try:
        if guard.key is None:
            charged = _charge_recipients(context, prepared.user_ids)
            await writer.insert(prepared)
        else:
            async with write_connection(context.engine) as connection:
                earlier = await guard.earlier_response(connection)
                if earlier is not None:
                    return earlier
                charged = _charge_recipients(context, prepared.user_ids)
                record = guard.record(status.HTTP_202_ACCEPTED, response)
                await insert_prepared(
                    connection, prepared, record=record, frame_notify=writer.frame_notify
                )
    except IntegrityError:
        _refund(context, charged)
        async with context.engine.connect() as connection:
            earlier = await guard.earlier_response(connection)
        if earlier is None:
            raise
        return earlier
    except Exception:
        # Nothing was stored: the tokens were not used. (Not on cancellation: a request
        # cancelled while its group commits may well be stored.)
        _refund(context, charged)
        raise
    # The group commit's SQL sent the NOTIFYs; these wake this process's own waiters.
    context.wakeups.committed(*((DISPATCH, WEBHOOKS) if prepared.fast else (DISPATCH,)))
    if prepared.fast:
        await context.deliver_enqueued(prepared.frames)
    return Accepted(response)


_JSON_CONTENT_TYPE = (b"content-type", b"application/json")


class Accepted(JSONResponse):
    """The 202, its body serialised by orjson: the same JSON as ``JSONResponse`` writes
    (compact, UTF-8), for a fraction of its CPU (bench/RESULTS.md, "Enqueue plumbing A/B").
    Its headers are the two ``Response.init_headers`` writes, in its order, without its
    general case (bench/RESULTS.md, "Outer layers of the enqueue A/B")."""

    def __init__(self, content: Any) -> None:
        self.status_code = status.HTTP_202_ACCEPTED
        self.background = None
        self.body = self.render(content)
        self.raw_headers = [(b"content-length", b"%d" % len(self.body)), _JSON_CONTENT_TYPE]

    def render(self, content: Any) -> bytes:
        try:
            return orjson.dumps(content)
        except orjson.JSONEncodeError:  # what only json encodes: an integer beyond 64 bits
            return super().render(content)


def _guard(
    request: Request, principal: Principal, key: str | None, payload: BaseModel
) -> IdempotentRequest:
    # The body is dumped for its fingerprint only when there is a key to remember it under.
    return IdempotentRequest(
        request,
        api_key_id=principal.api_key_id or "",
        key=key,
        body=payload.model_dump(mode="json") if key is not None else None,
    )


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
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    # Served by notifier/api/enqueue_fast.py when valid and without an Idempotency-Key; this
    # declaration is the OpenAPI document's, and serves every other request.
    return await enqueue_one(request, principal, context, payload, idempotency_key)


async def enqueue_one(
    request: Request,
    principal: Principal,
    context: ServiceContext,
    payload: NotificationCreate,
    idempotency_key: str | None,
) -> Response:
    """One notification, validated and authenticated: rendered, checked, stored, answered."""
    guard = _guard(request, principal, idempotency_key, payload)
    payloads, parts = await render_templated(
        _group_render(request, context), [payload], batch=False
    )
    _check_payload_limits(payloads[0], parts[0] if parts else None)
    prepared = prepare(payloads, parts, websocket_grace=context.websocket_grace)
    return await _enqueue(
        request=request,
        context=context,
        guard=guard,
        prepared=prepared,
        response=prepared.public[0],
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
    idempotency_key: IdempotencyKeyHeader = None,
) -> Response:
    guard = _guard(request, principal, idempotency_key, payload)
    renders = _group_render(request, context)
    payloads, parts = await render_templated(renders, payload.notifications, batch=True)
    for index, item in enumerate(payloads):
        _check_payload_limits(item, parts[index] if parts else None)
    prepared = prepare(payloads, parts, websocket_grace=context.websocket_grace)
    return await _enqueue(
        request=request,
        context=context,
        guard=guard,
        prepared=prepared,
        response={"notifications": prepared.public},
    )


@router.post("/cancel", response_model=CancelByKeyResult)
async def cancel_by_cancellation_key(
    payload: CancelByKey, _: ProducerDep, context: ContextDep, session: SessionDep
) -> CancelByKeyResult:
    """Cancel every unsent channel of the user's notifications enqueued with this
    ``cancellation_key``, waiting escalation steps included (docs/architecture.md, "Digest,
    throttle and escalation"). Nothing to cancel is an answer, not an error: the producer
    says "stop" without knowing what already went."""
    touched, channels = await cancel_by_key(
        session, payload.user_id, payload.cancellation_key, utcnow(), context.wakeups
    )
    await session.commit()
    return CancelByKeyResult(notifications=touched, channels=channels)


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
    if await requeue_failed_channels(session, row, utcnow(), context.wakeups) == 0:
        raise Conflict("no channel of this notification has failed; there is nothing to retry")
    await context.wakeups.rows_due(session, DISPATCH)
    await session.commit()
    return NotificationPublic.from_row(row)


@router.post("/{notification_id}/cancel", response_model=NotificationPublic)
async def cancel_notification(
    notification_id: uuid.UUID, _: ProducerDep, context: ContextDep, session: SessionDep
) -> NotificationPublic:
    row = await get_notification(session, notification_id, for_update=True)
    if row is None:
        raise NotFound("no such notification")
    if await cancel_unsent_channels(session, row, utcnow(), context.wakeups) == 0:
        raise Conflict("every channel was already sent or settled; there is nothing to cancel")
    await session.commit()
    return NotificationPublic.from_row(row)
