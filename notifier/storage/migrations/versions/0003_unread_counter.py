"""unread counter

The inbox's exact unread count was a COUNT(*) over idx_notifications_user_unread: an index-only
scan, but one index entry per unread row (10 ms for a user with 100k unread, 0.03 ms for one
with 100). This keeps a counter per user instead, maintained by triggers on ``notifications`` so
that every writer keeps it right without application code: the API, the workers, bulk SQL, the
benchmark's seeding.

``user_unread_counts.unread`` counts the user's rows with ``is_read = false AND status <>
'cancelled'``, whatever their ``send_at``; the inbox subtracts the scheduled rows that are not
due yet (a range scan of idx_notifications_user_unread, normally empty). The counter moves by
exact deltas only, never clamped: a count that went wrong would show rather than hide. Only
something that bypasses the triggers can make it wrong (``ALTER TABLE ... DISABLE TRIGGER``, a
restore with ``--disable-triggers``); emptying the table and running ``_BACKFILL`` rebuilds it.

PostgreSQL:

- INSERT: one statement-level trigger with a transition table. A batch of 1000 rows costs one
  call and one upsert per distinct user, not 1000 calls. The upsert takes the counters' row
  locks in user_id order, so concurrent multi-user inserts cannot deadlock on them.
- UPDATE: a row-level trigger on ``UPDATE OF is_read, status, user_id`` whose WHEN clause
  (evaluated without calling the function) lets through only the rows whose counted-ness or
  user changes. The workers update ``status`` all the time (dispatching, delivered, ...) and
  never pay a call for it; a statement-level trigger would be called, and would capture
  transition tables, for every one of their statements (a transition table rules out the
  column list that keeps it away from them).

  A row whose ``is_read`` changed does not touch the counter itself: it appends its delta to
  ``user_unread_deltas``, and a statement-level ``AFTER UPDATE OF is_read`` trigger (again
  never fired by the workers, which do not set is_read) folds them into the counters at the end
  of the statement, in user order. Updating one counter row once per row, as mark-all-read
  would, is quadratic in PostgreSQL (each update in one transaction adds a version that the
  next one walks past): marking 100k rows read took 65 s that way, against 1.9 s with no
  trigger at all; with the fold it costs about 0.5 s more than with none. The fold also takes
  the counter's lock only at the end of the statement, so mark-all-read cannot deadlock with a
  concurrent single mark-read or cancel of the same user.
  Other counted-ness changes (a cancelled notification: status, one row at a time) update the
  counter directly.
- DELETE: statement-level with a transition table. The service itself never deletes
  notifications; deletes are bulk SQL (cleanups, the benchmark's ``DELETE ... WHERE
  next_attempt_at IS NOT NULL``), where one aggregated upsert per statement beats one call per
  row, in the same lock order as inserts.
- TRUNCATE fires no DELETE trigger: a TRUNCATE trigger empties the counters too.

Every trigger is ``ENABLE ALWAYS``: bulk loads run with ``session_replication_role = replica``
to skip the foreign-key triggers (``bench/data.py``'s ``insert_settled`` does), and ordinary
triggers would be skipped with them, leaving the counters behind the rows. (Should the database
ever be a logical-replication subscriber, replicate ``notifications`` but not
``user_unread_counts``: the subscriber's own triggers count the rows it receives.)

SQLite has row-level triggers only, and updates rows in place, so every change updates the
counter directly under the same conditions (``user_unread_deltas`` exists there, unused, so that
both databases have the schema of the models). A later migration that rebuilds
``notifications`` on SQLite (batch mode's copy-and-move) drops these triggers with the old
table and must create them again.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BACKFILL = """
INSERT INTO user_unread_counts (user_id, unread)
SELECT user_id, count(*) FROM notifications
WHERE is_read = {false} AND status <> 'cancelled'
GROUP BY user_id
"""

# Adds each (user_id, unread) row of the statement it ends onto that user's counter.
_ADD = "ON CONFLICT (user_id) DO UPDATE SET unread = user_unread_counts.unread + excluded.unread"


def _pg_counted(row: str) -> str:
    return f"({row}.is_read = false AND {row}.status <> 'cancelled')"


_PG_TRIGGERS = ("insert", "update", "update_fold", "delete", "truncate")

# One statement per string: asyncpg prepares what it runs, and a prepared statement holds one.
_PG_FUNCTIONS = (
    f"""
CREATE FUNCTION notifications_unread_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO user_unread_counts (user_id, unread)
    SELECT user_id, count(*) FROM new_rows
    WHERE is_read = false AND status <> 'cancelled'
    GROUP BY user_id ORDER BY user_id
    {_ADD};
    RETURN NULL;
END
$$
""",
    # Called only for rows whose counted-ness or user changed (the trigger's WHEN clause).
    f"""
CREATE FUNCTION notifications_unread_update() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.is_read IS DISTINCT FROM NEW.is_read THEN
        -- is_read is being set, so notifications_unread_update_fold runs when the statement
        -- ends and moves these into the counters.
        INSERT INTO user_unread_deltas (user_id, delta)
        SELECT user_id, delta FROM (VALUES
            (OLD.user_id, CASE WHEN {_pg_counted("OLD")} THEN -1 ELSE 0 END),
            (NEW.user_id, CASE WHEN {_pg_counted("NEW")} THEN 1 ELSE 0 END)
        ) AS d(user_id, delta)
        WHERE delta <> 0;
    ELSIF OLD.user_id = NEW.user_id THEN
        -- The status moved to or from cancelled: one step down or up.
        INSERT INTO user_unread_counts (user_id, unread)
        VALUES (NEW.user_id, CASE WHEN {_pg_counted("NEW")} THEN 1 ELSE -1 END)
        {_ADD};
    ELSE
        -- Moved to another user (the service never does this): both counters, in user order.
        INSERT INTO user_unread_counts (user_id, unread)
        SELECT user_id, sum(delta) FROM (VALUES
            (OLD.user_id, CASE WHEN {_pg_counted("OLD")} THEN -1 ELSE 0 END),
            (NEW.user_id, CASE WHEN {_pg_counted("NEW")} THEN 1 ELSE 0 END)
        ) AS d(user_id, delta)
        GROUP BY user_id HAVING sum(delta) <> 0 ORDER BY user_id
        {_ADD};
    END IF;
    RETURN NULL;
END
$$
""",
    # The deltas visible here are this transaction's own: the table is empty between
    # statements, and other transactions' rows are uncommitted.
    f"""
CREATE FUNCTION notifications_unread_update_fold() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    WITH moved AS (DELETE FROM user_unread_deltas RETURNING user_id, delta)
    INSERT INTO user_unread_counts (user_id, unread)
    SELECT user_id, sum(delta) FROM moved
    GROUP BY user_id HAVING sum(delta) <> 0 ORDER BY user_id
    {_ADD};
    RETURN NULL;
END
$$
""",
    f"""
CREATE FUNCTION notifications_unread_delete() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO user_unread_counts (user_id, unread)
    SELECT user_id, -count(*) FROM old_rows
    WHERE is_read = false AND status <> 'cancelled'
    GROUP BY user_id ORDER BY user_id
    {_ADD};
    RETURN NULL;
END
$$
""",
    """
CREATE FUNCTION notifications_unread_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM user_unread_counts;
    RETURN NULL;
END
$$
""",
)

_PG_CREATE_TRIGGERS = (
    """
CREATE TRIGGER notifications_unread_insert AFTER INSERT ON notifications
REFERENCING NEW TABLE AS new_rows
FOR EACH STATEMENT EXECUTE FUNCTION notifications_unread_insert()
""",
    f"""
CREATE TRIGGER notifications_unread_update AFTER UPDATE OF is_read, status, user_id
ON notifications
FOR EACH ROW
WHEN ({_pg_counted("OLD")} IS DISTINCT FROM {_pg_counted("NEW")}
      OR OLD.user_id IS DISTINCT FROM NEW.user_id)
EXECUTE FUNCTION notifications_unread_update()
""",
    """
CREATE TRIGGER notifications_unread_update_fold AFTER UPDATE OF is_read ON notifications
FOR EACH STATEMENT EXECUTE FUNCTION notifications_unread_update_fold()
""",
    """
CREATE TRIGGER notifications_unread_delete AFTER DELETE ON notifications
REFERENCING OLD TABLE AS old_rows
FOR EACH STATEMENT EXECUTE FUNCTION notifications_unread_delete()
""",
    """
CREATE TRIGGER notifications_unread_truncate AFTER TRUNCATE ON notifications
FOR EACH STATEMENT EXECUTE FUNCTION notifications_unread_truncate()
""",
)


def _sqlite_counted(row: str) -> str:
    return f"({row}.is_read = 0 AND {row}.status <> 'cancelled')"


def _sqlite_add(row: str, delta: int) -> str:
    # The WHERE also keeps SQLite from reading ON CONFLICT as the ON of a join.
    return (
        f"INSERT INTO user_unread_counts (user_id, unread) "
        f"SELECT {row}.user_id, {delta} WHERE {_sqlite_counted(row)} "
        "ON CONFLICT (user_id) DO UPDATE SET unread = unread + excluded.unread;"
    )


_SQLITE_TRIGGERS = (
    f"""
CREATE TRIGGER notifications_unread_insert AFTER INSERT ON notifications
FOR EACH ROW WHEN {_sqlite_counted("NEW")}
BEGIN
    {_sqlite_add("NEW", 1)}
END
""",
    f"""
CREATE TRIGGER notifications_unread_update AFTER UPDATE OF is_read, status, user_id
ON notifications
FOR EACH ROW
WHEN {_sqlite_counted("OLD")} IS NOT {_sqlite_counted("NEW")} OR OLD.user_id IS NOT NEW.user_id
BEGIN
    {_sqlite_add("OLD", -1)}
    {_sqlite_add("NEW", 1)}
END
""",
    f"""
CREATE TRIGGER notifications_unread_delete AFTER DELETE ON notifications
FOR EACH ROW WHEN {_sqlite_counted("OLD")}
BEGIN
    {_sqlite_add("OLD", -1)}
END
""",
)


def upgrade() -> None:
    postgres = op.get_bind().dialect.name == "postgresql"
    if postgres:
        # Writers wait from here to the commit, so none can slip a row in between the
        # backfill's snapshot and the triggers. (CREATE TRIGGER would take this lock anyway.)
        op.execute("LOCK TABLE notifications IN SHARE ROW EXCLUSIVE MODE")
    op.create_table(
        "user_unread_counts",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("unread", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("user_id", name=op.f("pk_user_unread_counts")),
    )
    # Its rows never outlive the statement that writes them, so on PostgreSQL it need not
    # survive a crash: UNLOGGED spares the WAL.
    op.create_table(
        "user_unread_deltas",
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("delta", sa.Integer(), nullable=False),
        prefixes=["UNLOGGED"] if postgres else [],
    )
    if postgres:
        for statement in (*_PG_FUNCTIONS, *_PG_CREATE_TRIGGERS):
            op.execute(statement)
        for name in _PG_TRIGGERS:
            op.execute(
                f"ALTER TABLE notifications ENABLE ALWAYS TRIGGER notifications_unread_{name}"
            )
        op.execute(_BACKFILL.format(false="false"))
    else:
        for statement in _SQLITE_TRIGGERS:
            op.execute(statement)
        op.execute(_BACKFILL.format(false="0"))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in _PG_TRIGGERS:
            op.execute(f"DROP TRIGGER IF EXISTS notifications_unread_{name} ON notifications")
            op.execute(f"DROP FUNCTION IF EXISTS notifications_unread_{name}()")
    else:
        for name in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS notifications_unread_{name}")
    op.drop_table("user_unread_deltas")
    op.drop_table("user_unread_counts")
