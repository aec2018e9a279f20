"""The composition root: the ``notifier`` command (``cli``) and the wiring of its roles
(``roles``) — the API, a worker, both in one process — from settings. It is the one place that
knows both ``notifier.api`` and ``workers``; neither imports it, and ``workers`` never imports
``notifier.api`` (docs/architecture.md, "Wiring")."""
