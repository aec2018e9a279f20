"""SSRF policy for push endpoints. Only 127.0.0.0/8 and ::1 are ever connected to: for the
private and link-local addresses the test asserts a refusal that happens before any socket."""

from __future__ import annotations

import aiohttp
import pytest

from notifier.channels.push_endpoints import (
    UnsafeEndpointError,
    check_push_endpoint,
    guarded_connector,
    is_unsafe_address,
    is_unsafe_address_error,
)
from tests.peers import PushPeer

UNSAFE_URLS = [
    "https://169.254.169.254/latest/meta-data",
    "https://[::1]/push/x",
    "https://127.0.0.2/push/x",
    "https://10.0.0.1/push/x",
    "https://172.16.5.4/push/x",
    "https://192.168.1.1/push/x",
    "https://100.64.0.1/push/x",
    "https://0.0.0.0/push/x",
    "https://224.0.0.1/push/x",
    "https://240.0.0.1/push/x",
    "https://[::ffff:127.0.0.1]/push/x",
    "https://[::ffff:169.254.169.254]/push/x",
    "https://[64:ff9b::a00:1]/push/x",  # NAT64 of 10.0.0.1
    "https://[2002:a9fe:a9fe::1]/push/x",  # 6to4 of 169.254.169.254
    "https://[fe80::1]/push/x",
    "https://[fc00::1]/push/x",
    "https://[::]/push/x",
    "https://localhost/push/x",
    "https://localhost./push/x",
]


@pytest.mark.parametrize("url", UNSAFE_URLS)
async def test_unsafe_addresses_are_refused(url: str) -> None:
    with pytest.raises(UnsafeEndpointError):
        await check_push_endpoint(url, allow_private=False)


@pytest.mark.parametrize(
    "url",
    [
        "http://push.example.com/x",  # plain http
        "ftp://push.example.com/x",
        "https:///x",
        "https://user:secret@93.184.216.34/x",
        "https://93.184.216.34:99999/x",
        "not a url",
        # Host names IDNA cannot encode (a label over 63 characters, an empty label): the
        # resolver raises UnicodeError, not OSError — still a refusal, not a 500.
        "https://" + "a" * 70 + ".example.com/x",
        "https://push..example.com/x",
    ],
)
async def test_malformed_or_insecure_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeEndpointError):
        await check_push_endpoint(url, allow_private=False)


async def test_public_address_is_accepted() -> None:
    # An IP literal: no DNS lookup and no connection are made by the check.
    await check_push_endpoint("https://93.184.216.34/push/abc", allow_private=False)
    await check_push_endpoint("https://[2606:4700::1111]/push/abc", allow_private=False)


async def test_allow_private_admits_local_test_peers() -> None:
    await check_push_endpoint("http://127.0.0.1:8080/push/x", allow_private=True)
    with pytest.raises(UnsafeEndpointError):
        await check_push_endpoint("ftp://127.0.0.1/push/x", allow_private=True)


@pytest.mark.parametrize(
    ("address", "unsafe"),
    [
        ("8.8.8.8", False),
        ("2001:4860:4860::8888", False),
        ("100.127.255.255", True),
        ("::ffff:10.1.2.3", True),
        ("::ffff:8.8.8.8", True),  # no push service needs an IPv4-mapped address
        ("2002:808:808::1", False),  # 6to4 of a public address
        ("fe80::1%eth0", True),
        ("not-an-ip", True),
    ],
)
def test_address_classes(address: str, unsafe: bool) -> None:
    assert is_unsafe_address(address) is unsafe


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "[::ffff:127.0.0.1]"])
async def test_connection_time_guard_makes_no_connection(push_peer: PushPeer, host: str) -> None:
    """The session's own guard, for when DNS changes between the check and the connection."""
    url = f"http://{host}:{push_peer.port}/push/x"
    async with aiohttp.ClientSession(connector=guarded_connector(allow_private=False)) as session:
        with pytest.raises(aiohttp.ClientConnectorError) as caught:
            await session.post(url, data=b"x")
    assert is_unsafe_address_error(caught.value)
    assert push_peer.connections == 0


async def test_guard_lifted_when_private_allowed(push_peer: PushPeer) -> None:
    # Proves the connection counter would have seen a connection in the test above.
    async with (
        aiohttp.ClientSession(connector=guarded_connector(allow_private=True)) as session,
        session.post(f"{push_peer.origin}/push/x", data=b"x") as response,
    ):
        await response.read()
    assert push_peer.connections == 1
