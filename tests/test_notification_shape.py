"""The one notification shape (``notifier/models/shape.py``) agrees with everything that used to
keep its own list: the API schema, the table, the claim, the worker's message and the frame."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from notifier.channels.base import OutgoingMessage
from notifier.channels.websocket import message_frame
from notifier.models.notification import (
    NEW_DELIVERY_CONSTANTS,
    NEW_ROW_CONSTANTS,
    Notification,
    NotificationDelivery,
)
from notifier.models.shape import (
    COLUMN_OF,
    DELIVERY_PUBLIC_FIELDS,
    FRAME_FIELDS,
    PUBLIC_FIELDS,
)
from notifier.realtime.frames import notification_frame_for
from notifier.schemas.notification import ChannelDeliveryPublic, NotificationPublic
from notifier.storage.dispatch import ClaimedDelivery, ClaimedNotification
from workers.outcomes import outgoing


def test_public_fields_are_the_schema_fields() -> None:
    # storage may not import the schemas: the list lives in models/, and this keeps them one.
    assert tuple(NotificationPublic.model_fields) == PUBLIC_FIELDS
    assert tuple(ChannelDeliveryPublic.model_fields) == DELIVERY_PUBLIC_FIELDS


def test_every_public_field_but_delivery_status_is_a_column() -> None:
    columns = {c.name for c in Notification.__table__.columns}
    for name in PUBLIC_FIELDS:
        if name != "delivery_status":
            assert COLUMN_OF.get(name, name) in columns, name
    assert set(NEW_ROW_CONSTANTS) <= columns
    assert set(NEW_DELIVERY_CONSTANTS) <= {c.name for c in NotificationDelivery.__table__.columns}


def test_the_claim_reads_every_frame_field() -> None:
    claimed = {f.name for f in dataclasses.fields(ClaimedNotification)}
    assert {COLUMN_OF.get(name, name) for name in FRAME_FIELDS} <= claimed


def test_a_built_row_answers_with_the_schema_and_frames_alike() -> None:
    row = Notification.build(
        user_id="u-1",
        title="Hello",
        message="World",
        channels=["websocket", "email"],
        metadata={"k": [1, 2]},
        action_url="https://example.com/x",
        related_task_id="t-1",
        send_at=datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC),
        now=datetime(2030, 1, 1, tzinfo=UTC),
    )
    public = row.to_dict()
    assert NotificationPublic.model_validate(public).model_dump(mode="json") == public

    # The worker's path to a frame (claimed row -> message -> frame) gives the row's frame.
    claimed = ClaimedNotification(
        deliveries=(ClaimedDelivery("websocket", "pending", 0, 0, 0, None),),
        **{
            f.name: getattr(row, f.name)
            for f in dataclasses.fields(ClaimedNotification)
            if f.name != "deliveries"
        },
    )
    message = outgoing(claimed, claimed.deliveries[0])
    assert isinstance(message, OutgoingMessage)
    assert message_frame(message) == notification_frame_for(row)
    assert notification_frame_for(row)["notification"] == {k: public[k] for k in FRAME_FIELDS}
