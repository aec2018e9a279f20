"""``POST /v1/webhooks/twilio/status``: Twilio's message status callbacks.

Authenticated by ``X-Twilio-Signature`` over the exact public URL (``NOTIFIER_PUBLIC_BASE_URL``
+ path when set, else the URL as this server saw it) and the form fields; anything else is 403.
A callback only moves the sms channel forward from ``sent`` to ``delivered`` or ``failed``;
duplicates and out-of-order reports (``sent`` after ``delivered``) change nothing.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from fastapi import APIRouter, Request, Response, status
from sqlalchemy import select

from notifier.api.deps import ContextDep, SessionDep
from notifier.api.errors import Forbidden, NotFound
from notifier.channels.sms import twilio_status_to_channel_status, validate_twilio_signature
from notifier.models.notification import Channel, ChannelStatus, NotificationDelivery
from notifier.storage.dispatch import settle_channel_externally

router = APIRouter(prefix="/v1/webhooks", tags=["webhooks"])

TWILIO_STATUS_PATH = "/v1/webhooks/twilio/status"


def _public_url(request: Request, public_base_url: str | None) -> str:
    if public_base_url:
        query = f"?{request.url.query}" if request.url.query else ""
        return f"{public_base_url.rstrip('/')}{TWILIO_STATUS_PATH}{query}"
    return str(request.url)


@router.post(
    "/twilio/status",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={403: {"description": "Missing or invalid X-Twilio-Signature"}},
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
    notification_id = await session.scalar(
        select(NotificationDelivery.notification_id).where(
            NotificationDelivery.channel == Channel.SMS.value,
            NotificationDelivery.provider_id == sid,
        )
    )
    if notification_id is None:
        return Response(status_code=status.HTTP_204_NO_CONTENT)  # not ours, or already gone
    error = None
    if new_status == ChannelStatus.FAILED:
        code = params.get("ErrorCode")
        error = f"Twilio reported {params.get('MessageStatus')}" + (
            f" (error {code})" if code else ""
        )
    await settle_channel_externally(
        session,
        notification_id,
        Channel.SMS.value,
        new_status,
        last_error=error,
        allowed_from=frozenset({ChannelStatus.SENT}),
    )
    await session.commit()
    return Response(status_code=status.HTTP_204_NO_CONTENT)
