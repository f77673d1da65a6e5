"""Make /docs.json say what the service does: BentoML's generated spec declares one media
type per API (npy answers are application/octet-stream too), knows nothing of our error
body, and its task-status schema lists values its own server never returns."""

from __future__ import annotations

import json
from typing import Any

BINARY = {"schema": {"type": "string", "format": "binary"}}
ERROR_SCHEMA = {
    "type": "object", "title": "Error", "required": ["error", "field"],
    "properties": {"error": {"type": "string", "description": "what is wrong, and the limit"},
                   "field": {"type": "string", "description": "the field at fault"}},
}
ERROR_STATUSES = {"400": "Bad input", "404": "Unknown model or job", "409": "Job not finished",
                  "413": "Body over COUNTERFEIT_MAX_BODY_BYTES", "507": "Result not writable"}
IMAGE_ROUTES = ("/sample", "/interpolate")
OWN_ROUTES = ("/sample", "/interpolate", "/score", "/models", "/job_status", "/job_result",
              "/generate_job", "/generate_job/submit")


def patch_spec(spec: dict[str, Any]) -> dict[str, Any]:
    spec.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    error = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for route in OWN_ROUTES:
        operation = spec.get("paths", {}).get(route, {}).get("post")
        if operation is None:
            continue
        responses = operation.setdefault("responses", {})
        for status, description in ERROR_STATUSES.items():
            responses[status] = {"description": description, **error}
        if route in IMAGE_ROUTES:
            responses["200"] = {
                "description": "format png: one PNG grid; format npy: a float32 .npy array "
                               "(n, 28, 28) in [0, 1]",
                "content": {"image/png": BINARY, "application/octet-stream": BINARY}}
    status_schema = spec["components"]["schemas"].get("TaskStatusResponse")
    if status_schema is not None:  # the values BentoML 1.4's server really sends
        status_schema["properties"]["status"]["enum"] = ["in_progress", "completed", "failed",
                                                         "canceled"]
        status_schema["required"] = ["task_id", "status"]
    return spec


class OpenApiPatch:
    """ASGI middleware rewriting the body of GET /docs.json with patch_spec."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") != "/docs.json":
            await self.app(scope, receive, send)
            return
        held: dict[str, Any] = {"start": None, "body": b""}

        async def capture(message: dict) -> None:
            if message["type"] == "http.response.start":
                held["start"] = message
                return
            held["body"] += message.get("body", b"")
            if message.get("more_body"):
                return
            body = held["body"]
            if held["start"]["status"] == 200:
                body = json.dumps(patch_spec(json.loads(body))).encode()
            headers = [(k, v) for k, v in held["start"].get("headers", [])
                       if k != b"content-length"]
            await send({**held["start"], "headers": headers + [
                (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})

        await self.app(scope, receive, capture)
