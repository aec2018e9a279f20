"""One channel's send: a timeout around it, and the brief in-process retries (Tenacity).

A channel is meant to raise only ``DeliveryError``s, but a third-party library can raise
anything (a JSON error on a garbled reply, a bug): ``send_once`` turns every other exception
into an ``UnknownOutcomeError`` that names it. Such a send may have reached the peer, so it is
recorded as an attempt and treated like any unknown outcome (``workers.retry.decide``): the
next attempt is told so (``after_unknown_outcome``: Twilio looks the message up first, email
resends with the same Message-ID), and a second one ends the channel ``failed``. Without this,
the exception escaped the delivery, nothing was recorded, and the row was claimed and sent again
every time its lease ran out.
"""

from __future__ import annotations

import asyncio
import logging

from notifier.channels.base import (
    DeliveryChannel,
    DeliveryError,
    Destination,
    OutgoingMessage,
    SendResult,
    UnknownOutcomeError,
)
from workers.retry import RetryPolicy, in_process_retrying

log = logging.getLogger("notifier.worker")


async def send_briefly_retrying(
    channel: DeliveryChannel,
    message: OutgoingMessage,
    destination: Destination,
    *,
    policy: RetryPolicy,
    tries_left: int,
    send_timeout: float,
    first_error: DeliveryError | None = None,
) -> tuple[SendResult | DeliveryError, int]:
    """Send, retrying in-process where that may help; the result or the last error, and how
    many tries were made.

    The first try runs on its own: most sends succeed at once, and setting Tenacity's
    controller up costs more than a no-op send. Only after a failure does Tenacity take over,
    with that failure as its first attempt, so the schedule and the count of tries are the same
    as if it had made the first try itself. ``first_error``: the first try was made already
    (in place, by the batch: ``workers/batch.py``) and failed so."""
    first: DeliveryError | None = first_error
    if first is None:
        try:
            return await send_once(channel, message, destination, send_timeout=send_timeout), 1
        except DeliveryError as error:
            first = error
    tries = 1

    async def again() -> SendResult:
        nonlocal first, tries
        if first is not None:
            error, first = first, None
            raise error  # attempt 1, already made
        tries += 1
        return await send_once(channel, message, destination, send_timeout=send_timeout)

    try:
        return await in_process_retrying(policy, tries_left=tries_left)(again), tries
    except DeliveryError as error:
        return error, tries


async def send_once(
    channel: DeliveryChannel,
    message: OutgoingMessage,
    destination: Destination,
    *,
    send_timeout: float,
) -> SendResult:
    # asyncio.timeout, not wait_for: wait_for runs the send as a task of its own (3.11).
    try:
        async with asyncio.timeout(send_timeout):
            return await channel.send(message, destination)
    except TimeoutError:
        raise UnknownOutcomeError(f"no answer within {send_timeout:.0f}s") from None
    except DeliveryError:
        raise
    except Exception as exc:
        raise unexpected(channel, exc) from exc


def unexpected(channel: DeliveryChannel, exc: Exception) -> UnknownOutcomeError:
    """What a send that raised something other than a ``DeliveryError`` counts as."""
    # A bug or a library's surprise, not a peer's answer: worth its traceback in the log.
    log.exception("%s channel raised %s", channel.name, type(exc).__name__)
    return UnknownOutcomeError(f"{type(exc).__name__} while sending: {exc}"[:1000])
