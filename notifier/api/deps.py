"""Request dependencies: the service context, a database session, and who is calling.

Every dependency is a coroutine function even where it does no I/O: FastAPI runs a plain
``def`` dependency in its thread pool, a thread hand-off per dependency per request that cost
more than the checks themselves on the enqueue path (bench/RESULTS.md).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from notifier.api.context import ServiceContext
from notifier.api.errors import Forbidden, NotFound, TooManyRequests, Unauthorized
from notifier.api.rate_limit import ClientLimits, retry_after_header
from notifier.auth import InvalidCredentials, Principal


def context_of(request: Request) -> ServiceContext:
    context: ServiceContext = request.app.state.context
    return context


async def get_context(request: Request) -> ServiceContext:
    return context_of(request)


ContextDep = Annotated[ServiceContext, Depends(get_context)]


async def get_session(context: ContextDep) -> AsyncIterator[AsyncSession]:
    async with context.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def bearer_credential(authorization: str) -> str:
    """The credential of an ``Authorization`` header's value."""
    scheme, _, credential = authorization.partition(" ")
    if scheme.lower() != "bearer" or not credential.strip():
        raise Unauthorized("send `Authorization: Bearer <API key or user token>`")
    return credential.strip()


# Declares the credential in the OpenAPI document (every operation that needs one names it);
# it never refuses anything itself: ``get_principal`` does, with our 401 envelope.
bearer_scheme = HTTPBearer(
    scheme_name="bearer",
    description="A producer API key, or a user token minted by POST /v1/users/{user_id}/tokens",
    auto_error=False,
)
DocumentedBearer = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]


def client_limits(request: Request) -> ClientLimits:
    limits: ClientLimits = request.app.state.client_limits
    return limits


def client_address(request: Request) -> str:
    # uvicorn has already put a trusted proxy's X-Forwarded-For here (proxy_headers).
    return request.client.host if request.client else "unknown"


async def get_principal(request: Request, context: ContextDep, _: DocumentedBearer) -> Principal:
    authorization = request.headers.get("authorization", "")
    return principal_for(context, client_limits(request), client_address(request), authorization)


def principal_for(
    context: ServiceContext, limits: ClientLimits, address: str, authorization: str
) -> Principal:
    """Who sends ``authorization`` from ``address``, with the rate limits spent; raises the
    401 or 429. ``get_principal``'s work, callable without a ``Request`` (api/enqueue_fast.py)."""
    # An address's failure tokens are spent by each failed attempt (below); an address with
    # none left is refused before its credential is looked at. A success spends none, so it
    # only looks (``wait``: what spending one and giving it back did, for less).
    wait = limits.auth_failures.wait(address)
    if wait is not None:
        raise TooManyRequests(
            "too many failed authentications from this address; try again later",
            headers={"Retry-After": retry_after_header(wait)},
        )
    try:
        principal = _authenticate(context, authorization)
    except Unauthorized:
        limits.auth_failures.take(address)
        raise
    if principal.api_key_id is not None:  # a producer
        wait = context.key_limits.take(principal.api_key_id)
        if wait is not None:
            raise TooManyRequests(
                "too many requests for this API key; slow down",
                headers={"Retry-After": retry_after_header(wait)},
            )
    else:
        wait = limits.user_requests.take(address)
        if wait is not None:
            raise TooManyRequests(
                "too many requests with user tokens from this address; slow down",
                headers={"Retry-After": retry_after_header(wait)},
            )
    return principal


def _authenticate(context: ServiceContext, authorization: str) -> Principal:
    credential = bearer_credential(authorization)
    key_id = context.api_keys.identify(credential)
    if key_id is not None:
        return Principal(kind="api_key", api_key_id=key_id)
    try:
        return Principal(kind="user", user_id=context.tokens.verify(credential))
    except InvalidCredentials:
        raise Unauthorized("the API key or user token is invalid or expired") from None


PrincipalDep = Annotated[Principal, Depends(get_principal)]


async def require_producer(principal: PrincipalDep) -> Principal:
    if not principal.is_producer:
        raise Forbidden("this endpoint needs a producer API key, not a user token")
    return principal


ProducerDep = Annotated[Principal, Depends(require_producer)]


# A user or task id in a URL: the limits a body's ids have (1-255 characters, no control
# characters), so a path cannot carry what the database columns refuse (a 500) or store.
_PATH_ID = r"^[^\x00-\x1f\x7f]{1,255}$"
UserIdPath = Annotated[str, Path(min_length=1, max_length=255, pattern=_PATH_ID)]
TaskIdPath = Annotated[str, Path(min_length=1, max_length=255, pattern=_PATH_ID)]


async def require_user_access(user_id: UserIdPath, principal: PrincipalDep) -> Principal:
    """A producer reaches every user; a user token only its own (others look absent: 404)."""
    if not principal.may_access_user(user_id):
        raise NotFound("no such user")
    return principal


UserAccessDep = Annotated[Principal, Depends(require_user_access)]
