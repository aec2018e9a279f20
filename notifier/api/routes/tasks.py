"""Producers report tasks and task logs; triggers turn them into notifications in the same
transaction, so a stored event never lacks its notification and a refused one creates none."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response, status
from fastapi.responses import JSONResponse
from sqlalchemy.exc import IntegrityError

from notifier.api.deps import (
    ContextDep,
    PrincipalDep,
    ProducerDep,
    SessionDep,
    TaskIdPath,
    UserAccessDep,
    UserIdPath,
)
from notifier.api.errors import Conflict, NotFound, Unprocessable
from notifier.api.idempotency import IdempotencyKeyHeader, IdempotentRequest
from notifier.models.base import utcnow
from notifier.models.log import LogLevel, TaskLog
from notifier.models.metric import ProgressMetric
from notifier.models.task import TaskProgress, TaskStatus
from notifier.realtime.frames import task_progress_frame
from notifier.schemas.errors import AUTHENTICATED, error_responses
from notifier.schemas.task import (
    TaskCreate,
    TaskLogCreate,
    TaskLogPage,
    TaskLogPublic,
    TaskPublic,
    TaskUpdate,
)
from notifier.storage.cursors import InvalidCursor
from notifier.storage.tasks import (
    add_log,
    add_notifications,
    get_task,
    task_logs_page,
    tasks_of_user,
)
from notifier.storage.tasks import create_task as create_task_row
from notifier.storage.wakeups import DISPATCH, WEBHOOKS
from notifier.storage.webhooks import emit_events
from notifier.triggers.progress import track_progress
from notifier.triggers.task_events import (
    apply_task_update,
    notifications_for_new_log,
    task_end_event,
)
from notifier.triggers.task_states import IllegalTransition
from notifier.triggers.texts import render_triggered

router = APIRouter(
    prefix="/v1/tasks", tags=["tasks"], responses=error_responses(*AUTHENTICATED, 409)
)
user_tasks_router = APIRouter(
    prefix="/v1/users/{user_id}/tasks", tags=["tasks"], responses=error_responses(*AUTHENTICATED)
)


def _public(task: TaskProgress) -> TaskPublic:
    return TaskPublic.model_validate(task.to_dict())


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=TaskPublic,
    responses={200: {"model": TaskPublic, "description": "The same task was already created"}},
)
async def create_task(
    payload: TaskCreate, _: ProducerDep, session: SessionDep, response: Response
) -> TaskPublic:
    stored = await get_task(session, payload.task_id)
    if stored is None:
        now = utcnow()
        task = TaskProgress(
            id=uuid.uuid4(),
            task_id=payload.task_id,
            user_id=payload.user_id,
            task_type=payload.task_type,
            progress=0.0,
            status=TaskStatus.PENDING.value,
            total_steps=payload.total_steps,
            estimated_duration=payload.estimated_duration,
            tags=payload.tags,
            task_metadata=payload.task_metadata,
            created_at=now,
            updated_at=now,
        )
        stored = await create_task_row(session, task)
        if stored is task:
            return _public(task)
    # A retried create (or the same create arriving twice at once, whose insert lost).
    if stored.user_id == payload.user_id and stored.task_type == payload.task_type:
        response.status_code = status.HTTP_200_OK
        return _public(stored)
    raise Conflict(f"task {payload.task_id!r} already exists for another user or type")


@router.get("/{task_id}", response_model=TaskPublic)
async def read_task(
    task_id: TaskIdPath, principal: PrincipalDep, session: SessionDep
) -> TaskPublic:
    task = await get_task(session, task_id)
    if task is None or not principal.may_access_user(task.user_id):
        raise NotFound("no such task")
    return _public(task)


@router.patch("/{task_id}", response_model=TaskPublic)
async def update_task(
    task_id: TaskIdPath,
    payload: TaskUpdate,
    _: ProducerDep,
    context: ContextDep,
    session: SessionDep,
) -> TaskPublic:
    task = await get_task(session, task_id, for_update=True)
    if task is None:
        raise NotFound("no such task")
    was_finished, before = task.is_finished, task.status
    try:
        triggered = apply_task_update(task, payload, context.settings, utcnow())
    except IllegalTransition as exc:
        raise Conflict(
            str(exc),
            details={"current": exc.current, "requested": exc.requested, "allowed": exc.allowed},
        ) from None
    created = await track_progress(
        session,
        task,
        progress_reported=payload.progress is not None,
        restarted=was_finished and not task.is_finished,
        now=task.updated_at,
    )
    await render_triggered(session, context.renderer, task, triggered)
    add_notifications(session, triggered)
    if created is not None:
        triggered.append(created)
    if triggered:
        await context.wakeups.rows_due(session, DISPATCH)
    if context.recorder is not None:
        context.recorder.keep_latest(
            f"task:{task.task_id}",
            ProgressMetric.create_task_progress_metric(
                task.task_id, task.progress_percentage, related_user_id=task.user_id
            ),
        )
    public = _public(task)
    ended = task_end_event(before, task, public.model_dump(mode="json"), task.updated_at)
    if ended is not None and await emit_events(session, [ended]):
        context.wakeups.after_commit(session, WEBHOOKS)
    # Live progress for the owner's open sockets, sent when (and only if) this commits.
    await context.fanout.publish(task.user_id, task_progress_frame(task), session=session)
    await session.commit()
    return public


@router.post(
    "/{task_id}/logs",
    status_code=status.HTTP_201_CREATED,
    response_model=TaskLogPublic,
    responses={200: {"model": TaskLogPublic, "description": "Idempotent replay"}},
)
async def add_task_log(
    task_id: TaskIdPath,
    payload: TaskLogCreate,
    request: Request,
    principal: ProducerDep,
    context: ContextDep,
    session: SessionDep,
    idempotency_key: IdempotencyKeyHeader = None,
) -> JSONResponse:
    """Store a log line; ERROR and CRITICAL notify. A producer that may retry sends an
    ``Idempotency-Key``, so the retried line is stored (and notifies) once."""
    guard = IdempotentRequest(
        request,
        api_key_id=principal.api_key_id or "",
        key=idempotency_key,
        body=payload.model_dump(mode="json"),
    )
    earlier = await guard.earlier_response(session)
    if earlier is not None:
        return earlier
    task = await get_task(session, task_id)
    if task is None:
        raise NotFound("no such task")
    log = TaskLog.create_log(
        task_id,
        payload.level,
        payload.message,
        source=payload.source,
        context=payload.context,
        stack_trace=payload.stack_trace,
        attachments=payload.attachments,
    )
    triggered = notifications_for_new_log(task, log, context.settings)
    body = TaskLogPublic.model_validate(log.to_dict()).model_dump(mode="json")
    guard.remember(session, status.HTTP_201_CREATED, body)
    await render_triggered(session, context.renderer, task, triggered, log=log)
    add_log(session, log, triggered)
    try:
        await session.flush()  # a concurrent retry with the same key loses here
        if triggered:
            await context.wakeups.rows_due(session, DISPATCH)
        await session.commit()
    except IntegrityError:
        await session.rollback()
        earlier = await guard.earlier_response(session)
        if earlier is None:
            raise
        return earlier
    return JSONResponse(body, status_code=status.HTTP_201_CREATED)


@router.get("/{task_id}/logs", response_model=TaskLogPage)
async def list_task_logs(
    task_id: TaskIdPath,
    principal: PrincipalDep,
    session: SessionDep,
    level: Annotated[LogLevel | None, Query(description="this level and above")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[str | None, Query(max_length=512)] = None,
) -> TaskLogPage:
    task = await get_task(session, task_id)
    if task is None or not principal.may_access_user(task.user_id):
        raise NotFound("no such task")
    try:
        rows, next_cursor = await task_logs_page(
            session, task_id, min_level=level, limit=limit, cursor=cursor
        )
    except InvalidCursor as exc:
        raise Unprocessable(str(exc)) from None
    return TaskLogPage(
        items=[TaskLogPublic.model_validate(r.to_dict()) for r in rows], next_cursor=next_cursor
    )


@user_tasks_router.get("", response_model=list[TaskPublic])
async def list_user_tasks(
    user_id: UserIdPath,
    _: UserAccessDep,
    session: SessionDep,
    status_: Annotated[TaskStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> list[TaskPublic]:
    """The user's most recently updated tasks (the inbox shows the running ones)."""
    rows = await tasks_of_user(session, user_id, status=status_, limit=limit)
    return [_public(task) for task in rows]
