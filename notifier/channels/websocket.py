"""The ``websocket`` channel: live in-app delivery through the API processes' sockets.

The worker holds no sockets. ``send`` returns ``sent`` and hands back the publish as
``after_recorded``: the frame goes out (through the fan-out, to every API process) only once
``sent`` is durable, so a client connecting in between finds the notification in its replay.
The channel becomes ``delivered`` when a client acks the frame (``api/routes/ws.py``).
"""

from __future__ import annotations

from typing import Any, ClassVar

from notifier.channels.base import Destination, OutgoingMessage, SendResult
from notifier.channels.spec import Address, ChannelSpec
from notifier.models.notification import Channel, ChannelStatus
from notifier.models.shape import frame_dict
from notifier.realtime.fanout import Fanout
from notifier.realtime.frames import notification_frame


def message_frame(message: OutgoingMessage) -> dict[str, Any]:
    """The frame of ``message``: the same object the replay sends for its row
    (``realtime/frames.py``, ``models/shape.py``)."""
    return notification_frame(frame_dict(message, names=_MESSAGE_NAMES))


# OutgoingMessage's name for a frame field, where it is not the column's.
_MESSAGE_NAMES = {"id": "notification_id"}


class WebSocketChannel:
    name: ClassVar[Channel] = Channel.WEBSOCKET
    # ``send`` awaits nothing (the publish is ``after_recorded``): a worker's batch sends it in
    # its own task (``workers/batch.py``).
    sends_in_place: ClassVar[bool] = True

    def __init__(self, fanout: Fanout) -> None:
        self._fanout = fanout

    @property
    def configured(self) -> bool:
        return True

    async def send(self, message: OutgoingMessage, destination: Destination) -> SendResult:
        frame = message_frame(message)

        async def publish() -> None:
            await self._fanout.publish(message.user_id, frame)

        return SendResult(ChannelStatus.SENT, after_recorded=publish)

    async def aclose(self) -> None:
        return None


# In-app: it only shows in a page the user has open, so quiet hours never hold it back.
SPEC = ChannelSpec(
    Channel.WEBSOCKET.value, Address.OPEN_SOCKET, quiet_hours=False,
    configured=lambda settings: True, build=lambda parts: WebSocketChannel(parts.fanout),
)  # fmt: skip
