"""``python -m bench.mime_cost [N]``: CPU per email of building the notification's MIME bytes,
A/B in one process: the ``email`` package (``build_email`` then ``as_bytes`` with the wire
policy: what the channel did before) against the hand-written writer the channel uses now
(``notifier/channels/email_wire.py``), best of three passes of N messages each, the two sides
alternating.

Why it exists: in scenario 7's profile the worker spent ~70% of each email's CPU in the
``email`` package (bench/RESULTS.md, "Email throughput"); this isolates that cost. Before
timing, each message written by the writer is parsed back with the ``email`` package and must
give the same headers, text and HTML as the email package's, so the two sides build the same
email (tests/channels/test_email_wire.py checks it over arbitrary input).
"""

from __future__ import annotations

import sys
import time
import uuid
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import cast

from notifier.channels.base import OutgoingMessage
from notifier.channels.email import (
    build_email,
    email_subject,
    encode_subject,
    message_id_for,
    safe_link,
    safe_subject,
)
from notifier.channels.email_message import WIRE
from notifier.channels.email_wire import email_bytes
from notifier.models.base import utcnow

SMTP_FROM = "Bench <bench@notifier.test>"
TO = "someone@bench.test"
UNSUBSCRIBE = "https://notifier.test/v1/unsubscribe/bench-token-0123456789abcdef"


def sample(g: int) -> OutgoingMessage:
    """Scenario 7's message (bench/scenario_email.py), every third one with non-ASCII text."""
    accent = "é" if g % 3 == 0 else ""
    return OutgoingMessage(
        notification_id=uuid.uuid4(),
        user_id=f"user-{g % 100}",
        title=f"Bench {g}{accent}",
        message=f"Benchmark notification number {g}{accent}",
        notification_type="info",
        priority="normal",
        created_at=utcnow(),
        action_url=f"https://app.notifier.test/items/{g}",
    )


def package_bytes(message: OutgoingMessage) -> bytes:
    email = build_email(message, to=TO, smtp_from=SMTP_FROM, unsubscribe=UNSUBSCRIBE)
    return email.as_bytes(policy=WIRE)


def writer_bytes(message: OutgoingMessage) -> bytes:
    return email_bytes(
        message,
        to=TO,
        smtp_from=SMTP_FROM,
        subject=encode_subject(safe_subject(email_subject(message))),
        message_id=message_id_for(message, SMTP_FROM),
        link=safe_link(message.action_url),
        unsubscribe=UNSUBSCRIBE,
        utf8=False,
    )


def _read(raw: bytes) -> tuple[list[tuple[str, str]], str, str]:
    email = message_from_bytes(raw, policy=policy.default)
    headers = [(k, str(v)) for k, v in email.items() if k not in ("Date", "Content-Type")]
    parts = []
    for subtype in ("plain", "html"):
        part = cast(EmailMessage, email.get_body(preferencelist=(subtype,)))
        parts.append(cast(str, part.get_content()))
    return headers, parts[0], parts[1]


def cpu_ms(build: Callable[[OutgoingMessage], bytes], messages: list[OutgoingMessage]) -> float:
    started = time.process_time()
    for message in messages:
        build(message)
    return 1000 * (time.process_time() - started) / len(messages)


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    messages = [sample(g) for g in range(1, n + 1)]
    for message in messages[:50]:
        assert _read(writer_bytes(message)) == _read(package_bytes(message)), message
    package, writer = float("inf"), float("inf")
    for _ in range(3):  # alternating, best of three each
        package = min(package, cpu_ms(package_bytes, messages))
        writer = min(writer, cpu_ms(writer_bytes, messages))
    print(f"email package (build_email + as_bytes): {package:.3f} ms CPU per email (n={n})")
    print(f"email_wire writer (the channel's):      {writer:.3f} ms CPU per email")
    print(f"ratio package / writer: {package / writer:.1f}x (best of 3, alternating)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
