"""Outbound webhook endpoints (producers): register, list, change, delete, read the deliveries
log, send a test event, rotate the secret, replay. The sending is the workers' (README
"Webhooks"); inbound provider callbacks are ``webhooks.py``."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from notifier.api.deps import ContextDep, ProducerDep, SessionDep
from notifier.api.errors import Conflict, NotFound, Unprocessable
from notifier.models.base import utcnow
from notifier.models.webhook import WebhookEndpoint
from notifier.net_guard import UnsafeEndpointError, check_endpoint_url
from notifier.schemas.errors import AUTHENTICATED, error_responses
from notifier.schemas.webhook_endpoint import (
    QueuedTestEvent,
    ReplayQueued,
    ReplayRequest,
    SecretRotated,
    WebhookAttemptList,
    WebhookAttemptPublic,
    WebhookEndpointCreate,
    WebhookEndpointCreated,
    WebhookEndpointList,
    WebhookEndpointPublic,
    WebhookEndpointUpdate,
)
from notifier.settings import Settings
from notifier.storage import webhooks as storage
from notifier.storage.wakeups import WEBHOOKS
from notifier.webhooks.events import endpoint_test_event
from notifier.webhooks.signing import new_key, secret_text

router = APIRouter(
    prefix="/v1/webhook-endpoints",
    tags=["webhooks"],
    responses=error_responses(*AUTHENTICATED),
)


async def _checked_url(url: str, settings: Settings) -> str:
    """The SSRF policy, as for push endpoints; the workers check again at send time."""
    try:
        await check_endpoint_url(
            url, allow_private=settings.webhook_allow_private_endpoints, kind="webhook URL"
        )
    except UnsafeEndpointError as exc:
        raise Unprocessable(
            f"url: {exc}",
            details=[{"loc": ["body", "url"], "msg": str(exc), "type": "unsafe_endpoint"}],
        ) from None
    return url


async def _endpoint(
    session: AsyncSession, endpoint_id: uuid.UUID, *, for_update: bool = False
) -> WebhookEndpoint:
    endpoint = await storage.get_endpoint(session, endpoint_id, for_update=for_update)
    if endpoint is None:
        raise NotFound("no such webhook endpoint")
    return endpoint


@router.post("", status_code=status.HTTP_201_CREATED, response_model=WebhookEndpointCreated)
async def create_endpoint(
    payload: WebhookEndpointCreate, _: ProducerDep, context: ContextDep, session: SessionDep
) -> WebhookEndpointCreated:
    url = await _checked_url(payload.url, context.settings)
    key = new_key()
    try:
        endpoint = await storage.create_endpoint(
            session,
            url=url,
            events=payload.events,
            description=payload.description,
            key=key,
            limit=context.settings.webhook_max_endpoints,
        )
    except storage.TooManyEndpoints as exc:
        raise Unprocessable(str(exc)) from None
    await session.commit()
    public = WebhookEndpointPublic.from_row(endpoint)
    return WebhookEndpointCreated(**public.model_dump(), secret=secret_text(key))


@router.get("", response_model=WebhookEndpointList)
async def list_endpoints(_: ProducerDep, session: SessionDep) -> WebhookEndpointList:
    rows = await storage.list_endpoints(session)
    return WebhookEndpointList(items=[WebhookEndpointPublic.from_row(r) for r in rows])


@router.get("/{endpoint_id}", response_model=WebhookEndpointPublic)
async def get_endpoint(
    endpoint_id: uuid.UUID, _: ProducerDep, session: SessionDep
) -> WebhookEndpointPublic:
    return WebhookEndpointPublic.from_row(await _endpoint(session, endpoint_id))


@router.patch("/{endpoint_id}", response_model=WebhookEndpointPublic)
async def update_endpoint(
    endpoint_id: uuid.UUID,
    payload: WebhookEndpointUpdate,
    _: ProducerDep,
    context: ContextDep,
    session: SessionDep,
) -> WebhookEndpointPublic:
    url = None if payload.url is None else await _checked_url(payload.url, context.settings)
    endpoint = await _endpoint(session, endpoint_id, for_update=True)
    now = utcnow()
    if url is not None:
        endpoint.url = url
    if payload.events is not None:
        endpoint.events = payload.events
    if "description" in payload.model_fields_set:
        endpoint.description = payload.description
    if payload.enabled is not None:
        storage.set_enabled(endpoint, payload.enabled, now)
    endpoint.updated_at = now
    await context.wakeups.rows_due(session, WEBHOOKS)  # re-enabled: its paused deliveries
    await session.commit()
    return WebhookEndpointPublic.from_row(endpoint)


@router.delete("/{endpoint_id}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_endpoint(endpoint_id: uuid.UUID, _: ProducerDep, session: SessionDep) -> Response:
    if not await storage.delete_endpoint(session, endpoint_id):
        raise NotFound("no such webhook endpoint")
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{endpoint_id}/deliveries", response_model=WebhookAttemptList)
async def list_deliveries(
    endpoint_id: uuid.UUID,
    _: ProducerDep,
    session: SessionDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> WebhookAttemptList:
    """The endpoint's most recent attempts, newest first (kept NOTIFIER_WEBHOOK_LOG_DAYS)."""
    await _endpoint(session, endpoint_id)
    rows = await storage.recent_attempts(session, endpoint_id, limit=limit)
    return WebhookAttemptList(items=[WebhookAttemptPublic.from_row(r) for r in rows])


@router.post(
    "/{endpoint_id}/test",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=QueuedTestEvent,
    responses=error_responses(409),
)
async def send_test_event(
    endpoint_id: uuid.UUID, _: ProducerDep, context: ContextDep, session: SessionDep
) -> QueuedTestEvent:
    endpoint = await _endpoint(session, endpoint_id)
    if not endpoint.enabled:
        raise Conflict('the endpoint is disabled; PATCH it with {"enabled": true} first')
    event = endpoint_test_event(endpoint_id=endpoint.id, url=endpoint.url)
    await storage.emit_to_endpoint(session, event, endpoint.id)
    await context.wakeups.rows_due(session, WEBHOOKS)
    await session.commit()
    return QueuedTestEvent(event_id=event.id)


@router.post("/{endpoint_id}/rotate-secret", response_model=SecretRotated)
async def rotate_secret(
    endpoint_id: uuid.UUID, _: ProducerDep, context: ContextDep, session: SessionDep
) -> SecretRotated:
    endpoint = await _endpoint(session, endpoint_id, for_update=True)
    key = new_key()
    overlap = timedelta(seconds=context.settings.webhook_secret_overlap_seconds)
    storage.rotate_secret(endpoint, key, overlap=overlap, now=utcnow())
    await session.commit()
    assert endpoint.previous_secret_expires_at is not None
    return SecretRotated(
        secret=secret_text(key), previous_secret_expires_at=endpoint.previous_secret_expires_at
    )


@router.post(
    "/{endpoint_id}/replay", status_code=status.HTTP_202_ACCEPTED, response_model=ReplayQueued
)
async def replay(
    endpoint_id: uuid.UUID,
    payload: ReplayRequest,
    _: ProducerDep,
    context: ContextDep,
    session: SessionDep,
) -> ReplayQueued:
    """Send again every event since ``since`` that the endpoint's filter matches, under the
    same ids (as far back as the log is kept: NOTIFIER_WEBHOOK_LOG_DAYS)."""
    endpoint = await _endpoint(session, endpoint_id, for_update=True)
    queued = await storage.replay(session, endpoint, payload.since)
    await context.wakeups.rows_due(session, WEBHOOKS)
    await session.commit()
    return ReplayQueued(queued=queued)
