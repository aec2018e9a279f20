"""Enqueue by template: ``template`` + ``data`` (+ ``locale``) rendered into the texts a
notification stores, before anything is written (docs/architecture.md, "Templates").

A request (or a whole batch) costs one read of its templates and its recipients (their locale
and time zone) and one hop to the renderer's thread pool for all its renders, both shared with
the requests that arrive meanwhile (``GroupRender``).
Any render that fails refuses the whole request with 422, naming the variable, part and
locale; nothing is written. What a render gives:

- ``title`` and ``message``: the notification's own, as if the producer had sent them;
- the channel parts the template has (``email_subject``, ``email_html``, ``sms``,
  ``push_title``, ``push_body``), stored in ``rendered_parts`` so that every attempt, retries
  included, sends the same bytes;
- ``metadata.template = {"key", "version", "locale"}`` (the resolved locale), in the
  producer's metadata.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from notifier.api.context import ServiceContext
from notifier.api.errors import Unprocessable
from notifier.schemas.notification import NotificationCreate
from notifier.storage.render_inputs import RenderInputs, read_render_inputs
from notifier.storage.templates import require_template
from notifier.templates import (
    NotificationInfo,
    RecipientInfo,
    RenderedTemplate,
    RenderRequest,
    TemplateError,
)


@dataclass(slots=True)
class _Member:
    """One request waiting for its renders: its templated payloads, and its answer."""

    payloads: list[NotificationCreate]
    indexes: list[int]  # where each sits in the request (a batch's items)
    batch: bool
    future: asyncio.Future[list[RenderedTemplate | TemplateError]]


class GroupRender:
    """Concurrent enqueues by template share their reads and their hop to the renderer: one
    statement reads all their templates and recipients (storage/render_inputs.py), then one
    call to the renderer's pool renders for all of them.

    Under load each request checked out a pooled connection of its own for two small reads,
    and waited for its own turn on the pool, whose threads wait for the GIL the event loop
    holds (up to the 5 ms switch interval per hand-over): requests spent far longer queuing
    than reading or rendering. As with the group commit (storage/enqueue.py), the first
    request starts a worker (up to ``workers`` at once) and requests arriving meanwhile form
    the next group. Every read is made after the request arrived, so a template PUT or a
    recipient change answered before it is seen. Each request keeps its own render budget
    (``TemplateRenderer.render_groups``) and its own errors.
    """

    def __init__(self, context: ServiceContext, *, max_items: int = 5000, workers: int = 2):
        self.context = context
        self._max_items = max_items
        self._waiting: deque[_Member] = deque()
        self._max_workers = workers
        self._workers: set[asyncio.Task[None]] = set()

    async def render(
        self, payloads: list[NotificationCreate], indexes: list[int], *, batch: bool
    ) -> list[RenderedTemplate | TemplateError]:
        future: asyncio.Future[list[RenderedTemplate | TemplateError]] = (
            asyncio.get_running_loop().create_future()
        )
        self._waiting.append(_Member(payloads, indexes, batch, future))
        if len(self._workers) < self._max_workers:
            self._workers.add(asyncio.create_task(self._serve_groups()))
        return await future

    async def _serve_groups(self) -> None:
        try:
            while self._waiting:
                group: list[_Member] = []
                items = 0
                while self._waiting and (not group or items < self._max_items):
                    member = self._waiting.popleft()
                    group.append(member)
                    items += len(member.payloads)
                await self._serve(group)
        finally:
            task = asyncio.current_task()
            if task is not None:
                self._workers.discard(task)

    async def _serve(self, group: list[_Member]) -> None:
        keys = {_key(payload) for member in group for payload in member.payloads}
        users = {payload.user_id for member in group for payload in member.payloads}
        try:
            found = await read_render_inputs(self.context.engine, keys, users)
            jobs: list[tuple[_Member, list[RenderRequest]]] = []
            for member in group:
                try:
                    jobs.append((member, _requests(member, found)))
                except Unprocessable as exc:
                    _settle(member.future, exc)
            results = await self.context.renderer.render_groups([job for _, job in jobs])
        except Exception as exc:
            for member in group:
                _settle(member.future, exc)
            return
        for (member, _), result in zip(jobs, results, strict=True):
            if not member.future.done():  # its caller may have been cancelled meanwhile
                member.future.set_result(result)


def _settle(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc)


def _requests(member: _Member, found: RenderInputs) -> list[RenderRequest]:
    requests: list[RenderRequest] = []
    for payload, index in zip(member.payloads, member.indexes, strict=True):
        try:
            template = require_template(found.templates, _key(payload))
        except TemplateError as exc:
            raise _refused(exc, index if member.batch else None, "template") from None
        profile = found.recipients.get(payload.user_id)
        requests.append(
            RenderRequest(
                template=template,
                data=payload.data or {},
                locale=payload.locale,
                recipient=RecipientInfo(
                    id=payload.user_id,
                    locale=profile.locale if profile else None,
                    timezone=profile.timezone if profile else None,
                ),
                notification=NotificationInfo(
                    notification_type=payload.notification_type.value,
                    priority=payload.priority.value,
                    action_url=payload.action_url,
                ),
            )
        )
    return requests


async def render_templated(
    group: GroupRender, payloads: Sequence[NotificationCreate], *, batch: bool
) -> tuple[list[NotificationCreate], list[dict[str, str] | None] | None]:
    """``payloads`` with every templated one rendered, and the channel parts per payload (None
    when none of them uses a template: the plain path does no I/O here)."""
    indexes = [index for index, payload in enumerate(payloads) if payload.template is not None]
    if not indexes:
        return list(payloads), None
    results = await group.render([payloads[i] for i in indexes], indexes, batch=batch)
    rendered = list(payloads)
    parts: list[dict[str, str] | None] = [None] * len(payloads)
    for index, result in zip(indexes, results, strict=True):
        if isinstance(result, TemplateError):
            raise _refused(result, index if batch else None, "data")
        rendered[index], parts[index] = _apply(payloads[index], result)
    return rendered, parts


def _apply(
    payload: NotificationCreate, result: RenderedTemplate
) -> tuple[NotificationCreate, dict[str, str]]:
    texts = result.parts
    metadata: dict[str, Any] = {
        **payload.metadata,
        "template": {"key": result.key, "version": result.version, "locale": result.locale},
    }
    # model_copy skips validation: the rendered texts were held to the same limits (title 200
    # characters on one line, message 10,000) by the renderer (templates/definition.py).
    copy = payload.model_copy(
        update={"title": texts.title, "message": texts.message, "metadata": metadata}
    )
    return copy, texts.channel_parts()


def _key(payload: NotificationCreate) -> str:
    if payload.template is None:
        raise ValueError("not a templated notification")
    return payload.template


def _refused(exc: TemplateError, index: int | None, field: str) -> Unprocessable:
    loc: list[str | int] = ["body"] if index is None else ["body", "notifications", index]
    details = {**exc.details, "loc": [*loc, field]}
    where = "" if index is None else f"notifications[{index}]: "
    return Unprocessable(f"{where}{exc}", details=details)
