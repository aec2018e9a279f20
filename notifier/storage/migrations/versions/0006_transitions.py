"""notification transitions

``notification_transitions`` (notifier/models/transition.py): one row per change of status of a
notification or of one of its channels, written in the transaction of the change; the webhook
outbox is fed from them and the operator console counts them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "notification_transitions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("notification_id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=True),
        sa.Column("from_status", sa.String(length=20), nullable=True),
        sa.Column("to_status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_transitions")),
    )
    op.create_index("idx_transitions_notification", "notification_transitions", ["notification_id"])
    op.create_index(
        "idx_transitions_occurred_channel",
        "notification_transitions",
        ["occurred_at", "channel"],
    )


def downgrade() -> None:
    op.drop_index("idx_transitions_occurred_channel", table_name="notification_transitions")
    op.drop_index("idx_transitions_notification", table_name="notification_transitions")
    op.drop_table("notification_transitions")
