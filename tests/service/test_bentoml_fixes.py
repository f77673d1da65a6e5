"""service/asgi/bentoml_fixes.py: BentoML's request timeout without its per-request timer
leak, and its request-error log in one line."""

from __future__ import annotations

import asyncio

from bentoml._internal.server.http.traffic import TimeoutMiddleware

from service.asgi.bentoml_fixes import install


async def _receive() -> dict:
    return {"type": "http.request", "body": b""}


async def _ok(scope: dict, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def test_no_timer_outlives_its_request() -> None:
    install()

    async def serve_ten() -> tuple[list, list]:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        middleware = TimeoutMiddleware(_ok, timeout=300)
        for _ in range(10):
            await middleware({"type": "http"}, _receive, send)
        loop = asyncio.get_running_loop()
        return [h for h in loop._scheduled if not h.cancelled()], sent

    pending, sent = asyncio.run(serve_ten())
    assert pending == []  # BentoML's own middleware leaves ten, each holding its request
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"] * 10


def test_a_request_past_the_timeout_still_gets_a_504() -> None:
    install()

    async def hang(scope: dict, receive, send) -> None:
        await asyncio.Event().wait()

    async def serve_one() -> list[dict]:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        await TimeoutMiddleware(hang, timeout=0.05)({"type": "http"}, _receive, send)
        return sent

    sent = asyncio.run(serve_one())
    assert sent[0]["status"] == 504 and b"0.05 seconds" in sent[1]["body"]


def test_a_refused_request_is_logged_in_one_line_and_a_fault_keeps_its_traceback(
        caplog) -> None:
    import logging

    import pydantic
    from bentoml._internal.server import http_app

    install()

    class Body(pydantic.BaseModel):
        n: int

    def log(error: BaseException) -> None:
        try:
            raise error
        except BaseException:
            http_app.logger.error("Exception on %s [%s]", "/sample", "POST", exc_info=True)

    try:
        Body(n="x")
    except pydantic.ValidationError as err:
        validation_error = err
    with caplog.at_level(logging.INFO, logger=http_app.logger.name):
        log(validation_error)
        log(ZeroDivisionError("a real fault"))
    refused, fault = caplog.records
    assert refused.levelno == logging.INFO and refused.exc_info is None
    assert "answered 4xx: 1 validation error" in refused.getMessage()
    assert fault.levelno == logging.ERROR and fault.exc_info[0] is ZeroDivisionError
