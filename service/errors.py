"""The one error type of the HTTP surface, answered as 4xx {"error", "field"}, and the
decorator that turns it into that answer for every route."""

from __future__ import annotations

import functools
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
    """A RequestError raised by `route` becomes its 4xx JSON answer. The route must take
    BentoML's `ctx`: BentoML applies ctx's status code to whatever the route returns."""

    @functools.wraps(route)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return route(*args, **kwargs)
        except RequestError as err:
            kwargs["ctx"].response.status_code = err.status
            return JSONResponse(err.body(), status_code=err.status, headers=err.headers)

    return wrapper  # type: ignore[return-value]
