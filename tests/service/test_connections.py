"""service/asgi/connections.py: uvicorn's httptools protocol with a request-head size limit
(431), a head timeout (408), an idle timeout from the first byte on, and a connection cap
that closes the longest-waiting connection; run in a real uvicorn server in this process
over a small ASGI app."""

from __future__ import annotations

import json
import resource
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import uvicorn

from loadtests.server import free_port
from service.asgi.connections import (
    RESERVED_FILES,
    LimitedHttpToolsProtocol,
    Limits,
    connection_cap,
    error_response,
)

GET = b"GET /x HTTP/1.1\r\nhost: 127.0.0.1\r\n\r\n"


async def _ok(scope: dict, receive, send) -> None:
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"ok"})


async def _reads_body(scope: dict, receive, send) -> None:
    while (await receive()).get("more_body"):
        pass
    await _ok(scope, receive, send)


@contextmanager
def _serving(limits: Limits, cap: int | None = None, app=_ok) -> Iterator[int]:
    """uvicorn on a free port with LimitedHttpToolsProtocol and `limits`, in a thread."""
    protocol = type("Protocol", (LimitedHttpToolsProtocol,),
                    {"limits": limits, "cap": cap or limits.max_connections})
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, http=protocol,
                                           lifespan="off", log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


def _connect(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    return s


def _answer(s: socket.socket) -> tuple[str, bytes]:
    """The status line and the rest of what the server sent, until it closed."""
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head.split(b"\r\n")[0].decode(), body


def _closed_by_server(s: socket.socket, timeout: float) -> bool:
    """Whether the server closes `s` within `timeout` s (reads until EOF or a reset)."""
    s.settimeout(timeout)
    try:
        while s.recv(65536):
            pass
        return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def _get(port: int) -> str:
    with _connect(port) as s:
        s.sendall(GET)
        return s.recv(65536).split(b"\r\n")[0].decode()


def test_a_request_head_over_the_limit_is_answered_431() -> None:
    with _serving(Limits(max_header_bytes=16 * 1024)) as port:
        with _connect(port) as s:
            s.sendall(b"GET /x HTTP/1.1\r\nhost: 127.0.0.1\r\nx-big: " + b"a" * (4 << 20))
            s.shutdown(socket.SHUT_WR)  # the 4 MiB are all sent: the answer can be read
            status, body = _answer(s)
        assert status == "HTTP/1.1 431 Request Header Fields Too Large"
        error = json.loads(body)
        assert error["field"] == "headers" and "16384 bytes" in error["error"]
        with _connect(port) as s:  # a long but allowed head is served
            s.sendall(b"GET /x HTTP/1.1\r\nhost: 127.0.0.1\r\nx-ok: " + b"a" * 8000
                      + b"\r\n\r\n")
            assert s.recv(65536).startswith(b"HTTP/1.1 200")
        assert _get(port) == "HTTP/1.1 200 OK"


def test_a_request_head_that_never_ends_is_408_after_the_header_timeout() -> None:
    with _serving(Limits(header_timeout=0.5, idle_timeout=30)) as port, _connect(port) as s:
        started = time.monotonic()
        s.sendall(b"GET /x HTTP/1.1\r\nhost: 127.0.0.1\r\n")  # and nothing more
        status, body = _answer(s)
        assert status == "HTTP/1.1 408 Request Timeout"
        assert json.loads(body)["field"] == "headers"
        assert 0.4 < time.monotonic() - started < 10


def test_idle_connections_are_closed_new_or_kept_alive() -> None:
    with _serving(Limits(idle_timeout=0.5)) as port:
        silent = _connect(port)  # never sends a byte
        kept = _connect(port)
        kept.sendall(GET)
        assert kept.recv(65536).startswith(b"HTTP/1.1 200")  # then kept alive, idle
        assert _closed_by_server(silent, 10) and _closed_by_server(kept, 10)
        silent.close()
        kept.close()
    with _serving(Limits(idle_timeout=30)) as port, _connect(port) as s:
        assert not _closed_by_server(s, 0.5)  # before its timeout it stays open


def test_past_the_cap_the_longest_waiting_connections_are_closed() -> None:
    with _serving(Limits(idle_timeout=60), cap=8) as port:
        idle = [_connect(port) for _ in range(20)]
        assert _get(port) == "HTTP/1.1 200 OK"  # a new client is served all the same
        deadline = time.monotonic() + 10
        while True:  # the oldest twelve (and one more, for the GET) were closed at once
            closed = [i for i, s in enumerate(idle) if _closed_by_server(s, 0.01)]
            if len(closed) >= 13 or time.monotonic() > deadline:
                break
        assert closed == list(range(len(closed))) and len(closed) >= 13
        assert not any(_closed_by_server(s, 0.01) for s in idle[14:])
        for s in idle:
            s.close()


def test_a_connection_still_sending_its_body_is_the_first_closed_for_room() -> None:
    with _serving(Limits(idle_timeout=60), cap=4, app=_reads_body) as port:
        slow = _connect(port)
        slow.sendall(b"POST /x HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: 100\r\n\r\n"
                     + b"a" * 10)  # and the other 90 bytes never
        assert _get(port) == "HTTP/1.1 200 OK"  # the server has read the slow head by now
        idle = [_connect(port) for _ in range(4)]
        assert _closed_by_server(slow, 10)
        assert not any(_closed_by_server(s, 0.05) for s in idle)
        for s in [slow, *idle]:
            s.close()


def test_the_cap_leaves_room_under_the_open_file_limit() -> None:
    assert connection_cap(1000, 20_000) == 1000
    assert connection_cap(1000, 512) == 512 - RESERVED_FILES
    assert connection_cap(1000, 100) == 1
    assert connection_cap(1000, resource.RLIM_INFINITY) == 1000
    assert connection_cap(64) <= 64


@pytest.mark.parametrize("status", [408, 431])
def test_a_refusal_is_a_whole_http_answer_with_the_error_body(status: int) -> None:
    raw = error_response(status, "headers", "why")
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    assert lines[0].startswith(f"HTTP/1.1 {status} ") and "connection: close" in lines
    assert f"content-length: {len(body)}" in lines
    assert json.loads(body) == {"error": "headers: why", "field": "headers"}
