"""Outbound webhooks: the event types and their envelope (``events``), the secrets and the
Standard Webhooks signature (``signing``). Storage is ``notifier.storage.webhooks``; the worker
that sends is ``workers.webhook_sender``."""
