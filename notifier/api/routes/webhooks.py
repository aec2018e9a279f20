"""``POST /v1/webhooks/twilio/status``: Twilio's message status callbacks.

Authenticated by ``X-Twilio-Signature`` over the exact public URL (``NOTIFIER_PUBLIC_BASE_URL``
+ path when set, else the URL as this server saw it) and the form fields; anything else is 403.
A callback only moves the sms channel forward from ``sent`` to ``delivered`` or ``failed``;
duplicates and out-of-order reports (``sent`` after ``delivered``) change nothing.

A callback can overtake the worker: Twilio may report on a message before the worker has
recorded its SID (Twilio's answer to the POST was slow, or the worker's commit was). Twilio does
not send a callback twice, so an unknown SID is looked up again for a few seconds (well within
Twilio's 15 s webhook timeout) before the callback is taken for someone else's.
"""

from __future__ import annotations

import asyncio
import uuid
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response, status

from notifier.api.context import ServiceContext
from notifier.api.deps import ContextDep, SessionDep
from notifier.api.errors import Forbidden, NotFound
from notifier.channels.sms import twilio_status_to_channel_status, validate_twilio_signature
from notifier.lifecycle.machine import ChannelChange, ChannelEvent
from notifier.models.notification import Channel, ChannelStatus
from notifier.schemas.errors import error_responses
from notifier.storage.provider_reports import apply_report, notification_for_provider_id

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

TWILIO_STATUS_PATH = "/v1/webhooks/twilio/status"
# How long a callback waits for the worker to record an SID it does not know yet.
UNKNOWN_SID_WAIT_SECONDS = 8.0
_UNKNOWN_SID_POLL_SECONDS = 0.1


async def _notification_for_sid(context: ServiceContext, sid: str) -> uuid.UUID | None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + UNKNOWN_SID_WAIT_SECONDS
    while True:
        # Each look sees what has been committed since.
        notification_id = await notification_for_provider_id(
            context.sessions, Channel.SMS.value, sid
        )
        if notification_id is not None or loop.time() >= deadline:
            return notification_id
        await asyncio.sleep(_UNKNOWN_SID_POLL_SECONDS)


def _public_url(request: Request, public_base_url: str | None) -> str:
    if public_base_url:
        query = f"?{request.url.query}" if request.url.query else ""
        return f"{public_base_url.rstrip('/')}{TWILIO_STATUS_PATH}{query}"
    return str(request.url)


@router.post(
    "/twilio/status",
    status_code=status.HTTP_204_NO_CONTENT,
    # 403: a missing or invalid X-Twilio-Signature; 404: SMS is not configured here.
    responses=error_responses(400, 403, 404, 413, 503),
)
async def twilio_status_callback(
    request: Request, context: ContextDep, session: SessionDep
) -> Response:
    settings = context.settings
    if settings.twilio_auth_token is None:
        raise NotFound("SMS is not configured on this server")
    params = dict(
        parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    )
    signature = request.headers.get("x-twilio-signature", "")
    url = _public_url(request, settings.public_base_url)
    if not validate_twilio_signature(
        settings.twilio_auth_token.get_secret_value(), url, params, signature
    ):
        raise Forbidden("invalid X-Twilio-Signature")
    new_status = twilio_status_to_channel_status(params.get("MessageStatus", ""))
    sid = params.get("MessageSid", "")
    if new_status is None or not sid:
        return Response(status_code=status.HTTP_204_NO_CONTENT)
    notification_id = await _notification_for_sid(context, sid)
    if notification_id is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)  # not ours, or already gone
    change = ChannelChange(ChannelEvent.CONFIRMED)
    if new_status == ChannelStatus.FAILED:
        code = params.get("ErrorCode")
        error = f"Twilio reported {params.get('MessageStatus')}" + (
            f" (error {code})" if code else ""
        )
        change = ChannelChange(ChannelEvent.REPORTED_FAILED, last_error=error)
    # The machine takes a report only on a `sent` channel: duplicates and reports that would
    # move it back change nothing.
    await apply_report(session, notification_id, Channel.SMS.value, change, context.wakeups)
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
