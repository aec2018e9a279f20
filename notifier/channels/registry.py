"""The channels this service delivers on: one line each. Adding a channel is its module (a
``DeliveryChannel`` and its ``SPEC``) and one line in ``CHANNELS`` (docs/architecture.md,
"Channels")."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from notifier.channels import browser, email, sms, websocket
from notifier.channels.base import DeliveryChannel
from notifier.channels.spec import ChannelParts, ChannelSpec
from notifier.settings import Settings


class ChannelRegistry:
    def __init__(self, specs: list[ChannelSpec]) -> None:
        self._specs = {spec.name: spec for spec in specs}

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def __iter__(self) -> Iterator[ChannelSpec]:
        return iter(list(self._specs.values()))

    def __len__(self) -> int:
        return len(self._specs)

    def __getitem__(self, name: str) -> ChannelSpec:
        return self._specs[name]

    def get(self, name: str) -> ChannelSpec | None:
        return self._specs.get(name)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self._specs)

    def register(self, spec: ChannelSpec) -> None:
        if spec.name in self._specs:
            raise ValueError(f"a channel named {spec.name!r} is registered already")
        self._specs[spec.name] = spec

    def unregister(self, name: str) -> None:
        del self._specs[name]

    @contextmanager
    def registered(self, spec: ChannelSpec) -> Iterator[ChannelSpec]:
        """``spec`` registered for the block (a test's own channel)."""
        self.register(spec)
        try:
            yield spec
        finally:
            self.unregister(spec.name)

    def build(self, parts: ChannelParts) -> dict[str, DeliveryChannel]:
        """One instance of every channel, by name (a worker's)."""
        return {spec.name: spec.build(parts) for spec in self}

    def unknown(self, names: list[str]) -> list[str]:
        return [name for name in names if name not in self._specs]


CHANNELS = ChannelRegistry(
    [
        websocket.SPEC,
        email.SPEC,
        browser.SPEC,
        sms.SPEC,
    ]
)


def check_trigger_channels(settings: Settings) -> None:
    """Refuse trigger settings (``NOTIFIER_NOTIFY_ON_*``) naming a channel that does not exist,
    in one line naming the setting."""
    for field in (
        "notify_on_completed",
        "notify_on_failed",
        "notify_on_error_log",
        "notify_on_critical_log",
    ):
        unknown = CHANNELS.unknown(getattr(settings, field))
        if unknown:
            raise ValueError(
                f"NOTIFIER_{field.upper()} unknown channel(s) {unknown}; "
                f"known: {', '.join(CHANNELS.names)}"
            )
