"""A notification's one shape outside the database (docs/architecture.md, "Notification shape").

Every place that turns a notification into a dict or a column list reads it from here: the
API's answer (``Notification.to_dict``, the enqueue's answer), the WebSocket frame (live from
the worker and replayed on reconnect alike), the enqueue's column list and the claim's. Before,
each kept its own list, and they drifted: a live frame had 12 keys and a replayed one 19.

The public fields are ``NotificationPublic``'s (``notifier/schemas/notification.py``), in its
order; storage may not import the schemas, so the list lives here and
``tests/test_models.py::test_public_fields_are_the_schema_fields`` checks the two agree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from operator import attrgetter, itemgetter
from typing import Any

from pydantic_core import to_jsonable_python

# NotificationPublic's fields, in its order (the API's JSON keeps it).
PUBLIC_FIELDS: tuple[str, ...] = (
    "id",
    "user_id",
    "title",
    "message",
    "notification_type",
    "priority",
    "channels",
    "is_read",
    "read_at",
    "related_task_id",
    "action_url",
    "metadata",
    "status",
    "delivery_status",
    "retry_count",
    "send_at",
    "expires_at",
    "created_at",
    "updated_at",
)

# The column behind a public field whose name differs (``metadata`` is reserved by SQLAlchemy).
# ``delivery_status`` is no column: it is assembled from the channels' rows.
COLUMN_OF: Mapping[str, str] = {"metadata": "notification_metadata"}

# Public fields that change while the notification is delivered. A frame leaves them out, so
# the frame a worker publishes and the frame replayed later are the same object: what the
# notification says, fixed once it is enqueued, and whether it was read (the inbox counts
# unread frames). A client wanting the rest asks GET /v1/notifications/{id}.
CHANGING_FIELDS = frozenset({"read_at", "status", "delivery_status", "retry_count", "updated_at"})
FRAME_FIELDS: tuple[str, ...] = tuple(f for f in PUBLIC_FIELDS if f not in CHANGING_FIELDS)

# ``ChannelDeliveryPublic``'s fields: one channel's entry in ``delivery_status``.
DELIVERY_PUBLIC_FIELDS: tuple[str, ...] = (
    "status",
    "attempts",
    "last_error",
    "provider_id",
    "next_attempt_at",
    "updated_at",
)

TIME_FIELDS = frozenset(
    {"read_at", "send_at", "expires_at", "created_at", "updated_at", "next_attempt_at"}
)


def api_time(value: Any) -> str | None:
    """A time as the API writes it (pydantic's JSON: ``Z`` for UTC), so a frame's times are the
    same strings as GET's."""
    global _last_time
    if value is None:
        return None
    # A new row's created_at, updated_at and its channels' updated_at are one object: written
    # once. (One tuple, swapped whole: safe with threads.)
    last = _last_time
    if value is last[0]:
        return last[1]
    text = str(to_jsonable_python(value))
    _last_time = (value, text)
    return text


_last_time: tuple[Any, str | None] = (None, None)


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "id": str,
    "channels": list,
    **{name: api_time for name in TIME_FIELDS},
}


@dataclass(frozen=True, slots=True)
class Reader:
    """Reads ``fields`` off a row in one C call (``attrgetter``/``itemgetter`` of them all),
    then converts the few that need it: a 1000-row enqueue answer is built in a few ms."""

    names: tuple[str, ...]
    get: Callable[[Any], tuple[Any, ...]]
    convert: tuple[tuple[str, int, Callable[[Any], Any]], ...]

    def __call__(self, source: Any) -> dict[str, Any]:
        values = self.get(source)
        out = dict(zip(self.names, values, strict=True))
        for name, index, convert in self.convert:
            value = values[index]
            if value is not None:  # None stays None: most optional fields are unset
                out[name] = convert(value)
        return out


@cache
def reader(
    fields: tuple[str, ...] = PUBLIC_FIELDS,
    *,
    names: tuple[tuple[str, str], ...] = tuple(COLUMN_OF.items()),
    by_key: bool = False,
) -> Reader:
    """A ``Reader`` of ``fields`` from a row's attributes (or, ``by_key``, a dict's keys) named
    as the columns are, renamed by ``names``."""
    renamed = dict(names)
    keys = [renamed.get(f, f) for f in fields]
    getter = itemgetter(*keys) if by_key else attrgetter(*keys)
    convert = tuple((f, i, _CONVERT[f]) for i, f in enumerate(fields) if f in _CONVERT)
    return Reader(fields, getter, convert)


def public_dict(
    source: object,
    fields: tuple[str, ...] = PUBLIC_FIELDS,
    *,
    names: Mapping[str, str] = COLUMN_OF,
) -> dict[str, Any]:
    """``fields`` of ``source`` (an object whose attributes are the columns, renamed by
    ``names``) as the API shows them: ids and times as text, channels a list."""
    return reader(fields, names=tuple(names.items()))(source)


def frame_dict(source: object, *, names: Mapping[str, str] = COLUMN_OF) -> dict[str, Any]:
    """The ``notification`` of a WebSocket frame (``FRAME_FIELDS``)."""
    return public_dict(source, FRAME_FIELDS, names=names)
