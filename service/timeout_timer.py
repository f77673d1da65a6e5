"""A fix for BentoML 1.4's request timeout, which leaked memory under load.

`bentoml._internal.server.http.traffic.TimeoutMiddleware` schedules
`loop.call_later(timeout, ...)` for every request and never cancels it. asyncio's timer
handle keeps the request's contextvars (BentoML's request context among them) alive until
the timeout expires, so a worker's memory grew with requests/s x timeout: +100 MiB over
the first 300 s of `make soak` at 80 requests/s, then flat (docs/reliability.md). This is
the same middleware with the timer cancelled once the response has started.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bentoml._internal.server.http import traffic
from starlette.responses import JSONResponse


async def _call(self: Any, scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] not in ("http", "websocket"):
        return await self.app(scope, receive, send)
    loop = asyncio.get_running_loop()
    waiter = loop.create_future()
    timer = loop.call_later(self.timeout, self._set_timer_out, waiter)

    async def _send(message: dict) -> None:
        if not waiter.done():
            waiter.set_result(None)
        await send(message)

    fut = asyncio.ensure_future(self.app(scope, receive, _send), loop=loop)
    try:
        await waiter
    except asyncio.TimeoutError:
        if fut.cancel():
            resp = JSONResponse({"error": f"Not able to process the request in {self.timeout} "
                                          "seconds"}, status_code=504)
            await resp(scope, receive, send)
    else:
        await fut
    finally:
        timer.cancel()


def install() -> None:
    """Replace the middleware's __call__ (BentoML builds the middleware per worker, after
    importing the service module, so patching at import time reaches every worker)."""
    traffic.TimeoutMiddleware.__call__ = _call
