# ruff: noqa: RUF001 - fullwidth punctuation is what correct Chinese text uses
"""The triggers speak the task owner's language, on both databases: the built-in templates
rendered in the recipient's locale; a PUT of the same key overrides one, a DELETE restores it;
an override that cannot render falls back to the English text rather than refuse the
producer's report."""

from __future__ import annotations

from typing import Any

import httpx

from notifier.models.notification import Notification
from tests.api.helpers import create_task, new_user, notifications_for_task
from tests.support.service import RunningService


async def set_locale(client: httpx.AsyncClient, user: str, locale: str) -> None:
    response = await client.put(f"/v1/users/{user}/recipient", json={"locale": locale})
    assert response.status_code == 200, response.text


async def finish(service: RunningService, user: str, **update: Any) -> Notification:
    """A task of ``user``'s that reaches ``update["status"]``; its one triggered notification."""
    async with service.client() as client:
        task = await create_task(client, user)
        response = await client.patch(f"/v1/tasks/{task['task_id']}", json=update)
        assert response.status_code == 200, response.text
    [notification] = [
        n
        for n in await notifications_for_task(service, task["task_id"])
        if n.notification_type != "progress"
    ]
    return notification


async def test_a_zh_cn_user_whose_task_completes_gets_the_chinese_text(
    service: RunningService,
) -> None:
    user = new_user()
    async with service.client() as client:
        await set_locale(client, user, "zh-CN")
    completed = await finish(service, user, status="completed")
    task_id = completed.related_task_id
    assert completed.title.endswith(" 已完成"), completed.title
    assert completed.message.startswith(f"任务 {task_id} 已完成"), completed.message
    assert completed.notification_metadata["template"] == {
        "key": "task.completed",
        "version": 0,
        "locale": "zh-CN",
    }
    failed = await finish(service, user, status="failed", error_message="磁盘空间不足")
    assert failed.message == f"任务 {failed.related_task_id} 执行失败：磁盘空间不足"
    # The SMS part of the built-in is stored for the SMS channel.
    assert failed.rendered_parts is not None
    assert failed.rendered_parts["sms"].endswith("执行失败：磁盘空间不足")


async def test_an_error_log_is_told_in_the_owners_language(service: RunningService) -> None:
    user = new_user()
    async with service.client() as client:
        await set_locale(client, user, "zh_CN")
        task = await create_task(client, user)
        response = await client.post(
            f"/v1/tasks/{task['task_id']}/logs",
            json={"level": "CRITICAL", "message": "数据库连接中断", "source": "worker-3"},
        )
        assert response.status_code == 201, response.text
    [log_note] = await notifications_for_task(service, task["task_id"])
    said = "记录了一条严重错误：数据库连接中断"
    assert log_note.message == f"任务 {task['task_id']}（worker-3）{said}"
    assert log_note.priority == "urgent"
    assert log_note.notification_metadata["template"]["key"] == "task.log.critical"


async def test_a_put_overrides_a_built_in_and_a_delete_restores_it(
    service: RunningService,
) -> None:
    user = new_user()
    override = {
        "default_locale": "en",
        "locales": {
            "en": {"title": "Done: {{ task.task_type }}", "message": "All set, {{ user.id }}."}
        },
    }
    async with service.client() as client:
        put = await client.put("/v1/templates/task.completed", json=override)
        assert put.status_code == 201, put.text
        version = put.json()["version"]
        try:
            overridden = await finish(service, user, status="completed")
        finally:
            deleted = await client.delete("/v1/templates/task.completed")
            assert deleted.status_code == 204, deleted.text
    assert overridden.title.startswith("Done: ")
    assert overridden.message == f"All set, {user}."
    assert overridden.notification_metadata["template"]["version"] == version
    restored = await finish(service, user, status="completed")
    assert restored.title.endswith(" completed")
    assert restored.notification_metadata["template"]["version"] == 0


async def test_an_override_that_cannot_render_sends_the_english_text(
    service: RunningService,
) -> None:
    user = new_user()
    broken = {
        "default_locale": "en",
        "locales": {"en": {"title": "{{ data.nothing.here }}", "message": "x"}},
    }
    async with service.client() as client:
        put = await client.put("/v1/templates/task.completed", json=broken)
        assert put.status_code == 201, put.text
        try:
            completed = await finish(service, user, status="completed")
        finally:
            await client.delete("/v1/templates/task.completed")
    assert completed.title.endswith(" completed")
    assert completed.message == f"Task {completed.related_task_id} completed."
    assert completed.notification_metadata["template"] == {"key": "task.completed"}
