"""The enqueue's PostgreSQL statement (``storage/enqueue.py``), derived from the tables.

Every column that varies per row travels as one array (``unnest``), every column in the
constants below is a literal, so a new column needs no edit here. One statement holds the
notifications, their delivery rows, the ``Idempotency-Key`` record and the dispatchers'
``pg_notify``; with websocket fast-path rows (``storage/websocket_fast_path.py``) it also holds
their transitions and webhook events (``transitions.pg_record_after``), the frames' NOTIFYs
for the other API processes, and the recipients' websocket opt-out guard. Still one round
trip.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import orjson
from sqlalchemy import Column, text
from sqlalchemy.dialects import postgresql
from sqlalchemy.sql.elements import TextClause

from notifier.models.notification import (
    NEW_DELIVERY_CONSTANTS,
    NEW_ROW_CONSTANTS,
    Notification,
    NotificationDelivery,
)
from notifier.storage.notifications import DISPATCH_WAKEUP_CHANNEL
from notifier.storage.outcome_pg import DELIVERY_STATUS_AGG, settled_events_sql
from notifier.storage.transitions import pg_record_after, pg_record_params
from notifier.storage.websocket_fast_path import OPTED_OUT_SQL, FrameNotify, transitions_json

# The fast path writes a channel `sent` and its notification's derived status: those vary.
ROW_CONSTANTS = {k: v for k, v in NEW_ROW_CONSTANTS.items() if k != "status"}
DELIVERY_CONSTANTS = {
    k: v for k, v in NEW_DELIVERY_CONSTANTS.items() if k not in {"status", "attempts"}
}

_PG_ARRAY_OF = {
    "UUID": "uuid[]",
    "VARCHAR": "text[]",
    "TEXT": "text[]",
    "SMALLINT": "smallint[]",
    "INTEGER": "integer[]",
    "BOOLEAN": "boolean[]",
    "TIMESTAMP WITH TIME ZONE": "timestamptz[]",
    # JSON arrives as text[] and is cast per element: the driver's jsonb codec is not applied
    # inside arrays. ``recipient`` of None is the JSON text 'null', as the ORM stores it.
    "JSONB": "text[]",
}


def _pg_type(column: Column[Any]) -> str:
    compiled: str = column.type.compile(dialect=postgresql.dialect())  # type: ignore[no-untyped-call]
    return compiled.split("(")[0]


def _literal(value: Any) -> str:
    # Only our own constants come here, never a user's value.
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


def _varying(table: Any, constants: dict[str, Any]) -> tuple[Column[Any], ...]:
    return tuple(c for c in table.columns if c.name not in constants)


_ROW_COLUMNS = _varying(Notification.__table__, ROW_CONSTANTS)
_DELIVERY_COLUMNS = _varying(NotificationDelivery.__table__, DELIVERY_CONSTANTS)
_JSON_COLUMNS = tuple(c.name for c in _ROW_COLUMNS if _pg_type(c) == "JSONB")
# JSON columns whose None is SQL NULL (``none_as_null``), as the ORM writes them.
_NULL_JSON = frozenset(c.name for c in _ROW_COLUMNS if getattr(c.type, "none_as_null", False))
_ROW_PARAMS = tuple(f"n_{c.name}" for c in _ROW_COLUMNS)
_ROW_VALUES = itemgetter(*(c.name for c in _ROW_COLUMNS))
_DELIVERY_PARAMS = tuple(f"d_{c.name}" for c in _DELIVERY_COLUMNS)
_DELIVERY_VALUES = itemgetter(*(c.name for c in _DELIVERY_COLUMNS))


def _selected(column: Column[Any], constants: dict[str, Any]) -> str:
    if column.name in constants:
        return _literal(constants[column.name])
    return f"t.{column.name}::jsonb" if _pg_type(column) == "JSONB" else f"t.{column.name}"


def _insert_from_arrays(
    table: Any, varying: tuple[Column[Any], ...], constants: dict[str, Any], prefix: str
) -> str:
    names = ", ".join(c.name for c in table.columns)
    values = ", ".join(_selected(c, constants) for c in table.columns)
    arrays = ", ".join(f"CAST(:{prefix}{c.name} AS {_PG_ARRAY_OF[_pg_type(c)]})" for c in varying)
    aliases = ", ".join(c.name for c in varying)
    return (
        f"INSERT INTO {table.name} ({names})\n"
        f"    SELECT {values}\n"
        f"    FROM unnest({arrays}) AS t({aliases})"
    )


# The delivery rows reference notifications inserted by the sibling CTE: foreign keys are
# checked at the end of the whole statement, when both are in.
_INSERT_ROWS = _insert_from_arrays(Notification.__table__, _ROW_COLUMNS, ROW_CONSTANTS, "n_")
_INSERT_DELIVERIES = _insert_from_arrays(
    NotificationDelivery.__table__, _DELIVERY_COLUMNS, DELIVERY_CONSTANTS, "d_"
)
_ROW_CTES = f"""new_notifications AS (
    {_INSERT_ROWS}
), new_channels AS (
    {_INSERT_DELIVERIES}
)"""
# With the fast path, the channels as inserted (a CTE's writes are not visible to the
# statement's reads, its RETURNING is) for the ``notification.settled`` events.
_FAST_ROW_CTES = f"""{_ROW_CTES[:-2]}
    RETURNING notification_id, channel, status, attempts, last_error, provider_id,
              next_attempt_at, updated_at
)"""
# ``notification.settled`` of a websocket-only notification, built by the statement from its
# channels as inserted, as ``outcome_pg``'s write-back builds it: no event objects or JSON in
# Python (bench/RESULTS.md, "Cheaper fast path A/B"; tests/realtime/test_fast_path.py). Each
# notification's channels aggregated once and joined by hash: a subquery per event would scan
# the whole batch's channels each time (a CTE has no index), a million rows for 1000.
_SETTLED_STATUS_CTE = f""", settled_status AS (
    SELECT c.notification_id, {DELIVERY_STATUS_AGG} AS delivery_status
    FROM new_channels AS c GROUP BY c.notification_id
)"""
_SETTLED_EVENTS = settled_events_sql(
    "ss.delivery_status",
    joins="\n    JOIN settled_status AS ss ON ss.notification_id = s.notification_id",
)
# The Idempotency-Key record joins the same statement: a concurrent request with the same key
# fails on the primary key here, and its notifications go with it.
_KEY_CTE = """, new_key AS (
    INSERT INTO idempotency_keys (
        api_key_id, key, request_hash, response_status, response_body, created_at)
    VALUES (:k_api_key_id, :k_key, :k_request_hash, :k_response_status,
            CAST(:k_response_body AS jsonb), :k_created_at)
)"""
_WAKE_DISPATCHERS = "pg_notify(:dispatch_wakeup, '')"
# The fast path's frames, in the order given (one user's frames keep their order), for the
# other API processes: delivered with the commit, never before it (docs/architecture.md,
# "WebSocket fast path").
_NOTIFY_FRAMES = """(SELECT count(*) FROM (
        SELECT pg_notify(:frame_channel, f.payload)
        FROM unnest(CAST(:frame_payloads AS text[])) WITH ORDINALITY AS f(payload, n)
        ORDER BY f.n) AS notified) AS frames"""
# A recipient who opted out of websocket fails the whole statement (nothing is written): the
# writer then looks them up and writes those rows for the worker, as before
# (``websocket_fast_path.fall_back``). The cast fails only when a row exists, so that the error
# names the first such user; ``FAST_PATH_REFUSED`` is how the writer recognises it.
FAST_PATH_REFUSED = "notifier: websocket opt-out of "
_OPT_OUT_GUARD = f"""(SELECT CAST('{FAST_PATH_REFUSED}' || o.user_id AS uuid)
        FROM ({OPTED_OUT_SQL}) AS o LIMIT 1) AS opt_out_guard"""


def _statement(*, key: bool, fast: bool, frames: bool) -> TextClause:
    key_cte = _KEY_CTE if key else ""
    if not fast:
        return text(f"WITH {_ROW_CTES}{key_cte}\nSELECT {_WAKE_DISPATCHERS}")
    also = f",\n    {_WAKE_DISPATCHERS},\n    {_OPT_OUT_GUARD}"
    if frames:
        also += f",\n    {_NOTIFY_FRAMES}"
    return pg_record_after(
        _FAST_ROW_CTES + key_cte + _SETTLED_STATUS_CTE,
        settled_events=_SETTLED_EVENTS,
        also_select=also,
    )


_STATEMENTS = {
    (key, fast, frames): _statement(key=key, fast=fast, frames=frames)
    for key in (False, True)
    for fast in (False, True)
    for frames in (False, True)
    if fast or not frames
}


def _json_text(value: Any) -> str:
    # Most rows have no metadata and no recipient: skip the encoder for those.
    if value is None:
        return "null"
    if value == {}:
        return "{}"
    try:  # orjson: a fifth of json's CPU; the jsonb stored is the same
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:  # what only json encodes: an integer beyond 64 bits
        return json.dumps(value)


def pg_insert(
    notifications: Sequence[dict[str, Any]],
    deliveries: Sequence[dict[str, Any]],
    *,
    record: dict[str, Any] | None,
    fast_rows: Sequence[dict[str, Any]],
    frames: Sequence[tuple[str, dict[str, Any]]],
    frame_notify: FrameNotify | None,
) -> tuple[TextClause, dict[str, Any]]:
    """The statement and its parameters. ``fast_rows``: the fast path's notifications (their
    transitions, the opt-out guard); ``frames``: (user id, frame) to NOTIFY with the
    commit through ``frame_notify`` (None: the caller publishes them after the commit)."""
    # Rows to columns in C: one itemgetter call per row, one zip for the lot.
    params: dict[str, Any] = dict(
        zip(_ROW_PARAMS, zip(*map(_ROW_VALUES, notifications), strict=True), strict=True)
    )
    for name in _JSON_COLUMNS:
        keep_null = name in _NULL_JSON
        params[f"n_{name}"] = [
            None if value is None and keep_null else _json_text(value)
            for value in params[f"n_{name}"]
        ]
    params.update(
        zip(_DELIVERY_PARAMS, zip(*map(_DELIVERY_VALUES, deliveries), strict=True), strict=True)
    )
    params["dispatch_wakeup"] = DISPATCH_WAKEUP_CHANNEL
    if record is not None:
        params.update({f"k_{name}": value for name, value in record.items()})
        params["k_response_body"] = _json_text(record["response_body"])
    fast = bool(fast_rows)
    notify = fast and frame_notify is not None and bool(frames)
    if fast:
        # No event is built in Python (channel events and settled are the statement's).
        params.update(pg_record_params((), settled_in_sql=True))
        params["transitions"] = transitions_json(fast_rows)
        params["f_id"] = [row["id"] for row in fast_rows]
        params["f_user_id"] = [row["user_id"] for row in fast_rows]
        params["f_type"] = [row["notification_type"] for row in fast_rows]
    if notify:
        assert frame_notify is not None
        params["frame_channel"] = frame_notify.channel
        params["frame_payloads"] = [frame_notify.payload(user, frame) for user, frame in frames]
    return _STATEMENTS[(record is not None, fast, notify)], params
