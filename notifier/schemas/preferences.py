"""A user's delivery preferences (``GET``/``PATCH /v1/users/{user_id}/preferences``) and the
answer of a one-click unsubscribe.

Stored in the recipient's ``preferences`` in the shape the worker's rules read
(workers/rules.py): ``{"channels": {"email": false}, "types": {"info": {"email": false}}}`` —
``false`` turns a channel off (for every notification, or for one type), ``true`` or absence
leaves it on. Other keys a producer stored there are kept as they are.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictBool

from notifier.models.notification import NotificationType
from notifier.schemas.channels import ChannelName


class PreferencesPatch(BaseModel):
    """Only what is sent changes: ``true``/``false`` sets a channel, ``null`` removes the
    setting (the channel is on again unless something else turns it off)."""

    model_config = ConfigDict(extra="forbid")
    channels: dict[ChannelName, StrictBool | None] = Field(
        default_factory=dict, description="a channel off (false) or on for every notification"
    )
    types: dict[NotificationType, dict[ChannelName, StrictBool | None]] = Field(
        default_factory=dict, description="a channel off (false) or on for one notification type"
    )

    def applied_to(self, stored: dict[str, Any]) -> dict[str, Any]:
        """``stored`` with this change made (new dicts: the column sees a new value)."""
        result = dict(stored)
        result["channels"] = _merged(stored.get("channels"), self.channels)
        types = dict(stored.get("types") or {}) if isinstance(stored.get("types"), dict) else {}
        for kind, change in self.types.items():
            merged = _merged(types.get(kind.value), change)
            if merged:
                types[kind.value] = merged
            else:
                types.pop(kind.value, None)
        result["types"] = types
        return result


def _merged(stored: Any, change: dict[str, StrictBool | None]) -> dict[str, Any]:
    merged = dict(stored) if isinstance(stored, dict) else {}
    for channel, value in change.items():
        if value is None:
            merged.pop(channel, None)
        else:
            merged[channel] = value
    return merged


class PreferencesPublic(BaseModel):
    user_id: str
    channels: dict[str, bool] = Field(description="channels turned on (true) or off (false)")
    types: dict[str, dict[str, bool]] = Field(description="per notification type, the same")

    @classmethod
    def of(cls, user_id: str, stored: dict[str, Any] | None) -> PreferencesPublic:
        stored = stored or {}
        types = stored.get("types") if isinstance(stored.get("types"), dict) else {}
        return cls(
            user_id=user_id,
            channels=_booleans(stored.get("channels")),
            types={
                kind: flags for kind, value in (types or {}).items() if (flags := _booleans(value))
            },
        )


def _booleans(value: Any) -> dict[str, bool]:
    if not isinstance(value, dict):
        return {}
    return {str(key): flag for key, flag in value.items() if isinstance(flag, bool)}


class UnsubscribeResult(BaseModel):
    unsubscribed: bool = True
    user_id: str
    notification_type: str
    channel: str = Field(default="email", description="the channel turned off for that type")
