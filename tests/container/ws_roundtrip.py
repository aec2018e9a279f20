"""The websocket round trip that scripts/container-smoke drives against the running containers.

Not a pytest module: the smoke runs it as a script with the project's Python, after it has
started `notifier serve` and `notifier worker` from the image:

    python tests/container/ws_roundtrip.py --base-url http://127.0.0.1:PORT --api-key KEY

It mints a user token, opens `/v1/ws?token=…`, enqueues websocket notifications over HTTP with the
API key, and checks that each one arrives as a frame, that the ack is confirmed, and that
`GET /v1/notifications/{id}` then shows the websocket channel `delivered` after exactly one
attempt. A bad token must close the socket with 4401. Exit status 0 when all of that holds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import uuid
from typing import Any

import httpx
import websockets

CLOSE_UNAUTHORIZED = 4401


class RoundTripError(Exception):
    """The service did not do what the smoke expects."""


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", required=True, help="http://127.0.0.1:PORT of the API")
    parser.add_argument("--api-key", required=True, help="a producer key of NOTIFIER_API_KEYS")
    parser.add_argument("--count", type=int, default=3, help="notifications to send")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds for each wait")
    return parser.parse_args(argv)


async def _receive_and_ack(
    socket: websockets.ClientConnection, expected: set[str], deadline: float
) -> None:
    """Ack every notification frame as it comes, until each of ``expected`` has arrived and its
    ack is confirmed. Other frames (task_progress, pong) are passed over."""
    received: set[str] = set()
    confirmed: set[str] = set()
    while received != expected or confirmed != expected:
        remaining = deadline - time.monotonic()
        try:
            if remaining <= 0:
                raise TimeoutError
            frame = json.loads(await asyncio.wait_for(socket.recv(), remaining))
        except TimeoutError:
            raise RoundTripError(
                f"frames missing: {len(received)}/{len(expected)} notifications received, "
                f"{len(confirmed)} acks confirmed; never received: {sorted(expected - received)}"
            ) from None
        kind = frame.get("type") if isinstance(frame, dict) else None
        if kind == "notification":
            notification_id = frame["notification"]["id"]
            if notification_id not in expected:
                raise RoundTripError(f"a frame for an unknown notification: {frame}")
            received.add(notification_id)
            await socket.send(json.dumps({"type": "ack", "id": notification_id}))
        elif kind == "acked":
            confirmed.add(frame["id"])
        elif kind == "error":
            raise RoundTripError(f"the server answered an ack with {frame}")


async def _wait_delivered(
    client: httpx.AsyncClient, notification_id: str, deadline: float
) -> dict[str, Any]:
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = await client.get(f"/v1/notifications/{notification_id}")
        response.raise_for_status()
        body = response.json()
        if body["delivery_status"]["websocket"]["status"] == "delivered":
            return body
        await asyncio.sleep(0.1)  # polling the public API: a remote client has no event to await
    raise RoundTripError(f"notification {notification_id} never became delivered: {body}")


async def _bad_token_is_refused(ws_base: str, wait_seconds: float) -> None:
    async with websockets.connect(f"{ws_base}/v1/ws?token=not-a-token") as socket:
        try:
            await asyncio.wait_for(socket.recv(), wait_seconds)
        except websockets.ConnectionClosed as closed:
            if closed.rcvd is None or closed.rcvd.code != CLOSE_UNAUTHORIZED:
                raise RoundTripError(f"a bad token closed the socket with {closed.rcvd}") from None
            return
    raise RoundTripError("a bad token was not refused with close code 4401")


async def round_trip(base_url: str, api_key: str, *, count: int, wait_seconds: float) -> list[str]:
    user = f"smoke-{uuid.uuid4().hex[:10]}"
    ws_base = "ws" + base_url.removeprefix("http")
    headers = {"Authorization": f"Bearer {api_key}"}
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, timeout=wait_seconds
    ) as client:
        minted = await client.post(f"/v1/users/{user}/tokens", json={})
        if minted.status_code != 201:
            raise RoundTripError(f"minting a token: {minted.status_code} {minted.text}")
        token = minted.json()["token"]
        async with websockets.connect(f"{ws_base}/v1/ws?token={token}") as socket:
            sent: list[str] = []
            for n in range(count):
                created = await client.post(
                    "/v1/notifications",
                    json={
                        "user_id": user,
                        "title": f"Container smoke {n + 1}/{count}",
                        "message": "delivered through the image's serve and worker",
                        "channels": ["websocket"],
                    },
                )
                if created.status_code != 202:
                    raise RoundTripError(f"enqueue: {created.status_code} {created.text}")
                sent.append(created.json()["id"])
            deadline = time.monotonic() + wait_seconds
            await _receive_and_ack(socket, set(sent), deadline)
            for notification_id in sent:
                body = await _wait_delivered(client, notification_id, deadline)
                websocket = body["delivery_status"]["websocket"]
                if websocket["attempts"] != 1 or body["status"] != "delivered":
                    raise RoundTripError(f"expected one attempt and status delivered: {body}")
        await _bad_token_is_refused(ws_base, wait_seconds)
    return sent


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    started = time.monotonic()
    try:
        sent = asyncio.run(
            round_trip(args.base_url, args.api_key, count=args.count, wait_seconds=args.timeout)
        )
    except (RoundTripError, httpx.HTTPError, OSError, websockets.WebSocketException) as exc:
        print(f"ws round trip: FAIL: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    elapsed = time.monotonic() - started
    print(
        f"ws round trip: {len(sent)} notification(s) received, acked and delivered "
        f"in {elapsed:.2f} s; a bad token closed with {CLOSE_UNAUTHORIZED}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
