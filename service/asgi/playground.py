"""The playground: GET /playground/ is a page for people (docs/playground.md), plain HTML,
CSS and JavaScript kept in service/playground/ and served from memory: no build step, no
third-party script, nothing fetched from anywhere but this service. Its script calls the
public HTTP API only, as any client would.

The files are read once, at import (as every setting is), so a missing one stops start-up;
edit them and restart the server to see the change. GET of PATHS is answered without the
API key (service/asgi/access.py, `keyless_paths`): the page holds no data, and a browser
cannot send a key when it opens a page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent.parent / "playground"
PAGE = "/playground/"
MEDIA_TYPES = {".html": b"text/html; charset=utf-8", ".css": b"text/css; charset=utf-8",
               ".js": b"text/javascript; charset=utf-8", ".svg": b"image/svg+xml"}
# The browser may run only the page's own files and talk only to this service: a script
# injected through an API answer (a model name, an error text) could neither run nor send
# anything elsewhere. Images are the API's answers, shown as blob: URLs.
HEADERS = [
    (b"content-security-policy",
     b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
     b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    # revalidated on every load: a restarted server with new files is seen at once
    (b"cache-control", b"no-cache"),
]


def _read_files() -> dict[str, tuple[bytes, bytes]]:
    """URL path -> (content type, body) of every page file; index.html is the page."""
    files = {}
    for path in sorted(FOLDER.iterdir()):
        if path.suffix in MEDIA_TYPES:
            url = PAGE if path.name == "index.html" else PAGE + path.name
            files[url] = (MEDIA_TYPES[path.suffix], path.read_bytes())
    return files


FILES = _read_files()
# /playground (no slash) redirects to the page, whose relative links (its files, the API
# routes at ../) then resolve under the same prefix, behind a proxy too
PATHS = frozenset({*FILES, PAGE.rstrip("/")})


class Playground:
    """ASGI middleware: GET of a page file answers it; anything else goes on."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        path = scope.get("path") if scope["type"] == "http" else None
        if path not in PATHS or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        if path not in FILES:
            await send({"type": "http.response.start", "status": 308, "headers": [
                (b"location", b"playground/"), (b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        media_type, body = FILES[path]
        await send({"type": "http.response.start", "status": 200, "headers": [
            (b"content-type", media_type), (b"content-length", str(len(body)).encode()),
            *HEADERS]})
        await send({"type": "http.response.body", "body": body})
