"""A user's delivery preferences, and the one-click unsubscribe link every email carries.

- ``GET``/``PATCH /v1/users/{user_id}/preferences``: a producer's key, or that user's token
  (the inbox page's preferences panel);
- ``POST /v1/unsubscribe/{token}`` (RFC 8058 one-click; mail clients send it without a login,
  the signed link is the credential: notifier/unsubscribe.py) turns the user's email off for
  the link's notification type; ``GET`` on it shows a page with the button, for a reader who
  follows the link in the email (a GET never unsubscribes: link scanners fetch every URL).
  A forged or altered link is 403 and changes nothing.
"""

from __future__ import annotations

import html
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, JSONResponse

from notifier.api.deps import ContextDep, SessionDep, UserAccessDep, UserIdPath
from notifier.api.errors import Forbidden
from notifier.schemas.errors import AUTHENTICATED, error_responses
from notifier.schemas.preferences import PreferencesPatch, PreferencesPublic, UnsubscribeResult
from notifier.settings import Settings
from notifier.storage.recipients import get_recipient, update_preferences
from notifier.unsubscribe import (
    MAX_TOKEN_CHARS,
    UNSUBSCRIBE_PATH,
    InvalidUnsubscribeLink,
    UnsubscribeTarget,
    verify,
)

router = APIRouter(
    prefix="/v1/users/{user_id}", tags=["users"], responses=error_responses(*AUTHENTICATED)
)
unsubscribe_router = APIRouter(
    prefix=UNSUBSCRIBE_PATH, tags=["users"], responses=error_responses(403, 404, 422)
)

UnsubscribeToken = Annotated[
    str,
    Path(
        min_length=3,
        max_length=MAX_TOKEN_CHARS,
        pattern=r"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$",
        description="the signed token of an email's List-Unsubscribe link",
    ),
]


@router.get("/preferences", response_model=PreferencesPublic)
async def read_preferences(
    user_id: UserIdPath, _: UserAccessDep, session: SessionDep
) -> PreferencesPublic:
    row = await get_recipient(session, user_id)
    return PreferencesPublic.of(user_id, row.preferences if row else None)


@router.patch("/preferences", response_model=PreferencesPublic)
async def change_preferences(
    user_id: UserIdPath, payload: PreferencesPatch, _: UserAccessDep, session: SessionDep
) -> PreferencesPublic:
    row = await update_preferences(session, user_id, payload.applied_to)
    return PreferencesPublic.of(user_id, row.preferences)


def _target(settings: Settings, token: str) -> UnsubscribeTarget:
    secret = settings.token_secret
    if secret is None:  # the API refuses to start without one; a guard, not a path
        raise Forbidden("unsubscribe links are not enabled")
    try:
        return verify(secret.get_secret_value(), token)
    except InvalidUnsubscribeLink as exc:
        raise Forbidden(str(exc)) from None


# Documented beside the JSON: the page (GET) and the answer to the page's form (POST).
_HTML_PAGE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "JSON; or, for a request that accepts text/html, a page",
        "content": {"text/html": {"schema": {"type": "string"}}},
    }
}


@unsubscribe_router.post("/{token}", response_model=UnsubscribeResult, responses=_HTML_PAGE)
async def one_click_unsubscribe(
    token: UnsubscribeToken, request: Request, context: ContextDep, session: SessionDep
) -> JSONResponse | HTMLResponse:
    """Turn the user's email off for the link's notification type (the body, RFC 8058's
    ``List-Unsubscribe=One-Click``, is not needed). Idempotent."""
    target = _target(context.settings, token)
    change = PreferencesPatch(types={target.notification_type: {"email": False}})
    await update_preferences(session, target.user_id, change.applied_to)
    result = UnsubscribeResult(user_id=target.user_id, notification_type=target.notification_type)
    if "text/html" in request.headers.get("accept", ""):  # the page's form, in a browser
        return HTMLResponse(
            _page(
                "You are unsubscribed",
                f"You will no longer get emails for “{html.escape(target.notification_type)}” "
                "notifications. Other channels and types are unchanged.",
            )
        )
    return JSONResponse(result.model_dump())


@unsubscribe_router.get(
    "/{token}",
    response_model=None,
    responses={
        200: {"description": "a page", "content": {"text/html": {"schema": {"type": "string"}}}}
    },
)
async def unsubscribe_page(token: UnsubscribeToken, context: ContextDep) -> HTMLResponse:
    """A page with the unsubscribe button (following the link changes nothing by itself)."""
    target = _target(context.settings, token)  # a forged link gets no page either
    form = (
        # No action: the form posts back to this very URL, behind whatever proxy prefix.
        '<form method="post">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return HTMLResponse(
        _page(
            "Unsubscribe",
            f"Stop emails for “{html.escape(target.notification_type)}” notifications?",
            form,
        )
    )


def _page(title: str, text: str, form: str = "") -> str:
    return (
        '<!doctype html><html><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title></head>"
        '<body style="font-family:sans-serif;max-width:32rem;margin:3rem auto;padding:0 1rem">'
        f"<h1>{html.escape(title)}</h1><p>{text}</p>{form}</body></html>"
    )
