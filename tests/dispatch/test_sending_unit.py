"""``send_briefly_retrying``: the first try outside Tenacity must not change what Tenacity
decides (how many tries, which errors are retried), only what a first-time success costs."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import ClassVar

import pytest

from notifier.channels.base import (
    DeliveryError,
    Destination,
    OutgoingMessage,
    PermanentError,
    SendResult,
    TransientError,
)
from notifier.models.base import utcnow
from notifier.models.notification import Channel, ChannelStatus
from workers.retry import RetryPolicy
from workers.sending import send_briefly_retrying

# Waits between in-process tries are Tenacity's (50 ms scale); keep them short here.
POLICY = RetryPolicy(max_attempts=5, base_seconds=0.01, max_seconds=0.02, in_process_tries=3)
MESSAGE = OutgoingMessage(
    notification_id=uuid.uuid4(),
    user_id="u",
    title="t",
    message="m",
    notification_type="info",
    priority="normal",
    created_at=utcnow(),
)


class ScriptedChannel:
    """Answers each send with the next of ``replies`` (an error to raise, or success)."""

    name: ClassVar[Channel] = Channel.EMAIL

    def __init__(self, *replies: DeliveryError | None) -> None:
        self._replies: Iterator[DeliveryError | None] = iter(replies)
        self.sends = 0

    @property
    def configured(self) -> bool:
        return True

    async def send(self, message: OutgoingMessage, destination: Destination) -> SendResult:
        self.sends += 1
        reply = next(self._replies)
        if reply is not None:
            raise reply
        return SendResult(ChannelStatus.DELIVERED)

    async def aclose(self) -> None:
        return None


async def send(channel: ScriptedChannel, tries_left: int = 5) -> tuple[object, int]:
    return await send_briefly_retrying(
        channel,
        MESSAGE,
        Destination(user_id="u"),
        policy=POLICY,
        tries_left=tries_left,
        send_timeout=5.0,
    )


async def test_a_first_time_success_is_one_try() -> None:
    channel = ScriptedChannel(None)
    result, tries = await send(channel)
    assert isinstance(result, SendResult) and (tries, channel.sends) == (1, 1)


async def test_transient_failures_are_retried_and_counted() -> None:
    channel = ScriptedChannel(TransientError("451"), TransientError("451"), None)
    result, tries = await send(channel)
    assert isinstance(result, SendResult) and (tries, channel.sends) == (3, 3)


@pytest.mark.parametrize(("tries_left", "expected"), [(5, 3), (2, 2), (1, 1)])
async def test_in_process_tries_stop_at_the_smaller_budget(tries_left: int, expected: int) -> None:
    channel = ScriptedChannel(*(TransientError(f"451 #{i}") for i in range(5)))
    result, tries = await send(channel, tries_left)
    assert isinstance(result, TransientError) and str(result) == f"451 #{expected - 1}"
    assert (tries, channel.sends) == (expected, expected)


async def test_a_permanent_failure_is_not_retried() -> None:
    channel = ScriptedChannel(PermanentError("550"), None)
    result, tries = await send(channel)
    assert isinstance(result, PermanentError) and (tries, channel.sends) == (1, 1)


async def test_a_retry_after_longer_than_the_quick_wait_is_left_to_the_queue() -> None:
    channel = ScriptedChannel(TransientError("429", retry_after=30.0), None)
    result, tries = await send(channel)
    assert isinstance(result, TransientError) and (tries, channel.sends) == (1, 1)
