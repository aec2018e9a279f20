"""POST /v1/notifications (and /batch) by ``template`` + ``data`` on both databases: rendered at
enqueue through the locale fallback chain, the channel parts stored with the notification,
``metadata.template``; and every refusal a 422 that stores nothing."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import event, select

from notifier.models.notification import Notification
from tests.api.helpers import assert_error, new_user, notifications_of
from tests.support.service import RunningService
from tests.templates.helpers import new_key, template_body

LOCALIZED = template_body(
    "Hello {{ data.name }}",
    "Order {{ data.order }} shipped.",
    fr={"title": "Bonjour {{ data.name }}", "message": "Commande {{ data.order }} expédiée."},
    zh_CN={"title": "你好 {{ data.name }}", "message": "订单 {{ data.order }} 已发货。"},
)
WITH_PARTS = template_body(
    "Hello {{ data.name }}",
    "Order {{ data.order }} shipped.",
)
WITH_PARTS["locales"]["en"] |= {
    "email_subject": "Your order {{ data.order }}",
    "email_html": "<p>Order <b>{{ data.order }}</b> for {{ data.name }}</p>",
    "sms": "Order {{ data.order }} is on its way",
    "push_title": "Shipped!",
    "push_body": "{{ data.order }} left the warehouse",
}
DATA = {"name": "Ann", "order": "A-17"}


async def put_template(service: RunningService, body: dict[str, Any]) -> str:
    key = new_key()
    async with service.client() as client:
        response = await client.put(f"/v1/templates/{key}", json=body)
    assert response.status_code == 201, response.text
    return key


async def set_recipient(service: RunningService, user: str, **profile: Any) -> None:
    async with service.client() as client:
        response = await client.put(f"/v1/users/{user}/recipient", json=profile)
    assert response.status_code == 200, response.text


async def enqueue(service: RunningService, **body: Any) -> httpx.Response:
    async with service.client() as client:
        return await client.post("/v1/notifications", json=body)


async def stored(service: RunningService, notification_id: str) -> Notification:
    async with service.context.sessions() as session:
        query = select(Notification).where(Notification.id == uuid.UUID(notification_id))
        return (await session.execute(query)).scalar_one()


@pytest.mark.parametrize(
    ("recipient_locale", "asked", "resolved", "title"),
    [
        ("fr-BE", None, "fr", "Bonjour Ann"),  # the recipient's fr-BE → fr
        ("zh-CN", None, "zh-CN", "你好 Ann"),
        ("zh_CN", None, "zh-CN", "你好 Ann"),  # spelled as some clients store it
        ("xx-YY", None, "en", "Hello Ann"),  # unusable: the default, never a 422
        (None, None, "en", "Hello Ann"),
        ("zh-CN", "fr-CA", "fr", "Bonjour Ann"),  # the request's locale wins
        ("fr", "de-AT", "en", "Hello Ann"),  # de-AT → de → the default
    ],
)
async def test_enqueue_by_template_renders_in_the_resolved_locale(
    service: RunningService,
    recipient_locale: str | None,
    asked: str | None,
    resolved: str,
    title: str,
) -> None:
    key = await put_template(service, LOCALIZED)
    user = new_user()
    if recipient_locale is not None:
        await set_recipient(service, user, locale=recipient_locale)
    body: dict[str, Any] = {"user_id": user, "template": key, "data": DATA}
    if asked is not None:
        body["locale"] = asked
    response = await enqueue(service, **body, metadata={"order": "A-17"})
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["title"] == title
    assert answer["metadata"] == {
        "order": "A-17",
        "template": {"key": key, "version": 1, "locale": resolved},
    }
    row = await stored(service, answer["id"])
    assert row.title == title
    assert row.notification_metadata["template"]["locale"] == resolved
    assert row.rendered_parts == {}  # no channel parts: the channels use title and message


async def test_the_channel_parts_are_stored_with_the_notification(service: RunningService) -> None:
    key = await put_template(service, WITH_PARTS)
    response = await enqueue(
        service, user_id=new_user(), template=key, data={"name": "<Ann>", "order": "A&17"}
    )
    assert response.status_code == 202, response.text
    row = await stored(service, response.json()["id"])
    assert row.title == "Hello <Ann>" and row.message == "Order A&17 shipped."
    assert row.rendered_parts == {
        "email_subject": "Your order A&17",
        # Autoescaped in email_html only.
        "email_html": "<p>Order <b>A&amp;17</b> for &lt;Ann&gt;</p>",
        "sms": "Order A&17 is on its way",
        "push_title": "Shipped!",
        "push_body": "A&17 left the warehouse",
    }


async def test_a_batch_renders_each_user_in_their_own_locale(service: RunningService) -> None:
    key = await put_template(service, LOCALIZED)
    users = [new_user() for _ in range(3)]
    await set_recipient(service, users[0], locale="fr")
    await set_recipient(service, users[1], locale="zh-CN")
    items = [{"user_id": user, "template": key, "data": DATA} for user in users]
    items.append({"user_id": users[2], "title": "Plain", "message": "text"})
    async with service.client() as client:
        response = await client.post("/v1/notifications/batch", json={"notifications": items})
    assert response.status_code == 202, response.text
    answers = response.json()["notifications"]
    assert [a["title"] for a in answers] == ["Bonjour Ann", "你好 Ann", "Hello Ann", "Plain"]
    assert "template" not in answers[3]["metadata"]
    assert (await stored(service, answers[3]["id"])).rendered_parts is None


async def test_a_built_in_task_template_needs_the_task_the_triggers_give(
    service: RunningService,
) -> None:
    user = new_user()
    response = await enqueue(service, user_id=user, template="task.completed", data={})
    # Found (built in), but ``task`` is only in scope when a trigger renders it: named, refused.
    error = assert_error(response, 422, "validation_error")
    assert "task" in error["message"], error
    assert await notifications_of(service, user) == 0


def _refusals(key: str) -> list[tuple[str, dict[str, Any], str]]:
    return [
        ("both texts and template", {"title": "x", "message": "y", "template": key}, "not both"),
        ("title without message", {"title": "x"}, "title and message are required"),
        ("neither", {}, "title and message are required"),
        ("data without template", {"title": "x", "message": "y", "data": {}}, "go with"),
        ("a null template", {"template": None, "title": "x", "message": "y"}, "null"),
        ("an unknown key", {"template": "no.such.template", "data": DATA}, "no template"),
        ("a key outside the pattern", {"template": "Bad Key!", "data": DATA}, "pattern"),
        ("a missing variable", {"template": key, "data": {"name": "Ann"}}, "data.order"),
        ("an unusable request locale", {"template": key, "data": DATA, "locale": "xx-YY"}, "xx"),
        (
            "data over 64 KiB",
            {"template": key, "data": {"name": "x" * 70_000, "order": 1}},
            "65536",
        ),
        ("an unknown field", {"template": key, "data": DATA, "lang": "fr"}, "lang"),
    ]


async def test_every_refusal_is_a_422_that_stores_nothing(service: RunningService) -> None:
    key = await put_template(service, LOCALIZED)
    for why, fields, says in _refusals(key):
        user = new_user()
        response = await enqueue(service, user_id=user, **fields)
        error = assert_error(response, 422, "validation_error")
        assert says in (error["message"] + str(error["details"])), (why, error)
        assert await notifications_of(service, user) == 0, why


async def test_push_parts_that_cannot_fit_one_push_message_are_refused(
    service: RunningService,
) -> None:
    body = template_body("Hi", "Short.")
    body["locales"]["en"]["push_body"] = "{{ data.text }}"
    key = await put_template(service, body)
    user = new_user()
    # 900 CJK characters: 2,700 bytes of UTF-8, which fit one push message (3,993 bytes).
    fits = await enqueue(service, user_id=user, template=key, data={"text": "界" * 900},
                         channels=["browser"])  # fmt: skip
    assert fits.status_code == 202, fits.text
    # 999 emoji: within push_body's 1,000 characters, but 3,996 bytes.
    huge = await enqueue(service, user_id=user, template=key, data={"text": "😀" * 999},
                         channels=["browser"])  # fmt: skip
    # The title and message alone are short: it is the push part that would not fit.
    assert_error(huge, 422, "validation_error")
    email_only = await enqueue(service, user_id=user, template=key, data={"text": "😀" * 999},
                               channels=["email"])  # fmt: skip
    assert email_only.status_code == 202, email_only.text


async def test_one_bad_item_refuses_the_whole_batch_and_names_it(service: RunningService) -> None:
    key = await put_template(service, LOCALIZED)
    user = new_user()
    items = [
        {"user_id": user, "template": key, "data": DATA},
        {"user_id": user, "template": key, "data": {"name": "Ann"}},
    ]
    async with service.client() as client:
        response = await client.post("/v1/notifications/batch", json={"notifications": items})
    error = assert_error(response, 422, "validation_error")
    assert error["details"]["loc"] == ["body", "notifications", 1, "data"], error
    assert "data.order" in error["message"], error
    assert await notifications_of(service, user) == 0


async def test_a_batch_reads_its_templates_and_recipients_once(service: RunningService) -> None:
    """One statement for all the batch's templates and recipients, whatever its size."""
    keys = [await put_template(service, LOCALIZED) for _ in range(3)]
    users = [new_user() for _ in range(50)]
    for user in users[:10]:
        await set_recipient(service, user, locale="fr")
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    engine = service.context.engine.sync_engine
    event.listen(engine, "before_cursor_execute", seen)
    try:
        items = [
            {"user_id": user, "template": keys[i % 3], "data": DATA} for i, user in enumerate(users)
        ]
        async with service.client() as client:
            response = await client.post("/v1/notifications/batch", json={"notifications": items})
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert response.status_code == 202, response.text
    titles = [n["title"] for n in response.json()["notifications"]]
    assert titles == ["Bonjour Ann"] * 10 + ["Hello Ann"] * 40
    reads = [s for s in statements if "FROM recipients" in s]
    renders = [s for s in reads if "FROM templates" in s]
    assert len(renders) == 1, statements
    # Besides: at most the websocket fast path's opt-out check, which reads the preferences
    # inside the write's own transaction so that they cannot change before the row is written
    # (SQLite; on PostgreSQL it is a join in the insert) — docs/architecture.md, "WebSocket
    # fast path".
    others = [s for s in reads if s not in renders]
    assert all("recipients.preferences" in s and "templates" not in s for s in others), others
    assert len(others) <= 1, others
