# ruff: noqa: RUF001 - fullwidth punctuation is what correct Chinese text uses
"""POST /v1/templates/{key}/preview on both databases: every part rendered as its channel
would send it, the locale fallback chain, a recipient's locale and time zone, the Babel
filters, autoescaping in email_html only, the SMS segment warning, the zh-CN built-ins, and
the 422s (missing variable, bad locale, data too large) — with nothing stored."""

from __future__ import annotations

from typing import Any

import pytest

from tests.api.helpers import assert_error, new_user, notifications_of, recipients_of
from tests.support.service import RunningService
from tests.templates.helpers import new_key, template_body


async def put_template(service: RunningService, body: dict[str, Any]) -> str:
    key = new_key()
    async with service.client() as client:
        response = await client.put(f"/v1/templates/{key}", json=body)
    assert response.status_code == 201, response.text
    return key


async def preview(service: RunningService, key: str, **body: Any) -> dict[str, Any]:
    async with service.client() as client:
        response = await client.post(f"/v1/templates/{key}/preview", json=body)
    assert response.status_code == 200, response.text
    return dict(response.json())


async def set_recipient(service: RunningService, user: str, **profile: Any) -> None:
    async with service.client() as client:
        response = await client.put(f"/v1/users/{user}/recipient", json=profile)
    assert response.status_code == 200, response.text


LOCALIZED = template_body(
    "Hello {{ data.name }}",
    "Order {{ data.order }} shipped.",
    fr={"title": "Bonjour {{ data.name }}", "message": "Commande {{ data.order }} expédiée."},
    fr_CA={"title": "Allô {{ data.name }}", "message": "Commande {{ data.order }} envoyée."},
)
DATA = {"name": "Ann", "order": "A-17"}


@pytest.mark.parametrize(
    ("asked", "resolved", "title"),
    [
        ("fr-BE", "fr", "Bonjour Ann"),  # fr-BE → fr
        ("fr-CA", "fr-CA", "Allô Ann"),  # exact
        ("FR_ca", "fr-CA", "Allô Ann"),  # any case, either separator
        ("fr", "fr", "Bonjour Ann"),
        ("de-AT", "en", "Hello Ann"),  # de-AT → de → the default
        (None, "en", "Hello Ann"),  # no locale, no user: the default
    ],
)
async def test_preview_follows_the_locale_fallback_chain(
    service: RunningService, asked: str | None, resolved: str, title: str
) -> None:
    key = await put_template(service, LOCALIZED)
    body = await preview(service, key, data=DATA, locale=asked)
    assert body["locale"] == resolved
    assert body["parts"]["title"] == title
    assert body["key"] == key and body["version"] == 1 and body["builtin"] is False


async def test_preview_renders_every_part_with_the_channel_fallbacks(
    service: RunningService,
) -> None:
    key = await put_template(service, LOCALIZED)
    body = await preview(service, key, data=DATA, notification={"action_url": "https://x.test/o"})
    assert body["parts"] == {
        "title": "Hello Ann",
        "message": "Order A-17 shipped.",
        "email_subject": "Hello Ann",
        "email_html": None,  # the email channel's default layout
        "sms": "Hello Ann: Order A-17 shipped.",
        "push_title": "Hello Ann",
        "push_body": "Order A-17 shipped.",
    }
    assert body["defaulted"] == ["email_subject", "email_html", "sms", "push_title", "push_body"]
    assert body["sms"] == {"encoding": "GSM-7", "units": 30, "segments": 1}
    assert body["warnings"] == []


async def test_a_recipients_locale_and_time_zone_are_used_and_nothing_is_stored(
    service: RunningService,
) -> None:
    user = new_user()
    await set_recipient(service, user, locale="fr-BE", timezone="Europe/Brussels")
    body = template_body(
        "{{ user.id }}",
        "{{ data.when|datetime('short') }} {{ user.timezone }}",
        fr={
            "title": "{{ user.id }} ({{ user.locale }})",
            "message": "{{ data.when|datetime('short') }}",
        },
    )
    key = await put_template(service, body)
    rendered = await preview(service, key, data={"when": "2026-01-31T23:30:00Z"}, user_id=user)
    stranger = new_user()
    for_stranger = await preview(
        service, key, data={"when": "2026-01-31T23:30:00Z"}, user_id=stranger
    )
    # fr-BE → fr; Brussels is UTC+1 in winter, so it is already February there.
    assert rendered["locale"] == "fr"
    assert rendered["parts"]["title"] == f"{user} (fr-BE)"
    assert rendered["parts"]["message"] == "01/02/2026 00:30"
    # A user with no recipient profile: the default locale, UTC.
    assert for_stranger["locale"] == "en"
    assert for_stranger["parts"]["message"] == "1/31/26, 11:30\u202fPM"
    # A preview stores nothing: no notification, and no profile for the stranger.
    assert await notifications_of(service, user) == 0
    assert await recipients_of(service, stranger) == 0


async def test_an_unusable_recipient_locale_falls_back_to_the_default(
    service: RunningService,
) -> None:
    user = new_user()
    await set_recipient(service, user, locale="xx-YY", timezone="Asia/Tokyo")
    key = await put_template(service, LOCALIZED)
    body = await preview(service, key, data=DATA, user_id=user)
    assert body["locale"] == "en" and body["parts"]["title"] == "Hello Ann"


@pytest.mark.parametrize("locale", ["xx", "xx-YY", "en US", "not-a-locale-at-all", "und", ""])
async def test_a_requested_locale_that_is_not_usable_is_refused(
    service: RunningService, locale: str
) -> None:
    key = await put_template(service, LOCALIZED)
    async with service.client() as client:
        response = await client.post(
            f"/v1/templates/{key}/preview", json={"data": DATA, "locale": locale}
        )
    error = assert_error(response, 422, "validation_error")
    assert ["body", "locale"] in [d["loc"][:2] for d in error["details"]], error


async def test_a_missing_variable_is_refused_naming_it(service: RunningService) -> None:
    key = await put_template(
        service,
        template_body(
            "Hello {{ data.name }}",
            "{% for line in data.lines %}{{ line.sku }} × {{ line.qty }}\n{% endfor %}",
        ),
    )
    async with service.client() as client:
        no_name = await client.post(f"/v1/templates/{key}/preview", json={"data": {}})
        no_qty = await client.post(
            f"/v1/templates/{key}/preview",
            json={"data": {"name": "Ann", "lines": [{"sku": "a", "qty": 1}, {"sku": "b"}]}},
        )
    error = assert_error(no_name, 422, "validation_error")
    assert error["details"]["reason"] == "missing_variable"
    assert error["details"]["variable"] == "data.name"
    assert error["details"]["part"] == "title" and error["details"]["locale"] == "en"
    assert "data.name" in error["message"]
    error = assert_error(no_qty, 422, "validation_error")
    assert error["details"]["variable"] == "data.lines[1].qty", error
    assert error["details"]["part"] == "message" and error["details"]["line"] == 1


async def test_html_is_escaped_in_email_html_only(service: RunningService) -> None:
    parts = {
        "title": "{{ data.name }} wrote",
        "message": "{{ data.name }}: {{ data.text }}",
        "email_html": "<p>{{ data.name }}: {{ data.text }}</p>",
        "sms": "{{ data.text }}",
        "push_body": "{{ data.text }}",
    }
    key = await put_template(service, {"locales": {"en": parts}})
    data = {"name": "<b>Ann & co</b>", "text": "<script>alert('x')</script>"}
    body = await preview(service, key, data=data)
    assert body["parts"]["email_html"] == (
        "<p>&lt;b&gt;Ann &amp; co&lt;/b&gt;: &lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;</p>"
    )
    assert body["parts"]["title"] == "<b>Ann & co</b> wrote"
    assert body["parts"]["message"] == "<b>Ann & co</b>: <script>alert('x')</script>"
    assert body["parts"]["sms"] == "<script>alert('x')</script>"
    assert body["parts"]["push_body"] == "<script>alert('x')</script>"


FORMATS = (
    "{{ data.when|datetime('full') }} | {{ data.when|date('long') }} | "
    "{{ data.amount|number }} | {{ data.ratio|percent }} | {{ data.seconds|duration }}"
)


@pytest.mark.parametrize(
    ("locale", "timezone", "expected"),
    [
        (
            "zh-CN",
            "Asia/Shanghai",
            "2026年2月1日星期日 中国标准时间 07:30:00 | 2026年2月1日 | 1,234,567.891 | 26% | 2小时",
        ),
        (
            "en",
            "America/New_York",
            "Saturday, January 31, 2026, 6:30:00\u202fPM Eastern Standard Time | January 31, 2026"
            " | 1,234,567.891 | 26% | 2 hours",
        ),
        (
            "de",
            "Europe/Berlin",
            "Sonntag, 1. Februar 2026, 00:30:00 Mitteleuropäische Normalzeit | 1. Februar 2026"
            " | 1.234.567,891 | 26\u00a0% | 2 Stunden",
        ),
        (
            "en",
            "Mars/Olympus_Mons",  # unknown: UTC
            "Saturday, January 31, 2026, 11:30:00\u202fPM Coordinated Universal Time"
            " | January 31, 2026 | 1,234,567.891 | 26% | 2 hours",
        ),
    ],
)
async def test_babel_filters_format_in_the_locale_and_time_zone(
    service: RunningService, locale: str, timezone: str, expected: str
) -> None:
    body = template_body(
        "t",
        FORMATS,
        zh_CN={"title": "t", "message": FORMATS},
        de={"title": "t", "message": FORMATS},
    )
    key = await put_template(service, body)
    user = new_user()
    profile: dict[str, Any] = {"locale": locale}
    if "/" in timezone and not timezone.startswith("Mars"):
        profile["timezone"] = timezone
    await set_recipient(service, user, **profile)
    if timezone.startswith("Mars"):
        # The recipient API refuses an unknown zone, so the renderer's UTC fallback is for
        # zones that stop existing: simulate one through the database.
        await _store_timezone(service, user, timezone)
    data = {"when": "2026-01-31T23:30:00Z", "amount": 1234567.891, "ratio": 0.256, "seconds": 7200}
    rendered = await preview(service, key, data=data, user_id=user)
    assert rendered["locale"] == locale
    assert rendered["parts"]["message"] == expected


async def _store_timezone(service: RunningService, user: str, timezone: str) -> None:
    from sqlalchemy import update

    from notifier.models import Recipient

    async with service.context.sessions() as session:
        await session.execute(
            update(Recipient).where(Recipient.user_id == user).values(timezone=timezone)
        )
        await session.commit()


@pytest.mark.parametrize(
    ("sms", "encoding", "units", "segments"),
    [
        ("x" * 160, "GSM-7", 160, 1),
        ("x" * 161, "GSM-7", 161, 2),
        ("{}" * 40, "GSM-7", 160, 1),  # extension characters count two
        ("€" * 81, "GSM-7", 162, 2),
        ("短" * 70, "UCS-2", 70, 1),
        ("短" * 71, "UCS-2", 71, 2),
        ("x" * 159 + "😀", "UCS-2", 161, 3),  # one emoji: all UCS-2, the emoji two units
    ],
)
async def test_sms_segment_warning(
    service: RunningService, sms: str, encoding: str, units: int, segments: int
) -> None:
    key = await put_template(
        service, {"locales": {"en": {"title": "t", "message": "m", "sms": sms}}}
    )
    body = await preview(service, key)
    assert body["parts"]["sms"] == sms
    assert body["sms"] == {"encoding": encoding, "units": units, "segments": segments}
    if segments == 1:
        assert body["warnings"] == []
    else:
        (warning,) = body["warnings"]
        assert warning["code"] == "sms_segments"
        assert f"{segments} segments" in warning["message"]
        assert str(160 if encoding == "GSM-7" else 70) in warning["message"]


TASK = {
    "task_id": "t-42",
    "task_type": "report_export",
    "status": "completed",
    "duration_seconds": 125.0,
    "error_message": None,
}


async def test_builtin_task_completed_in_chinese(service: RunningService) -> None:
    user = new_user()
    await set_recipient(service, user, locale="zh-CN", timezone="Asia/Shanghai")
    by_user = await preview(service, "task.completed", task=TASK, user_id=user)
    by_request = await preview(service, "task.completed", task=TASK, locale="zh-Hans-CN")
    english = await preview(service, "task.completed", task=TASK, locale="en-GB")
    assert by_user["builtin"] is True and by_user["version"] == 0
    assert by_user["locale"] == "zh-CN"
    assert by_user["parts"]["title"] == "report_export 已完成"
    assert by_user["parts"]["message"] == "任务 t-42 已完成，用时2分钟。"
    # zh-Hans-CN names the same locale as zh-CN (the script is implied by the region).
    assert by_request["locale"] == "zh-CN"
    assert by_request["parts"] == by_user["parts"]
    assert english["parts"]["title"] == "report_export completed"
    assert english["parts"]["message"] == "Task t-42 completed in 2 minutes."


async def test_builtin_failure_and_log_templates_in_chinese(service: RunningService) -> None:
    failed_task = {**TASK, "status": "failed", "error_message": "磁盘空间不足"}
    log = {"log": {"level": "CRITICAL", "message": "数据库连接中断", "source": "worker-3"}}
    failed = await preview(service, "task.failed", task=failed_task, locale="zh-CN")
    critical = await preview(service, "task.log.critical", task=TASK, data=log, locale="zh-CN")
    error = await preview(service, "task.log.error", task=TASK, data=log, locale="zh-CN")
    assert failed["parts"]["title"] == "report_export 执行失败"
    assert failed["parts"]["message"] == "任务 t-42 执行失败：磁盘空间不足"
    assert failed["parts"]["sms"] == "report_export 执行失败：磁盘空间不足"
    assert critical["parts"]["title"] == "report_export：严重错误"
    assert critical["parts"]["message"] == "任务 t-42（worker-3）记录了一条严重错误：数据库连接中断"
    assert critical["parts"]["sms"] == "【严重】report_export：数据库连接中断"
    assert error["parts"]["message"] == "任务 t-42（worker-3）记录了一条错误：数据库连接中断"


async def test_builtin_digest_in_both_languages(service: RunningService) -> None:
    events = [
        {
            "id": f"n-{n}",
            "title": f"Build {n} failed",
            "message": "exit code 1",
            "created_at": "2026-01-31T08:00:00Z",
        }
        for n in range(3)
    ]
    data = {"count": 7, "events": events}
    zh = await preview(service, "digest", data=data, locale="zh-CN")
    en = await preview(
        service, "digest", data=data, locale="en", notification={"action_url": "https://x.test/"}
    )
    assert zh["parts"]["title"] == "您有 7 条新通知"
    assert zh["parts"]["message"].splitlines() == [
        "• Build 0 failed：exit code 1",
        "• Build 1 failed：exit code 1",
        "• Build 2 failed：exit code 1",
        "……另有 4 条",
    ]
    assert zh["parts"]["sms"] == "您有 7 条新通知，最新：Build 2 failed"
    assert "<small>2026/1/31 08:00</small>" in zh["parts"]["email_html"]
    assert "查看详情" not in zh["parts"]["email_html"]  # no action_url
    assert en["parts"]["title"] == "7 new notifications"
    assert en["parts"]["message"].endswith("…and 4 more")
    assert '<a href="https://x.test/">Open</a>' in en["parts"]["email_html"]


async def test_data_over_64_kib_is_refused(service: RunningService) -> None:
    key = await put_template(service, LOCALIZED)
    async with service.client() as client:
        response = await client.post(
            f"/v1/templates/{key}/preview", json={"data": {"name": "x" * 65_536, "order": 1}}
        )
    error = assert_error(response, 422, "validation_error")
    assert "65536" in error["message"], error


async def test_preview_of_an_unknown_key_is_404(service: RunningService) -> None:
    async with service.client() as client:
        response = await client.post(f"/v1/templates/{new_key()}/preview", json={})
    assert_error(response, 404, "not_found")
