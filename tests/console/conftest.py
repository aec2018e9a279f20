"""The console's tests use the dispatch tests' per-test databases and SMTP peer: an empty
database of the test's own on each backend in turn, so the figures a test reads are only the
deliveries it made."""

from tests.dispatch.conftest import backend, db_url, pg_scratch, smtp_peer  # noqa: F401
