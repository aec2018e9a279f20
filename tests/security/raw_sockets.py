"""Raw sockets against a real ``notifier serve`` process, for the connection-limit tests:
open and close them, read what the server sent until it closed, and ask the probes."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx

from tests.faults.processes import ServiceProcess, poll_until

# A request line and one header, without the blank line that would end the headers.
HALF_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
FULL_REQUEST = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def open_raw(api: ServiceProcess, count: int) -> list[Connection]:
    assert api.port is not None
    return [await asyncio.open_connection("127.0.0.1", api.port) for _ in range(count)]


def close_all(connections: list[Connection]) -> None:
    for _, writer in connections:
        writer.close()


async def read_until_closed(reader: asyncio.StreamReader) -> tuple[bytes, float]:
    """All the server sent, and when it closed the connection (monotonic)."""
    received = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := await reader.read(65_536):
            received += chunk
    return received, time.monotonic()


async def healthz(api: ServiceProcess) -> int:
    """/healthz on a connection of its own; the status, or 0 if no answer came in 3 s."""
    try:
        async with httpx.AsyncClient(timeout=3) as client:
            return (await client.get(f"{api.base_url}/healthz")).status_code
    except httpx.HTTPError:
        return 0


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["retry-after"] == "1"
    assert response.json()["error"]["code"] == "unavailable", response.text
    assert set(response.json()["error"]) == {"code", "message", "details"}


async def healthz_response(api: ServiceProcess, path: str = "/healthz") -> httpx.Response:
    async with httpx.AsyncClient(timeout=5) as client:
        return await client.get(f"{api.base_url}{path}")


async def exchange(api: ServiceProcess, request: bytes) -> tuple[bytes, float]:
    """``request`` on a raw connection of its own: all the server sent until it closed the
    connection, and how long that took."""
    reader, writer = (await open_raw(api, 1))[0]
    started = time.monotonic()
    writer.write(request)
    try:
        answer, closed = await asyncio.wait_for(read_until_closed(reader), 10)
    finally:
        writer.close()
    return answer, closed - started


async def served(api: ServiceProcess, path: str = "/healthz") -> None:
    """Wait until ``path`` answers 200 on a new connection (polled: the server seeing a socket
    close is not an event this test can await)."""

    async def answered() -> tuple[bool, int]:
        async with httpx.AsyncClient(timeout=3) as client:
            try:
                status = (await client.get(f"{api.base_url}{path}")).status_code
            except httpx.HTTPError:
                status = 0
        return status == 200, status

    await poll_until(answered, timeout=10, what=f"{path} 200 after sockets closed")
