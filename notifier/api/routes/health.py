"""Liveness, readiness, the VAPID public key, and Prometheus metrics: no credential needed."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from notifier.api.deps import ContextDep
from notifier.api.errors import NotFound, error_body
from notifier.schemas.errors import error_responses
from notifier.schemas.user import VapidPublicKey
from notifier.storage.dispatch import queue_depth
from notifier.storage.migrate import SchemaBehindError, ensure_schema_current
from notifier.vapid import public_key_b64

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses=error_responses(503))
async def readyz(context: ContextDep) -> JSONResponse:
    try:
        async with context.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
        await ensure_schema_current(context.engine)
    except SchemaBehindError as exc:
        return JSONResponse(error_body("unavailable", str(exc)), status_code=503)
    except Exception:  # any failure to reach the database means "not ready"
        return JSONResponse(
            error_body("unavailable", "the database is unreachable"), status_code=503
        )
    return JSONResponse({"status": "ready"})


@router.get(
    "/v1/push/vapid-public-key",
    response_model=VapidPublicKey,
    tags=["push"],
    responses=error_responses(404),
)
async def vapid_public_key(context: ContextDep) -> VapidPublicKey:
    if not context.vapid_private_key:
        raise NotFound("Web Push is not configured on this server (NOTIFIER_VAPID_PRIVATE_KEY)")
    return VapidPublicKey(public_key=public_key_b64(context.vapid_private_key))


@router.get("/metrics", response_class=Response, tags=["health"])
async def metrics(context: ContextDep) -> Response:
    """Prometheus text format. Queue depth is sampled from the database at each scrape."""
    instruments = context.metrics
    instruments.websocket_connections.set(context.hub.connection_count)
    try:
        async with context.sessions() as session:
            depth = await queue_depth(session)
    except Exception:  # a scrape during an outage still reports the in-process figures
        depth = None
    if depth is not None:
        for status in ("pending", "dispatching", "retrying"):
            instruments.queue_depth.labels(status=status).set(depth.get(status, 0))
    return Response(generate_latest(instruments.registry), media_type=CONTENT_TYPE_LATEST)
