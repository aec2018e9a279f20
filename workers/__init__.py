"""Dispatch workers: claim due notifications, send them on their channels, record outcomes.

This package depends on ``notifier``; ``notifier`` never imports it. ``workers.cli`` is the
composition root that wires API and worker together for the ``notifier`` command."""
