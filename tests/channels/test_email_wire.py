"""The hand-written MIME writer (notifier/channels/email_wire.py) against the email package:
both outputs parsed back with ``BytesParser(policy=policy.default)`` must give the same
headers and the same decoded bodies, over arbitrary titles, messages, URLs and template
parts (non-ASCII, long lines, CR/LF, dots at line starts); and the wire rules hold (CRLF
only, lines of at most 998 octets). No peer is needed: both sides are pure functions of the
message, the comparison is the email package's own parser."""

from __future__ import annotations

import re
from email import policy, quoprimime
from email.message import EmailMessage
from email.parser import BytesParser
from typing import cast

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from notifier.channels.base import OutgoingMessage
from notifier.channels.email import encode_subject, message_id_for, safe_link, safe_subject
from notifier.channels.email_message import WIRE, WIRE_UTF8, compose_email
from notifier.channels.email_wire import _qp_encode, email_bytes, fast_email_bytes
from tests.channels import make_message

SMTP_FROM = "Notifier <notify@example.com>"
TO = "alice@example.com"
UNSUBSCRIBE = "https://app.example.com/unsubscribe/tok.EN_abc-123?t=1"

# Text a producer can send: any Unicode scalar (no lone surrogates, which JSON cannot carry),
# weighted towards what stresses MIME: line breaks, dots, '=', long runs, non-ASCII.
_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from([*"\r\n.= \t-", "é", "日", "😀", "\u2028", "\x85", "\x0c"]),
        st.characters(exclude_categories=["Cs"]),
    ),
    max_size=400,
)
_LONG = st.builds(lambda s, n: s * n, st.text(min_size=1, max_size=5), st.integers(1, 400))
_URL = st.one_of(
    st.none(),
    st.builds(
        lambda path: f"https://app.example.com/{path}",
        st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=300),
    ),
    _TEXT.map(lambda s: "https://x.test/" + s),
)


def _both(
    message: OutgoingMessage, unsubscribe: str | None, smtp_from: str = SMTP_FROM, to: str = TO
) -> tuple[bytes, bytes | None]:
    subject = encode_subject(safe_subject(message.parts.get("email_subject") or message.title))
    args = {
        "to": to,
        "smtp_from": smtp_from,
        "subject": subject,
        "message_id": message_id_for(message, smtp_from),
        "link": safe_link(message.action_url),
        "unsubscribe": unsubscribe,
    }
    reference = compose_email(message, **args).as_bytes(policy=WIRE)  # type: ignore[arg-type]
    return reference, fast_email_bytes(message, **args)  # type: ignore[arg-type]


def _read(raw: bytes) -> tuple[list[tuple[str, str]], list[tuple[str, str, str]]]:
    """Headers (but Date, and Content-Type whose boundary is random) and, per part, its
    content type, transfer encoding and decoded text."""
    email = BytesParser(policy=policy.default).parsebytes(raw)
    assert not email.defects
    headers = [(k, str(v)) for k, v in email.items() if k not in ("Date", "Content-Type")]
    assert email.get_content_type() == "multipart/alternative"
    parts = []
    for part in cast(EmailMessage, email).iter_parts():
        part = cast(EmailMessage, part)
        assert not part.defects
        parts.append(
            (part.get_content_type(), part["Content-Transfer-Encoding"], part.get_content())
        )
    return headers, parts


def _wire_rules(raw: bytes) -> None:
    assert b"\r" not in raw.replace(b"\r\n", b"")
    assert b"\n" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    title=st.one_of(_TEXT, _LONG),
    body=st.one_of(_TEXT, _LONG, st.lists(_TEXT, max_size=30).map("\n".join)),
    action_url=_URL,
    unsubscribe=st.sampled_from([None, UNSUBSCRIBE]),
    email_subject=st.one_of(st.none(), _TEXT),
    email_html=st.one_of(st.none(), _TEXT, _LONG),
)
@example(  # ten lines and more: qp vs base64 is sniffed on the first ten only
    title="Héllo",
    body="\n".join(["日本語テキスト" * 12] * 12),
    action_url=None,
    unsubscribe=UNSUBSCRIBE,
    email_subject=None,
    email_html=None,
)
@example(
    title=".",
    body=".\n..\n.\r\n=\r=3D\n" + "x" * 2000,
    action_url="https://a.test/.",
    unsubscribe=None,
    email_subject="=?utf-8?q?=FF?=",
    email_html="<p>\n.\n</p>",
)
def test_the_writer_gives_the_email_package_s_message(
    title: str,
    body: str,
    action_url: str | None,
    unsubscribe: str | None,
    email_subject: str | None,
    email_html: str | None,
) -> None:
    parts = {k: v for k, v in (("email_subject", email_subject), ("email_html", email_html)) if v}
    message = make_message(title=title, message=body, action_url=action_url, parts=parts)
    reference, fast = _both(message, unsubscribe)
    assert fast is not None  # every message of this shape takes the fast path
    _wire_rules(fast)
    assert _read(fast) == _read(reference)
    # Stronger than the parse: the same bytes but for the random boundary and the clock.
    boundary = re.compile(rb"={15}\d{19}==")
    date = re.compile(rb"\r\nDate: [^\r]*")
    assert date.sub(b"", boundary.sub(b"B", fast)) == date.sub(b"", boundary.sub(b"B", reference))


def test_headers_the_writer_does_not_handle_go_to_the_email_package() -> None:
    """A non-ASCII address, a display name in To, an SMTPUTF8 message: the email package
    writes them, and the result still parses to the same message."""
    message = make_message(title="Grüße", message="Hallo")
    for to in ["Jörg <jorg@example.com>", "a..b@example.com", '"a b"@example.com']:
        reference, fast = _both(message, UNSUBSCRIBE, to=to)
        assert fast is None
    subject = encode_subject(safe_subject(message.title))
    args = {
        "to": "jörg@example.com",
        "smtp_from": SMTP_FROM,
        "subject": subject,
        "message_id": message_id_for(message, SMTP_FROM),
        "link": None,
        "unsubscribe": UNSUBSCRIBE,
    }
    raw = email_bytes(message, utf8=True, **args)  # type: ignore[arg-type]
    reference = compose_email(message, **args).as_bytes(policy=WIRE_UTF8)  # type: ignore[arg-type]
    assert _read(raw) == _read(reference)
    assert "To: jörg@example.com".encode() in raw


def test_a_display_name_in_from_is_written_as_the_email_package_folds_it() -> None:
    message = make_message()
    for smtp_from, line in [
        ('"Ops, Team" <ops@example.com>', b'From: "Ops, Team" <ops@example.com>'),
        ("Nötifier <notify@example.com>", b"From: =?utf-8?q?N=C3=B6tifier?= <notify@example.com>"),
    ]:
        reference, fast = _both(message, None, smtp_from=smtp_from)
        assert fast is not None
        assert _read(fast) == _read(reference)
        assert b"\r\n" + line + b"\r\n" in fast


@settings(max_examples=500, deadline=None)
@given(
    line=st.one_of(
        st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
        st.lists(
            st.sampled_from([b"a", b"=", b" ", b"\t", b"x" * 10, b".", b"~", b"\xc3\xa9"]),
            max_size=60,
        ).map(b"".join),
    )
)
@example(line=b"x" * 76 + b" ")  # trailing whitespace at each room the encoder distinguishes
@example(line=b"x" * 77 + b"\t")
@example(line=b"x" * 78 + b" ")
@example(line=b"x" * 75 + b"=" + b"y" * 10)  # an escape at the soft break
def test_one_line_is_quoted_printable_as_the_email_package_writes_it(line: bytes) -> None:
    """The writer's own quoted-printable of a printable line (email_wire._qp_encode) is the
    email package's, soft line breaks and escaped trailing whitespace included."""
    expected = quoprimime.body_encode(line.decode("latin-1") + "\n", 78)
    assert _qp_encode(line) == expected
