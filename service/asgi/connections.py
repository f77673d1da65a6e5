"""Connection limits for BentoML's HTTP server, which has none of its own.

BentoML 1.4 runs each worker on uvicorn with httptools and lets no uvicorn option through
but the keep-alive timeout. httptools has no limit on a request head: a 64 MiB header was
read whole and answered 200, and eight unfinished ones held +473 MiB. uvicorn closes a
connection only after a response: one that sends nothing, or half a request head, is kept
for ever, and 20,000 of them used up the worker's open-file limit, so that every request
after them was reset.

`LimitedHttpToolsProtocol` is uvicorn's httptools protocol with, per worker (`Limits`):

- a request head (request line and headers) over `max_header_bytes` is answered 431 and
  the connection closed, after at most one more read (no head is buffered whole);
- a request head must be complete within `header_timeout` of its first byte: else 408,
  closed (slowloris);
- a connection without a request in progress (new, kept alive after an answer) is closed
  after `idle_timeout` without a byte (uvicorn's keep-alive timeout, now from the start);
- at most `max_connections` are open (and never more than the open-file limit allows):
  one more closes the connection that has waited longest without a request running (idle,
  or still sending a request's head or body), or, when every one runs a request, itself;
- its app is BentoML's behind EarlyShedding (service/asgi/load_shedding.py): while the
  worker is full, a request is refused before BentoML's middleware runs.

`install(settings)` makes it uvicorn's "auto" protocol in this process; BentoML's worker
imports the service (which calls it) before it configures uvicorn.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from uvicorn import config as uvicorn_config
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from service.asgi.load_shedding import EarlyShedding

log = logging.getLogger("counterfeit")
# descriptors a worker needs besides its connections: models, metrics files, pipes, the
# temporary file of each upload in flight
RESERVED_FILES = 128
# after a refusal, what the client still sends is read and dropped for this long, so that
# it reads the answer rather than a reset
LINGER_SECONDS = 2.0


@dataclass(frozen=True)
class Limits:
    max_header_bytes: int = 32 * 1024
    header_timeout: float = 10.0
    idle_timeout: float = 5.0
    max_connections: int = 1000


def connection_cap(max_connections: int, open_files: int | None = None) -> int:
    """`max_connections`, lowered to what the open-file limit (RLIMIT_NOFILE's soft limit,
    or `open_files`) leaves for connections, at least 1."""
    if open_files is None:
        open_files = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if open_files == resource.RLIM_INFINITY:
        return max_connections
    return max(1, min(max_connections, open_files - RESERVED_FILES))


def error_response(status: int, field: str, message: str) -> bytes:
    """A whole HTTP/1.1 answer with the one error body, that closes the connection."""
    body = json.dumps({"error": f"{field}: {message}", "field": field}).encode()
    return (STATUS_LINE[status] + b"content-type: application/json\r\n"
            b"content-length: " + str(len(body)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + body)


# per server (uvicorn's ServerState, one per worker): the connections not running a
# request, the longest-waiting first; the first to close when the worker is full
_WAITING: weakref.WeakKeyDictionary[Any, OrderedDict[Any, None]] = weakref.WeakKeyDictionary()


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    limits = Limits()
    cap = Limits.max_connections

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = EarlyShedding(self.app)
        self.timeout_keep_alive = self.limits.idle_timeout
        self._waiting = _WAITING.setdefault(self.server_state, OrderedDict())
        self._head_open = True  # the bytes arriving belong to a request head
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False

    # a connection's life
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._waiting[self] = None
        self._make_room()
        if not transport.is_closing():  # the idle timeout runs from the start, not only
            self.timeout_keep_alive_task = self.loop.call_later(  # after a first answer
                self.timeout_keep_alive, self.timeout_keep_alive_handler)

    def connection_lost(self, exc: Exception | None) -> None:
        self._waiting.pop(self, None)
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _make_room(self) -> None:
        """Close connections, longest-waiting first, until at most `cap` are open."""
        for _ in range(len(self.connections) - self.cap):
            victim = next(iter(self._waiting), self)
            victim._close_now()
            if victim is self:
                return

    def _close_now(self) -> None:
        self._waiting.pop(self, None)
        self.connections.discard(self)  # counted out now: the socket closes next tick
        self._cancel_head_timer()
        self.transport.close()

    # a request head: its size and its time
    def data_received(self, data: bytes) -> None:
        if self._refused:  # lingering: what the client still sends is dropped
            return
        if self._head_open:
            self._head_bytes += len(data)
        super().data_received(data)
        if (self._head_open and self._head_bytes > self.limits.max_header_bytes
                and not self.transport.is_closing()):
            self._refuse(431, f"the request head is over {self.limits.max_header_bytes} "
                              "bytes (request line and headers)")

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout,
                                                self._head_timed_out)

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        self._head_open, self._head_bytes = False, 0
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._head_open, self._head_bytes = True, 0  # what comes next is the next head
        if self.cycle is not None and not self.cycle.response_complete:
            self._waiting.pop(self, None)  # its request is all in and runs: not closed for room

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:  # kept alive, waiting for a request
            self._waiting[self] = None
            self._waiting.move_to_end(self)

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing() and self._head_open:
            self._refuse(408, f"the request head did not arrive within "
                              f"{self.limits.header_timeout:g} s")

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _refuse(self, status: int, message: str) -> None:
        """Answer `status` and close: the write side at once, the connection after
        LINGER_SECONDS or when the client closes, whichever is first. It is the first to go
        when the worker needs room."""
        self._refused = True
        self._cancel_head_timer()
        self._unset_keepalive_if_required()
        if self.cycle is not None and not self.cycle.response_complete:
            self._close_now()  # a pipelined head: the answer before it is still being sent
            return
        self._waiting[self] = None
        self._waiting.move_to_end(self, last=False)
        self.transport.write(error_response(status, "headers", message))
        if self.transport.can_write_eof():
            self.transport.write_eof()
            self.loop.call_later(LINGER_SECONDS, self.transport.close)
        else:
            self.transport.close()


def install(settings: Any) -> None:
    """Serve with LimitedHttpToolsProtocol and `settings`' limits (max_header_bytes,
    header_timeout_seconds, idle_timeout_seconds, max_connections) in this process."""
    limits = Limits(max_header_bytes=settings.max_header_bytes,
                    header_timeout=settings.header_timeout_seconds,
                    idle_timeout=settings.idle_timeout_seconds,
                    max_connections=settings.max_connections)
    cap = connection_cap(limits.max_connections)
    if cap < limits.max_connections:
        log.warning("COUNTERFEIT_MAX_CONNECTIONS=%d is over what the open-file limit (ulimit "
                    "-n) leaves for connections: at most %d per worker", limits.max_connections,
                    cap)
    LimitedHttpToolsProtocol.limits = limits
    LimitedHttpToolsProtocol.cap = cap
    uvicorn_config.HTTP_PROTOCOLS["auto"] = f"{__name__}:LimitedHttpToolsProtocol"
    uvicorn_config.HTTP_PROTOCOLS["httptools"] = f"{__name__}:LimitedHttpToolsProtocol"
