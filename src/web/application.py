"""The ASGI application a service's composition root builds: its lifespan and its edge."""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager

from starlette.types import ASGIApp, Receive, Scope, Send

Lifespan = Callable[[], AbstractAsyncContextManager[None]]


class Application:
    """HTTP goes to the edge; `lifespan` opens what the service needs and closes it after."""

    def __init__(self, edge: ASGIApp, *, lifespan: Lifespan) -> None:
        self.edge = edge
        self._lifespan = lifespan

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self.edge(scope, receive, send)
        elif kind == "lifespan":
            await self._run_lifespan(receive, send)
        else:  # no websocket operations: refuse the handshake
            await send({"type": "websocket.close", "code": 1000})

    async def _run_lifespan(self, receive: Receive, send: Send) -> None:
        await receive()  # lifespan.startup
        async with contextlib.AsyncExitStack() as stack:
            try:
                await stack.enter_async_context(self._lifespan())
            except BaseException:
                await send({"type": "lifespan.startup.failed", "message": traceback.format_exc()})
                raise
            await send({"type": "lifespan.startup.complete"})
            await receive()  # lifespan.shutdown
            try:
                await stack.aclose()
            except BaseException:
                await send({"type": "lifespan.shutdown.failed", "message": traceback.format_exc()})
                raise
        await send({"type": "lifespan.shutdown.complete"})
