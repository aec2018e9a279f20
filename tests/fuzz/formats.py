"""Strategies for the two formats the OpenAPI document names for values only the server can
make or check, registered with schemathesis on import: ``cursor`` (a ``next_cursor``) and
``push-endpoint`` (an https URL whose host is a public address: the server resolves it)."""

from __future__ import annotations

from datetime import UTC, datetime

import schemathesis
from hypothesis import strategies as st

from notifier.storage.notifications import encode_cursor

CURSORS = st.builds(
    encode_cursor,
    st.datetimes(datetime(1971, 1, 1), datetime(8998, 1, 1), timezones=st.just(UTC)),
    st.uuids(),
)
# Public addresses that answer nothing here: a subscription is stored, no push is ever sent.
PUSH_ENDPOINTS = st.builds(
    "https://{}.{}.8.8/{}".format,
    st.integers(1, 99),
    st.integers(1, 99),
    st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=64),
)

schemathesis.openapi.format("cursor", CURSORS)
schemathesis.openapi.format("push-endpoint", PUSH_ENDPOINTS)
