"""The one error type of the HTTP surface: answered as 4xx {"error", "field"}."""

from __future__ import annotations


class RequestError(ValueError):
    def __init__(self, field: str, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.field, self.message, self.status = field, message, status

    def body(self) -> dict[str, str]:
        return {"error": f"{self.field}: {self.message}", "field": self.field}
