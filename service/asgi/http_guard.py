"""ASGI middleware in front of every route: a request-body size limit (BentoML 1.4 has
none), one error shape, {"error", "field"}, for every 4xx answer whoever produced it
(BentoML's validation errors carry "detail" lists; some of its errors are JSON lists), GET
for the read-only routes that BentoML serves as POST only, and the one content type each
route takes (JSON routes refuse the text/plain and form bodies that any web page can send
across sites)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

Scope = dict[str, Any]
# BentoML writes an upload to a temporary file named after it: a longer name fails there
MAX_FILENAME_BYTES = 128
_FILENAME = re.compile(r'filename\*?=("(?:[^"\\]|\\.)*"|[^;\r\n]*)')


def json_response(status: int, body: dict, headers: Iterable[tuple[bytes, bytes]] = ()
                  ) -> tuple[dict, dict]:
    """The two ASGI messages of a JSON answer."""
    payload = json.dumps(body).encode()
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(payload)).encode()), *headers]}
    return start, {"type": "http.response.body", "body": payload}


def normalise_error(body: Any) -> dict:
    """Any JSON error body -> {"error": str, "field": str}."""
    if isinstance(body, list) and body:
        body = body[0]
    if not isinstance(body, dict):
        return {"error": str(body), "field": "body"}
    if "field" in body and "error" in body:
        return body
    detail = body.get("detail")
    if isinstance(detail, list) and detail and all(isinstance(d, dict) for d in detail):
        # a value that fits no member of a union (`label`: an int or a list of ints) gets
        # an error per member; the deepest says what is wrong ("label[0]: ... <= 9999")
        first = max(detail, key=lambda d: len(d.get("loc", [])))
        loc = [part for part in first.get("loc", []) if part != "body"]
        if not loc:
            return {"error": f"body: {first.get('msg', 'invalid value')}", "field": "body"}
        # the request's own field with the list indexes inside it: z_start[3] (fields are
        # scalars or lists, so the other parts of loc only name union members)
        path = str(loc[0]) + "".join(f"[{p}]" for p in loc[1:] if isinstance(p, int))
        return {"error": f"{path}: {first.get('msg', 'invalid value')}", "field": str(loc[0])}
    return {"error": str(body.get("error", body)), "field": "body"}


class HttpGuard:
    def __init__(self, app: Any, max_body_bytes: int,
                 file_routes: dict[str, tuple[str, ...]] | None = None,
                 get_aliases: Iterable[str] = (), json_routes: Iterable[str] = ()) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        # route -> its file fields, the first required: each must be an uploaded file, never
        # text (BentoML would take text as a URL and fetch it: a request could make the
        # server fetch URLs)
        self.file_routes = file_routes or {}
        # routes whose GET is the same as a POST with an empty JSON object
        self.get_aliases = frozenset(get_aliases)
        # routes whose POST body must be application/json (415 otherwise); file routes
        # take multipart/form-data only
        self.json_routes = frozenset(json_routes)

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] == "GET" and scope.get("path") in self.get_aliases:
            scope = {**scope, "method": "POST", "headers": [
                (k, v) for k, v in scope.get("headers") or []
                if k not in (b"content-type", b"content-length")]
                + [(b"content-type", b"application/json"), (b"content-length", b"2")]}
            receive = _replay(b"{}", receive)
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        if declared is not None:
            try:
                too_big = int(declared) > self.max_body_bytes
            except ValueError:
                await self._reject(send, 400, "content-length is not a number")
                return
            if too_big:  # answered before a byte of the body is read
                await self._reject(send, 413, f"body of {int(declared)} bytes is over the "
                                   f"limit of {self.max_body_bytes} bytes")
                return
        content_type = headers.get(b"content-type", b"").lower()
        if content_type.startswith(b"multipart/") and b"boundary=" not in content_type:
            # BentoML's form parser answers 500 on this
            await self._reject(send, 400, "content-type: multipart without a boundary",
                               field="content-type")
            return
        file_fields = self.file_routes.get(scope.get("path", ""))
        wanted = self._media_type(scope, file_fields is not None)
        if wanted is not None and content_type.split(b";")[0].strip() != wanted.encode():
            got = content_type.split(b";")[0].strip().decode("latin1")[:100] or "none"
            await self._reject(send, 415, f"content-type: send {wanted}, not {got}",
                               field="content-type")
            return
        if declared is None or file_fields is not None:
            # read the body here (it is within the limit), check it, then hand it on whole
            body, more = b"", True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    await self.app(scope, receive, self._normalising(send))
                    return
                body += message.get("body", b"")
                more = message.get("more_body", False)
                if len(body) > self.max_body_bytes:
                    await self._reject(send, 413, f"body over the limit of "
                                       f"{self.max_body_bytes} bytes")
                    return
            for i, field in enumerate(file_fields or ()):
                problem = multipart_file_problem(headers.get(b"content-type", b""), body,
                                                 field, required=i == 0)
                if problem:
                    await self._reject(send, 400, f"{field}: {problem}", field=field)
                    return
            receive = _replay(body, receive)
        await self.app(scope, receive, self._normalising(send))

    def _media_type(self, scope: Scope, file_route: bool) -> str | None:
        """The content type this request's route takes; None: any."""
        if scope["method"] != "POST":
            return None
        if file_route:
            return "multipart/form-data"
        return "application/json" if scope.get("path") in self.json_routes else None

    async def _reject(self, send: Any, status: int, message: str, field: str = "body") -> None:
        start, body = json_response(status, {"error": message, "field": field})
        await send(start)
        await send(body)

    def _normalising(self, send: Any) -> Any:
        state: dict[str, Any] = {"start": None, "chunks": []}

        async def wrapped(message: dict) -> None:
            if message["type"] == "http.response.start":
                content_type = dict(message.get("headers") or []).get(b"content-type", b"")
                if message["status"] >= 400 and content_type.startswith(b"application/json"):
                    state["start"] = message  # hold it: the body gets rewritten
                    return
                await send(message)
                return
            if state["start"] is None or message["type"] != "http.response.body":
                await send(message)
                return
            state["chunks"].append(message.get("body", b""))
            if message.get("more_body"):
                return
            try:
                body = json.loads(b"".join(state["chunks"]) or b"null")
            except ValueError:
                body = {"error": b"".join(state["chunks"]).decode(errors="replace")}
            start, rewritten = json_response(state["start"]["status"], normalise_error(body))
            extra = [(k, v) for k, v in state["start"].get("headers", [])
                     if k not in (b"content-type", b"content-length")]
            start["headers"] += extra
            await send(start)
            await send(rewritten)

        return wrapped


def multipart_file_problem(content_type: bytes, body: bytes, field: str,
                           required: bool = True) -> str | None:
    """Why `body` does not carry `field` as an uploaded file (or, when not `required`,
    carries it as something else), or None when all is well."""
    kind, _, params = content_type.decode("latin1").partition(";")
    if kind.strip().lower() != "multipart/form-data":
        return "upload the file as multipart/form-data"
    boundary = ""
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.lower() == "boundary":
            boundary = value.strip('"')
    if not boundary:
        return "multipart body without a boundary"
    found = False
    for part in body.split(b"--" + boundary.encode("latin1")):
        head = part.split(b"\r\n\r\n", 1)[0].decode("latin1").lower()
        if "content-disposition" in head and f'name="{field}"' in head:
            if "filename=" not in head:
                return "must be an uploaded file, not a text value"
            for name in _FILENAME.finditer(head):
                if len(name.group(1).strip('"')) > MAX_FILENAME_BYTES:
                    return (f"the file's name is over {MAX_FILENAME_BYTES} bytes; upload it "
                            "under a shorter name")
            found = True
    return None if found or not required else f"no '{field}' file in the form"


def _replay(body: bytes, receive: Any) -> Any:
    sent = False

    async def wrapped() -> dict:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return wrapped
