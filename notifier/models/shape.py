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

import uuid
from collections.abc import Callable, Mapping
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
    return None if value is None else str(to_jsonable_python(value))


def _plain_list(value: Any) -> list[Any]:
    return list(value)


def _text_id(value: uuid.UUID | str) -> str:
    return str(value)


_CONVERT: dict[str, Callable[[Any], Any]] = {
    "id": _text_id,
    "channels": _plain_list,
    **{name: api_time for name in TIME_FIELDS},
}

_Reader = tuple[tuple[str, Callable[[Any], Any], Callable[[Any], Any] | None], ...]


@cache
def _reader(fields: tuple[str, ...], names: tuple[tuple[str, str], ...], by_key: bool) -> _Reader:
    # Built once per (fields, names): the getters are what make a 1000-row answer cheap.
    renamed = dict(names)
    get = itemgetter if by_key else attrgetter
    return tuple((f, get(renamed.get(f, f)), _CONVERT.get(f)) for f in fields)


def _project(source: Any, reader: _Reader) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, get, convert in reader:
        value = get(source)
        out[name] = value if convert is None else convert(value)
    return out


def public_dict(
    source: object,
    fields: tuple[str, ...] = PUBLIC_FIELDS,
    *,
    names: Mapping[str, str] = COLUMN_OF,
) -> dict[str, Any]:
    """``fields`` of ``source`` (an object whose attributes are the columns, renamed by
    ``names``) as the API shows them: ids and times as text, channels a list."""
    return _project(source, _reader(fields, tuple(names.items()), False))


def public_dict_of_values(
    values: Mapping[str, Any], fields: tuple[str, ...] = PUBLIC_FIELDS
) -> dict[str, Any]:
    """``public_dict`` of a mapping of column names to values (a row about to be inserted)."""
    return _project(values, _reader(fields, tuple(COLUMN_OF.items()), True))


def frame_dict(source: object, *, names: Mapping[str, str] = COLUMN_OF) -> dict[str, Any]:
    """The ``notification`` of a WebSocket frame (``FRAME_FIELDS``)."""
    return public_dict(source, FRAME_FIELDS, names=names)
