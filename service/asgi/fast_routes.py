"""A lean request path for the hot JSON routes (/sample, /interpolate), inside the same
BentoML service: one service, one OpenAPI, one set of metrics, one error contract.

BentoML answers a request through Starlette's exception middleware, its request-context
middleware, the router, its serde and its endpoint wrapper before the route's own code
runs: at n = 1 that machinery held the GIL longer than the route itself (docs/
benchmarks.md). `FastRoutes`, the innermost of the service's middleware, answers POST
to a registered route itself:

- the body is validated by the route's own BentoML input model (`APIMethod.input_spec`,
  built from the route's signature), so every limit and message is the one the OpenAPI
  spec shows; a validation error gets BentoML's own answer, which HttpGuard turns into
  {"error", "field"} as for any route;
- the route's own coroutine runs on the event loop, as BentoML would run it: it hands the
  model to the batcher (service/batcher.py) and awaits its rows, with no work thread in
  between;
- everything outside it still applies: BentoML's request metrics and timeout, access
  checks, load shedding, body limits, content types.

Routes are registered by the service instance once it exists (`register`); until then, and
for every other request, the app below answers. COUNTERFEIT_FAST_ROUTES=off leaves every
request to BentoML (to compare the two).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any

from pydantic import ValidationError

from service.asgi.http_guard import json_response
from service.asgi.load_shedding import CLIENT_CLOSED_REQUEST, ClientGone, read_body

log = logging.getLogger("counterfeit")

# path -> (the service instance, its BentoML APIMethod)
_ROUTES: dict[str, tuple[Any, Any]] = {}


def register(instance: Any, *methods: Any) -> None:
    """Answer each of `methods` (BentoML APIMethods of `instance`'s class, taking no `ctx`)
    on the lean path."""
    for method in methods:
        if method.ctx_param is not None:
            raise TypeError(f"{method.route}: a lean route takes no ctx")
        if not inspect.iscoroutinefunction(method.func):
            raise TypeError(f"{method.route}: a lean route is a coroutine function (it runs "
                            "on the event loop and hands the model to the batcher)")
        _ROUTES[method.route] = (instance, method)


class FastRoutes:
    def __init__(self, app: Any, server: str, enabled: bool = True) -> None:
        self.app = app
        self.server = server  # BentoML's Server header, which its own answers carry
        self.enabled = enabled

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        route = _ROUTES.get(scope.get("path", "")) if self.enabled else None
        if route is None or scope["type"] != "http" or scope["method"] != "POST":
            return await self.app(scope, receive, send)
        instance, method = route
        body = await read_body(receive)
        if body is None:  # gone before its body was in: nothing to answer
            return
        try:
            # as BentoML's JSON serde: an empty body is {}
            request = method.input_spec.model_validate_json(body or b"{}")
        except ValidationError as exc:  # BentoML's own answer to it
            start, body = json_response(400, {
                "error": f"{exc.error_count()} validation error for {exc.title}",
                "detail": exc.errors(include_context=False, include_input=False)})
            await send(start)
            return await send(body)
        kwargs = {name: getattr(request, name) for name in type(request).model_fields}
        try:
            response = await method.func(instance, **kwargs)
        except ClientGone as gone:  # nobody to answer: one line, as BentoML's path logs it
            log.info("%s %s: %s", scope["method"], scope["path"], gone)
            start, body = json_response(CLIENT_CLOSED_REQUEST, {"error": str(gone),
                                                                "field": "client"})
            await send(start)
            return await send(body)
        response.headers["Server"] = self.server
        await response(scope, receive, send)
