"""``GET /v1/notifications``: every user's notifications, newest first, for operators (the
console's dead letter and any search by status, channel, user or time; README "Operator
console"). Mounted beside ``routes/notifications.py``, which serves the other methods of the
same path."""

from __future__ import annotations

from datetime import UTC
from typing import Annotated

from fastapi import APIRouter, Query

from notifier.api.deps import ProducerDep, SessionDep
from notifier.api.errors import Unprocessable
from notifier.lifecycle.statuses import ChannelStatus, NotificationStatus
from notifier.schemas.admin import NotificationSearchPage
from notifier.schemas.channels import ChannelName
from notifier.schemas.common import IsoDatetime
from notifier.schemas.errors import AUTHENTICATED, error_responses
from notifier.schemas.notification import NotificationPublic
from notifier.storage.cursors import InvalidCursor
from notifier.storage.notification_search import SearchFilter, search_notifications

router = APIRouter(tags=["notifications"], responses=error_responses(*AUTHENTICATED))

# The limits a user id has everywhere else (1-255 characters, no control characters).
_USER_ID = r"^[^\x00-\x1f\x7f]{1,255}$"


@router.get("/v1/notifications", response_model=NotificationSearchPage)
async def search(
    _: ProducerDep,
    session: SessionDep,
    status: NotificationStatus | None = None,
    channel: Annotated[ChannelName | None, Query()] = None,
    channel_status: ChannelStatus | None = None,
    user_id: Annotated[str | None, Query(min_length=1, max_length=255, pattern=_USER_ID)] = None,
    since: Annotated[IsoDatetime | None, Query(description="created at or after")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> NotificationSearchPage:
    """All users' notifications, newest first. ``channel_status=failed`` is the dead letter;
    with ``channel``, that channel must be in that status."""
    search_filter = SearchFilter(
        status=status.value if status else None,
        channel=channel,
        channel_status=channel_status.value if channel_status else None,
        user_id=user_id,
        since=since.astimezone(UTC) if since is not None else None,
    )
    try:
        page = await search_notifications(session, search_filter, limit=limit, cursor=cursor)
    except InvalidCursor as exc:
        raise Unprocessable(str(exc)) from None
    return NotificationSearchPage(
        items=[NotificationPublic.from_row(n) for n in page.items], next_cursor=page.next_cursor
    )
