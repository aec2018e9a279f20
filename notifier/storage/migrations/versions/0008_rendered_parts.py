"""rendered template parts

``notifications.rendered_parts``: the channel parts (email_subject, email_html, sms, push_title,
push_body) of a notification enqueued by template, rendered once at enqueue so that every
attempt sends the same bytes. NULL for a notification sent with title and message.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
# Written beside other branches' migrations: whoever merges re-chains this onto the last one.
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.add_column(sa.Column("rendered_parts", _JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("notifications") as batch:
        batch.drop_column("rendered_parts")
