"""service/asgi/load_shedding.py: a full worker answers 503 with Retry-After at once, a
request counts once its body is in, a client that has gone is noticed and its work not
started (in its thread, in the batcher), request threads run nicer than the event loop;
and the settings of the overload and connection limits."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import sys
import tempfile
import threading
from types import SimpleNamespace

import numpy as np
import pytest

from service.asgi import bentoml_fixes, load_shedding
from service.asgi.load_shedding import (
    CLIENT_CLOSED_REQUEST,
    WORK_NICENESS,
    Client,
    ClientGone,
    EarlyShedding,
    LoadShedder,
    current_client,
    lower_thread_priority,
    unless_gone,
)
from service.batcher import MicroBatcher
from service.settings import Settings, SettingsError

# LoadShedder defines the service's metrics: as tests/in_process.py does, they must know
# their folder before prometheus_client is first used (the in-process service shares it)
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp())


def _request(path: str = "/sample", body: bytes = b"{}") -> tuple[dict, list[dict]]:
    """A scope and the messages its client sends."""
    return {"type": "http", "method": "POST", "path": path, "headers": []}, [
        {"type": "http.request", "body": body, "more_body": False}]


class _Connection:
    """One request's side of the server: hands the app its messages, then `http.disconnect`
    when `leave` is set or the answer is complete (as uvicorn does); records what is sent."""

    def __init__(self, messages: list[dict]) -> None:
        self.messages = list(messages)
        self.sent: list[dict] = []
        self.leave = asyncio.Event()

    async def receive(self) -> dict:
        if self.messages:
            message = self.messages.pop(0)
            if isinstance(message, asyncio.Event):  # the body is late until it is set
                await message.wait()
                return {"type": "http.request", "body": b"{}", "more_body": False}
            return message
        await self.leave.wait()
        return {"type": "http.disconnect"}

    async def send(self, message: dict) -> None:
        self.sent.append(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            self.leave.set()

    @property
    def status(self) -> int | None:
        starts = [m for m in self.sent if m["type"] == "http.response.start"]
        return starts[0]["status"] if starts else None

    def body(self) -> dict:
        return json.loads(b"".join(m.get("body", b"") for m in self.sent
                                   if m["type"] == "http.response.body"))


class _HeldApp:
    """An app whose requests wait until `release` is set (those to the health checks and
    /metrics do not), then answer 200."""

    def __init__(self) -> None:
        self.entered = 0
        self.release = asyncio.Event()
        self.clients: list[Client | None] = []

    async def __call__(self, scope: dict, receive, send) -> None:
        self.entered += 1
        self.clients.append(current_client())
        assert (await receive())["type"] == "http.request"  # the body, replayed
        if scope["path"] not in load_shedding.NEVER_SHED:
            await self.release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})


async def _until(condition, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.001)


def test_a_full_worker_answers_503_with_retry_after_and_the_health_checks_pass() -> None:
    async def scenario() -> None:
        app = _HeldApp()
        shedder = LoadShedder(app, max_in_flight=2)
        held = [_Connection(_request()[1]) for _ in range(2)]
        tasks = [asyncio.create_task(shedder(_request()[0], c.receive, c.send)) for c in held]
        await _until(lambda: app.entered == 2)
        assert shedder.in_flight == 2 and shedder.full

        refused = _Connection(_request()[1])
        await asyncio.wait_for(shedder(_request()[0], refused.receive, refused.send), 1)
        assert refused.status == 503 and app.entered == 2
        headers = dict(refused.sent[0]["headers"])
        assert headers[b"retry-after"] == b"1"
        assert headers[b"content-type"] == b"application/json"
        assert refused.body()["field"] == "server" and "busy" in refused.body()["error"]

        for path in ("/livez", "/readyz", "/healthz", "/metrics"):  # never shed
            probe = _Connection(_request(path)[1])
            await asyncio.wait_for(shedder(_request(path)[0], probe.receive, probe.send), 1)
            assert probe.status == 200
        assert app.entered == 6

        app.release.set()
        await asyncio.gather(*tasks)
        assert [c.status for c in held] == [200, 200] and shedder.in_flight == 0
        again = _Connection(_request()[1])
        await shedder(_request()[0], again.receive, again.send)
        assert again.status == 200

    asyncio.run(scenario())


def test_a_request_counts_once_its_body_is_in_and_is_refused_if_full_by_then() -> None:
    async def scenario() -> None:
        app = _HeldApp()
        shedder = LoadShedder(app, max_in_flight=1)
        body_arrives = asyncio.Event()
        slow = _Connection([body_arrives])  # a client still sending its body
        slow_task = asyncio.create_task(shedder(_request()[0], slow.receive, slow.send))
        await asyncio.sleep(0.01)
        assert shedder.in_flight == 0 and app.entered == 0  # it holds no slot

        fast = _Connection(_request()[1])
        fast_task = asyncio.create_task(shedder(_request()[0], fast.receive, fast.send))
        await _until(lambda: app.entered == 1)
        body_arrives.set()  # the slow body is in, and the worker is full
        await asyncio.wait_for(slow_task, 1)
        assert slow.status == 503 and app.entered == 1
        app.release.set()
        await fast_task
        assert fast.status == 200

    asyncio.run(scenario())


def test_a_slot_is_free_once_the_answer_is_sent_not_when_cleaning_up_ends() -> None:
    """A client that sends its next request as soon as it has its answer is never refused
    for the request it had: the slot frees before the answer's last byte goes."""

    async def scenario() -> None:
        cleaned = asyncio.Event()

        async def answers_then_cleans_up(scope: dict, receive, send) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            await cleaned.wait()  # e.g. closing an uploaded file in a thread

        shedder = LoadShedder(answers_then_cleans_up, max_in_flight=1)
        first = _Connection(_request()[1])
        task = asyncio.create_task(shedder(_request()[0], first.receive, first.send))
        await _until(lambda: first.status == 200)
        assert shedder.in_flight == 0 and not task.done()
        cleaned.set()
        second = _Connection(_request()[1])
        await shedder(_request()[0], second.receive, second.send)
        await task
        assert second.status == 200 and shedder.in_flight == 0

    asyncio.run(scenario())


def test_a_client_that_leaves_is_noticed_and_its_answer_recorded_as_499() -> None:
    async def scenario() -> None:
        app = _HeldApp()
        shedder = LoadShedder(app, max_in_flight=4)
        conn = _Connection(_request()[1])
        task = asyncio.create_task(shedder(_request()[0], conn.receive, conn.send))
        await _until(lambda: app.entered == 1)
        client = app.clients[0]
        assert client is not None and not client.gone
        conn.leave.set()  # the client disconnects while its request waits
        await _until(lambda: client.gone)
        assert client.drop_if_gone() and client.skipped
        app.release.set()
        await task
        assert conn.status == CLIENT_CLOSED_REQUEST and shedder.in_flight == 0

        stays = _Connection(_request()[1])  # disconnect only once answered: not gone
        await shedder(_request()[0], stays.receive, stays.send)
        assert stays.status == 200 and not app.clients[1].gone

        gone_early = _Connection([{"type": "http.disconnect"}])  # left mid-body
        await shedder(_request()[0], gone_early.receive, gone_early.send)
        assert gone_early.sent == [] and app.entered == 2

    asyncio.run(scenario())


class _Cycle:
    """uvicorn's RequestResponseCycle as far as LoadShedder reads it: `receive` is its
    bound method, `disconnected` is set when the connection is lost mid-request, and no
    http.disconnect message comes while the app has not answered."""

    def __init__(self, messages: list[dict]) -> None:
        self.messages = list(messages)
        self.disconnected = False
        self.sent: list[dict] = []
        self.received_after_body = 0

    async def receive(self) -> dict:
        if self.messages:
            return self.messages.pop(0)
        self.received_after_body += 1
        await asyncio.Event().wait()  # uvicorn: until the answer is done (never, here)

    async def send(self, message: dict) -> None:
        self.sent.append(message)


def test_under_uvicorn_a_gone_client_is_read_from_the_server_without_a_watcher() -> None:
    """EarlyShedding hands LoadShedder the server's connection state, so no task per
    request awaits receive(); the client leaving is still noticed, and answered 499."""
    async def scenario() -> None:
        app = _HeldApp()
        front = EarlyShedding(LoadShedder(app, max_in_flight=4))
        cycle = _Cycle(_request()[1])
        task = asyncio.create_task(front(_request()[0], cycle.receive, cycle.send))
        await _until(lambda: app.entered == 1)
        client = app.clients[0]
        assert client.connection is cycle and not client.gone
        cycle.disconnected = True  # the connection is lost while the request waits
        assert client.gone and client.drop_if_gone()
        cycle.disconnected = False  # once seen gone, it stays gone
        assert client.gone
        app.release.set()
        await task
        assert cycle.sent[0]["status"] == CLIENT_CLOSED_REQUEST
        assert cycle.received_after_body == 0  # nothing awaited the client's messages

        answered = _Cycle(_request()[1])  # lost after the answer: not gone
        await front(_request()[0], answered.receive, answered.send)
        answered.disconnected = True
        assert answered.sent[0]["status"] == 200 and not app.clients[1].gone

    asyncio.run(scenario())


def test_a_receive_that_is_not_the_servers_gives_no_connection() -> None:
    assert load_shedding.server_connection(_Connection([]).receive) is None
    assert load_shedding.server_connection(lambda: None) is None
    cycle = _Cycle([])
    assert load_shedding.server_connection(cycle.receive) is cycle


def test_early_shedding_refuses_before_the_app_while_a_shedder_is_full() -> None:
    async def scenario() -> None:
        inner = _HeldApp()
        shedder = LoadShedder(inner, max_in_flight=1)
        front = _HeldApp()
        front.release.set()
        early = EarlyShedding(front)
        conn = _Connection(_request()[1])
        await early(_request()[0], conn.receive, conn.send)
        assert conn.status == 200 and front.entered == 1  # not full: passed on

        held = _Connection(_request()[1])  # one request held in the shedder: full
        holding = asyncio.create_task(shedder(_request()[0], held.receive, held.send))
        await _until(lambda: inner.entered == 1)
        conn = _Connection(_request()[1])
        await asyncio.wait_for(early(_request()[0], conn.receive, conn.send), 1)
        assert conn.status == 503 and front.entered == 1
        assert dict(conn.sent[0]["headers"])[b"retry-after"] == b"1"
        conn = _Connection(_request("/readyz")[1])
        await early(_request("/readyz")[0], conn.receive, conn.send)
        assert conn.status == 200 and front.entered == 2
        inner.release.set()  # answered: no longer full, passed on again
        await holding
        conn = _Connection(_request()[1])
        await early(_request()[0], conn.receive, conn.send)
        assert conn.status == 200 and front.entered == 3

    asyncio.run(scenario())


def _in_request_of(client: Client | None, func, *args):
    """func(*args) as code of a request whose client is `client` runs it."""
    context = contextvars.copy_context()
    context.run(load_shedding._CLIENT.set, client)
    return context.run(func, *args)


def test_work_for_a_client_that_has_gone_is_not_started() -> None:
    calls: list[int] = []

    def work(x: int) -> int:
        calls.append(x)
        return x * 2

    assert unless_gone(work, 1) == 2  # outside any request
    present, gone = Client(), Client()
    gone.gone = True
    assert _in_request_of(present, unless_gone, work, 2) == 4
    with pytest.raises(ClientGone):
        _in_request_of(gone, unless_gone, work, 3)
    assert calls == [1, 2] and gone.skipped and not present.skipped


def test_routes_run_on_nicer_threads_of_their_own_and_not_for_a_client_gone() -> None:
    from _bentoml_impl.server.app import ServiceAppFactory

    from service.asgi.bentoml_fixes import install

    install(work_threads=4)
    install(work_threads=4)  # twice: the same
    factory = SimpleNamespace()
    calls: list[tuple[str, int]] = []

    def route() -> str:
        me = threading.get_native_id()
        calls.append((threading.current_thread().name, os.getpriority(os.PRIO_PROCESS, me)))
        return "ok"

    async def request(client: Client) -> str:
        load_shedding._CLIENT.set(client)
        return await ServiceAppFactory._to_thread(factory, route)

    gone = Client()
    gone.gone = True
    assert asyncio.run(request(Client())) == "ok"
    with pytest.raises(ClientGone):
        asyncio.run(request(gone))
    assert len(calls) == 1 and gone.skipped
    name, nice = calls[0]
    assert name.startswith("counterfeit-work")
    if sys.platform.startswith("linux"):
        main = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        assert nice == min(19, main + WORK_NICENESS)
    bentoml_fixes._work_threads.shutdown()
    bentoml_fixes._work_threads = None  # the next test's first call makes a fresh pool


def test_a_dropped_request_is_logged_in_one_info_line(caplog) -> None:
    from bentoml._internal.server import http_app

    from service.asgi.bentoml_fixes import install

    install(work_threads=4)
    try:
        raise ClientGone()
    except ClientGone:
        with caplog.at_level(logging.INFO, logger=http_app.logger.name):
            http_app.logger.error("Exception on %s [%s]", "/sample", "POST", exc_info=True)
    (record,) = caplog.records
    assert record.levelno == logging.INFO and record.exc_info is None
    assert "client had gone" in record.getMessage()


def test_the_batcher_does_not_compute_rows_whose_client_has_gone() -> None:
    batches: list[int] = []

    def fn(x: np.ndarray) -> np.ndarray:
        batches.append(len(x))
        return x * 2

    batcher = MicroBatcher(fn, max_rows=64, max_wait_s=0.2)
    gone, present = Client(), Client()
    results: dict[str, object] = {}

    def ask(name: str, client: Client, rows: int) -> None:
        try:
            results[name] = _in_request_of(client, batcher, np.ones((rows, 2)))
        except ClientGone as err:
            results[name] = err

    gone.gone = True  # it has left before its batch runs
    threads = [threading.Thread(target=ask, args=("gone", gone, 5)),
               threading.Thread(target=ask, args=("present", present, 3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert isinstance(results["gone"], ClientGone) and gone.skipped
    np.testing.assert_array_equal(results["present"], np.full((3, 2), 2.0))
    assert sum(batches) == 3  # the five rows of the client that left were never computed


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread nice: Linux")
def test_request_threads_run_nicer_than_the_event_loop() -> None:
    seen: list[int] = []

    def thread() -> None:
        me = threading.get_native_id()
        before = os.getpriority(os.PRIO_PROCESS, me)
        lower_thread_priority()
        lower_thread_priority()  # once per thread
        seen.extend([before, os.getpriority(os.PRIO_PROCESS, me)])

    main = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    t = threading.Thread(target=thread)
    t.start()
    t.join()
    assert seen[1] == min(19, seen[0] + WORK_NICENESS)
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == main


def test_the_limits_settings_have_defaults_and_refuse_bad_values() -> None:
    s = Settings.from_env({})
    assert (s.max_in_flight, s.max_connections, s.max_header_bytes) == (32, 1000, 32 * 1024)
    assert (s.header_timeout_seconds, s.idle_timeout_seconds) == (10.0, 5.0)
    s = Settings.from_env({"COUNTERFEIT_MAX_IN_FLIGHT": "4", "COUNTERFEIT_MAX_CONNECTIONS": "64",
                           "COUNTERFEIT_MAX_HEADER_BYTES": "8192",
                           "COUNTERFEIT_HEADER_TIMEOUT_SECONDS": "2.5",
                           "COUNTERFEIT_IDLE_TIMEOUT_SECONDS": "0.5"})
    assert (s.max_in_flight, s.max_connections, s.max_header_bytes) == (4, 64, 8192)
    assert (s.header_timeout_seconds, s.idle_timeout_seconds) == (2.5, 0.5)
    for name, value in [("MAX_IN_FLIGHT", "0"), ("MAX_CONNECTIONS", "8"),
                        ("MAX_HEADER_BYTES", "100"), ("HEADER_TIMEOUT_SECONDS", "nan"),
                        ("IDLE_TIMEOUT_SECONDS", "-1"), ("MAX_IN_FLIGHT", "many")]:
        with pytest.raises(SettingsError, match=f"COUNTERFEIT_{name}="):
            Settings.from_env({f"COUNTERFEIT_{name}": value})
