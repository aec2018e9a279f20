"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "idempotency_keys",
        sa.Column("api_key_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("response_status", sa.Integer(), nullable=False),
        sa.Column(
            "response_body",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("api_key_id", "key", name=op.f("pk_idempotency_keys")),
    )
    op.create_table(
        "notifications",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("notification_type", sa.String(length=20), nullable=False),
        sa.Column("priority", sa.String(length=10), nullable=False),
        sa.Column("priority_rank", sa.SmallInteger(), nullable=False),
        sa.Column(
            "channels",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("is_read", sa.Boolean(), nullable=False),
        sa.Column("read_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("related_task_id", sa.String(length=255), nullable=True),
        sa.Column("action_url", sa.String(length=2048), nullable=True),
        sa.Column(
            "notification_metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "recipient",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("retry_count", sa.Integer(), nullable=False),
        sa.Column("send_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("dedupe_key", sa.String(length=255), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_owner", sa.String(length=64), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notifications")),
    )
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.create_index(
            "idx_notifications_claim",
            ["priority_rank", "next_attempt_at"],
            unique=False,
            postgresql_where=sa.text("next_attempt_at IS NOT NULL"),
            sqlite_where=sa.text("next_attempt_at IS NOT NULL"),
        )
        batch_op.create_index(
            "idx_notifications_due",
            ["next_attempt_at"],
            unique=False,
            postgresql_where=sa.text("next_attempt_at IS NOT NULL"),
            sqlite_where=sa.text("next_attempt_at IS NOT NULL"),
        )
        batch_op.create_index("idx_notifications_is_read", ["is_read"], unique=False)
        batch_op.create_index("idx_notifications_priority", ["priority"], unique=False)
        batch_op.create_index(
            "idx_notifications_related_task_id", ["related_task_id"], unique=False
        )
        batch_op.create_index(
            "idx_notifications_user_created", ["user_id", "created_at", "id"], unique=False
        )
        batch_op.create_index("idx_notifications_user_id", ["user_id"], unique=False)
        batch_op.create_index(
            "idx_notifications_user_priority", ["user_id", "priority"], unique=False
        )
        batch_op.create_index("idx_notifications_user_read", ["user_id", "is_read"], unique=False)
        batch_op.create_index("uq_notifications_dedupe_key", ["dedupe_key"], unique=True)

    op.create_table(
        "progress_metrics",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("metric_name", sa.String(length=255), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("unit", sa.String(length=50), nullable=False),
        sa.Column(
            "labels",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "dimensions",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column("collection_time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("is_aggregated", sa.Boolean(), nullable=False),
        sa.Column("aggregation_type", sa.String(length=20), nullable=True),
        sa.Column("related_task_id", sa.String(length=255), nullable=True),
        sa.Column("related_user_id", sa.String(length=255), nullable=True),
        sa.Column(
            "metric_metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_progress_metrics")),
    )
    with op.batch_alter_table("progress_metrics", schema=None) as batch_op:
        batch_op.create_index("idx_progress_metrics_name", ["metric_name"], unique=False)
        batch_op.create_index(
            "idx_progress_metrics_name_timestamp", ["metric_name", "timestamp"], unique=False
        )
        batch_op.create_index(
            "idx_progress_metrics_related_task_id", ["related_task_id"], unique=False
        )
        batch_op.create_index(
            "idx_progress_metrics_task_timestamp", ["related_task_id", "timestamp"], unique=False
        )
        batch_op.create_index("idx_progress_metrics_timestamp", ["timestamp"], unique=False)

    op.create_table(
        "push_subscriptions",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("endpoint", sa.String(length=2048), nullable=False),
        sa.Column("p256dh", sa.Text(), nullable=False),
        sa.Column("auth", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_push_subscriptions")),
    )
    with op.batch_alter_table("push_subscriptions", schema=None) as batch_op:
        batch_op.create_index("idx_push_subscriptions_user_id", ["user_id"], unique=False)
        batch_op.create_index("uq_push_subscriptions_endpoint", ["endpoint"], unique=True)

    op.create_table(
        "recipients",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=True),
        sa.Column("phone", sa.String(length=20), nullable=True),
        sa.Column("locale", sa.String(length=35), nullable=True),
        sa.Column("timezone", sa.String(length=64), nullable=True),
        sa.Column(
            "preferences",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "quiet_hours",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("sms_opted_out", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_recipients")),
    )
    op.create_table(
        "task_logs",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("task_id", sa.String(length=255), nullable=False),
        sa.Column("level", sa.String(length=10), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("source", sa.String(length=255), nullable=True),
        sa.Column("timestamp", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "context",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column("stack_trace", sa.Text(), nullable=True),
        sa.Column(
            "attachments",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_logs")),
    )
    with op.batch_alter_table("task_logs", schema=None) as batch_op:
        batch_op.create_index("idx_task_logs_level", ["level"], unique=False)
        batch_op.create_index("idx_task_logs_level_timestamp", ["level", "timestamp"], unique=False)
        batch_op.create_index("idx_task_logs_task_id", ["task_id"], unique=False)
        batch_op.create_index(
            "idx_task_logs_task_timestamp", ["task_id", "timestamp"], unique=False
        )
        batch_op.create_index("idx_task_logs_timestamp", ["timestamp"], unique=False)

    op.create_table(
        "task_progress",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("task_id", sa.String(length=255), nullable=False),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("task_type", sa.String(length=100), nullable=False),
        sa.Column("progress", sa.Float(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("current_step", sa.String(length=500), nullable=True),
        sa.Column("total_steps", sa.Integer(), nullable=True),
        sa.Column("estimated_duration", sa.Integer(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column(
            "result",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column(
            "error_details",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column(
            "task_metadata",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.Column(
            "tags",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_progress")),
    )
    with op.batch_alter_table("task_progress", schema=None) as batch_op:
        batch_op.create_index("idx_task_progress_status", ["status"], unique=False)
        batch_op.create_index("idx_task_progress_task_id", ["task_id"], unique=True)
        batch_op.create_index(
            "idx_task_progress_type_status", ["task_type", "status"], unique=False
        )
        batch_op.create_index("idx_task_progress_user_id", ["user_id"], unique=False)
        batch_op.create_index("idx_task_progress_user_status", ["user_id", "status"], unique=False)

    op.create_table(
        "notification_deliveries",
        sa.Column("notification_id", sa.Uuid(), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("attempts_at_requeue", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("provider_id", sa.String(length=255), nullable=True),
        sa.Column("unknown_outcomes", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name=op.f("fk_notification_deliveries_notification_id_notifications"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "notification_id", "channel", name=op.f("pk_notification_deliveries")
        ),
    )
    with op.batch_alter_table("notification_deliveries", schema=None) as batch_op:
        batch_op.create_index(
            "idx_notification_deliveries_provider", ["channel", "provider_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("notification_deliveries", schema=None) as batch_op:
        batch_op.drop_index("idx_notification_deliveries_provider")

    op.drop_table("notification_deliveries")
    with op.batch_alter_table("task_progress", schema=None) as batch_op:
        batch_op.drop_index("idx_task_progress_user_status")
        batch_op.drop_index("idx_task_progress_user_id")
        batch_op.drop_index("idx_task_progress_type_status")
        batch_op.drop_index("idx_task_progress_task_id")
        batch_op.drop_index("idx_task_progress_status")

    op.drop_table("task_progress")
    with op.batch_alter_table("task_logs", schema=None) as batch_op:
        batch_op.drop_index("idx_task_logs_timestamp")
        batch_op.drop_index("idx_task_logs_task_timestamp")
        batch_op.drop_index("idx_task_logs_task_id")
        batch_op.drop_index("idx_task_logs_level_timestamp")
        batch_op.drop_index("idx_task_logs_level")

    op.drop_table("task_logs")
    op.drop_table("recipients")
    with op.batch_alter_table("push_subscriptions", schema=None) as batch_op:
        batch_op.drop_index("uq_push_subscriptions_endpoint")
        batch_op.drop_index("idx_push_subscriptions_user_id")

    op.drop_table("push_subscriptions")
    with op.batch_alter_table("progress_metrics", schema=None) as batch_op:
        batch_op.drop_index("idx_progress_metrics_timestamp")
        batch_op.drop_index("idx_progress_metrics_task_timestamp")
        batch_op.drop_index("idx_progress_metrics_related_task_id")
        batch_op.drop_index("idx_progress_metrics_name_timestamp")
        batch_op.drop_index("idx_progress_metrics_name")

    op.drop_table("progress_metrics")
    with op.batch_alter_table("notifications", schema=None) as batch_op:
        batch_op.drop_index("uq_notifications_dedupe_key")
        batch_op.drop_index("idx_notifications_user_read")
        batch_op.drop_index("idx_notifications_user_priority")
        batch_op.drop_index("idx_notifications_user_id")
        batch_op.drop_index("idx_notifications_user_created")
        batch_op.drop_index("idx_notifications_related_task_id")
        batch_op.drop_index("idx_notifications_priority")
        batch_op.drop_index("idx_notifications_is_read")
        batch_op.drop_index(
            "idx_notifications_due",
            postgresql_where=sa.text("next_attempt_at IS NOT NULL"),
            sqlite_where=sa.text("next_attempt_at IS NOT NULL"),
        )
        batch_op.drop_index(
            "idx_notifications_claim",
            postgresql_where=sa.text("next_attempt_at IS NOT NULL"),
            sqlite_where=sa.text("next_attempt_at IS NOT NULL"),
        )

    op.drop_table("notifications")
    op.drop_table("idempotency_keys")
