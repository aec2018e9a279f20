"""the deliveries log without foreign keys

``webhook_attempts`` loses its two foreign keys (to ``webhook_endpoints`` and
``webhook_events``). Each was a trigger per logged attempt — a lookup and a row lock per row,
about 8 us of PostgreSQL's CPU per webhook sent (bench/RESULTS.md, "Webhook log without foreign
keys A/B") — and what they gave is kept another way: the outcome statement logs an attempt only
while its endpoint and event exist, the endpoints of its batch locked once each, and deleting an
endpoint deletes its log itself (docs/architecture.md, "Outbound webhooks").

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-05
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ENDPOINT_FK = "fk_webhook_attempts_endpoint_id_webhook_endpoints"
_EVENT_FK = "fk_webhook_attempts_event_id_webhook_events"


def upgrade() -> None:
    with op.batch_alter_table("webhook_attempts") as batch:
        batch.drop_constraint(_ENDPOINT_FK, type_="foreignkey")
        batch.drop_constraint(_EVENT_FK, type_="foreignkey")


def downgrade() -> None:
    # Entries whose endpoint or event is gone would refuse the keys: they go first.
    op.execute(
        "DELETE FROM webhook_attempts WHERE NOT EXISTS "
        "(SELECT 1 FROM webhook_endpoints AS e WHERE e.id = webhook_attempts.endpoint_id) "
        "OR NOT EXISTS (SELECT 1 FROM webhook_events AS ev WHERE ev.id = webhook_attempts.event_id)"
    )
    with op.batch_alter_table("webhook_attempts") as batch:
        batch.create_foreign_key(
            _ENDPOINT_FK, "webhook_endpoints", ["endpoint_id"], ["id"], ondelete="CASCADE"
        )
        batch.create_foreign_key(
            _EVENT_FK, "webhook_events", ["event_id"], ["id"], ondelete="CASCADE"
        )
