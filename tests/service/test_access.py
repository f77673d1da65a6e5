"""Who may use the service (service/asgi/access.py: the Host allow-list and the API key) and
the one content type each route takes (service/asgi/http_guard.py), each middleware as a
plain ASGI app around a dummy inner app; then the content types on the real service
in-process (the shared `client` runs with no key and no host list)."""

from __future__ import annotations

import asyncio
import hmac
from typing import Any

import pytest
from starlette.testclient import TestClient

from service.asgi.access import AccessGuard, host_name
from service.asgi.http_guard import HttpGuard
from service.settings import Settings, SettingsError

KEY = "test-key-0123456789abcdef"
BEARER = {"authorization": f"Bearer {KEY}"}


async def inner(scope: dict, receive: Any, send: Any) -> None:
    """Reads the whole body and answers 200 'inner:<body>'."""
    body, more = b"", True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"inner:" + body})


def guarded(**settings: Any) -> TestClient:
    return TestClient(AccessGuard(inner, **settings))


def run(headers: list[tuple[bytes, bytes]], **settings: Any) -> tuple[list[dict], bool]:
    """One POST /sample through an AccessGuard with `settings`, whose receive must never be
    awaited: (what the guard sent, whether the inner app ran)."""
    sent: list[dict] = []
    reached = []

    async def unread() -> dict:
        raise AssertionError("the body was read")

    async def record(scope: dict, receive: Any, send: Any) -> None:
        reached.append(scope)

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/sample", "headers": headers}
    asyncio.run(AccessGuard(record, **settings)(scope, unread, send))
    return sent, bool(reached)


# settings


def test_the_key_and_the_hosts_are_read_from_the_environment() -> None:
    s = Settings.from_env({"COUNTERFEIT_API_KEY": KEY,
                           "COUNTERFEIT_ALLOWED_HOSTS": " Example.COM, 127.0.0.1,,[::1] ,api.x."})
    assert s.api_key == KEY
    assert s.allowed_hosts == ("example.com", "127.0.0.1", "[::1]", "api.x")
    assert KEY not in repr(s)
    off = Settings.from_env({"COUNTERFEIT_API_KEY": "", "COUNTERFEIT_ALLOWED_HOSTS": ""})
    assert (off.api_key, off.allowed_hosts) == (None, ())


@pytest.mark.parametrize(("value", "words"), [
    ("k" * 15, "at least 16 characters"),
    ("a key with spaces inside", "printable ASCII without spaces"),
    ("ключ-ключ-ключ-ключ", "printable ASCII"),
])
def test_a_bad_key_stops_start_up_without_showing_the_key(value: str, words: str) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({"COUNTERFEIT_API_KEY": value})
    assert str(err.value).startswith("COUNTERFEIT_API_KEY: ") and words in str(err.value)
    assert value not in str(err.value)


@pytest.mark.parametrize("value", ["example.com:8080", "http://example.com", "::1", "a b"])
def test_a_bad_host_name_stops_start_up(value: str) -> None:
    with pytest.raises(SettingsError, match="COUNTERFEIT_ALLOWED_HOSTS.*is not a host name"):
        Settings.from_env({"COUNTERFEIT_ALLOWED_HOSTS": f"ok.example,{value}"})


@pytest.mark.parametrize(("header", "host"), [
    ("example.com", "example.com"), ("Example.COM:8443", "example.com"),
    ("example.com.:80", "example.com"), ("[::1]:3000", "[::1]"), ("[::1]", "[::1]"),
    ("127.0.0.1:3000", "127.0.0.1"), ("", ""),
])
def test_host_name_drops_the_port(header: str, host: str) -> None:
    assert host_name(header) == host


# the access guard


def test_without_settings_every_request_passes_through_untouched() -> None:
    seen: list[tuple] = []

    async def record(scope: dict, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))

    async def receive() -> dict:
        return {"type": "http.request"}

    async def send(message: dict) -> None:
        pass

    scope = {"type": "http", "method": "POST", "path": "/sample",
             "headers": [(b"host", b"anything")]}
    asyncio.run(AccessGuard(record)(scope, receive, send))
    assert seen == [(scope, receive, send)]
    assert seen[0][0] is scope
    r = guarded().post("/jobs/submit", content=b"x", headers={"host": "evil.example"})
    assert (r.status_code, r.text) == (200, "inner:x")


@pytest.mark.parametrize("headers", [
    BEARER, {"authorization": f"bearer  {KEY}"}, {"x-api-key": KEY},
    {"x-api-key": "wrong-key-0123456789", **BEARER},
])
def test_the_key_is_taken_from_either_header(headers: dict) -> None:
    r = guarded(api_key=KEY).post("/sample", content=b"{}", headers=headers)
    assert (r.status_code, r.text) == (200, "inner:{}")


@pytest.mark.parametrize(("headers", "words"), [
    ({}, "Authorization: Bearer <key>"),
    ({"authorization": f"Basic {KEY}"}, "Authorization: Bearer <key>"),
    ({"authorization": f"Bearer {KEY[:-1]}"}, "not valid"),
    ({"authorization": f"Bearer {KEY}x"}, "not valid"),
    ({"x-api-key": KEY.upper()}, "not valid"),
    ({"authorization": "Bearer"}, "not valid"),
])
def test_a_missing_or_wrong_key_is_a_401_asking_for_a_bearer_token(headers: dict,
                                                                   words: str) -> None:
    for path in ("/sample", "/score", "/metrics", "/", "/docs.json", "/models", "/nowhere"):
        r = guarded(api_key=KEY).post(path, content=b"{}", headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert r.json()["field"] == "authorization" and words in r.json()["error"]
        assert r.json()["error"].startswith("authorization: ")
        assert KEY not in r.text


def test_a_refusal_never_reads_the_body_nor_reaches_the_routes() -> None:
    settings = {"api_key": KEY, "allowed_hosts": ["example.com"]}
    key = (b"x-api-key", KEY.encode())
    sent, reached = run([(b"host", b"example.com")], **settings)
    assert sent[0]["status"] == 401 and not reached
    sent, reached = run([(b"host", b"evil.example"), key], **settings)
    assert sent[0]["status"] == 400 and not reached
    sent, reached = run([(b"host", b"example.com"), (b"host", b"evil.example"), key],
                        **settings)
    assert sent[0]["status"] == 400 and not reached
    sent, reached = run([(b"host", b"example.com"), key], **settings)
    assert sent == [] and reached


def test_keys_are_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = hmac.compare_digest

    def compare(a: bytes, b: bytes) -> bool:
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", compare)
    client = guarded(api_key=KEY)
    assert client.post("/sample", headers={"x-api-key": "not-the-key"}).status_code == 401
    assert client.post("/sample", headers=BEARER).status_code == 200
    assert calls == [(b"not-the-key", KEY.encode()), (KEY.encode(), KEY.encode())]


@pytest.mark.parametrize("path", ["/livez", "/readyz", "/healthz"])
def test_health_checks_need_neither_key_nor_host(path: str) -> None:
    client = guarded(api_key=KEY, allowed_hosts=["example.com"])
    assert client.get(path, headers={"host": "10.0.0.7:3000"}).status_code == 200
    assert client.get(path + "/x").status_code == 400  # the checks themselves only


@pytest.mark.parametrize(("host", "status"), [
    ("example.com", 200), ("example.com:8443", 200), ("EXAMPLE.com", 200),
    ("127.0.0.1:3000", 200), ("[::1]:3000", 200), ("evil.example", 400),
    ("example.com.evil.example", 400), ("127.0.0.2", 400), ("", 400),
])
def test_only_listed_hosts_are_answered_whatever_the_port(host: str, status: int) -> None:
    client = guarded(allowed_hosts=["example.com", "127.0.0.1", "[::1]"])
    r = client.post("/sample", headers={"host": host})
    assert r.status_code == status
    if status == 400:
        assert r.json()["field"] == "host" and r.json()["error"].startswith("host: ")


def test_the_host_is_checked_before_the_key() -> None:
    r = guarded(api_key=KEY, allowed_hosts=["example.com"]).post(
        "/sample", headers={"host": "evil.example"})
    assert r.status_code == 400 and r.json()["field"] == "host"


# the content type of each route (HttpGuard)


def content_guarded() -> TestClient:
    return TestClient(HttpGuard(inner, max_body_bytes=1 << 20, file_routes={"/score": ("file",)},
                                get_aliases={"/models"}, json_routes={"/sample", "/models"}))


@pytest.mark.parametrize(("path", "content_type"), [
    ("/sample", "text/plain"), ("/sample", "application/x-www-form-urlencoded"),
    ("/sample", None), ("/sample", "application/jsonx"), ("/models", "text/plain;charset=utf-8"),
    ("/score", "application/json"), ("/score", "text/plain"),
])
def test_a_route_refuses_a_content_type_it_does_not_take(path: str,
                                                         content_type: str | None) -> None:
    headers = {} if content_type is None else {"content-type": content_type}
    r = content_guarded().post(path, content=b'{"n": 1}', headers=headers)
    assert r.status_code == 415, r.text
    assert r.json()["field"] == "content-type"
    wanted = "multipart/form-data" if path == "/score" else "application/json"
    assert r.json()["error"].startswith(f"content-type: send {wanted}, not ")


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "Application/JSON;charset=UTF-8"])
def test_json_with_parameters_is_json(content_type: str) -> None:
    r = content_guarded().post("/sample", content=b"{}", headers={"content-type": content_type})
    assert (r.status_code, r.text) == (200, "inner:{}")


def test_the_file_route_takes_multipart_and_other_requests_pass() -> None:
    client = content_guarded()
    r = client.post("/score", files={"file": ("x.npy", b"data")})
    assert r.status_code == 200 and b"data" in r.content
    assert client.get("/models").text == "inner:{}"  # the GET alias
    assert client.post("/elsewhere", content=b"x",
                       headers={"content-type": "text/plain"}).text == "inner:x"
    assert client.get("/sample").status_code == 200  # BentoML answers 405 itself


# the real service, in-process (no key, no host list)


def test_every_json_route_of_the_service_refuses_simple_cross_site_bodies(client) -> None:
    spec = client.get("/docs.json").json()
    routes = [p for p, ops in spec["paths"].items() if "post" in ops and p != "/score"]
    assert {"/sample", "/interpolate", "/jobs/submit", "/jobs/status", "/jobs/result",
            "/jobs/cancel", "/models"} <= set(routes)
    for route in routes:
        for headers in ({"content-type": "text/plain"},
                        {"content-type": "application/x-www-form-urlencoded"}, {}):
            r = client.post(route, content=b"{}" if headers else b"", headers=headers)
            assert r.status_code == 415 and r.json()["field"] == "content-type", (route, r.text)
    r = client.post("/score", json={"model": "tiny"})
    assert r.status_code == 415 and "multipart/form-data" in r.json()["error"]
    r = client.post("/sample", content=b'{"n": 1, "format": "npy"}',
                    headers={"content-type": "application/json; charset=utf-8"})
    assert r.status_code == 200
    assert client.get("/models").status_code == 200
