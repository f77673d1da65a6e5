"""service/asgi/bentoml_fixes.py: BentoML's request timeout without its per-request timer
leak, and its request-error log in one line."""

from __future__ import annotations

import asyncio
import time

import pytest
from bentoml._internal.server.http.traffic import TimeoutMiddleware

from service.asgi.bentoml_fixes import install


async def _receive() -> dict:
    return {"type": "http.request", "body": b""}


async def _ok(scope: dict, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _sent_by(app, timeout: float) -> list[dict]:
    """What one request through the timeout middleware over `app` sends."""
    async def serve_one() -> list[dict]:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        await TimeoutMiddleware(app, timeout=timeout)({"type": "http"}, _receive, send)
        return sent

    return asyncio.run(serve_one())


def test_no_timer_outlives_its_request() -> None:
    install(work_threads=4)

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
    install(work_threads=4)

    async def hang(scope: dict, receive, send) -> None:
        await asyncio.Event().wait()

    sent = _sent_by(hang, timeout=0.05)
    assert sent[0]["status"] == 504 and b"0.05 seconds" in sent[1]["body"]


def test_a_refused_request_is_logged_in_one_line_and_a_fault_keeps_its_traceback(
        caplog) -> None:
    import logging

    import pydantic
    from bentoml._internal.server import http_app

    install(work_threads=4)

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


def test_an_app_that_raises_before_sending_is_answered_at_once() -> None:
    """The exception reaches the server at once (it answers 500 and logs it), instead of
    the connection hanging for the whole timeout (BentoML's middleware and ours before:
    300 s, then a bare 500 and no log line)."""
    install(work_threads=4)

    async def broken(scope: dict, receive, send) -> None:
        raise ZeroDivisionError("a fault before the response")

    async def serve_one() -> tuple[list, list, float]:
        sent: list[dict] = []

        async def send(message: dict) -> None:
            sent.append(message)

        loop = asyncio.get_running_loop()
        started = loop.time()
        with pytest.raises(ZeroDivisionError, match="a fault before the response"):
            await asyncio.wait_for(
                TimeoutMiddleware(broken, timeout=300)({"type": "http"}, _receive, send), 5)
        return sent, [h for h in loop._scheduled if not h.cancelled()], loop.time() - started

    sent, pending, seconds = asyncio.run(serve_one())
    assert seconds < 1 and sent == [] and pending == []


def test_the_server_answers_500_at_once_when_a_middleware_raises() -> None:
    """Through starlette, as in the service: its error middleware answers 500."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.testclient import TestClient

    install(work_threads=4)

    class Broken:
        def __init__(self, app) -> None:
            self.app = app

        async def __call__(self, scope: dict, receive, send) -> None:
            if scope["type"] == "http":
                raise ZeroDivisionError("a middleware fault")
            await self.app(scope, receive, send)

    app = Starlette(middleware=[Middleware(TimeoutMiddleware, timeout=3), Middleware(Broken)])
    with TestClient(app, raise_server_exceptions=False) as client:
        started = time.monotonic()
        answer = client.get("/sample")
        seconds = time.monotonic() - started
    assert answer.status_code == 500 and seconds < 1  # before: 3 s (the timeout), then 500


def test_a_streamed_response_is_not_cut_off_after_its_start() -> None:
    install(work_threads=4)

    async def slow_body(scope: dict, receive, send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.sleep(0.1)  # past the timeout, but the response has started
        await send({"type": "http.response.body", "body": b"late"})

    sent = _sent_by(slow_body, timeout=0.05)
    assert [m.get("status", m.get("body")) for m in sent] == [200, b"late"]


def test_requests_are_labelled_by_the_route_they_match_never_by_their_path() -> None:
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Mount, Route

    from service.asgi.bentoml_fixes import UNMATCHED, route_label

    def endpoint(request):
        return PlainTextResponse("")

    app = Starlette(routes=[Route("/sample", endpoint, methods=["POST"]),
                            Route("/", endpoint), Mount("/static_content", routes=[])])

    def label(method: str, path: str) -> str:
        return route_label({"type": "http", "method": method, "path": path, "root_path": "",
                            "app": app})

    assert label("POST", "/sample") == "/sample"
    assert label("GET", "/sample") == "/sample"  # a 405 of a known route keeps its route
    assert label("GET", "/") == "/"
    assert label("GET", "/static_content/x-1.css") == "/static_content/{path}"
    assert {label("GET", f"/no-such-path-{i}") for i in range(100)} == {UNMATCHED}
    assert label("POST", "/sample/") == UNMATCHED
    assert route_label({"type": "http", "method": "GET", "path": "/sample"}) == UNMATCHED


def test_the_tracing_middleware_is_there_only_when_tracing_is_on(client) -> None:
    """With tracing off (the default) every path was excluded from it, so BentoML's
    OpenTelemetry middleware only parsed and matched each request's URL: it is left out.
    COUNTERFEIT_TRACING=on keeps BentoML's own middleware list."""
    from _bentoml_impl.server.app import ServiceAppFactory
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    from service.asgi import bentoml_fixes

    classes = {m.cls for m in client.app.user_middleware}
    assert OpenTelemetryMiddleware not in classes
    assert bentoml_fixes.RouteLabelledTrafficMetrics in classes  # the rest is there
    assert client.post("/sample", json={"n": 1, "seed": 1}).status_code == 200
    threads = bentoml_fixes._work_thread_count
    try:
        bentoml_fixes.install(threads, tracing=True)
        assert ServiceAppFactory.middlewares.fget is bentoml_fixes._bentoml_middlewares.fget
    finally:
        bentoml_fixes.install(threads, tracing=False)
