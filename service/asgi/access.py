"""Who may use the service: an optional Host allow-list (COUNTERFEIT_ALLOWED_HOSTS, a
DNS-rebinding defence) and an optional API key (COUNTERFEIT_API_KEY), both checked from the
headers alone, before anything reads the body. The health checks stay open to both, for
load balancers that probe by IP address and without credentials. GET of `keyless_paths` (the
playground's files) is answered without the key but still only to allowed hosts: a browser
cannot send a key when it opens a page, so the page loads, holds no data, and sends the key
the user pastes with every API request it makes."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Any

from service.asgi.http_guard import json_response
from service.errors import RequestError

HEALTH_CHECKS = frozenset({"/livez", "/readyz", "/healthz"})
ASK_FOR_KEY = [(b"www-authenticate", b"Bearer")]


def host_name(header: str) -> str:
    """The host of a Host header: lower-case, without its port or a trailing dot
    ('Example.COM:8080' -> 'example.com', '[::1]:3000' -> '[::1]')."""
    host = header.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[:end + 1] if end > 0 else host
    return host.partition(":")[0].rstrip(".")


class AccessGuard:
    def __init__(self, app: Any, api_key: str | None = None,
                 allowed_hosts: Iterable[str] = (), keyless_paths: Iterable[str] = ()) -> None:
        self.app = app
        self._key = api_key.encode() if api_key else None
        self.allowed_hosts = frozenset(allowed_hosts)
        self.keyless_paths = frozenset(keyless_paths)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (scope["type"] != "http" or scope.get("path") in HEALTH_CHECKS
                or (self._key is None and not self.allowed_hosts)):
            await self.app(scope, receive, send)
            return
        headers = scope.get("headers") or []
        keyless = scope["method"] == "GET" and scope.get("path") in self.keyless_paths
        refusal = self._host_refusal(headers) or (None if keyless else self._key_refusal(headers))
        if refusal is None:
            await self.app(scope, receive, send)
            return
        start, body = json_response(refusal.status, refusal.body(),
                                    ASK_FOR_KEY if refusal.status == 401 else ())
        await send(start)
        await send(body)

    def _host_refusal(self, headers: list[tuple[bytes, bytes]]) -> RequestError | None:
        if not self.allowed_hosts:
            return None
        hosts = [value.decode("latin1") for name, value in headers if name == b"host"]
        if len(hosts) != 1:
            return RequestError("host", "send exactly one Host header")
        if host_name(hosts[0]) not in self.allowed_hosts:
            return RequestError("host", f"{hosts[0][:100]!r} is not a host name this server "
                                "answers to")
        return None

    def _key_refusal(self, headers: list[tuple[bytes, bytes]]) -> RequestError | None:
        if self._key is None:
            return None
        offered = [value.strip() for name, value in headers if name == b"x-api-key"]
        for name, value in headers:
            scheme, _, token = value.strip().partition(b" ")
            if name == b"authorization" and scheme.lower() == b"bearer":
                offered.append(token.strip())
        if not offered:
            return RequestError("authorization", "this server wants an API key: send "
                                "'Authorization: Bearer <key>' or 'X-API-Key: <key>'", 401)
        # every offered key is compared, each in constant time
        if not any([hmac.compare_digest(key, self._key) for key in offered]):
            return RequestError("authorization", "the API key is not valid", 401)
        return None
