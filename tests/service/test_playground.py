"""The playground's serving, without a browser (tests/e2e/test_playground.py drives the page
itself): service/asgi/playground.py answers the page's files from memory with a strict
Content-Security-Policy, and service/asgi/access.py lets a browser open them without the
API key, but only by GET and only under an allowed Host name."""

from __future__ import annotations

from typing import Any

from starlette.testclient import TestClient

from service.asgi import playground
from service.asgi.access import AccessGuard

KEY = "test-key-0123456789abcdef"


async def inner(scope: dict, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"inner"})


def test_the_page_and_its_files_are_served_with_a_strict_policy() -> None:
    client = TestClient(playground.Playground(inner))
    page = client.get("/playground/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert page.content == (playground.FOLDER / "index.html").read_bytes()
    assert "script-src 'self';" in page.headers["content-security-policy"]
    for name, media_type in [("playground.js", "text/javascript"), ("playground.css", "text/css"),
                             ("favicon.svg", "image/svg+xml")]:
        r = client.get(f"/playground/{name}")
        assert r.status_code == 200 and r.headers["content-type"].startswith(media_type)
        assert r.content == (playground.FOLDER / name).read_bytes()
    # the page's links are relative: without the slash, the browser is sent to the page
    moved = client.get("/playground", follow_redirects=False)
    assert (moved.status_code, moved.headers["location"]) == (308, "playground/")


def test_anything_else_goes_on_to_the_service() -> None:
    client = TestClient(playground.Playground(inner))
    for method, path in [("GET", "/playground/missing.js"), ("GET", "/playground/index.html"),
                         ("POST", "/playground/"), ("GET", "/"), ("GET", "/sample")]:
        assert client.request(method, path).text == "inner"


def test_the_page_opens_without_the_key_but_only_by_get_and_on_an_allowed_host() -> None:
    client = TestClient(AccessGuard(inner, api_key=KEY, allowed_hosts=["testserver"],
                                    keyless_paths=playground.PATHS))
    for path in playground.PATHS:
        assert client.get(path).text == "inner"
    assert client.post("/playground/").status_code == 401
    assert client.get("/models").status_code == 401
    refused = client.get("/playground/", headers={"host": "evil.example"})
    assert refused.status_code == 400 and refused.json()["field"] == "host"
