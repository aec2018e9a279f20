"""Dispatch workers: claim due notifications, send them on their channels, record outcomes; and
send the outbound webhooks.

This package depends on ``notifier`` (never on ``notifier.api``); ``notifier`` never imports
it. The wiring that runs a worker, alone or beside the API, is ``runtime``'s."""
