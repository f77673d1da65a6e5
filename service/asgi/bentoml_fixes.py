"""Five fixes for BentoML 1.4, installed in every process that imports the service.

1. Its request timeout leaked memory under load, and hung a request whose app raised.
`bentoml._internal.server.http.traffic.TimeoutMiddleware` schedules
`loop.call_later(timeout, ...)` for every request and never cancels it. asyncio's timer
handle keeps the request's contextvars (BentoML's request context among them) alive until
the timeout expires, so a worker's memory grew with requests/s x timeout: +100 MiB over
the first 300 s of `make soak` at 80 requests/s, then flat (docs/reliability.md). It also
waits only for the response to start, so an app that raised before sending anything held
the connection for the whole timeout, then ended it with a bare 500 and no log line. This
is the same middleware waiting for whichever comes first, the response's start or the
app's end (its exception goes on to the server, which answers 500 and logs it once), with
its one timer cancelled as soon as either happens; it runs the app in the request's own
task, where BentoML's started a second task per request.

2. It logs every request it refuses (a pydantic validation error, a 4xx BentoMLException)
at ERROR with a traceback: ~2 KB of log per bad request, and noise an operator learns to
ignore. Those become one INFO line; real server errors keep their traceback.

3. Its request metrics (`bentoml_service_request_*`, `RunnerTrafficMetricsMiddleware`) are
labelled with the raw URL path, so every distinct unknown path made a new time series:
10,000 of them made /metrics 38 MiB and the worker 340 MiB larger. Each request is
labelled with the route it matches instead (the service's API routes and BentoML's own:
"/", "/docs.json", "/metrics", "/static_content/{path}", ...), and every path that
matches none with UNMATCHED.

4. It runs a route in a request thread whenever one is free, even when the request's client
has gone while it waited for one (more requests in flight than threads): a flood left
minutes of images computed for nobody; and in anyio's thread pool, which also serves
/readyz and /metrics. Routes run on the service's own work threads instead, at a
lower CPU priority than the event loop (`lower_thread_priority`), so that the loop and the
health checks are answered at once while routes saturate the cores; and a route whose
client has gone (LoadShedder watches it: service/asgi/load_shedding.py) is not started:
the request ends with ClientGone, logged as one INFO line, and is recorded with status 499.

5. It wraps every request in its OpenTelemetry middleware. With tracing off
(COUNTERFEIT_TRACING, the default) the service excludes every path from tracing, and that
middleware then only parsed and matched each request's URL: it is left out.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from timeit import default_timer
from typing import Any

from _bentoml_impl.server.app import ServiceAppFactory
from bentoml._internal.context import server_context
from bentoml._internal.server import http_app
from bentoml._internal.server.http import instruments, traffic
from bentoml.exceptions import BentoMLException
from pydantic import ValidationError
from starlette.responses import JSONResponse
from starlette.routing import Match

from service.asgi.load_shedding import ClientGone, lower_thread_priority, unless_gone

# the one `endpoint` label of every request whose path is none of the service's routes
UNMATCHED = "/{unmatched}"
_REQUEST_SCOPE = "counterfeit.request_scope"


async def _call(self: Any, scope: dict, receive: Any, send: Any) -> None:
    if scope["type"] not in ("http", "websocket"):
        return await self.app(scope, receive, send)
    task = asyncio.current_task()
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    # one timer, cancelled as soon as the response starts or the app ends (no task of its
    # own per request: that cost ~5% of an n = 1 request)
    timer = asyncio.get_running_loop().call_later(self.timeout, expire)

    async def _send(message: dict) -> None:
        timer.cancel()
        await send(message)

    try:
        await self.app(scope, receive, _send)
    except asyncio.CancelledError:
        if not expired:
            raise
        task.uncancel()
        resp = JSONResponse({"error": f"Not able to process the request in {self.timeout} "
                                      "seconds"}, status_code=504)
        await resp(scope, receive, send)
    finally:
        timer.cancel()


def route_label(scope: dict) -> str:
    """The route `scope`'s path matches in its Starlette app (its template, e.g.
    "/static_content/{path}"), whatever the method; UNMATCHED when it matches none."""
    app = scope.get("app")
    routes = getattr(app, "routes", ())
    if routes and scope.get("path") in _plain_paths(app):
        return scope["path"]  # a route without parameters: itself (no regex per request)
    for route in routes:
        if route.matches(scope)[0] is not Match.NONE:
            return route.path_format
    return UNMATCHED


@functools.lru_cache(maxsize=8)
def _plain_paths(app: Any) -> frozenset[str]:
    """The paths of `app`'s routes that take no parameters (its routes are all added
    before it serves)."""
    return frozenset(r.path_format for r in app.routes
                     if "{" not in getattr(r, "path_format", "{") and getattr(r, "path", None))


class _RequestScope:
    """Hands the app below the metrics middleware the request's own scope, not the copy
    relabelled for the metrics."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        await self.app(scope.get(_REQUEST_SCOPE, scope), receive, send)


class RouteLabelledTrafficMetrics(instruments.RunnerTrafficMetricsMiddleware):
    """BentoML's request metrics, with the matched route as `endpoint`, not the path.

    For HTTP it records what BentoML's records (the last request's time, requests in
    progress, then the total and the duration by status once the answer's last byte is
    sent), with each label set's children looked up once: BentoML's `labels()` calls, four
    per request, were 6% of a worker's time at n = 1. WebSockets and /metrics keep
    BentoML's own code."""

    def __init__(self, app: Any, **options: Any) -> None:
        super().__init__(_RequestScope(app), **options)
        self._per_route: dict[str, tuple[Any, Any]] = {}  # bounded: one per route
        self._per_answer: dict[tuple[str, int], tuple[Any, Any]] = {}  # routes x statuses

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            return await super().__call__(scope, receive, send)
        label = route_label(scope)
        if label != scope["path"]:
            scope = {**scope, "path": label, _REQUEST_SCOPE: scope}
        if scope["type"] != "http" or label == "/metrics":
            return await super().__call__(scope, receive, send)
        if not self._is_setup:
            self._setup()
        last_request, in_progress = self._route_children(label)
        if last_request is not None:
            last_request.set_to_current_time()
        start = default_timer()
        status = 0

        async def recording_send(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and not message.get("more_body"):
                total, duration = self._answer_children(label, status)
                total.inc()
                duration.observe(max(default_timer() - start, 0))
            await send(message)

        with in_progress.track_inprogress():
            await self.app(scope, receive, recording_send)

    def _labels(self, endpoint: str | None = None, **more: Any) -> dict[str, Any]:
        names = {"service_name": server_context.bento_name,
                 "service_version": server_context.bento_version,
                 "runner_name": server_context.service_name, **more}
        return names if endpoint is None else {"endpoint": endpoint, **names}

    def _route_children(self, label: str) -> tuple[Any, Any]:
        children = self._per_route.get(label)
        if children is None:
            skipped = label.startswith(tuple(self.skip_paths))  # as BentoML: no timestamp
            children = self._per_route[label] = (
                None if skipped else self.metrics_last_request_timestamp.labels(
                    **self._labels()),
                self.metrics_request_in_progress.labels(**self._labels(label)))
        return children

    def _answer_children(self, label: str, status: int) -> tuple[Any, Any]:
        children = self._per_answer.get((label, status))
        if children is None:
            names = self._labels(label, http_response_code=status)
            children = self._per_answer[label, status] = (
                self.metrics_request_total.labels(**names),
                self.metrics_request_duration.labels(**names))
        return children


def is_client_error(error: BaseException | None) -> bool:
    """Whether BentoML answers `error` with a 4xx."""
    return isinstance(error, ValidationError) or (
        isinstance(error, BentoMLException) and error.error_code.value < 500)


_work_threads: ThreadPoolExecutor | None = None
_work_thread_count = 1


async def in_work_thread(func: Any, *args: Any, **kwargs: Any) -> Any:
    """`func(*args, **kwargs)` on one of the service's work threads (a call waits for a free
    one), in the request's context, and not at all if the request's client has gone by the
    time a thread takes it. BentoML's routes and the lean routes (fast_routes.py) share the
    threads, so their count bounds both."""
    global _work_threads
    if _work_threads is None:  # created in the worker, on its first request
        _work_threads = ThreadPoolExecutor(_work_thread_count,
                                           thread_name_prefix="counterfeit-work",
                                           initializer=lower_thread_priority)
    call = functools.partial(contextvars.copy_context().run, unless_gone, func, *args, **kwargs)
    return await asyncio.get_running_loop().run_in_executor(_work_threads, call)


async def _to_work_thread(self: Any, func: Any, *args: Any, **kwargs: Any) -> Any:
    """`ServiceAppFactory._to_thread`: a route's call, on the service's work threads."""
    return await in_work_thread(func, *args, **kwargs)


class ClientErrorsInOneLine(logging.Filter):
    """BentoML's "Exception on PATH [METHOD]" records for 4xx answers, and for requests
    dropped because their client had gone: one INFO line."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ClientGone):
            record.msg = f"{record.msg}: {error}"
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        elif is_client_error(error):
            record.msg = f"{record.msg}: answered 4xx: %s"
            record.args = (*(record.args or ()), str(error).splitlines()[0])
            record.exc_info, record.exc_text = None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


_bentoml_middlewares = ServiceAppFactory.middlewares


def _middlewares_without_tracing(factory: Any) -> list:
    """BentoML's middleware less its OpenTelemetry one: with every path excluded from
    tracing it only parsed each request's URL and matched it (3% of a worker at n = 1)."""
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware

    return [m for m in _bentoml_middlewares.fget(factory)
            if m.cls is not OpenTelemetryMiddleware]


def install(work_threads: int, tracing: bool = True) -> None:
    """Replace the timeout middleware's __call__, the request metrics' middleware and the
    route's thread call (on `work_threads` threads), leave out the tracing middleware
    unless `tracing`, and filter the request-error log (BentoML builds its middleware per
    worker, after importing the service module, and imports the metrics middleware's class
    from its module then, so patching at import time reaches every worker)."""
    global _work_thread_count
    _work_thread_count = work_threads
    traffic.TimeoutMiddleware.__call__ = _call
    instruments.RunnerTrafficMetricsMiddleware = RouteLabelledTrafficMetrics
    ServiceAppFactory._to_thread = _to_work_thread
    ServiceAppFactory.middlewares = property(
        _bentoml_middlewares.fget if tracing else _middlewares_without_tracing)
    if not any(isinstance(f, ClientErrorsInOneLine) for f in http_app.logger.filters):
        http_app.logger.addFilter(ClientErrorsInOneLine())
