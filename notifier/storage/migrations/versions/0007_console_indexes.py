"""operator console indexes

- ``idx_transitions_console``: the transitions the console counts (a partial index on the four
  channel kinds), by time, carrying channel, kind and latency on PostgreSQL so that the stats
  window is an index-only scan (bench/RESULTS.md, "Operator console stats").
- ``idx_notifications_created``: every user's notifications newest first (GET
  /v1/notifications), which otherwise sorted the whole table: 650 ms at 1M rows.
- ``idx_notification_deliveries_failed``: the dead letter's failed channels, few among many.
- ``idx_notification_deliveries_awaiting``: the channels still to send, for the queue figures
  (the planner otherwise read every delivery row: 73 ms at 300k rows, 10 ms with it).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
# Other 0007 migrations are written on other branches at the same time; whoever merges second
# points this at the last of them.
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CONSOLE_KINDS = (
    "kind IN ('channel.sent', 'channel.delivered', 'channel.failed', 'channel.skipped')"
)
_FAILED = "status = 'failed'"
_AWAITING = "status IN ('pending', 'retrying')"


def upgrade() -> None:
    op.create_index(
        "idx_transitions_console",
        "notification_transitions",
        ["occurred_at"],
        postgresql_include=["channel", "kind", "latency_ms"],
        postgresql_where=sa.text(_CONSOLE_KINDS),
        sqlite_where=sa.text(_CONSOLE_KINDS),
    )
    op.create_index("idx_notifications_created", "notifications", ["created_at", "id"])
    op.create_index(
        "idx_notification_deliveries_failed",
        "notification_deliveries",
        ["notification_id"],
        postgresql_where=sa.text(_FAILED),
        sqlite_where=sa.text(_FAILED),
    )
    op.create_index(
        "idx_notification_deliveries_awaiting",
        "notification_deliveries",
        ["notification_id"],
        postgresql_where=sa.text(_AWAITING),
        sqlite_where=sa.text(_AWAITING),
    )


def downgrade() -> None:
    op.drop_index("idx_notification_deliveries_awaiting", table_name="notification_deliveries")
    op.drop_index("idx_notification_deliveries_failed", table_name="notification_deliveries")
    op.drop_index("idx_notifications_created", table_name="notifications")
    op.drop_index("idx_transitions_console", table_name="notification_transitions")
