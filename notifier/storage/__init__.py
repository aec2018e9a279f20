"""Database access: engine and sessions, migrations, and the named queries that matter."""
