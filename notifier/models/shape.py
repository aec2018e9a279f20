"""A notification's one shape outside the database (docs/architecture.md, "Notification shape").

Every place that turns a notification into a dict or a column list reads it from here: the
API's answer (``Notification.to_dict``, the enqueue's answer), the WebSocket frame (live from
the worker and replayed on reconnect alike), the enqueue's column list and the claim's. Before,
each kept its own list, and they drifted: a live frame had 12 keys and a replayed one 19.

The public fields are ``NotificationPublic``'s (``notifier/schemas/notification.py``), in its
order; storage may not import the schemas, so the list lives here and
``tests/test_notification_shape.py::test_public_fields_are_the_schema_fields`` checks the two agree.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import cache
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


# How a value becomes the API's: the name of the call in the generated reader (below).
_CONVERT: dict[str, str] = {"id": "str", "channels": "list", **dict.fromkeys(TIME_FIELDS, "_time")}

Reader = Callable[[Any], dict[str, Any]]


@cache
def reader(
    fields: tuple[str, ...] = PUBLIC_FIELDS,
    *,
    names: tuple[tuple[str, str], ...] = tuple(COLUMN_OF.items()),
    by_key: bool = False,
) -> Reader:
    """A function that reads ``fields`` off a row's attributes (or, ``by_key``, a dict's keys)
    named as the columns are (renamed by ``names``) and returns them as the API shows them.

    The function is generated from the lists, once per (fields, names), as one dict display
    (``{"id": str(s.id), "title": s.title, …}``): as fast as the hand-written dicts it replaced
    (a 1000-row enqueue answer is built on the request's path), without a list to keep by hand.
    The names are this module's own identifiers, never a user's input."""
    renamed = dict(names)
    items = []
    for field in fields:
        key = renamed.get(field, field)
        assert key.isidentifier(), key
        value = f"s[{key!r}]" if by_key else f"s.{key}"
        convert = _CONVERT.get(field)
        items.append(f"{field!r}: {convert}({value})" if convert else f"{field!r}: {value}")
    namespace: dict[str, Any] = {"_time": api_time}
    exec(f"def read(s):\n    return {{{', '.join(items)}}}\n", namespace)
    read: Reader = namespace["read"]
    return read


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
