"""The webhook endpoints API: what a producer sends and reads back, every refusal a clear 422
(or 401/403/404/409) that changes nothing, and the endpoint limit held by the database under
concurrent creations. No sender runs here."""

from __future__ import annotations

import asyncio
import base64
import uuid
from typing import Any

import pytest

from tests.webhooks.harness import webhook_stack

RECEIVER = "http://127.0.0.1:9/hook"  # never contacted: nothing sends here


async def test_create_read_change_delete(db_url: str) -> None:
    async with webhook_stack(db_url) as hooks:
        created = await hooks.create_endpoint(
            RECEIVER,
            ["notification.delivered", "notification.delivered", "task.failed"],
            description="billing service",
        )
        listed = (await hooks.api.get("/v1/webhook-endpoints")).json()
        read = await hooks.endpoint(created["id"])
        patched = await hooks.api.patch(
            f"/v1/webhook-endpoints/{created['id']}",
            json={"url": "https://8.8.8.8/hooks", "events": ["*"], "description": None},
        )
        deleted = await hooks.api.delete(f"/v1/webhook-endpoints/{created['id']}")
        gone = await hooks.api.get(f"/v1/webhook-endpoints/{created['id']}")
        again = await hooks.api.delete(f"/v1/webhook-endpoints/{created['id']}")

    secret = created["secret"]
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) >= 24
    assert created["events"] == ["notification.delivered", "task.failed"]  # repeats dropped
    assert (created["enabled"], created["disabled_reason"]) == (True, None)
    assert created["description"] == "billing service"
    # The secret is shown once: never in a read, a list or a change.
    assert "secret" not in read and all("secret" not in e for e in listed["items"])
    assert read == {k: v for k, v in created.items() if k != "secret"}
    assert [e["id"] for e in listed["items"]] == [created["id"]]
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["url"], body["events"], body["description"]) == (
        "https://8.8.8.8/hooks",
        ["*"],
        None,
    )
    assert "secret" not in body
    assert deleted.status_code == 204
    assert gone.status_code == again.status_code == 404
    assert gone.json()["error"]["code"] == "not_found"


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"url": "ftp://example.com/x", "events": ["*"]}, "url"),
        ({"url": "not a url", "events": ["*"]}, "url"),
        ({"url": "http://127.0.0.1:8080/x", "events": ["*"]}, "url"),  # loopback
        ({"url": "http://localhost/x", "events": ["*"]}, "url"),  # a name for loopback
        ({"url": "https://10.1.2.3/x", "events": ["*"]}, "url"),  # private
        ({"url": "https://169.254.169.254/latest", "events": ["*"]}, "url"),  # metadata
        ({"url": "https://user:pw@8.8.8.8/x", "events": ["*"]}, "url"),
        ({"url": "https://8.8.8.8/x", "events": ["notification.exploded"]}, "events"),
        ({"url": "https://8.8.8.8/x", "events": []}, "events"),
        ({"url": "https://8.8.8.8/x"}, "events"),
        ({"url": "https://8.8.8.8/x", "events": ["*"], "secret": "mine"}, "secret"),
        ({"url": "https://8.8.8.8/x", "events": ["*"], "description": "a\x00b"}, "description"),
    ],
)
async def test_bad_input_is_422_and_stores_nothing(
    db_url: str, body: dict[str, Any], where: str
) -> None:
    async with webhook_stack(db_url, webhook_allow_private_endpoints=False) as hooks:
        response = await hooks.api.post("/v1/webhook-endpoints", json=body)
        listed = (await hooks.api.get("/v1/webhook-endpoints")).json()

    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "validation_error"
    assert where in error["message"], error
    assert listed == {"items": []}


async def test_the_unknown_type_is_named(db_url: str) -> None:
    async with webhook_stack(db_url) as hooks:
        response = await hooks.api.post(
            "/v1/webhook-endpoints", json={"url": RECEIVER, "events": ["task.failed", "nope"]}
        )
    assert response.status_code == 422
    assert "'nope'" in response.json()["error"]["message"]


async def test_patch_is_validated_like_create(db_url: str) -> None:
    async with webhook_stack(db_url, webhook_allow_private_endpoints=False) as hooks:
        created = await hooks.create_endpoint("https://8.8.8.8/x")
        path = f"/v1/webhook-endpoints/{created['id']}"
        answers = [
            await hooks.api.patch(path, json=body)
            for body in (
                {"url": "http://127.0.0.1/x"},
                {"events": ["nope"]},
                {"enabled": "maybe"},
                {"secret": "x"},
            )
        ]
        after = await hooks.endpoint(created["id"])
    assert [a.status_code for a in answers] == [422] * 4
    assert after == {k: v for k, v in created.items() if k != "secret"}


async def test_the_51st_endpoint_is_refused(db_url: str) -> None:
    async with webhook_stack(db_url) as hooks:
        for n in range(50):
            await hooks.create_endpoint(f"{RECEIVER}/{n}")
        refused = await hooks.api.post(
            "/v1/webhook-endpoints", json={"url": RECEIVER, "events": ["*"]}
        )
        count = len((await hooks.api.get("/v1/webhook-endpoints")).json()["items"])
    assert refused.status_code == 422, refused.text
    assert "50" in refused.json()["error"]["message"]
    assert count == 50


async def test_the_limit_holds_under_concurrent_creations(db_url: str) -> None:
    async with webhook_stack(db_url, webhook_max_endpoints=3) as hooks:
        await hooks.create_endpoint(RECEIVER)
        answers = await asyncio.gather(
            *(
                hooks.api.post(
                    "/v1/webhook-endpoints", json={"url": f"{RECEIVER}/{n}", "events": ["*"]}
                )
                for n in range(8)
            )
        )
        count = len((await hooks.api.get("/v1/webhook-endpoints")).json()["items"])
    assert sorted(a.status_code for a in answers) == [201, 201] + [422] * 6
    assert count == 3


async def test_producers_only(db_url: str) -> None:
    async with webhook_stack(db_url) as hooks:
        created = await hooks.create_endpoint(RECEIVER)
        token = await hooks.stack.service.user_token("alice")
        async with (
            hooks.stack.service.client(token=token) as user,
            hooks.stack.service.client(token="not-a-key") as stranger,
        ):
            as_user = await user.get("/v1/webhook-endpoints")
            as_user_one = await user.post(f"/v1/webhook-endpoints/{created['id']}/test")
            as_stranger = await stranger.get("/v1/webhook-endpoints")
    assert as_user.status_code == as_user_one.status_code == 403
    assert as_stranger.status_code == 401
    assert as_stranger.json()["error"]["code"] == "unauthorized"


async def test_unknown_ids_are_404(db_url: str) -> None:
    missing = f"/v1/webhook-endpoints/{uuid.uuid4()}"
    async with webhook_stack(db_url) as hooks:
        answers = [
            await hooks.api.get(missing),
            await hooks.api.patch(missing, json={"enabled": True}),
            await hooks.api.delete(missing),
            await hooks.api.get(f"{missing}/deliveries"),
            await hooks.api.post(f"{missing}/test"),
            await hooks.api.post(f"{missing}/rotate-secret"),
            await hooks.api.post(f"{missing}/replay", json={"since": "2026-01-01T00:00:00Z"}),
            await hooks.api.get("/v1/webhook-endpoints/not-a-uuid"),
        ]
    assert [a.status_code for a in answers] == [404] * 7 + [422]
    assert all(a.json()["error"]["code"] in ("not_found", "validation_error") for a in answers)


async def test_replay_needs_a_time(db_url: str) -> None:
    async with webhook_stack(db_url) as hooks:
        created = await hooks.create_endpoint(RECEIVER)
        path = f"/v1/webhook-endpoints/{created['id']}/replay"
        answers = [
            await hooks.api.post(path, json={}),
            await hooks.api.post(path, json={"since": "yesterday"}),
            await hooks.api.post(path, json={"since": "2026-01-01T00:00:00"}),  # no offset
            await hooks.api.post(path, json={"since": 0}),
        ]
    assert [a.status_code for a in answers] == [422] * 4


async def test_rotation_shows_the_new_secret_once(db_url: str) -> None:
    async with webhook_stack(db_url) as hooks:
        created = await hooks.create_endpoint(RECEIVER)
        rotated = await hooks.api.post(f"/v1/webhook-endpoints/{created['id']}/rotate-secret")
        read = await hooks.endpoint(created["id"])
    assert rotated.status_code == 200
    new = rotated.json()["secret"]
    assert new.startswith("whsec_") and new != created["secret"]
    assert read["previous_secret_expires_at"] == rotated.json()["previous_secret_expires_at"]
    assert "secret" not in read
