"""Local peers the channels talk to in tests: SMTP (aiosmtpd), Twilio's Messages API and a Web
Push service (aiohttp). All listen on 127.0.0.1 at a free port, record what arrives, count
connections, and answer as scripted; await ``wait_for_*`` rather than sleeping."""

from tests.peers.push import (
    CLIENT_GONE,
    BrowserSubscription,
    PushPeer,
    PushReply,
    make_subscription,
)
from tests.peers.smtp import ReceivedEmail, SmtpPeer
from tests.peers.twilio import TwilioMessage, TwilioPeer, TwilioReply

__all__ = [
    "CLIENT_GONE",
    "BrowserSubscription",
    "PushPeer",
    "PushReply",
    "ReceivedEmail",
    "SmtpPeer",
    "TwilioMessage",
    "TwilioPeer",
    "TwilioReply",
    "make_subscription",
]
