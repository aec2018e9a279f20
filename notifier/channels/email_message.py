"""The MIME message of a notification email: ``multipart/alternative`` with a plain-text part
and an HTML part, and the one-click unsubscribe headers (RFC 8058).

The HTML part is the template's ``email_html`` when the notification has one (rendered and
autoescaped at enqueue), else ``default_html``: the title, the message and the ``action_url``
as a button, in the table layout with inline CSS that mail clients render alike (no
stylesheet, no remote images, no script). Everything the producer sent is HTML-escaped here.

The transport (connections, SMTP errors, the Subject's encoding) is email.py's.
"""

from __future__ import annotations

import html
from email import policy
from email.headerregistry import HeaderRegistry, UnstructuredHeader
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import format_datetime
from typing import Any

from notifier.channels.base import OutgoingMessage
from notifier.models.base import utcnow


class _UrlListHeader(UnstructuredHeader):
    """A header of ``<URL>``s written on one line, never folded: a URL has no space to fold
    at, and the email package would otherwise make it RFC 2047 encoded words past 78
    characters, which no mail client reads as a URL. (A line may be 998 long: our URLs are
    far shorter, ``MAX_TOKEN_CHARS`` in notifier/unsubscribe.py.)"""

    name: str  # BaseHeader's, which the registry mixes in

    def fold(self, *, policy: EmailPolicy) -> str:
        return f"{self.name}: {self}{policy.linesep}"


def _wire(base: Any) -> Any:
    registry = HeaderRegistry()
    # The registry mixes BaseHeader in (typeshed types the argument as a BaseHeader already).
    registry.map_to_type("list-unsubscribe", _UrlListHeader)  # type: ignore[arg-type]
    return base.clone(header_factory=registry)


# What email.py serializes with: SMTP's policy, with List-Unsubscribe left unfolded.
WIRE = _wire(policy.SMTP)
WIRE_UTF8 = _wire(policy.SMTPUTF8)

# The accent of the card's top border, by notification type.
_ACCENTS = {
    "success": "#16a34a",
    "warning": "#d97706",
    "error": "#dc2626",
    "progress": "#2563eb",
}
_DEFAULT_ACCENT = "#2563eb"
_FONT = "-apple-system,BlinkMacSystemFont,'Segoe UI',Roboto,Helvetica,Arial,sans-serif"


def plain_text(message: OutgoingMessage, link: str | None, unsubscribe: str | None) -> str:
    text = f"{message.title}\n\n{message.message}\n"
    if link:
        text += f"\n{link}\n"
    if unsubscribe:
        text += f"\n--\nUnsubscribe from these emails: {unsubscribe}\n"
    return text


def default_html(message: OutgoingMessage, link: str | None, unsubscribe: str | None) -> str:
    """The default layout. Every value is escaped; ``link`` is already a safe http(s) URL."""
    accent = _ACCENTS.get(message.notification_type, _DEFAULT_ACCENT)
    title = html.escape(message.title)
    body = "<br>\n".join(html.escape(line) for line in message.message.splitlines())
    rows = [
        f'<tr><td style="padding:28px 32px 4px 32px;font-family:{_FONT};">'
        f'<h2 style="margin:0;font-size:20px;line-height:28px;font-weight:600;color:#111827;">'
        f"{title}</h2></td></tr>",
        f'<tr><td style="padding:8px 32px 24px 32px;font-family:{_FONT};font-size:15px;'
        f'line-height:22px;color:#374151;">{body}</td></tr>',
    ]
    if link:
        # The style sits on the cell and a span, so that clients which drop an anchor's
        # style (and its padding) still show a filled button.
        rows.append(
            '<tr><td style="padding:0 32px 32px 32px;">'
            '<table role="presentation" cellpadding="0" cellspacing="0" border="0"><tr>'
            f'<td style="border-radius:6px;background-color:{accent};padding:12px 22px;">'
            f'<a href="{html.escape(link, quote=True)}" '
            'style="color:#ffffff;text-decoration:none;display:inline-block;">'
            f'<span style="font-family:{_FONT};font-size:15px;font-weight:600;color:#ffffff;'
            'text-decoration:none;">Open</span></a></td></tr></table></td></tr>'
        )
    footer = ""
    if unsubscribe:
        footer = (
            f'<tr><td align="center" style="padding:16px 12px 0 12px;font-family:{_FONT};'
            'font-size:12px;line-height:18px;color:#6b7280;">'
            "You receive this email because of your notification settings. "
            f'<a href="{html.escape(unsubscribe, quote=True)}" style="color:#6b7280;">'
            "Unsubscribe</a></td></tr>"
        )
    return "\n".join(
        [
            "<!doctype html>",
            '<html><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            f"<title>{title}</title></head>",
            '<body style="margin:0;padding:0;background-color:#f4f5f7;">',
            '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" '
            'border="0" style="background-color:#f4f5f7;">',
            '<tr><td align="center" style="padding:24px 12px;">',
            '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" '
            'border="0" style="max-width:560px;background-color:#ffffff;border-radius:8px;'
            f'border:1px solid #e5e7eb;border-top:4px solid {accent};">',
            *rows,
            "</table>",
            '<table role="presentation" width="100%" cellpadding="0" cellspacing="0" '
            'border="0" style="max-width:560px;">',
            footer,
            "</table>",
            "</td></tr></table>",
            "</body></html>",
            "",
        ]
    )


def compose_email(
    message: OutgoingMessage,
    *,
    to: str,
    smtp_from: str,
    subject: str,
    message_id: str,
    link: str | None,
    unsubscribe: str | None,
) -> EmailMessage:
    """The whole message. ``subject`` is the Subject as it goes on the wire (email.py encodes
    it); ``link`` the action URL if it is safe; ``unsubscribe`` the one-click URL, if any."""
    email = EmailMessage()
    email.set_raw("Subject", subject)
    email["From"] = smtp_from
    email["To"] = to
    email["Date"] = format_datetime(utcnow())
    email["Message-ID"] = message_id
    email["X-Notifier-Notification-Id"] = str(message.notification_id)
    # RFC 3834: tells auto-responders not to answer a notification.
    email["Auto-Submitted"] = "auto-generated"
    if unsubscribe:
        # Raw, so that the wire policy's header class writes it (_UrlListHeader).
        email.set_raw("List-Unsubscribe", f"<{unsubscribe}>")
        email["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    email.set_content(plain_text(message, link, unsubscribe))
    template_html = message.parts.get("email_html")
    body = template_html if template_html else default_html(message, link, unsubscribe)
    email.add_alternative(body, subtype="html")
    return email
