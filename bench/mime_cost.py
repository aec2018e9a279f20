"""``python -m bench.mime_cost [N]``: CPU per email of building the MIME message the way the
channel does (``build_email`` then ``as_bytes`` with SMTP's policy), against the same message
written by hand (headers as strings, the two parts 7bit or quoted-printable, one boundary), in
the same process, best of three passes of N messages each.

Why it exists: in scenario 7's profile the worker spends most of each email's CPU in the
``email`` package (bench/RESULTS.md, "Email throughput"); this isolates that cost, and shows
what a hand-written message would leave of it. Before timing, each hand-written message is
parsed back with the ``email`` package and must give the same headers, text and HTML as the
channel's, so the two sides build the same email.
"""

from __future__ import annotations

import binascii
import html
import sys
import time
import uuid
from collections.abc import Callable
from email import message_from_bytes, policy
from email.message import EmailMessage
from email.utils import format_datetime
from typing import cast

from notifier.channels.base import OutgoingMessage
from notifier.channels.email import build_email, encode_subject, message_id_for, safe_subject
from notifier.models.base import utcnow

SMTP_FROM = "Bench <bench@notifier.test>"
TO = "someone@bench.test"


def sample(g: int) -> OutgoingMessage:
    return OutgoingMessage(
        notification_id=uuid.uuid4(),
        user_id=f"user-{g % 100}",
        title=f"Bench {g}",
        message=f"Benchmark notification number {g}",
        notification_type="info",
        priority="normal",
        created_at=utcnow(),
    )


def channel_bytes(message: OutgoingMessage) -> bytes:
    return build_email(message, to=TO, smtp_from=SMTP_FROM).as_bytes(policy=policy.SMTP)


def _part(subtype: str, body: str) -> bytes:
    lines = body.splitlines() or [""]
    if body.isascii() and max(map(len, lines)) <= 900:
        cte, data = "7bit", body.replace("\n", "\r\n").encode()
    else:
        cte = "quoted-printable"
        data = binascii.b2a_qp(body.encode(), istext=True).replace(b"\n", b"\r\n")
    head = f'Content-Type: text/{subtype}; charset="utf-8"\r\nContent-Transfer-Encoding: {cte}'
    return f"{head}\r\n\r\n".encode() + data


def hand_bytes(message: OutgoingMessage) -> bytes:
    """The channel's email (same headers, text and HTML), written without the email package
    (ASCII From and To only: what this comparison sends)."""
    text = f"{message.title}\n\n{message.message}\n"
    body_html = "<br>\n".join(html.escape(line) for line in message.message.splitlines())
    page = (
        "<!doctype html>\n"
        '<html><body style="font-family: sans-serif">\n'
        f"<h2>{html.escape(message.title)}</h2>\n"
        f"<p>{body_html}</p>\n"
        "</body></html>\n"
    )
    boundary = f"=={uuid.uuid4().hex}=="
    head = (
        f"Subject: {encode_subject(safe_subject(message.title))}\r\n"
        f"From: {SMTP_FROM}\r\nTo: {TO}\r\nDate: {format_datetime(utcnow())}\r\n"
        f"Message-ID: {message_id_for(message, SMTP_FROM)}\r\n"
        f"X-Notifier-Notification-Id: {message.notification_id}\r\n"
        "Auto-Submitted: auto-generated\r\nMIME-Version: 1.0\r\n"
        f'Content-Type: multipart/alternative; boundary="{boundary}"\r\n\r\n'
    )
    return b"".join(
        [
            head.encode(),
            f"--{boundary}\r\n".encode(),
            _part("plain", text),
            f"\r\n--{boundary}\r\n".encode(),
            _part("html", page),
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )


def _read(raw: bytes) -> tuple[list[tuple[str, str]], str, str]:
    email = message_from_bytes(raw, policy=policy.default)
    headers = [(k, str(v)) for k, v in email.items() if k not in ("Date", "Content-Type")]
    parts = []
    for subtype in ("plain", "html"):
        part = cast(EmailMessage, email.get_body(preferencelist=(subtype,)))
        parts.append(cast(str, part.get_content()).replace("\r\n", "\n"))
    return headers, parts[0], parts[1]


def cpu_ms(build: Callable[[OutgoingMessage], bytes], messages: list[OutgoingMessage]) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.process_time()
        for message in messages:
            build(message)
        best = min(best, time.process_time() - started)
    return 1000 * best / len(messages)


def main() -> int:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    messages = [sample(g) for g in range(1, n + 1)]
    for message in messages[:50]:
        assert _read(hand_bytes(message)) == _read(channel_bytes(message)), message
    channel, hand = cpu_ms(channel_bytes, messages), cpu_ms(hand_bytes, messages)
    print(f"build_email + as_bytes: {channel:.3f} ms CPU per email (n={n}, best of 3)")
    print(f"written by hand:        {hand:.3f} ms CPU per email ({channel / hand:.0f}x less)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
