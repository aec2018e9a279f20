"""The notification email written straight to its wire bytes, without building an
``EmailMessage`` and running the ``email`` package's generator over it.

Why: building the message object and serializing it was ~70% of the worker's CPU per email
(bench/RESULTS.md, "Email throughput" and "Email MIME writer A/B"). The message we send has
one fixed shape (docs/architecture.md, "Templates": ``multipart/alternative``, a text part
and an HTML part, the headers email_message.py sets), so its bytes can be written directly.

What it writes is what ``compose_email(...).as_bytes(policy=WIRE)`` writes, byte for byte
but for the random boundary: the bodies go through the same choice of transfer encoding as
the ``email`` package's ``set_content`` (7bit, 8bit, quoted-printable or base64, decided on
the same line lengths and the same sniff of the first ten lines, with the same encoders),
and the headers are written the way SMTP's policy folds them. Whatever this writer does not
handle exactly that way (an address or Message-ID that is not plain ASCII, a header line
the policy would refold, an SMTPUTF8 message) goes to the ``email`` package instead:
``email_bytes`` never guesses. tests/channels/test_email_wire.py compares both outputs.
"""

from __future__ import annotations

import binascii
import random
import re
import sys
from datetime import datetime
from email import quoprimime
from email.message import EmailMessage
from email.utils import format_datetime
from functools import lru_cache

from notifier.channels.base import OutgoingMessage
from notifier.channels.email_message import (
    WIRE,
    WIRE_UTF8,
    compose_email,
    default_html,
    plain_text,
)
from notifier.models.base import utcnow

# policy.default's line length (what set_content encodes for) and its body line separator.
_MAX_LINE = 78
# The longest body line whose quoted-printable form is remembered (_qp_line).
_CACHED_LINE = 512
# SMTP's hard limit on a line (RFC 5321 4.5.3.1.6), CRLF excluded.
_HARD_LINE = 998
# An addr-spec written as it is by the address header's parser and folder: a dot-atom local
# part and a domain of labels. Anything else (display names, quoting, non-ASCII) is left to
# the email package.
_SIMPLE_ADDRESS = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*"
)
_SIMPLE_MESSAGE_ID = re.compile(r"<[A-Za-z0-9-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*>")
# A URL written on one line as it is (_UrlListHeader): printable ASCII, no angle brackets.
_SIMPLE_URL = re.compile(r"[!-;=?-~]+")


# Bytes that quoted-printable writes as they are, and "=", which it writes "=3D": a line of
# only these (most lines of an email) is escaped by one ``replace``.
_QP_PLAIN = re.compile(rb"[\t -~]*")


def _qp_encode(line: bytes) -> str:
    """``quoprimime.body_encode(line + "\n", 78)`` for one line without its end. The email
    package's encoder escapes with ``str.translate`` over a 256-entry table, which was most of
    an email's CPU (bench/RESULTS.md, "Email channel A/B"); a line of printable ASCII needs
    only its "=" escaped, then the same soft line breaks as that encoder's (its loop, for one
    line). Anything else goes to the encoder itself."""
    if not _QP_PLAIN.fullmatch(line):
        return quoprimime.body_encode(line.decode("latin-1") + "\n", _MAX_LINE)
    text = line.decode("ascii").replace("=", "=3D")
    if len(text) <= _MAX_LINE and not text.endswith((" ", "\t")):
        return text + "\n"  # no soft break, no trailing whitespace to escape
    pieces = []
    start = 0
    laststart = len(text) - 1 - _MAX_LINE
    while start <= laststart:
        stop = start + _MAX_LINE - 1
        # never break inside an escape sequence
        if text[stop - 2] == "=":
            pieces.append(text[start : stop - 1])
            start = stop - 2
        elif text[stop - 1] == "=":
            pieces.append(text[start:stop])
            start = stop - 1
        else:
            pieces.append(text[start:stop] + "=")
            start = stop
    if text and text[-1] in " \t":
        # a line may not end in whitespace: escaped, or kept before a soft break
        room = start - laststart
        last = text[-1]
        if room >= 3:
            tail = f"={ord(last):02X}"
        elif room == 2:
            tail = last + "=\n"
        else:
            tail = f"=\n={ord(last):02X}"
        pieces.append(text[start:-1] + tail)
    else:
        pieces.append(text[start:])
    pieces.append("")
    return "\n".join(pieces)


@lru_cache(maxsize=512)
def _qp_cached(line: bytes) -> str:
    return _qp_encode(line)


def _qp_line(line: bytes) -> str:
    """One line (without its end) as ``quoprimime.body_encode`` writes it, ending in "\n".
    That encoder works line by line (every character that could end a line is escaped first),
    so a body's encoding is the concatenation of its lines'. Most lines of the default layout
    are the same in every email, so short lines are remembered (bounded: 512 lines of at most
    _CACHED_LINE bytes)."""
    if len(line) <= _CACHED_LINE:
        return _qp_cached(line)
    return _qp_encode(line)


def _encode_text(text: str) -> tuple[str, bytes]:
    """``(cte, body)`` as ``email.contentmanager.set_text_content`` makes them under
    policy.default (utf-8, 78 columns, 8bit allowed), with the body's lines ending in CRLF as
    the generator writes them. Mirrors CPython's ``_encode_text``, so that the encoding chosen
    is the one the email package chooses."""
    lines = text.encode("utf-8").splitlines()
    if max((len(line) for line in lines), default=0) <= _MAX_LINE:
        # 7bit if ASCII, else 8bit: the bytes as they are either way.
        return ("7bit" if all(line.isascii() for line in lines) else "8bit"), b"\r\n".join(
            lines
        ) + b"\r\n"
    sniff = b"\n".join(lines[:10]) + b"\n"
    sniff_qp = "".join(map(_qp_line, lines[:10]))
    if len(sniff_qp) > len(binascii.b2a_base64(sniff)):
        data = b"\n".join(lines) + b"\n"
        step = _MAX_LINE // 4 * 3
        encoded = b"".join(
            binascii.b2a_base64(data[i : i + step]) for i in range(0, len(data), step)
        )
        return "base64", encoded.replace(b"\n", b"\r\n")
    qp = sniff_qp + "".join(map(_qp_line, lines[10:])) if len(lines) > 10 else sniff_qp
    return "quoted-printable", qp.replace("\n", "\r\n").encode("ascii")


def _part(subtype: str, text: str, extra: str) -> bytes:
    cte, body = _encode_text(text)
    head = (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        f"Content-Transfer-Encoding: {cte}\r\n{extra}\r\n"
    )
    return head.encode("ascii") + body


@lru_cache(maxsize=16)
def _from_line(smtp_from: str) -> bytes | None:
    """The From line as SMTP's policy writes it, computed once per setting by the email
    package itself (a display name may be quoted or encoded); None if it is not ASCII."""
    probe = EmailMessage()
    probe["From"] = smtp_from
    line = probe.as_bytes(policy=WIRE)
    return line if line.isascii() and line.endswith(b"\r\n\r\n") else None


def _subject_line(subject: str) -> str | None:
    """The Subject as the generator writes a raw value (``policy._fold``): its lines joined
    by CRLF, unless one is long enough for the policy to refold it (then None)."""
    lines = subject.splitlines()
    if not subject.isascii():
        return None
    if lines and (
        len(lines[0]) + len("Subject: ") > _MAX_LINE or any(len(x) > _MAX_LINE for x in lines[1:])
    ):
        return None
    return "Subject: " + "\r\n".join(lines) + "\r\n"


_date_line: tuple[datetime, str] = (datetime.min, "")


def _date() -> str:
    """``format_datetime(utcnow())``: the header shows whole seconds, so it is written once a
    second rather than once an email."""
    global _date_line
    now = utcnow().replace(microsecond=0)
    if _date_line[0] != now:
        _date_line = (now, format_datetime(now))
    return _date_line[1]


def _boundary(bodies: tuple[bytes, ...]) -> str:
    """The email package's kind of boundary (``Generator._make_boundary``), checked against
    the bodies so that no body line can read as it."""
    while True:
        boundary = "=" * 15 + f"{random.randrange(sys.maxsize):019d}" + "=="
        marker = b"--" + boundary.encode("ascii")
        if not any(marker in body for body in bodies):
            return boundary


def fast_email_bytes(
    message: OutgoingMessage,
    *,
    to: str,
    smtp_from: str,
    subject: str,
    message_id: str,
    link: str | None,
    unsubscribe: str | None,
) -> bytes | None:
    """The message's bytes as ``compose_email(...).as_bytes(policy=WIRE)`` would write them,
    or None when one of its headers is not of the plain kind this writer handles."""
    from_line = _from_line(smtp_from)
    subject_line = _subject_line(subject)
    if (
        from_line is None
        or subject_line is None
        or len(to) > _MAX_LINE - len("To: ")
        or not _SIMPLE_ADDRESS.fullmatch(to)
        or len(message_id) > _MAX_LINE - len("Message-ID: ")
        or not _SIMPLE_MESSAGE_ID.fullmatch(message_id)
        or (
            unsubscribe is not None
            and (
                len(unsubscribe) > _HARD_LINE - len("List-Unsubscribe: <>")
                or not _SIMPLE_URL.fullmatch(unsubscribe)
            )
        )
    ):
        return None
    template_html = message.parts.get("email_html")
    html_body = template_html if template_html else default_html(message, link, unsubscribe)
    text_part = _part("plain", plain_text(message, link, unsubscribe), "")
    # add_alternative gives the new part a MIME-Version of its own; kept for the same bytes.
    html_part = _part("html", html_body, "MIME-Version: 1.0\r\n")
    boundary = _boundary((text_part, html_part))
    unsubscribe_lines = (
        f"List-Unsubscribe: <{unsubscribe}>\r\n"
        "List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"
        if unsubscribe
        else ""
    )
    head = (
        f"{subject_line}"
        f"{from_line[:-2].decode('ascii')}"
        f"To: {to}\r\n"
        f"Date: {_date()}\r\n"
        f"Message-ID: {message_id}\r\n"
        f"X-Notifier-Notification-Id: {message.notification_id}\r\n"
        "Auto-Submitted: auto-generated\r\n"
        f"{unsubscribe_lines}"
        "MIME-Version: 1.0\r\n"
        f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n\r\n'
        f"--{boundary}\r\n"
    )
    return b"".join(
        (
            head.encode("ascii"),
            text_part,
            f"\r\n--{boundary}\r\n".encode("ascii"),
            html_part,
            f"\r\n--{boundary}--\r\n".encode("ascii"),
        )
    )


def email_bytes(
    message: OutgoingMessage,
    *,
    to: str,
    smtp_from: str,
    subject: str,
    message_id: str,
    link: str | None,
    unsubscribe: str | None,
    utf8: bool,
) -> bytes:
    """The wire bytes of the notification's email (arguments as ``compose_email``'s; ``utf8``
    for an SMTPUTF8 transaction): the fast writer's when it handles the message, else the
    email package's."""
    if not utf8:
        fast = fast_email_bytes(
            message,
            to=to,
            smtp_from=smtp_from,
            subject=subject,
            message_id=message_id,
            link=link,
            unsubscribe=unsubscribe,
        )
        if fast is not None:
            return fast
    email = compose_email(
        message,
        to=to,
        smtp_from=smtp_from,
        subject=subject,
        message_id=message_id,
        link=link,
        unsubscribe=unsubscribe,
    )
    return email.as_bytes(policy=WIRE_UTF8 if utf8 else WIRE)
