"""What a channel declares about itself (``ChannelSpec``), in its own module, for the registry
(``registry.py``) to list: everything outside the channel that must know about it — the
worker's recipient rules, the enqueue's payload limits, the trigger settings, the wiring that
builds it — reads the spec instead of naming the channel (docs/architecture.md, "Channels")."""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from notifier.settings import Settings

if TYPE_CHECKING:
    from notifier.channels.base import DeliveryChannel
    from notifier.realtime.fanout import Fanout


class Address(StrEnum):
    """What a channel needs to reach a user (``base.Destination`` carries each)."""

    EMAIL = "email"
    PHONE = "phone"
    PUSH_SUBSCRIPTION = "push subscription"
    OPEN_SOCKET = "open socket"  # whoever is connected: nothing to look up


@dataclass(frozen=True, slots=True)
class PayloadDraft:
    """The fields of a notification that a payload limit reads, before the notification
    exists (at enqueue)."""

    title: str
    message: str
    action_url: str | None
    notification_type: str
    priority: str

    @classmethod
    def of(cls, source: object) -> PayloadDraft:
        """The draft of anything with these fields by name (the API's request): the list of
        what a limit reads is this class, kept nowhere else."""
        return cls(**{f.name: getattr(source, f.name) for f in dataclasses.fields(cls)})


@dataclass(frozen=True, slots=True)
class PayloadLimit:
    """A limit a notification must fit to be accepted on the channel: a 422 at enqueue."""

    fits: Callable[[PayloadDraft], bool]
    message: str  # the error's message: what is too large, and what to do
    reason: str  # the error detail's ``msg``
    code: str  # the error detail's ``type``


@dataclass(frozen=True, slots=True)
class ChannelParts:
    """What the wiring hands a channel to be built from, besides the settings."""

    settings: Settings
    # Where a frame for a user's open sockets goes (every API process).
    fanout: Fanout
    # Deletes a push subscription its push service reported gone.
    forget_push_subscription: Callable[[str], Awaitable[None]]
    # The process's Prometheus registry, for a channel's own series (the email relays');
    # None: the channel keeps them to itself.
    metrics_registry: CollectorRegistry | None = None


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    name: str
    address: Address
    # Whether the recipient's quiet hours hold the channel back (never for the in-app one).
    quiet_hours: bool
    # Whether the settings the channel needs are there; unconfigured, its sends are skipped.
    configured: Callable[[Settings], bool]
    build: Callable[[ChannelParts], DeliveryChannel]
    payload_limit: PayloadLimit | None = None
