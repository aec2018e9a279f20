"""``python -m bench.premade_email_worker``: ``notifier worker`` whose email channel sends one
pre-built message instead of building one per notification — a diagnostic for scenario 7.

Everything is the real worker (claim, record, the email channel's relays, connections and SMTP
transaction) except ``notifier.channels.email.build_email``, swapped for a function that hands
back the same bytes, built once by the real ``build_email`` at start. Its rate, beside the
real worker's and raw aiosmtplib's, shows what building the MIME costs per email: the part of
the gap that lies in the message, not in the transport or the queue.
"""

from __future__ import annotations

import logging
import sys
import uuid
from typing import Any

import notifier.channels.email as email_channel
from notifier.channels.base import OutgoingMessage
from notifier.models.base import utcnow
from notifier.settings import Settings
from runtime.cli import run
from runtime.roles import run_worker_process


class Premade:
    """What ``EmailChannel.send`` reads of an ``EmailMessage``: its bytes and Message-ID."""

    def __init__(self, payload: bytes, message_id: str) -> None:
        self.payload, self.message_id = payload, message_id

    def as_bytes(self, **_: Any) -> bytes:
        return self.payload

    def __getitem__(self, header: str) -> str:
        return self.message_id


def premade(smtp_from: str) -> Premade:
    sample = OutgoingMessage(
        notification_id=uuid.uuid4(),
        user_id="user-1",
        title="Bench 1",
        message="Benchmark notification number 1",
        notification_type="info",
        priority="normal",
        created_at=utcnow(),
    )
    built = email_channel.build_email(sample, to="someone@bench.test", smtp_from=smtp_from)
    return Premade(built.as_bytes(), str(built["Message-ID"]))


def main() -> int:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    one = premade(settings.smtp_from or "bench@notifier.test")
    email_channel.build_email = lambda *args, **kwargs: one  # type: ignore[assignment]
    run(run_worker_process(settings))  # on uvloop, as `notifier worker` runs
    return 0


if __name__ == "__main__":
    sys.exit(main())
