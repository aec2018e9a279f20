"""The two clients: ``NotifierClient`` (``httpx.Client``) and ``AsyncNotifierClient``
(``httpx.AsyncClient``). Each sends a ``Call`` with the shared retry policy; the API methods
themselves are ``NotifierApi``'s (api.py)."""

from __future__ import annotations

from collections.abc import Awaitable
from types import TracebackType
from typing import Any, Self

import httpx
from tenacity import AsyncRetrying, Retrying

from notifier.client.api import NotifierApi
from notifier.client.calls import Call, JsonObject


class NotifierClient(NotifierApi[JsonObject, list[JsonObject]]):
    """The synchronous client (``httpx.Client``). Use it as a context manager, or ``close()``.

    ``transport`` replaces httpx's network transport (e.g. ``httpx.MockTransport`` in tests)."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10,
        max_retries: int = 3,
        transport: httpx.BaseTransport | None = None,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        super().__init__(
            base_url,
            api_key,
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
            max_backoff=max_backoff,
        )
        self._http = httpx.Client(
            base_url=self.base_url, headers=self._headers, timeout=timeout, transport=transport
        )

    def _send(self, call: Call) -> Any:
        response = self._http.request(
            call.method, call.path, json=call.json, headers=dict(call.headers)
        )
        return self._result(call, response)

    def _execute(self, call: Call) -> Any:
        return Retrying(**self._retry_options(call))(self._send, call)

    def _object(self, call: Call) -> JsonObject:
        result: JsonObject = self._execute(call)
        return result

    def _list(self, call: Call) -> list[JsonObject]:
        result: list[JsonObject] = self._execute(call)
        return result

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class AsyncNotifierClient(NotifierApi[Awaitable[JsonObject], Awaitable[list[JsonObject]]]):
    """The asyncio client (``httpx.AsyncClient``): the same methods, to be awaited. Use it as an
    async context manager, or ``await aclose()``."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout: float = 10,
        max_retries: int = 3,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ) -> None:
        super().__init__(
            base_url,
            api_key,
            timeout=timeout,
            max_retries=max_retries,
            backoff=backoff,
            max_backoff=max_backoff,
        )
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=self._headers, timeout=timeout, transport=transport
        )

    async def _send(self, call: Call) -> Any:
        response = await self._http.request(
            call.method, call.path, json=call.json, headers=dict(call.headers)
        )
        return self._result(call, response)

    async def _execute(self, call: Call) -> Any:
        return await AsyncRetrying(**self._retry_options(call))(self._send, call)

    async def _object(self, call: Call) -> JsonObject:
        result: JsonObject = await self._execute(call)
        return result

    async def _list(self, call: Call) -> list[JsonObject]:
        result: list[JsonObject] = await self._execute(call)
        return result

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
