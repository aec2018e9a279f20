"""``python -m bench.premade_email_worker``: ``notifier worker`` whose email channel sends one
pre-built message instead of building one per notification — a diagnostic for scenario 7.

Everything is the real worker (claim, record, the email channel's relays, connections and SMTP
transaction) except ``notifier.channels.email.email_bytes`` (the MIME writer the channel calls),
swapped for a function that hands back the same bytes, built once by the real ``build_email``
at start. Its rate, beside the
real worker's and raw aiosmtplib's, shows what building the MIME costs per email: the part of
the gap that lies in the message, not in the transport or the queue.
"""

from __future__ import annotations

import logging
import sys
import uuid

import notifier.channels.email as email_channel
from notifier.channels.base import OutgoingMessage
from notifier.channels.email_message import WIRE
from notifier.models.base import utcnow
from notifier.settings import Settings
from runtime.cli import run
from runtime.roles import run_worker_process


def premade(smtp_from: str) -> bytes:
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
    return built.as_bytes(policy=WIRE)


def main() -> int:
    settings = Settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    one = premade(settings.smtp_from or "bench@notifier.test")
    email_channel.email_bytes = lambda *args, **kwargs: one  # type: ignore[attr-defined]
    run(run_worker_process(settings))  # on uvloop, as `notifier worker` runs
    return 0


if __name__ == "__main__":
    sys.exit(main())
