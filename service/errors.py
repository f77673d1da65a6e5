"""The one error type of the HTTP surface, answered as 4xx {"error", "field"}, and the
decorator that turns it into that answer for every route."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar

from starlette.responses import JSONResponse

F = TypeVar("F", bound=Callable[..., Any])


class RequestError(ValueError):
    def __init__(self, field: str, message: str, status: int = 400,
                 retry_after: int | None = None) -> None:
        super().__init__(message)
        self.field, self.message, self.status = field, message, status
        # seconds, for a refusal that passes (429, 503, 507): sent as Retry-After
        self.headers = {"Retry-After": str(retry_after)} if retry_after is not None else {}

    def body(self) -> dict[str, str]:
        return {"error": f"{self.field}: {self.message}", "field": self.field}


def answers_request_errors(route: F) -> F:
    """A RequestError raised by `route` becomes its 4xx JSON answer. Where the route takes
    BentoML's `ctx`, its status code is set too: BentoML applies it to whatever the route
    returns."""

    def answer(err: RequestError, kwargs: dict) -> JSONResponse:
        if "ctx" in kwargs:
            kwargs["ctx"].response.status_code = err.status
        return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    if inspect.iscoroutinefunction(route):
        @functools.wraps(route)
        async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return await route(*args, **kwargs)
            except RequestError as err:
                return answer(err, kwargs)
        return async_wrapper  # type: ignore[return-value]

    @functools.wraps(route)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return route(*args, **kwargs)
        except RequestError as err:
            return answer(err, kwargs)

    return wrapper  # type: ignore[return-value]
