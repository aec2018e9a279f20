"""``python -m bench.noop_worker``: ``notifier worker`` with a no-op ``websocket`` channel.

The worker has no plugin hook for channels, so this launcher runs the very same
``workers.runner.run_worker_process`` (engine, session factory, metrics observer and recorder,
LISTEN wake-ups, the Dispatcher, its claim/lease/record/release path) with ``build_channels``
swapped for one that returns ``{"websocket": NoopChannel()}``. The channel does nothing and
answers ``delivered``; everything around it is the real worker. Settings come from the same
NOTIFIER_* environment as ``notifier worker``, and the schema check runs first, as there.
"""

from __future__ import annotations

import logging
import sys
from typing import ClassVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import workers.runner as runner
from notifier.channels.base import DeliveryChannel, Destination, OutgoingMessage, SendResult
from notifier.models.notification import Channel, ChannelStatus
from notifier.realtime.fanout import Fanout
from notifier.settings import Settings
from workers.cli import _check_schema, _run


class NoopChannel:
    """A ``DeliveryChannel`` that delivers instantly and does nothing."""

    name: ClassVar[Channel] = Channel.WEBSOCKET

    @property
    def configured(self) -> bool:
        return True

    async def send(self, message: OutgoingMessage, destination: Destination) -> SendResult:
        return SendResult(ChannelStatus.DELIVERED)

    async def aclose(self) -> None:
        return None


def noop_channels(
    settings: Settings, sessions: async_sessionmaker[AsyncSession], fanout: Fanout
) -> dict[str, DeliveryChannel]:
    return {Channel.WEBSOCKET.value: NoopChannel()}


async def _main(settings: Settings) -> None:
    await _check_schema(settings)
    runner.build_channels = noop_channels  # the one difference from `notifier worker`
    await runner.run_worker_process(settings)


def main() -> int:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    _run(_main(settings))  # on uvloop, as `notifier worker` runs
    return 0


if __name__ == "__main__":
    sys.exit(main())
