"""The HTTP API: ``create_app(settings)`` builds it; routes live in ``routes/``, one per noun."""

from notifier.api.app import create_app

__all__ = ["create_app"]
