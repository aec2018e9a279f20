"""``python -m bench.noop_worker``: ``notifier worker`` with a no-op ``websocket`` channel.

The worker builds every registered channel, so this launcher runs the very same
``runtime.roles.run_worker_process`` (engine, session factory, metrics observer and recorder,
LISTEN wake-ups, the Dispatcher, its claim/lease/record/release path) with
``workers.runner.build_channels`` swapped for one that returns
``{"websocket": NoopChannel()}``. The channel does nothing and answers ``delivered``;
everything around it is the real worker. Settings come from the same NOTIFIER_* environment
as ``notifier worker``, and the schema check runs first, as there.
"""

from __future__ import annotations

import logging
import sys
from typing import ClassVar

from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

import workers.runner as runner
from notifier.channels.base import DeliveryChannel, Destination, OutgoingMessage, SendResult
from notifier.models.notification import Channel, ChannelStatus
from notifier.realtime.fanout import Fanout
from notifier.settings import Settings
from runtime.cli import run
from runtime.roles import run_worker_process


class NoopChannel:
    """A ``DeliveryChannel`` that delivers instantly and does nothing."""

    name: ClassVar[str] = Channel.WEBSOCKET.value
    sends_in_place: ClassVar[bool] = True  # as the websocket channel's (``workers/batch.py``)

    @property
    def configured(self) -> bool:
        return True

    async def send(self, message: OutgoingMessage, destination: Destination) -> SendResult:
        return SendResult(ChannelStatus.DELIVERED)

    async def aclose(self) -> None:
        return None


def noop_channels(
    settings: Settings,
    sessions: async_sessionmaker[AsyncSession],
    fanout: Fanout,
    metrics_registry: CollectorRegistry | None = None,
) -> dict[str, DeliveryChannel]:
    return {Channel.WEBSOCKET.value: NoopChannel()}


async def _main(settings: Settings) -> None:
    runner.build_channels = noop_channels  # the one difference from `notifier worker`
    await run_worker_process(settings)  # checks the schema first, as `notifier worker` does


def main() -> int:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    run(_main(settings))  # on uvloop, as `notifier worker` runs
    return 0


if __name__ == "__main__":
    sys.exit(main())
