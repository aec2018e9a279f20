"""digest, throttle, escalation and cancellation key

``notifications.delivery_plan`` (the digest/throttle/escalation asked at enqueue) and
``notifications.cancellation_key`` with its per-user index, for
``POST /v1/notifications/cancel``; ``throttle_slots``, a throttle's sends
(models/throttle.py); ``digest_windows`` and ``digest_members`` (models/digest.py)
(docs/architecture.md, "Digest, throttle and escalation").

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009"
# Written beside other branches' migrations: whoever merges re-chains this onto the last one.
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("delivery_plan", _JSON, nullable=True))
        batch.add_column(sa.Column("cancellation_key", sa.String(57), nullable=True))
    op.create_index(
        "idx_notifications_user_cancellation_key",
        "notifications",
        ["user_id", "cancellation_key"],
        postgresql_where=sa.text("cancellation_key IS NOT NULL"),
        sqlite_where=sa.text("cancellation_key IS NOT NULL"),
    )
    op.create_table(
        "throttle_slots",
        sa.Column("user_id", sa.String(255), primary_key=True),
        sa.Column("key", sa.String(57), primary_key=True),
        sa.Column("slot", sa.Integer(), primary_key=True, autoincrement=False),
        sa.Column("notification_id", sa.Uuid(), nullable=False),
        sa.Column("reserved_at", sa.DateTime(timezone=True), nullable=False),
    )

    op.create_table(
        "digest_windows",
        sa.Column("id", sa.Uuid(), primary_key=True),
        sa.Column("user_id", sa.String(255), nullable=False),
        sa.Column("key", sa.String(57), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closes_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("opener_id", sa.Uuid(), nullable=False),
        sa.Column("members", sa.Integer(), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("digest_id", sa.Uuid(), nullable=True),
    )
    op.create_index(
        "uq_digest_windows_open",
        "digest_windows",
        ["user_id", "key"],
        unique=True,
        postgresql_where=sa.text("closed_at IS NULL"),
        sqlite_where=sa.text("closed_at IS NULL"),
    )
    op.create_table(
        "digest_members",
        sa.Column(
            "window_id",
            sa.Uuid(),
            sa.ForeignKey("digest_windows.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("notification_id", sa.Uuid(), primary_key=True, unique=True),
        sa.Column("joined_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("leading", sa.Boolean(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("digest_members")
    op.drop_index("uq_digest_windows_open", table_name="digest_windows")
    op.drop_table("digest_windows")
    op.drop_table("throttle_slots")
    op.drop_index("idx_notifications_user_cancellation_key", table_name="notifications")
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("cancellation_key")
        batch.drop_column("delivery_plan")
