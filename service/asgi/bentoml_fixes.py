"""Two fixes for BentoML 1.4, installed in every process that imports the service.

1. Its request timeout leaked memory under load.
`bentoml._internal.server.http.traffic.TimeoutMiddleware` schedules
`loop.call_later(timeout, ...)` for every request and never cancels it. asyncio's timer
handle keeps the request's contextvars (BentoML's request context among them) alive until
the timeout expires, so a worker's memory grew with requests/s x timeout: +100 MiB over
the first 300 s of `make soak` at 80 requests/s, then flat (docs/reliability.md). This is
the same middleware with the timer cancelled once the response has started.

2. It logs every request it refuses (a pydantic validation error, a 4xx BentoMLException)
at ERROR with a traceback: ~2 KB of log per bad request, and noise an operator learns to
ignore. Those become one INFO line; real server errors keep their traceback.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bentoml._internal.server import http_app
from bentoml._internal.server.http import traffic
from bentoml.exceptions import BentoMLException
from pydantic import ValidationError
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


def is_client_error(error: BaseException | None) -> bool:
    """Whether BentoML answers `error` with a 4xx."""
    return isinstance(error, ValidationError) or (
        isinstance(error, BentoMLException) and error.error_code.value < 500)


class ClientErrorsInOneLine(logging.Filter):
    """BentoML's "Exception on PATH [METHOD]" records for 4xx answers: one INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if is_client_error(error):
            record.msg = f"{record.msg}: answered 4xx: %s"
            record.args = (*(record.args or ()), str(error).splitlines()[0])
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def install() -> None:
    """Replace the timeout middleware's __call__ and filter the request-error log
    (BentoML builds its middleware per worker, after importing the service module, so
    patching at import time reaches every worker)."""
    traffic.TimeoutMiddleware.__call__ = _call
    if not any(isinstance(f, ClientErrorsInOneLine) for f in http_app.logger.filters):
        http_app.logger.addFilter(ClientErrorsInOneLine())
