"""Load shedding, and no work for clients that have gone.

BentoML queues every request it accepts: under a flood a worker held thousands, answered
them tens of seconds late, and computed images for clients that had long given up.
`LoadShedder` bounds the requests a worker processes at once (COUNTERFEIT_MAX_IN_FLIGHT):
one more is answered 503 with `Retry-After` and the one error body at once, never queued.
The health checks and /metrics are never shed.

- A request counts from the moment its body has all arrived, so a client that sends its
  body slowly holds a connection, not a slot; if the worker has filled up meanwhile, it is
  refused then.
- While the worker is full, `EarlyShedding`, in front of BentoML's own middleware
  (service/asgi/connections.py puts it there), refuses a request before anything else
  runs: a refusal then costs the event loop one step, not a dozen, and the loop keeps up
  with a flood even when request threads hold the cores.
- Once counted, the request's client is watched. Under uvicorn, `EarlyShedding` keeps
  the server's own record of the connection (`RequestResponseCycle.disconnected`), read
  when needed; elsewhere a task per request awaits ASGI's `receive()`, which answers
  `http.disconnect` once the client has gone (that task was 5% of a worker's time at
  n = 1 under uvicorn, hence the shortcut). Work not started yet is then dropped
  (`drop_if_gone`, where a request waits: for a request thread, `unless_gone` in
  service/asgi/bentoml_fixes.py, and in the batcher's queue, service/batcher.py), and the
  answer nobody reads is recorded with status 499, as nginx does.
- Request threads (service/asgi/bentoml_fixes.py) and the batcher run at a lower CPU
  priority than the event loop (`lower_thread_priority`): the loop answers the health
  checks and refusals at once even while the work saturates the cores.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import sys
import threading
import weakref
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from service.asgi.access import HEALTH_CHECKS
from service.asgi.http_guard import _replay, json_response

NEVER_SHED = HEALTH_CHECKS | {"/metrics"}
RETRY_AFTER_SECONDS = 1
CLIENT_CLOSED_REQUEST = 499  # nginx's status for an answer its client left before
# how much nicer than the event loop request threads run (see lower_thread_priority)
WORK_NICENESS = 10
R = TypeVar("R")


class ClientGone(Exception):
    """The client of this request has gone: its work was not started."""

    def __init__(self) -> None:
        super().__init__("the client had gone before its request ran: not computed")


class Client:
    """One request's client, as its LoadShedder sees it: read from any thread (bools: no
    lock needed). `connection`: the server's state of this request's connection, with a
    `disconnected` flag (uvicorn's RequestResponseCycle), or None (then `watch` sets
    `gone`)."""

    def __init__(self, connection: Any = None) -> None:
        self._gone = False
        self.skipped = False  # its work was dropped before it started
        self.answered = False  # the last byte of the answer was handed to the server
        self.connection = connection

    @property
    def gone(self) -> bool:
        """The client left before the answer was complete (once seen, it stays so)."""
        if (not self._gone and not self.answered and self.connection is not None
                and self.connection.disconnected):
            self._gone = True
        return self._gone

    @gone.setter
    def gone(self, value: bool) -> None:
        self._gone = value

    def drop_if_gone(self) -> bool:
        """Whether the client has gone; if so the caller drops the work it was about to
        start, and the request is counted as skipped."""
        if self.gone:
            self.skipped = True
        return self.gone

    async def watch(self, receive: Any) -> None:
        """Wait for the client to go (call once the request's body has been read: after it,
        `receive()` answers only when the client disconnects or the answer is complete)."""
        message = await receive()
        if message["type"] == "http.disconnect" and not self.answered:
            self.gone = True


_CLIENT: contextvars.ContextVar[Client | None] = contextvars.ContextVar(
    "counterfeit_client", default=None)
# the server's state of the current request's connection, where EarlyShedding found one
_CONNECTION: contextvars.ContextVar[Any] = contextvars.ContextVar(
    "counterfeit_connection", default=None)


def server_connection(receive: Any) -> Any:
    """The object behind the server's own `receive` that knows whether the client has gone
    (uvicorn's RequestResponseCycle, whose `disconnected` its protocol sets when the
    connection is lost before the answer is complete), or None."""
    owner = getattr(receive, "__self__", None)
    return owner if isinstance(getattr(owner, "disconnected", None), bool) else None


def current_client() -> Client | None:
    """The client of the request this code runs for (in its task, or in a thread it started:
    threads get a copy of the task's context), None outside a request."""
    return _CLIENT.get()


_priority = threading.local()


def lower_thread_priority() -> None:
    """Make the calling thread WORK_NICENESS nicer than it was, once per thread (Linux, where
    each thread has its own nice value; elsewhere nothing): for threads that only do
    requests' work. Measured under a flood on 2 cores: refusals took 0.1 s at the median,
    not 0.45 s (docs/reliability.md)."""
    if getattr(_priority, "lowered", False) or not sys.platform.startswith("linux"):
        return
    _priority.lowered = True
    thread = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, thread,
                       min(19, os.getpriority(os.PRIO_PROCESS, thread) + WORK_NICENESS))
    except OSError:  # not allowed here: run as is
        pass


def unless_gone(func: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """func(*args, **kwargs), unless the current request's client has gone: ClientGone."""
    client = current_client()
    if client is not None and client.drop_if_gone():
        raise ClientGone()
    return func(*args, **kwargs)


async def read_body(receive: Any) -> bytes | None:
    """The whole request body, or None when the client disconnects first."""
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


# every LoadShedder of this process (one per worker; EarlyShedding asks them)
_SHEDDERS: weakref.WeakSet[LoadShedder] = weakref.WeakSet()


# LoadShedders of this process at their limit (one that is collected while full stays
# counted: EarlyShedding then only walks _SHEDDERS for nothing)
_full_shedders = 0

# requests in flight over every LoadShedder of this process: read per request by the
# batcher, so a plain int rather than a sum over _SHEDDERS
_in_flight_total = 0


def requests_in_flight() -> int:
    """Requests this worker is processing now (read from the batcher's thread: an int read
    under the GIL, at worst one request stale)."""
    return _in_flight_total


class LoadShedder:
    """ASGI middleware: at most `max_in_flight` requests of this worker are processed at
    once; any other (but those to `never_shed` paths) is answered 503 with Retry-After.
    Put it after HttpGuard: it reads the body, whose size HttpGuard has bounded."""

    def __init__(self, app: Any, max_in_flight: int, never_shed: Iterable[str] = NEVER_SHED,
                 retry_after_seconds: int = RETRY_AFTER_SECONDS) -> None:
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.app = app
        self.max_in_flight = max_in_flight
        self.never_shed = frozenset(never_shed)
        self.retry_after = retry_after_seconds
        self.in_flight = 0  # one event loop per worker: a plain count
        # imported here, not with the module (which the batcher imports): the metrics must
        # not be defined before BentoML has set PROMETHEUS_MULTIPROC_DIR
        from service import metrics
        self.metrics = metrics
        _SHEDDERS.add(self)

    @property
    def full(self) -> bool:
        return self.in_flight >= self.max_in_flight

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("path") in self.never_shed:
            await self.app(scope, receive, send)
            return
        if self.full:  # refused before the body is read
            await self.shed(send)
            return
        body = await read_body(receive)
        if body is None:  # gone before its request was complete: nothing to answer
            self.metrics.REQUESTS_ABANDONED.labels("skipped").inc()
            return
        if self.full:  # filled up while the body came in
            await self.shed(send)
            return
        client = Client(_CONNECTION.get())
        self._count_in_flight(+1)
        released = False

        def release() -> None:
            """The slot is free once the answer is complete (what runs after it, closing an
            upload, must not refuse the client's next request) or the app has ended."""
            nonlocal released
            if not released:
                released = True
                self._count_in_flight(-1)

        watcher = (asyncio.ensure_future(client.watch(receive))
                   if client.connection is None else None)
        token = _CLIENT.set(client)
        try:
            await self.app(scope, _replay(body, receive), _answering(client, send, release))
        finally:
            _CLIENT.reset(token)
            if watcher is not None:
                watcher.cancel()
            release()
            if client.gone:
                work = "skipped" if client.skipped else "done"
                self.metrics.REQUESTS_ABANDONED.labels(work).inc()

    def _count_in_flight(self, change: int) -> None:
        """One request more (+1) or fewer (-1) in flight: this shedder's count, the
        process's, the number of full shedders (EarlyShedding's shortcut), the gauge."""
        global _in_flight_total, _full_shedders
        was_full = self.full
        self.in_flight += change
        _in_flight_total += change
        _full_shedders += int(self.full) - int(was_full)
        self.metrics.REQUESTS_IN_FLIGHT.inc(change)

    async def shed(self, send: Any) -> None:
        """Answer 503, the one error body and Retry-After."""
        self.metrics.REQUESTS_SHED.inc()
        start, body = json_response(503, {
            "error": f"server: busy, {self.in_flight} requests in flight on this worker, its "
                     f"limit; retry after {self.retry_after} s",
            "field": "server"}, [(b"retry-after", str(self.retry_after).encode())])
        await send(start)
        await send(body)


class EarlyShedding:
    """ASGI app in front of `app` (all of BentoML's, middleware included): while a
    LoadShedder of this worker is full, a request to any path it sheds is answered by it
    at once, before any middleware runs. Shed here, a request is counted in
    counterfeit_requests_shed_total but not in BentoML's request metrics. It also notes
    the server's connection state for the request (server_connection)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            # while none is full (the common case) no WeakSet is walked: 2% of a worker
            for shedder in _SHEDDERS if _full_shedders else ():
                if shedder.full and scope.get("path") not in shedder.never_shed:
                    await shedder.shed(send)
                    return
            # the server's `receive`, before any middleware wraps it: LoadShedder's Client
            # reads whether its client has gone from there
            _CONNECTION.set(server_connection(receive))
        await self.app(scope, receive, send)


def _answering(client: Client, send: Any, release: Callable[[], None]) -> Any:
    """`send` that notes when the answer is complete (and calls `release` before its last
    byte goes), and gives an answer to a client that has gone the status 499 (the request
    metrics then say what happened to it)."""

    async def wrapped(message: dict) -> None:
        if message["type"] == "http.response.start" and client.gone:
            message = {**message, "status": CLIENT_CLOSED_REQUEST}
        elif message["type"] == "http.response.body" and not message.get("more_body"):
            client.answered = True
            release()
        await send(message)

    return wrapped
